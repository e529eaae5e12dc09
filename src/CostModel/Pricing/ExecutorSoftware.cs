namespace Planner.CostModel.Pricing;

/// <summary>The software facts of this project's executor (<c>stacks/planner.yaml</c>): what <c>run</c> predicts its
/// runs with and <c>profile</c> prices its measurements with, whatever stack a plan was planned for.</summary>
public static class ExecutorSoftware
{
    /// <summary>The executor's stack's facts (<see cref="PricingOptions.ExecutorStack"/>).</summary>
    public static PricingOptions Options => StackLoader.Options(PricingOptions.ExecutorStack);
}
