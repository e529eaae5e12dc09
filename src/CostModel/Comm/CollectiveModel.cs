using Planner.CostModel.Specs;

namespace Planner.CostModel.Comm;

/// <summary>Collective operations priced by the alpha–beta model.</summary>
public enum Collective { AllReduce, ReduceScatter, AllGather, AllToAll, SendRecv }

/// <summary>How a collective over a group that spans nodes is carried out.</summary>
public enum CollectiveAlgorithm
{
    /// <summary>One flat ring: every rank moves the full ring volume through the slowest tier the group spans,
    /// at that tier's per-GPU bandwidth. The published ZeRO-3 runs (Narayanan et al. 2021, Table 2) scale like this.</summary>
    Ring,
    /// <summary>Two levels: a ring inside each node over NVLink, then a ring across nodes on 1/perNode of the
    /// buffer per GPU (each GPU with its own NIC), as NCCL's tree/multi-channel algorithms approach.</summary>
    Hierarchical,
}

/// <summary>
/// Alpha–beta cost of collectives on a two-tier network (NVLink/NVSwitch inside a node, InfiniBand/RoCE between).
/// Bandwidth terms follow nccl-tests' bus-bandwidth convention: a ring all-reduce of S bytes over n ranks moves
/// 2·(n−1)/n·S through each GPU's link, reduce-scatter and all-gather (n−1)/n·S, where S is the full buffer.
/// A group spanning nodes runs as a flat ring on the network tier, or hierarchically (see <see cref="CollectiveAlgorithm"/>).
/// </summary>
public static class CollectiveModel
{
    /// <summary>
    /// Seconds for one collective on a group of <paramref name="size"/> ranks, <paramref name="perNode"/> of which
    /// share a node. <paramref name="bytes"/> is the full buffer (the all-reduce input, the all-gather output,
    /// the reduce-scatter input; for send/recv and all-to-all the bytes each rank sends in total).
    /// </summary>
    public static double Seconds(Collective op, double bytes, int size, int perNode, ClusterSpec cluster,
        CollectiveAlgorithm algorithm = CollectiveAlgorithm.Ring)
    {
        if (size <= 1 || bytes <= 0)
            return 0;
        perNode = Math.Clamp(perNode, 1, size);
        int nodes = (size + perNode - 1) / perNode;
        var intra = cluster.IntraNode;
        var inter = cluster.InterNode;
        var farthest = Farthest(size, perNode, cluster);
        switch (op)
        {
            case Collective.SendRecv:
                return farthest.P2pLatencySeconds + bytes / farthest.EffectiveBytesPerSecond;
            case Collective.AllToAll:
                {
                    // Each rank sends (n−1)/n of its bytes to all the others at once; the share bound for other domains
                    // crosses the network. One latency of the farthest tier: the exchanges run concurrently.
                    double intraBytes = bytes * (perNode - 1) / size;
                    double interBytes = bytes * (size - perNode) / size;
                    return farthest.LatencySeconds + farthest.ArrivalSeconds
                           + Math.Max(intraBytes / intra.AllToAllBytesPerSecond, interBytes / (nodes > 1 ? inter.AllToAllBytesPerSecond : double.PositiveInfinity));
                }
        }
        // Ring phases: 2(n−1) steps for all-reduce, (n−1) for reduce-scatter / all-gather.
        double factor = op == Collective.AllReduce ? 2.0 : 1.0;
        if (nodes == 1 || algorithm == CollectiveAlgorithm.Ring)
            return farthest.ArrivalSeconds + factor * ((size - 1) * farthest.LatencySeconds + (size - 1.0) / size * bytes / farthest.EffectiveBytesPerSecond);
        // Hierarchical: an intra-node phase on the full buffer among perNode ranks, then an inter-node ring
        // among `nodes` ranks on 1/perNode of it per GPU (every GPU has its own NIC in this model).
        double intraPart = perNode > 1
            ? factor * ((perNode - 1) * intra.LatencySeconds + (perNode - 1.0) / perNode * bytes / intra.EffectiveBytesPerSecond)
            : 0;
        double interPart = factor * ((nodes - 1) * inter.LatencySeconds + (nodes - 1.0) / nodes * (bytes / perNode) / inter.EffectiveBytesPerSecond);
        return farthest.ArrivalSeconds + intraPart + interPart;
    }

    /// <summary>
    /// The peers' arrival that one collective (not a point-to-point transfer) over the group pays within
    /// <see cref="Seconds(Collective, double, int, int, ClusterSpec, CollectiveAlgorithm)"/>: the farthest tier's
    /// <see cref="LinkSpec.ArrivalUs"/>. Collectives issued back to back pay it once; the others' share comes off.
    /// </summary>
    public static double Arrival(int size, int perNode, ClusterSpec cluster) =>
        size <= 1 ? 0 : Farthest(size, perNode, cluster).ArrivalSeconds;

    /// <summary>The same for a group of a placed axis.</summary>
    public static double Arrival(Placement placement, Axis axis, ClusterSpec cluster) =>
        Arrival(placement.Size(axis), placement.MembersPerDomain(axis), cluster);

    /// <summary>The same collective for a group of a placed axis.</summary>
    public static double Seconds(Collective op, double bytes, Placement placement, Axis axis, ClusterSpec cluster,
        CollectiveAlgorithm algorithm = CollectiveAlgorithm.Ring) =>
        Seconds(op, bytes, placement.Size(axis), placement.MembersPerDomain(axis), cluster, algorithm);

    /// <summary>The tier a group's collectives are bounded by: the network when it spans several domains, else the
    /// domain's own links.</summary>
    private static LinkSpec Farthest(int size, int perNode, ClusterSpec cluster)
    {
        perNode = Math.Clamp(perNode, 1, Math.Max(1, size));
        return (size + perNode - 1) / perNode > 1 ? cluster.InterNode : cluster.IntraNode;
    }
}
