using Planner.CostModel.Plans;
using Planner.CostModel.Specs;
using PrecisionKind = Planner.CostModel.Specs.Precision;

namespace Planner.Cli.WhatIf;

/// <summary>
/// The plan values a what-if point pins (from the plan flags or a sweep on a plan key); null leaves a value free.
/// With <see cref="Tp"/>, <see cref="Pp"/> and <see cref="Mbs"/> all pinned the plan is fixed and priced as
/// <c>predict</c> prices it (the other values take <c>predict</c>'s defaults); otherwise the search picks the free
/// values among the plans that match the pinned ones.
/// </summary>
public sealed record PlanConstraint(
    int? Tp = null,
    int? Pp = null,
    int? Dp = null,
    int? Cp = null,
    int? Zero = null,
    int? Mbs = null,
    int? Vpp = null,
    Recompute? Recompute = null,
    bool? SequenceParallel = null,
    Precision? Precision = null)
{
    /// <summary>No value pinned.</summary>
    public static PlanConstraint None { get; } = new();

    /// <summary>True when the plan is fully given: tp, pp and mbs (the flags <c>predict</c> requires).</summary>
    public bool IsFixed => Tp is not null && Pp is not null && Mbs is not null;

    /// <summary>True when a value other than the precision is pinned (the precision narrows the search request itself).</summary>
    public bool FiltersPlans =>
        Tp is not null || Pp is not null || Dp is not null || Cp is not null || Zero is not null || Mbs is not null
        || Vpp is not null || Recompute is not null || SequenceParallel is not null;

    /// <summary>True when the plan has every pinned value.</summary>
    public bool Matches(ParallelPlan p) =>
        (Tp is null || p.Tp == Tp) && (Pp is null || p.Pp == Pp) && (Dp is null || p.Dp == Dp) && (Cp is null || p.Cp == Cp)
        && (Zero is null || p.Zero == Zero) && (Mbs is null || p.Mbs == Mbs) && (Vpp is null || p.Vpp == Vpp)
        && (Recompute is null || (p.Recompute == Recompute && p.RecomputeLayers is null)) && (SequenceParallel is null || p.SequenceParallel == SequenceParallel)
        && (Precision is null || p.Precision == Precision);

    /// <summary>The pinned values as "tp=4 zero=1", for notes.</summary>
    public string Describe()
    {
        var parts = new List<string>();
        if (Tp is int tp) parts.Add($"tp={tp}");
        if (Pp is int pp) parts.Add($"pp={pp}");
        if (Dp is int dp) parts.Add($"dp={dp}");
        if (Cp is int cp) parts.Add($"cp={cp}");
        if (Zero is int zero) parts.Add($"zero={zero}");
        if (Mbs is int mbs) parts.Add($"mbs={mbs}");
        if (Vpp is int vpp) parts.Add($"vpp={vpp}");
        if (Recompute is { } rc) parts.Add($"recompute={ParallelPlan.Name(rc)}");
        if (SequenceParallel is bool sp) parts.Add($"sequence_parallel={(sp ? "true" : "false")}");
        if (Precision is { } p) parts.Add($"precision={p.Name()}");
        return string.Join(' ', parts);
    }

    /// <summary>
    /// The precision used when none is pinned: bf16, or the first of fp16 and fp32 the GPU has (a V100 has no bf16,
    /// the local CPU only fp32; on a cluster of several GPU groups, the first every group has), so that a sweep
    /// over GPUs compares each at its usual training precision.
    /// </summary>
    public static Precision DefaultPrecision(ClusterSpec cluster)
    {
        foreach (var p in new[] { PrecisionKind.Bf16, PrecisionKind.Fp16, PrecisionKind.Fp32 })
            if (cluster.GroupList.All(g => g.Gpu.Supports(p)))
                return p;
        return PrecisionKind.Bf16;
    }
}
