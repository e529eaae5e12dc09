namespace Planner.CostModel.Specs;

/// <summary>Bounds the input readers share.</summary>
public static class InputLimits
{
    /// <summary>The least of a positive quantity a file gives (a rate, a size, a price, a latency) where the reader names
    /// no other minimum: one as small as a denormal would price an infinite step time.</summary>
    public const double Tiny = 1e-6;
}
