using Planner.CostModel.Plans;
using Planner.CostModel.Specs;

namespace Planner.CostModel.Comm;

/// <summary>The parallel axes of the device mesh, and the groups carved from them.</summary>
public enum Axis
{
    /// <summary>Tensor parallelism.</summary>
    Tp,
    /// <summary>Context parallelism.</summary>
    Cp,
    /// <summary>Data parallelism.</summary>
    Dp,
    /// <summary>Pipeline parallelism.</summary>
    Pp,
    /// <summary>The ranks that hold the same dense weights in a stage: cp · dp of them (the dense gradients' reduction
    /// and ZeRO's sharding run over the data- and context-parallel ranks together, as Megatron-Core does).</summary>
    DpCp,
    /// <summary>Expert tensor parallelism: the ranks that split each expert's weights.</summary>
    Etp,
    /// <summary>Expert parallelism: the ranks that split the experts of a MoE block and exchange tokens.</summary>
    Ep,
    /// <summary>Expert data parallelism: the ranks of a stage that hold the same experts (tp·cp·dp / (ep·etp) of them).</summary>
    Edp,
}

/// <summary>
/// Rank placement: global rank = ((pp_index · dp + dp_index) · cp + cp_index) · tp + tp_index, i.e. TP innermost,
/// then CP, DP and PP outermost, so that the chattiest group stays inside the NVLink domain. The expert groups are
/// carved from the same tp·cp·dp ranks of each stage as Megatron-Core does: expert-TP innermost, then EP, then
/// expert-DP. From it follows which network tier each group's collectives cross and how many GPUs of a group share an
/// NVLink domain. Consecutive ranks fill a domain. Where a domain holds several nodes (NVL72 racks of 4-GPU trays),
/// the job's nodes are spread evenly over the fewest domains that hold them (a scheduler's block placement: 64 trays
/// on four 18-tray racks take 16 of each); a group no wider than a domain's share stays inside one unless a domain's
/// boundary cuts it, and then its rank with the fewest peers on its side sets the group's members per domain.
/// </summary>
/// <param name="Plan">The plan.</param>
/// <param name="GpusPerDomain">GPUs of one NVLink domain.</param>
/// <param name="GpusPerNode">GPUs of a node, when a domain holds several (0: domains of GpusPerDomain consecutive ranks).</param>
public sealed record Placement(ParallelPlan Plan, int GpusPerDomain, int GpusPerNode = 0)
{
    /// <summary>The placement of a plan on a cluster.</summary>
    public static Placement For(ParallelPlan plan, ClusterSpec cluster) => new(plan, cluster.NvlinkDomain, cluster.GpusPerNode);

    /// <summary>Distance in global ranks between neighbours of an axis' group.</summary>
    public int Stride(Axis axis) => axis switch
    {
        Axis.Tp or Axis.Etp => 1,
        Axis.Cp or Axis.DpCp => Plan.Tp,
        Axis.Dp => Plan.Tp * Plan.Cp,
        Axis.Pp => Plan.Tp * Plan.Cp * Plan.Dp,
        Axis.Ep => Plan.Etp,
        Axis.Edp => Plan.Etp * Plan.Ep,
        _ => throw new ArgumentOutOfRangeException(nameof(axis)),
    };

    /// <summary>Size of an axis' group.</summary>
    public int Size(Axis axis) => axis switch
    {
        Axis.Tp => Plan.Tp,
        Axis.Cp => Plan.Cp,
        Axis.Dp => Plan.Dp,
        Axis.Pp => Plan.Pp,
        Axis.DpCp => Plan.Cp * Plan.Dp,
        Axis.Etp => Plan.Etp,
        Axis.Ep => Plan.Ep,
        Axis.Edp => Plan.ExpertDp,
        _ => throw new ArgumentOutOfRangeException(nameof(axis)),
    };

    /// <summary>Members of one group that sit in the same NVLink domain (at least 1).</summary>
    public int MembersPerDomain(Axis axis)
    {
        int stride = Stride(axis), size = Size(axis);
        int share = GpusPerDomain;
        if (GpusPerNode > 0 && GpusPerDomain > GpusPerNode)
        {
            // The job's nodes spread evenly over the fewest domains that hold them: the smallest share sets the fit.
            int nodes = (Plan.Gpus + GpusPerNode - 1) / GpusPerNode, perDomain = GpusPerDomain / GpusPerNode;
            int domains = (nodes + perDomain - 1) / perDomain, least = nodes / domains, larger = nodes % domains;
            share = least * GpusPerNode;
            long span = (long)stride * size;
            if (span <= share)
            {
                // Groups fill blocks of `span` consecutive ranks (stride interleaved groups each). The domains' shares, the
                // larger ones first, end at boundaries; a boundary inside a block splits its groups, and the rank on the
                // smaller side of the worst split sets the members that share its domain.
                int worst = size;
                long boundary = 0;
                for (int d = 0; d < domains - 1; d++)
                {
                    boundary += (d < larger ? least + 1L : least) * GpusPerNode;
                    long offset = boundary % span;
                    if (offset == 0)
                        continue;
                    // Members of a split group before the boundary: offset / stride, rounded down or up by the group's place.
                    long below = offset / stride;
                    foreach (long first in offset % stride == 0 ? [below] : new[] { below, below + 1 })
                        if (first > 0 && first < size)
                            worst = (int)Math.Min(worst, Math.Min(first, size - first));
                }
                return worst;
            }
        }
        if (stride >= share)
            return 1;
        // Domains hold `share` consecutive ranks; a group's members are stride apart.
        return Math.Max(1, Math.Min(size, share / stride));
    }

    /// <summary>True when one group of this axis spans more than one NVLink domain.</summary>
    public bool CrossesDomains(Axis axis) => Size(axis) > MembersPerDomain(axis);

    /// <summary>Global ranks of the group of an axis that contains <paramref name="rank"/>.</summary>
    public int[] GroupOf(Axis axis, int rank)
    {
        int stride = Stride(axis), size = Size(axis);
        int index = rank / stride % size;
        int first = rank - index * stride;
        var members = new int[size];
        for (int i = 0; i < size; i++)
            members[i] = first + i * stride;
        return members;
    }
}
