using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;

namespace Planner.Cli.Search;

/// <summary>What plans are ranked by.</summary>
public enum Objective
{
    /// <summary>Highest tokens per second (the default; also the shortest time to train a token budget).</summary>
    Throughput,
    /// <summary>Lowest cost per token: GPUs used × price per GPU-hour × time (needs a price in the cluster file).</summary>
    Cost,
}

/// <summary>A planning question: a model on a cluster, the batch and sequence constraints, and the search space.</summary>
/// <param name="Model">The model.</param>
/// <param name="Cluster">The cluster.</param>
/// <param name="Gbs">Global batch in sequences; with <paramref name="GbsIsMaximum"/> the largest feasible multiple of
/// dp·mbs at most this.</param>
/// <param name="GbsIsMaximum">Treat <paramref name="Gbs"/> as a maximum.</param>
/// <param name="Seqs">Sequence lengths to consider.</param>
/// <param name="Precisions">Precisions to consider.</param>
/// <param name="AllowIdle">Let a plan leave GPUs unused (any count down to half the cluster).</param>
/// <param name="TpMax">Largest TP degree (default: an NVLink domain's GPUs, so TP stays inside one).</param>
/// <param name="Objective">Ranking.</param>
/// <param name="Top">Plans to return.</param>
/// <param name="Options">Software behaviours assumed by the pricing.</param>
/// <param name="Filter">Only plans it accepts are considered (what-if points that pin some plan values).</param>
/// <param name="AllVariants">List every configuration of a shape (ZeRO stage, micro-batch, interleaving, recompute) rather
/// than the best one of each shape.</param>
/// <param name="Tunings">Fine-tuning methods and optimizers to consider (<see cref="ParallelPlan.FineTuning"/>); null:
/// full training with AdamW only, as before.</param>
public sealed record SearchRequest(
    ModelSpec Model,
    ClusterSpec Cluster,
    int Gbs,
    bool GbsIsMaximum,
    IReadOnlyList<int> Seqs,
    IReadOnlyList<Precision> Precisions,
    bool AllowIdle = false,
    int? TpMax = null,
    Objective Objective = Objective.Throughput,
    int Top = 10,
    PricingOptions? Options = null,
    Func<ParallelPlan, bool>? Filter = null,
    bool AllVariants = false,
    IReadOnlyList<FineTuning>? Tunings = null)
{
    /// <summary>The fine-tuning settings searched: <see cref="Tunings"/>, or the plan's default (null) alone.</summary>
    public IReadOnlyList<FineTuning?> TuningList => Tunings is { Count: > 0 } t ? [.. t] : [null];

    /// <summary>Recompute policies worth searching: under flash attention selective equals none.</summary>
    public IReadOnlyList<Recompute> RecomputePolicies => (Options ?? PricingOptions.Default).Kernels.FusedAttention
        ? [Recompute.None, Recompute.Full]
        : [Recompute.None, Recompute.Selective, Recompute.Full];
}
