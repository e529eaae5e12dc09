using System.Globalization;
using Planner.CostModel.Pipeline;
using Planner.CostModel.Specs;

namespace Planner.CostModel.Plans;

/// <summary>
/// Structural checks of a plan against a model and a cluster: divisibility and counts. A plan that fails is not an
/// error of the program: each failure is a <see cref="PlanProblem"/> keyed by the plan's field, which the caller
/// names in its own terms (the CLI as a flag, a plan file as a key).
/// </summary>
/// <remarks>
/// One walk serves both uses: <see cref="Problems"/> collects every problem, <see cref="Problem"/> stops at the first
/// without a list (the search calls it for every plan it enumerates). A check that needs an earlier one to pass (a
/// divisibility by a degree below 1, a split of micro-batches that do not divide) is skipped when that one failed.
/// </remarks>
public static class PlanCheck
{
    /// <summary>Every reason the plan cannot run on this model and cluster; empty when it can.</summary>
    public static IReadOnlyList<PlanProblem> Problems(ModelSpec m, ClusterSpec c, ParallelPlan p)
    {
        var found = new Findings(new List<PlanProblem>());
        Check(m, c, p, ref found);
        return found.All!;
    }

    /// <summary>The first reason the plan cannot run on this model and cluster, or null.</summary>
    public static PlanProblem? Problem(ModelSpec m, ClusterSpec c, ParallelPlan p)
    {
        var found = new Findings(null);
        Check(m, c, p, ref found);
        return found.First;
    }

    /// <summary>The first reason a TP degree (at least 1) cannot shard this model's heads and MLP, or null.</summary>
    public static PlanProblem? TpProblem(ModelSpec m, int tp)
    {
        var found = new Findings(null);
        Tp(m, tp, ref found);
        return found.First;
    }

    /// <summary>Every reason a TP degree (at least 1) cannot shard this model's heads and MLP; empty when it can.</summary>
    public static IReadOnlyList<PlanProblem> TpProblems(ModelSpec m, int tp)
    {
        var found = new Findings(new List<PlanProblem>());
        Tp(m, tp, ref found);
        return found.All!;
    }

    /// <summary>Every reason the expert-parallel fields do not suit this model, or split its experts over a stage's ranks.</summary>
    public static IReadOnlyList<PlanProblem> ExpertProblems(ModelSpec m, ParallelPlan p)
    {
        var found = new Findings(new List<PlanProblem>());
        Expert(m, p, countsValid: p.Tp >= 1 && p.Cp >= 1 && p.Dp >= 1, ref found);
        return found.All!;
    }

    /// <summary>What a walk found: every problem into <see cref="All"/>, or only <see cref="First"/> when there is no list.</summary>
    private ref struct Findings(List<PlanProblem>? all)
    {
        public readonly List<PlanProblem>? All = all;
        public PlanProblem? First;
        public int Count;

        /// <summary>Records a problem; true when the walk should stop (only the first was asked for).</summary>
        public bool Stop(string field, string value, string reason)
        {
            var problem = new PlanProblem(field, value, reason);
            First ??= problem;
            All?.Add(problem);
            Count++;
            return All is null;
        }

        public bool Stop(string field, int value, string reason) => Stop(field, Text(value), reason);

        public bool Stop(string field, double value, string reason) => Stop(field, Text(value), reason);
    }

    private static string Text(int v) => v.ToString(CultureInfo.InvariantCulture);

    private static string Text(long v) => v.ToString(CultureInfo.InvariantCulture);

    private static string Text(double v) => v.ToString(CultureInfo.InvariantCulture);

    private static void Check(ModelSpec m, ClusterSpec c, ParallelPlan p, ref Findings f)
    {
        // Counts: most checks below divide by them, so they run only when every count is at least 1.
        if (AtLeastOne("tp", p.Tp, ref f) || AtLeastOne("pp", p.Pp, ref f) || AtLeastOne("dp", p.Dp, ref f) || AtLeastOne("cp", p.Cp, ref f)
            || AtLeastOne("vpp", p.Vpp, ref f) || AtLeastOne("mbs", p.Mbs, ref f) || AtLeastOne("gbs", p.Gbs, ref f) || AtLeastOne("seq", p.Seq, ref f))
            return;
        bool counts = f.Count == 0;
        if (p.Zero is < 0 or > 3 && f.Stop("zero", p.Zero, $"{p.Zero} is not a ZeRO stage (expected 0, 1, 2 or 3)"))
            return;
        if (counts && (Gpus(c, p, ref f) || Tp(m, p.Tp, ref f)))
            return;
        if (Expert(m, p, counts, ref f) || (counts && Shape(m, p, ref f)))
            return;
        if (RecomputeLayers(m, p, counts, ref f) || Offload(c, p, ref f) || Stages(m, c, p, ref f) || FineTune(m, p, ref f))
            return;
        if (c.IsHeterogeneous && p.Stages?.Groups is null
            && f.Stop("cluster", c.Name, $"'{c.Name}' has several GPU groups: a plan on it must assign its stages to groups, as a searched plan does"))
            return;
        foreach (var group in c.GroupList)
            if (!group.Gpu.Supports(p.Precision)
                && f.Stop("precision", p.Precision.Name(), $"GPU '{group.Gpu.Name}' has no {p.Precision.Name()} rate (it lists {string.Join(", ", group.Gpu.PeakTflops.Keys.Select(k => k.Name()))})"))
                return;
    }

    /// <summary>Records a count below 1; true when the walk should stop.</summary>
    private static bool AtLeastOne(string field, int v, ref Findings f) => v < 1 && f.Stop(field, v, $"{v} must be at least 1");

    /// <summary>Why the plan needs more GPUs than the cluster has; true when the walk should stop.</summary>
    private static bool Gpus(ClusterSpec c, ParallelPlan p, ref Findings f)
    {
        long gpus = (long)p.Tp * p.Pp * p.Dp * p.Cp;
        return gpus > c.TotalGpus && f.Stop("tp·pp·dp·cp", Text(gpus), $"{gpus} GPUs, more than the {c.TotalGpus} of cluster '{c.Name}'");
    }

    /// <summary>How the batch, the sequence and the layers split (the counts are at least 1 here); true when the walk should stop.</summary>
    private static bool Shape(ModelSpec m, ParallelPlan p, ref Findings f)
    {
        bool batches = p.Gbs % ((long)p.Dp * p.Mbs) == 0;
        if (!batches && f.Stop("gbs", p.Gbs, $"{p.Gbs} is not divisible by dp·mbs = {p.Dp}·{p.Mbs}"))
            return true;
        bool chunks = p.Seq % p.Cp == 0 && (p.Cp == 1 || (p.Seq / p.Cp) % 2 == 0);
        if (!chunks && f.Stop("seq", p.Seq, $"{p.Seq} is not divisible by 2·cp = {2 * p.Cp} (context parallelism splits each sequence in 2·cp chunks)"))
            return true;
        // Sequence parallelism splits each CP rank's whole chunks; with a ragged CP split there is nothing to check.
        if (chunks && p.SequenceParallel && p.Seq / p.Cp % p.Tp != 0
            && f.Stop("sequence_parallel", "true", $"the sequence {p.Seq / p.Cp} per CP rank is not divisible by tp = {p.Tp}"))
            return true;
        if (p.Seq > m.MaxSeq && m.Positions == PositionKind.Learned
            && f.Stop("seq", p.Seq, $"{p.Seq} is beyond the {m.MaxSeq} learned positions of '{m.Name}'"))
            return true;
        if (p.Pp * p.Vpp > m.Layers && f.Stop("pp·vpp", p.Pp * p.Vpp, $"{p.Pp * p.Vpp} model chunks for {m.Layers} layers"))
            return true;
        if (p.Vpp > 1 && p.Pp == 1)
            return f.Stop("vpp", p.Vpp, "interleaving needs pp of at least 2");
        // The schedule counts whole micro-batches per rank: only a batch that divides has them.
        return batches && ScheduleGenerator.Validate(p.Pp, p.Vpp, p.MicroBatches) is { } why && f.Stop("vpp", p.Vpp, why);
    }

    /// <summary>Why a TP degree (at least 1) cannot shard the heads and the MLP; true when the walk should stop.</summary>
    private static bool Tp(ModelSpec m, int tp, ref Findings f)
    {
        if (m.Heads % tp != 0 && f.Stop("tp", tp, $"{tp} does not divide the {m.Heads} attention heads of '{m.Name}'"))
            return true;
        if (m.KvHeads % tp != 0 && tp % m.KvHeads != 0
            && f.Stop("tp", tp, $"{tp} neither divides nor is a multiple of the {m.KvHeads} key/value heads of '{m.Name}'"))
            return true;
        if (m.Ffn % tp != 0 && HasDenseLayer(m) && f.Stop("tp", tp, $"{tp} does not divide the ffn size {m.Ffn} of '{m.Name}'"))
            return true;
        return m.Moe is { SharedFfn: > 0 } moe && moe.SharedFfn % tp != 0
            && f.Stop("tp", tp, $"{tp} does not divide the shared experts' ffn size {moe.SharedFfn} of '{m.Name}'");
    }

    private static bool HasDenseLayer(ModelSpec m)
    {
        for (int l = 0; l < m.Layers; l++)
            if (!m.IsMoeLayer(l))
                return true;
        return false;
    }

    /// <summary>
    /// Why the expert-parallel fields do not suit the model or split its experts; true when the walk should stop.
    /// <paramref name="countsValid"/>: tp, cp and dp are at least 1, so the stage's ranks can be counted.
    /// </summary>
    private static bool Expert(ModelSpec m, ParallelPlan p, bool countsValid, ref Findings f)
    {
        bool degrees = true;
        if (p.Ep < 1)
        {
            degrees = false;
            if (f.Stop("ep", p.Ep, $"{p.Ep} must be at least 1"))
                return true;
        }
        if (p.Etp < 1)
        {
            degrees = false;
            if (f.Stop("etp", p.Etp, $"{p.Etp} must be at least 1"))
                return true;
        }
        if (m.Moe is not { } moe)
        {
            if (p.Ep <= 1 && p.Etp <= 1 && p.MoeImbalance == 1 && p.MoeCapacity is null)
                return false;
            string dense = $"applies to mixture-of-experts models; '{m.Name}' is dense";
            return (p.Ep > 1 && f.Stop("ep", p.Ep, dense))
                || (p.Etp > 1 && f.Stop("etp", p.Etp, dense))
                || (p.MoeImbalance != 1 && f.Stop("moe_imbalance", p.MoeImbalance, dense))
                || (p.MoeCapacity is double cap && f.Stop("moe_capacity", cap, dense));
        }
        if (p.Ep >= 1 && moe.Experts % p.Ep != 0 && f.Stop("ep", p.Ep, $"{p.Ep} does not divide the {moe.Experts} experts of '{m.Name}'"))
            return true;
        if (p.Etp >= 1 && moe.ExpertFfn % p.Etp != 0 && f.Stop("etp", p.Etp, $"{p.Etp} does not divide the experts' ffn size {moe.ExpertFfn} of '{m.Name}'"))
            return true;
        long stage = (long)p.Tp * p.Cp * p.Dp, group = (long)p.Ep * p.Etp;
        if (degrees && countsValid && stage % group != 0
            && f.Stop("ep·etp", Text(group), $"{group} does not divide the tp·cp·dp = {stage} ranks of a pipeline stage (expert groups are carved from them)"))
            return true;
        // Experts held whole (etp 1) can take each TP rank's part of replicated tokens (the executor does); Megatron-Core
        // requires sequence parallelism for any MoE with tp > 1 (its export says so).
        if (p.Tp > 1 && p.Etp > 1 && !p.SequenceParallel
            && f.Stop("sequence_parallel", "false", $"mixture-of-experts blocks with experts split over etp = {p.Etp} need sequence parallelism (Megatron-Core requires it)"))
            return true;
        // Without sequence parallelism each TP rank routes an equal part of every sequence.
        if (p.Tp > 1 && p.Etp == 1 && !p.SequenceParallel && p.Seq / Math.Max(1, p.Cp) % p.Tp != 0
            && f.Stop("seq", p.Seq, $"{p.Seq / Math.Max(1, p.Cp)} tokens per sequence and rank do not split over tp = {p.Tp}: experts held whole without sequence parallelism route each TP rank's equal part"))
            return true;
        if ((double.IsNaN(p.MoeImbalance) || p.MoeImbalance < 1 || p.MoeImbalance > moe.Experts)
            && f.Stop("moe_imbalance", p.MoeImbalance, $"{p.MoeImbalance} is not a load factor from 1 (balanced) to the {moe.Experts} experts"))
            return true;
        return p.MoeCapacity is double c && (double.IsNaN(c) || c <= 0 || c > moe.Experts)
            && f.Stop("moe_capacity", c, $"{c} is not a capacity factor above 0 and at most the {moe.Experts} experts");
    }

    /// <summary>Why the partial full recompute does not suit the plan; true when the walk should stop.</summary>
    private static bool RecomputeLayers(ModelSpec m, ParallelPlan p, bool counts, ref Findings f)
    {
        if (p.RecomputeLayers is not { } k)
            return false;
        if (p.Recompute != Recompute.Full && f.Stop("recompute_layers", k, "applies to full recompute only (recompute full)"))
            return true;
        int perChunk = counts ? Pricing.StageLayout.MostBlocksPerChunk(m.Layers, p.Pp, p.Vpp) : 0;
        if (counts && (k < 1 || k >= perChunk)
            && f.Stop("recompute_layers", k, $"{k} must be between 1 and {perChunk - 1}, below the {perChunk} blocks of a model chunk (omit it to recompute every block)"))
            return true;
        return p.Stages is not null && f.Stop("recompute_layers", k, "not with an uneven stage split (stages carry their own recompute policy)");
    }

    /// <summary>Why the optimizer offload fraction does not suit the cluster; true when the walk should stop.</summary>
    private static bool Offload(ClusterSpec c, ParallelPlan p, ref Findings f)
    {
        double o = p.OptimizerOffload;
        if ((o is < 0 or > 1 || double.IsNaN(o)) && f.Stop("optimizer_offload", o, $"{o} is not a fraction from 0 to 1"))
            return true;
        return o > 0 && c.Host is null
            && f.Stop("optimizer_offload", o, $"cluster '{c.Name}' gives no 'host' (memory_gib, pcie_gbs, memory_bandwidth_gbs) to offload to");
    }

    /// <summary>Why the fine-tuning fields do not suit the plan or model; true when the walk should stop.</summary>
    private static bool FineTune(ModelSpec m, ParallelPlan p, ref Findings f)
    {
        if (p.FineTuning is not { } t)
            return false;
        if (t.Adapters && (t.Rank < 1 || t.Rank > m.Hidden)
            && f.Stop("lora_rank", t.Rank, $"{t.Rank} is not a rank from 1 to the model's hidden size {m.Hidden}"))
            return true;
        // bitsandbytes' NF4 weights are not sharded by ZeRO-3 here (its gathers and memory are priced for 16-bit weights).
        return t.QuantizedBase && p.Zero >= 3
            && f.Stop("finetune", FineTuning.Name(t.Method), "qlora keeps its 4-bit base whole on each rank: use zero 0, 1 or 2");
    }

    /// <summary>Why an uneven stage split does not suit the plan, model or cluster; true when the walk should stop.</summary>
    private static bool Stages(ModelSpec m, ClusterSpec c, ParallelPlan p, ref Findings f)
    {
        if (p.Stages is not { } st)
            return false;
        if (p.Vpp != 1 && f.Stop("stages", st.ToString(), $"an uneven stage split needs vpp = 1, not {p.Vpp}"))
            return true;
        if ((st.Layers.Count != p.Pp || st.Recompute.Count != p.Pp)
            && f.Stop("stages", st.ToString(), $"{st.Layers.Count} layer counts and {st.Recompute.Count} recompute policies for pp = {p.Pp}"))
            return true;
        // The texts of the lists are made only for a problem: the search checks every candidate split.
        if (st.Layers.Any(l => l < 1) || st.Layers.Sum() != m.Layers)
        {
            string layers = string.Join(",", st.Layers);
            if (f.Stop("stages.layers", layers, $"layers per stage {layers} must be at least 1 each and add up to the {m.Layers} of '{m.Name}'"))
                return true;
        }
        if (st.Groups is not { } groups)
            return false;
        if (groups.Count != p.Pp || groups.Any(g => g < 0 || g >= c.GroupList.Count))
        {
            // The GPUs per group can only be counted for groups that exist.
            string named = string.Join(",", groups);
            return f.Stop("stages.groups", named, $"groups {named} must name one of the {c.GroupList.Count} GPU groups of '{c.Name}' per stage");
        }
        long perStage = (long)p.Tp * p.Cp * p.Dp;
        for (int g = 0; g < c.GroupList.Count; g++)
        {
            int stages = groups.Count(x => x == g);
            if (stages * perStage > c.GroupGpus(g)
                && f.Stop("stages.groups", string.Join(",", groups), $"{stages} stages of {perStage} GPUs on group {g} of '{c.Name}', which has {c.GroupGpus(g)}"))
                return true;
        }
        return false;
    }
}
