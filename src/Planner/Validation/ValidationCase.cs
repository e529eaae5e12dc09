using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;

namespace Planner.Cli.Validation;

/// <summary>
/// One measured run ready to price: its model, cluster, plan and the software it ran on, with what was measured.
/// </summary>
/// <param name="Id">The row's id.</param>
/// <param name="Gpus">GPUs of the run.</param>
/// <param name="Model">The model.</param>
/// <param name="Cluster">The cluster: the GPU preset with the row's links, default latencies and efficiencies.</param>
/// <param name="Plan">The plan as the source ran it.</param>
/// <param name="Software">What the software overlapped and fused.</param>
/// <param name="StepTimeS">The published step time.</param>
/// <param name="PeakMemoryGib">The published peak memory, if any.</param>
/// <param name="Groups">Labels the error is summarised under (the paper; the model and the system).</param>
public sealed record ValidationCase(
    string Id,
    int Gpus,
    ModelSpec Model,
    ClusterSpec Cluster,
    ParallelPlan Plan,
    PricingOptions Software,
    double StepTimeS,
    double? PeakMemoryGib,
    IReadOnlyList<string> Groups);
