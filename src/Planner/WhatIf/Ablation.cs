using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;

namespace Planner.Cli.WhatIf;

/// <summary>One row of the technique table.</summary>
/// <param name="Technique">What the row adds to the rows above it.</param>
/// <param name="Plan">The plan chosen; null when no candidate of the row is valid.</param>
/// <param name="Prediction">Its price.</param>
/// <param name="Note">Why the row has no plan, or why its technique changes nothing.</param>
public sealed record AblationRow(string Technique, ParallelPlan? Plan, Prediction? Prediction, string? Note)
{
    /// <summary>True when the row's plan fits.</summary>
    public bool Fits => Prediction is { Fits: true };
}

/// <summary>
/// The technique table: starting from plain data parallelism in fp32, each row turns on one more technique and
/// keeps the choices of the rows above. For the row's technique the value with the best fitting step time is taken
/// (or, when none fits, the one that needs the least memory): the tensor-parallel degree within a node, the
/// pipeline degree with its interleaving; mixed precision, full recompute, the ZeRO stages and sequence parallelism
/// have one value. The micro-batch size is chosen by the same rule in the first row that has a valid plan and kept
/// after it, so that each row's change is its technique's alone (a ZeRO stage never raises the memory because a
/// larger micro-batch came with it).
/// </summary>
public static class Ablation
{
    /// <summary>The choices carried from row to row.</summary>
    private sealed record Knobs(Precision Precision, Recompute Recompute, int Tp, int Pp, int Vpp, int Zero, bool Sp, int? Mbs);

    /// <summary>The rows, in the table's order.</summary>
    public static IReadOnlyList<AblationRow> Run(ModelSpec model, ClusterSpec cluster, int gbs, int seq, PricingOptions? options = null)
    {
        options ??= PricingOptions.Default;
        var gpu = cluster.Gpu;
        int gpus = cluster.TotalGpus;
        var mixed = gpu.PeakTflops.ContainsKey(Precision.Bf16) ? Precision.Bf16
            : gpu.PeakTflops.ContainsKey(Precision.Fp16) ? Precision.Fp16 : (Precision?)null;

        var rows = new List<AblationRow>();
        var knobs = new Knobs(Precision.Fp32, Recompute.None, 1, 1, 1, 0, false, null);

        // With no valid candidate (say the global batch does not divide over that many replicas) a row keeps the
        // value that would need the least memory: the forced value, or the largest degree.
        void Step(string technique, Func<Knobs, IReadOnlyList<Knobs>> candidatesOf, string? note = null,
            Func<IReadOnlyList<Knobs>, Knobs>? fallback = null)
        {
            var candidates = candidatesOf(knobs);
            var carried = fallback?.Invoke(candidates) ?? candidates[0];
            var (row, chosen) = Choose(technique, model, cluster, gbs, seq, options, candidates, carried, note);
            rows.Add(row);
            knobs = chosen ?? carried;
        }

        Step("baseline (fp32, no recompute, plain DP)", k => [k]);
        if (mixed is { } mp)
            Step($"+ mixed precision ({mp.Name()})", k => [k with { Precision = mp }]);
        else
            Step("+ mixed precision", k => [k], $"GPU '{gpu.Name}' has no bf16 or fp16 rate");
        Step("+ activation recompute (full)", k => [k with { Recompute = Recompute.Full }]);
        Step("+ tensor parallelism", k => Enumerable.Range(1, Math.Min(cluster.NvlinkDomain, gpus))
            .Where(tp => cluster.NvlinkDomain % tp == 0 && gpus % (tp * k.Pp) == 0 && PlanCheck.TpProblem(model, tp) is null)
            .OrderBy(tp => tp == k.Tp ? 0 : 1).ThenBy(tp => tp)
            .Select(tp => k with { Tp = tp }).ToList(),
            fallback: list => list.MaxBy(x => x.Tp)!);
        Step("+ pipeline parallelism", k =>
        {
            var list = new List<Knobs> { k };
            for (int pp = 1; pp <= Math.Min(model.Layers, gpus / k.Tp); pp++)
            {
                if (gpus % (k.Tp * pp) != 0)
                    continue;
                for (int vpp = 1; vpp * pp <= model.Layers && (vpp == 1 || pp > 1); vpp++)
                    if (pp != k.Pp || vpp != k.Vpp)
                        list.Add(k with { Pp = pp, Vpp = vpp });
            }
            return list;
        }, fallback: list => list.Where(x => x.Vpp == 1).MaxBy(x => x.Pp)!);
        for (int stage = 1; stage <= 3; stage++)
        {
            int z = stage;
            int dp = gpus / (knobs.Tp * knobs.Pp);
            Step($"+ ZeRO-{z}", k => [k with { Zero = z }], dp == 1 ? "dp = 1: nothing to shard" : null);
        }
        if (knobs.Tp > 1)
            Step("+ sequence parallelism", k => [k with { Sp = true }]);
        else
            Step("+ sequence parallelism", k => [k], "needs tensor parallelism (TP 1 chosen)");
        return rows;
    }

    /// <summary>Prices every candidate (with every micro-batch size while none is chosen) and picks the best.</summary>
    private static (AblationRow Row, Knobs? Chosen) Choose(string technique, ModelSpec model, ClusterSpec cluster, int gbs, int seq,
        PricingOptions options, IReadOnlyList<Knobs> candidates, Knobs carried, string? note)
    {
        Prediction? best = null;
        Knobs? chosen = null;
        string? firstProblem = null, carriedProblem = null;
        foreach (var k in candidates)
        {
            int modelParallel = k.Tp * k.Pp;
            if (cluster.TotalGpus % modelParallel != 0)
                continue;
            int dp = cluster.TotalGpus / modelParallel;
            foreach (int mbs in k.Mbs is int fixedMbs ? [fixedMbs] : MicroBatchSizes(gbs, dp))
            {
                var plan = new ParallelPlan(k.Tp, k.Pp, dp, 1, k.Zero, mbs, gbs, seq, k.Vpp, k.Recompute, k.Sp, k.Precision);
                if (PlanCheck.Problem(model, cluster, plan) is { } problem)
                {
                    firstProblem ??= Commands.ProblemFlags.Describe(problem);
                    if (k == carried)
                        carriedProblem ??= Commands.ProblemFlags.Describe(problem);
                    continue;
                }
                var p = Pricer.Price(model, cluster, plan, options);
                if (best is null || Better(p, best))
                    (best, chosen) = (p, k with { Mbs = mbs });
            }
        }
        if (best is null)
            return (new AblationRow(technique, null, null, carriedProblem ?? firstProblem ?? $"no plan: tp·pp does not divide the {cluster.TotalGpus} GPUs"), null);
        string? why = note ?? (best.Fits ? null : $"needs {best.PeakMemoryGib:F1} of {best.GpuMemoryGib:F0} GiB");
        return (new AblationRow(technique, best.Plan, best, why), chosen);
    }

    /// <summary>A fitting plan beats one that does not; among fitting plans the faster (then leaner) wins, among the
    /// others the leaner (then faster).</summary>
    private static bool Better(Prediction a, Prediction b)
    {
        if (a.Fits != b.Fits)
            return a.Fits;
        return a.Fits
            ? a.StepTimeSeconds < b.StepTimeSeconds || (a.StepTimeSeconds == b.StepTimeSeconds && a.PeakMemoryGib < b.PeakMemoryGib)
            : a.PeakMemoryGib < b.PeakMemoryGib || (a.PeakMemoryGib == b.PeakMemoryGib && a.StepTimeSeconds < b.StepTimeSeconds);
    }

    /// <summary>Micro-batch sizes that divide the per-replica batch, up to 64 (as the search takes them).</summary>
    private static IEnumerable<int> MicroBatchSizes(int gbs, int dp)
    {
        if (gbs % dp != 0)
        {
            yield return 1; // invalid: PlanCheck names the problem
            yield break;
        }
        int perReplica = gbs / dp;
        for (int mbs = 1; mbs <= Math.Min(perReplica, 64); mbs++)
            if (perReplica % mbs == 0)
                yield return mbs;
    }
}
