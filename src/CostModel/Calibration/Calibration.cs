using Planner.CostModel.Specs;

namespace Planner.CostModel.Calibration;

/// <summary>
/// Measured parameters of one cluster's hardware (from <c>planner profile</c>) that replace the spec-sheet values:
/// the GEMM curve, memory bandwidth, per-kernel overhead, runtime memory, and each network tier's bandwidth and latency.
/// </summary>
/// <param name="Cluster">The cluster name it was measured for.</param>
/// <param name="Host">Host name of the machine.</param>
/// <param name="Cpu">CPU model (from /proc/cpuinfo) or GPU name: a file from other hardware is refused unless forced.</param>
/// <param name="PeakTflops">Peak rate used for the GEMM curve (the best measured rate divided by the fitted efficiency).</param>
/// <param name="ElementRateG">Billions of elements per second of a transcendental elementwise op (0: not measured).</param>
/// <param name="OverlapSlowdown">Measured slowdown of a kernel while an all-reduce runs beside it (null: not measured).</param>
/// <param name="GemmResiduals">Each profiled GEMM's measured time over the fitted curve's (null: none).</param>
/// <param name="Profiled">Corrections measured for the training software (null: none; each value not measured
/// leaves the cluster's own).</param>
public sealed record Calibration(
    string Cluster,
    string Host,
    string Cpu,
    string Precision,
    double PeakTflops,
    double GemmEfficiency,
    double GemmHalfDim,
    double KernelOverheadUs,
    double MemoryBandwidthGbs,
    double ReservedGib,
    double IntraBandwidthGbs,
    double IntraLatencyUs,
    double InterBandwidthGbs,
    double InterLatencyUs,
    IReadOnlyDictionary<string, string> Versions,
    double ElementRateG = 0,
    double? OverlapSlowdown = null,
    IReadOnlyList<GemmResidual>? GemmResiduals = null,
    ProfiledCorrections? Profiled = null)
{
    /// <summary>The cluster with these measurements in place of its spec values.</summary>
    public ClusterSpec Apply(ClusterSpec cluster)
    {
        var precision = PrecisionInfo.TryParse(Precision) ?? Specs.Precision.Fp32;
        var peaks = cluster.Gpu.PeakTflops.ToDictionary(kv => kv.Key, kv => kv.Value);
        peaks[precision] = PeakTflops;
        var gpu = cluster.Gpu with
        {
            PeakTflops = peaks,
            GemmEfficiency = GemmEfficiency,
            GemmHalfDim = GemmHalfDim,
            KernelOverheadUs = KernelOverheadUs,
            MemoryBandwidthGbs = MemoryBandwidthGbs,
            MemoryEfficiency = 1,
            ReservedGib = ReservedGib,
            ElementRateG = ElementRateG > 0 ? ElementRateG : cluster.Gpu.ElementRateG,
            OverlapSlowdown = OverlapSlowdown ?? cluster.Gpu.OverlapSlowdown,
            GemmResiduals = GemmResiduals,
            Profiled = Profiled?.Over(cluster.Gpu.Profiled) ?? cluster.Gpu.Profiled,
        };
        return cluster with
        {
            Gpu = gpu,
            IntraNode = new LinkSpec(IntraBandwidthGbs, IntraLatencyUs, 1, P2pLatencyUs: gpu.Profiled?.P2pLatencyUs, ArrivalUs: gpu.Profiled?.ArrivalUs ?? 0),
            InterNode = new LinkSpec(InterBandwidthGbs, InterLatencyUs, 1, P2pLatencyUs: gpu.Profiled?.P2pLatencyUs, ArrivalUs: gpu.Profiled?.ArrivalUs ?? 0),
        };
    }
}
