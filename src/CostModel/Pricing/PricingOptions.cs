using Planner.CostModel.Comm;

namespace Planner.CostModel.Pricing;

/// <summary>
/// Behaviours of the training software that change the price of the same plan on the same hardware.
/// </summary>
/// <param name="OverlapGradReduce">Data-parallel gradient reduction (and ZeRO-1/2 parameter gathers) run in
/// buckets behind the last micro-batch's backward (and the next forward), as PyTorch DDP and current Megatron-LM
/// do; false for software that reduces after the backward pass (Megatron-LM of 2021–22).</param>
/// <param name="Algorithm">How collectives over groups that span nodes run.</param>
public sealed record PricingOptions(
    bool OverlapGradReduce = true,
    CollectiveAlgorithm Algorithm = CollectiveAlgorithm.Ring)
{
    /// <summary>Current frameworks' defaults.</summary>
    public static PricingOptions Default { get; } = new();
}
