using Planner.CostModel.Pipeline;
using Planner.CostModel.Specs;

namespace Planner.CostModel.Plans;

/// <summary>
/// Structural checks of a plan against a model and a cluster: divisibility and counts. A plan that fails is
/// not an error of the program; the reason names the flag so that the CLI can report it as bad input.
/// </summary>
public static class PlanCheck
{
    /// <summary>Why a TP degree cannot shard this model's heads and MLP, or null.</summary>
    public static string? TpProblem(ModelSpec m, int tp)
    {
        if (m.Heads % tp != 0)
            return $"--tp: {tp} does not divide the {m.Heads} attention heads of '{m.Name}'";
        if (m.KvHeads % tp != 0 && tp % m.KvHeads != 0)
            return $"--tp: {tp} neither divides nor is a multiple of the {m.KvHeads} key/value heads of '{m.Name}'";
        bool dense = Enumerable.Range(0, m.Layers).Any(l => !m.IsMoeLayer(l));
        if (dense && m.Ffn % tp != 0)
            return $"--tp: {tp} does not divide the ffn size {m.Ffn} of '{m.Name}'";
        if (m.Moe is { SharedFfn: > 0 } moe && moe.SharedFfn % tp != 0)
            return $"--tp: {tp} does not divide the shared experts' ffn size {moe.SharedFfn} of '{m.Name}'";
        return null;
    }

    /// <summary>Why the expert-parallel degrees cannot split this model's experts over a stage's ranks, or null.</summary>
    public static string? ExpertProblem(ModelSpec m, ParallelPlan p)
    {
        if (p.Ep < 1 || p.Etp < 1)
            return "--ep and --etp must be at least 1";
        if (m.Moe is not { } moe)
            return p.Ep > 1 || p.Etp > 1 || p.MoeImbalance != 1 || p.MoeCapacity is not null
                ? $"--ep, --etp, --moe-imbalance and --moe-capacity apply to mixture-of-experts models; '{m.Name}' is dense"
                : null;
        if (moe.Experts % p.Ep != 0)
            return $"--ep: {p.Ep} does not divide the {moe.Experts} experts of '{m.Name}'";
        if (moe.ExpertFfn % p.Etp != 0)
            return $"--etp: {p.Etp} does not divide the experts' ffn size {moe.ExpertFfn} of '{m.Name}'";
        long stage = (long)p.Tp * p.Cp * p.Dp;
        if (stage % ((long)p.Ep * p.Etp) != 0)
            return $"--ep·--etp = {(long)p.Ep * p.Etp} does not divide the tp·cp·dp = {stage} ranks of a pipeline stage (expert groups are carved from them)";
        if (p.Tp > 1 && !p.SequenceParallel)
            return $"--sequence-parallel: mixture-of-experts blocks with tp = {p.Tp} need sequence parallelism (Megatron-Core requires it)";
        if (double.IsNaN(p.MoeImbalance) || p.MoeImbalance < 1 || p.MoeImbalance > moe.Experts)
            return $"--moe-imbalance: {p.MoeImbalance} is not a load factor from 1 (balanced) to the {moe.Experts} experts";
        if (p.MoeCapacity is double c && (double.IsNaN(c) || c <= 0 || c > moe.Experts))
            return $"--moe-capacity: {c} is not a capacity factor above 0 and at most the {moe.Experts} experts";
        return null;
    }

    /// <summary>The first reason the plan cannot run on this model and cluster, or null.</summary>
    public static string? Problem(ModelSpec m, ClusterSpec c, ParallelPlan p)
    {
        if (p.Tp < 1 || p.Pp < 1 || p.Dp < 1 || p.Cp < 1 || p.Vpp < 1 || p.Mbs < 1 || p.Gbs < 1 || p.Seq < 1)
            return "--tp, --pp, --dp, --cp, --vpp, --mbs, --gbs and --seq must be at least 1";
        if (p.Zero is < 0 or > 3)
            return $"--zero: {p.Zero} is not a ZeRO stage (expected 0, 1, 2 or 3)";
        if ((long)p.Tp * p.Pp * p.Dp * p.Cp > c.TotalGpus)
            return $"--tp·--pp·--dp·--cp = {(long)p.Tp * p.Pp * p.Dp * p.Cp} GPUs, more than the {c.TotalGpus} of cluster '{c.Name}'";
        if (TpProblem(m, p.Tp) is { } tpProblem)
            return tpProblem;
        if (ExpertProblem(m, p) is { } expertProblem)
            return expertProblem;
        if (p.Gbs % ((long)p.Dp * p.Mbs) != 0)
            return $"--gbs: {p.Gbs} is not divisible by dp·mbs = {p.Dp}·{p.Mbs}";
        if (p.Seq % p.Cp != 0 || (p.Cp > 1 && (p.Seq / p.Cp) % 2 != 0))
            return $"--seq: {p.Seq} is not divisible by 2·cp = {2 * p.Cp} (context parallelism splits each sequence in 2·cp chunks)";
        if (p.SequenceParallel && p.Seq / p.Cp % p.Tp != 0)
            return $"--sequence-parallel: the sequence {p.Seq / p.Cp} per CP rank is not divisible by tp = {p.Tp}";
        if (p.Seq > m.MaxSeq && m.Positions == PositionKind.Learned)
            return $"--seq: {p.Seq} is beyond the {m.MaxSeq} learned positions of '{m.Name}'";
        if (p.Pp * p.Vpp > m.Layers)
            return $"--pp·--vpp: {p.Pp * p.Vpp} model chunks for {m.Layers} layers";
        if (p.RecomputeLayers is { } k)
        {
            int perChunk = (m.Layers + p.Pp * p.Vpp - 1) / (p.Pp * p.Vpp);
            if (p.Recompute != Recompute.Full)
                return "--recompute-layers: applies to full recompute only (--recompute full)";
            if (k < 1 || k >= perChunk)
                return $"--recompute-layers: {k} must be between 1 and {perChunk - 1}, below the {perChunk} blocks of a model chunk (omit it to recompute every block)";
            if (p.Stages is not null)
                return "--recompute-layers: not with an uneven stage split (stages carry their own recompute policy)";
        }
        if (p.OptimizerOffload is < 0 or > 1 || double.IsNaN(p.OptimizerOffload))
            return $"--optimizer-offload: {p.OptimizerOffload} is not a fraction from 0 to 1";
        if (p.OptimizerOffload > 0 && c.Host is null)
            return $"--optimizer-offload: cluster '{c.Name}' gives no 'host' (memory_gib, pcie_gbs, memory_bandwidth_gbs) to offload to";
        if (p.Stages is { } st)
        {
            if (p.Vpp != 1)
                return "stages: an uneven stage split needs vpp = 1";
            if (st.Layers.Count != p.Pp || st.Recompute.Count != p.Pp)
                return $"stages: {st.Layers.Count} layer counts and {st.Recompute.Count} recompute policies for pp = {p.Pp}";
            if (st.Layers.Any(l => l < 1) || st.Layers.Sum() != m.Layers)
                return $"stages: layers per stage {string.Join(",", st.Layers)} must be at least 1 each and add up to the {m.Layers} of '{m.Name}'";
            if (st.Groups is { } groups)
            {
                if (groups.Count != p.Pp || groups.Any(g => g < 0 || g >= c.GroupList.Count))
                    return $"stages: groups {string.Join(",", groups)} must name one of the {c.GroupList.Count} GPU groups of '{c.Name}' per stage";
                int perStage = p.Tp * p.Cp * p.Dp;
                for (int g = 0; g < c.GroupList.Count; g++)
                    if (groups.Count(x => x == g) * perStage > c.GroupGpus(g))
                        return $"stages: {groups.Count(x => x == g)} stages of {perStage} GPUs on group {g} of '{c.Name}', which has {c.GroupGpus(g)}";
            }
        }
        if (c.IsHeterogeneous && p.Stages?.Groups is null)
            return $"cluster '{c.Name}' has several GPU groups: a plan on it must assign its stages to groups (use 'plan', which does)";
        if (p.Vpp > 1 && p.Pp == 1)
            return "--vpp: interleaving needs --pp of at least 2";
        if (ScheduleGenerator.Validate(p.Pp, p.Vpp, p.MicroBatches) is { } why)
            return $"--vpp: {why}";
        foreach (var group in c.GroupList)
            if (!group.Gpu.Supports(p.Precision))
                return $"--precision: GPU '{group.Gpu.Name}' has no {p.Precision.Name()} rate (it lists {string.Join(", ", group.Gpu.PeakTflops.Keys.Select(k => k.Name()))})";
        return null;
    }
}
