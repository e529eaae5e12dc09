namespace Planner.CostModel.Specs;

/// <summary>One network tier as each GPU sees it.</summary>
/// <param name="BandwidthGbs">GB/s per GPU per direction.</param>
/// <param name="LatencyUs">Latency per hop (one message step of a collective), microseconds.</param>
/// <param name="Efficiency">Fraction of <paramref name="BandwidthGbs"/> that collectives reach as bus bandwidth.</param>
/// <param name="AllToAllEfficiency">Fraction of <paramref name="BandwidthGbs"/> that an all-to-all's traffic reaches (every
/// rank exchanging with every other at once, in unevenly sized chunks: the expert-parallel token exchange).</param>
/// <param name="P2pLatencyUs">Latency of one point-to-point transfer where measured apart from the collectives'
/// (a profile), microseconds; null: <paramref name="LatencyUs"/>.</param>
/// <param name="ArrivalUs">What a collective started right after compute waits, beyond its latency, for its peers to
/// arrive and their communication threads to wake (measured where ranks share cores; 0 on a specified cluster),
/// microseconds, once per collective: collectives issued back to back (a data-parallel reduction's buckets) pay it once.</param>
public sealed record LinkSpec(double BandwidthGbs, double LatencyUs, double Efficiency, double AllToAllEfficiency = 1, double? P2pLatencyUs = null,
    double ArrivalUs = 0)
{
    /// <summary>Achieved bytes per second per GPU per direction.</summary>
    public double EffectiveBytesPerSecond => BandwidthGbs * 1e9 * Efficiency;

    /// <summary>Achieved bytes per second per GPU per direction of an all-to-all.</summary>
    public double AllToAllBytesPerSecond => BandwidthGbs * 1e9 * AllToAllEfficiency;

    /// <summary>Latency in seconds.</summary>
    public double LatencySeconds => LatencyUs * 1e-6;

    /// <summary>The peers' arrival in seconds (see <see cref="ArrivalUs"/>).</summary>
    public double ArrivalSeconds => ArrivalUs * 1e-6;

    /// <summary>A point-to-point transfer's latency in seconds.</summary>
    public double P2pLatencySeconds => (P2pLatencyUs ?? LatencyUs) * 1e-6;
}

/// <summary>The host side of a node: what offloading to CPU memory works with.</summary>
/// <param name="MemoryGib">CPU memory of a node, GiB.</param>
/// <param name="PcieGbs">Host link of one GPU, GB/s per direction as achieved (a PCIe switch shared by two GPUs
/// gives each half of the CPU uplink).</param>
/// <param name="MemoryBandwidthGbs">CPU memory bandwidth of a node, GB/s, that a CPU optimizer step streams through.</param>
public sealed record HostSpec(double MemoryGib, double PcieGbs, double MemoryBandwidthGbs)
{
    /// <summary>Fraction of the node's memory left to offloaded state (the rest: OS, data loaders, pinned staging).</summary>
    public const double UsableFraction = 0.8;

    /// <summary>Fraction of the memory bandwidth a vectorised CPU Adam reaches (DeepSpeed's CPU-Adam is memory bound).</summary>
    public const double OptimizerEfficiency = 0.5;

    /// <summary>Host-link bytes per second of one GPU.</summary>
    public double PcieBytesPerSecond => PcieGbs * 1e9;

    /// <summary>Offloadable bytes of one node.</summary>
    public double UsableBytes => MemoryGib * Units.GiB * UsableFraction;
}

/// <summary>A group of identical nodes in a heterogeneous cluster.</summary>
/// <param name="Gpu">The group's GPU.</param>
/// <param name="Nodes">Nodes in the group.</param>
public sealed record GpuGroup(GpuSpec Gpu, int Nodes);

/// <summary>
/// A cluster: nodes of GPUs joined by a fast domain inside and a network between. A heterogeneous cluster lists
/// <paramref name="Groups"/> of nodes with different GPUs (same node size and network); pipeline stages are then
/// assigned to groups, and <paramref name="Gpu"/> and <paramref name="Nodes"/> describe the first group and the total.
/// </summary>
/// <param name="PricePerGpuHour">Optional price in currency units per GPU-hour.</param>
/// <param name="Groups">GPU groups of a heterogeneous cluster.</param>
/// <param name="Source">How to load the cluster again: the preset name, or the full path of its file.</param>
/// <param name="Host">The nodes' CPU memory and host links; null when the file gives none (no offloading then).</param>
/// <param name="NvlinkDomainSize">GPUs that share one NVLink fabric, whole nodes of them (72 on NVL72 racks whose trays
/// hold 4 GPUs); null: one node. <see cref="IntraNode"/> is the fabric's link, <see cref="InterNode"/> the network
/// between domains.</param>
/// <param name="Operations">Power, carbon, reliability and checkpoint storage of whole runs (null: none given).</param>
public sealed record ClusterSpec(
    string Name,
    GpuSpec Gpu,
    int Nodes,
    int GpusPerNode,
    LinkSpec IntraNode,
    LinkSpec InterNode,
    double? PricePerGpuHour = null,
    IReadOnlyList<GpuGroup>? Groups = null,
    string? Source = null,
    HostSpec? Host = null,
    int? NvlinkDomainSize = null,
    OperationsSpec? Operations = null)
{
    /// <summary>All GPUs of the cluster.</summary>
    public int TotalGpus => Nodes * GpusPerNode;

    /// <summary>GPUs of one NVLink domain: consecutive ranks up to this many talk over <see cref="IntraNode"/>.</summary>
    public int NvlinkDomain => NvlinkDomainSize ?? GpusPerNode;

    /// <summary>
    /// What is wrong with an NVLink domain of <paramref name="domain"/> GPUs on nodes of <paramref name="perNode"/>
    /// (a domain holds whole nodes), or null when it is sound or not given.
    /// </summary>
    public static string? DomainProblem(int? domain, int perNode) =>
        domain is int d && (d < perNode || d % perNode != 0)
            ? $"nvlink_domain is {d}; expected a multiple of gpus_per_node ({perNode}): a domain holds whole nodes"
            : null;

    /// <summary>True when the cluster has groups of different GPUs.</summary>
    public bool IsHeterogeneous => Groups is { Count: > 1 };

    /// <summary>Groups of the cluster (one for a homogeneous cluster).</summary>
    public IReadOnlyList<GpuGroup> GroupList => Groups ?? [new GpuGroup(Gpu, Nodes)];

    /// <summary>
    /// Share of each GPU's memory a plan leaves free by default: what the memory model does not count and a run still
    /// needs at times: NCCL's communicator buffers (a GiB or two on large jobs), the caching allocator's transient peaks
    /// beyond the fragmentation the model adds, and kernels' workspaces. Nobody launches at 99.8 % of memory.
    /// </summary>
    public const double DefaultMemoryHeadroom = 0.05;

    /// <summary>The cluster with each GPU's memory less a headroom <paramref name="fraction"/> (0 to below 1): what the
    /// planner lets a plan use.</summary>
    public ClusterSpec WithMemoryHeadroom(double fraction)
    {
        if (fraction == 0)
            return this;
        GpuSpec Less(GpuSpec g) => g with { MemoryGib = g.MemoryGib * (1 - fraction) };
        return this with { Gpu = Less(Gpu), Groups = Groups?.Select(g => g with { Gpu = Less(g.Gpu) }).ToList() };
    }

    /// <summary>The cluster as one group sees it: its GPU and node count, the shared network.</summary>
    public ClusterSpec ForGroup(int group) =>
        Groups is null ? this : this with { Gpu = Groups[group].Gpu, Nodes = Groups[group].Nodes, Groups = null };

    /// <summary>GPUs of a group.</summary>
    public int GroupGpus(int group) => GroupList[group].Nodes * GpusPerNode;
}

/// <summary>Unit constants.</summary>
public static class Units
{
    /// <summary>Bytes in a GiB.</summary>
    public const double GiB = 1024.0 * 1024 * 1024;
}
