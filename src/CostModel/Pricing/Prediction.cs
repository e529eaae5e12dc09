using Planner.CostModel.Memory;
using Planner.CostModel.Plans;

namespace Planner.CostModel.Pricing;

/// <summary>Seconds per optimizer step by cause, exposed time only; they add up to the step time.</summary>
/// <param name="Compute">Forward and backward kernels of the busiest stage (no recompute).</param>
/// <param name="Recompute">Recomputed forward kernels.</param>
/// <param name="TpComm">Tensor-parallel collectives, not overlapped.</param>
/// <param name="PpComm">Delay that point-to-point transfers add to the pipeline.</param>
/// <param name="DpComm">Data-parallel gradient reduction and ZeRO gathers not hidden behind compute.</param>
/// <param name="Bubble">Pipeline fill and drain (and stage imbalance) idle time.</param>
/// <param name="Optimizer">The optimizer step.</param>
/// <param name="CpComm">Context-parallel exchanges not hidden behind the attention core.</param>
/// <param name="EpComm">Expert-parallel token dispatch and combine (and expert-TP gathers).</param>
public sealed record Breakdown(
    double Compute,
    double Recompute,
    double TpComm,
    double PpComm,
    double DpComm,
    double Bubble,
    double Optimizer,
    double CpComm = 0,
    double EpComm = 0)
{
    /// <summary>The sum of the parts.</summary>
    public double Total => Compute + Recompute + TpComm + CpComm + EpComm + PpComm + DpComm + Bubble + Optimizer;
}

/// <summary>The price of one plan on one cluster under one software stack (CONTRACTS: the <c>predict</c> keys;
/// <see cref="Stack"/> the stack's name or file, <see cref="PricingOptions.Stack"/>; <see cref="Parameters"/> the model's
/// weights with any adapters, <see cref="TrainableParameters"/> those the step updates).</summary>
public sealed record Prediction(
    ParallelPlan Plan,
    string Model,
    string Cluster,
    double StepTimeSeconds,
    double TokensPerSecond,
    double ModelTflopsPerGpu,
    double HardwareTflopsPerGpu,
    double Mfu,
    double PeakMemoryGib,
    double GpuMemoryGib,
    bool Fits,
    Breakdown Breakdown,
    IReadOnlyList<MemoryBreakdown> MemoryByStage,
    string Stack,
    double Parameters = 0,
    double TrainableParameters = 0)
{
    /// <summary>The stage whose rank peaks highest.</summary>
    public MemoryBreakdown PeakStage => MemoryByStage.MaxBy(s => s.Total)!;
}
