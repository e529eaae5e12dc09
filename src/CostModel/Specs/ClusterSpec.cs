namespace Planner.CostModel.Specs;

/// <summary>One network tier as each GPU sees it.</summary>
/// <param name="BandwidthGbs">GB/s per GPU per direction.</param>
/// <param name="LatencyUs">Latency per hop (one message step of a collective), microseconds.</param>
/// <param name="Efficiency">Fraction of <paramref name="BandwidthGbs"/> that collectives reach as bus bandwidth.</param>
public sealed record LinkSpec(double BandwidthGbs, double LatencyUs, double Efficiency)
{
    /// <summary>Achieved bytes per second per GPU per direction.</summary>
    public double EffectiveBytesPerSecond => BandwidthGbs * 1e9 * Efficiency;

    /// <summary>Latency in seconds.</summary>
    public double LatencySeconds => LatencyUs * 1e-6;
}

/// <summary>A homogeneous cluster: nodes of identical GPUs joined by a fast domain inside and a network between.</summary>
/// <param name="PricePerGpuHour">Optional price in currency units per GPU-hour.</param>
public sealed record ClusterSpec(
    string Name,
    GpuSpec Gpu,
    int Nodes,
    int GpusPerNode,
    LinkSpec IntraNode,
    LinkSpec InterNode,
    double? PricePerGpuHour = null)
{
    /// <summary>All GPUs of the cluster.</summary>
    public int TotalGpus => Nodes * GpusPerNode;
}

/// <summary>Unit constants.</summary>
public static class Units
{
    /// <summary>Bytes in a GiB.</summary>
    public const double GiB = 1024.0 * 1024 * 1024;
}
