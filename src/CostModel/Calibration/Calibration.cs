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
/// <param name="OpRates">Measured memory-bound ops by the cost model's op name (null: none).</param>
/// <param name="OptimizerNsPerParam">Measured optimizer step per parameter, ns (0: not measured).</param>
/// <param name="LinearForwardFactor">Measured linear-layer forward GEMMs over the priced ones (0: not measured).</param>
/// <param name="LinearBackwardFactor">Measured linear-layer backward GEMMs over the priced ones (0: not measured).</param>
/// <param name="BlockForwardFactor">Measured transformer block forward over its price (0: not measured).</param>
/// <param name="BlockBackwardFactor">Measured transformer block backward over its price (0: not measured).</param>
/// <param name="HeadForwardFactor">Measured final norm, LM head and loss forward over their price (0: not measured).</param>
/// <param name="HeadBackwardFactor">The same for their backward (0: not measured).</param>
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
    IReadOnlyDictionary<string, OpRate>? OpRates = null,
    double OptimizerNsPerParam = 0,
    double LinearForwardFactor = 0,
    double LinearBackwardFactor = 0,
    double BlockForwardFactor = 0,
    double BlockBackwardFactor = 0,
    double HeadForwardFactor = 0,
    double HeadBackwardFactor = 0)
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
            OpRates = OpRates is { Count: > 0 } ? OpRates : cluster.Gpu.OpRates,
            OptimizerNsPerParam = OptimizerNsPerParam > 0 ? OptimizerNsPerParam : cluster.Gpu.OptimizerNsPerParam,
            LinearForwardFactor = LinearForwardFactor > 0 ? LinearForwardFactor : cluster.Gpu.LinearForwardFactor,
            LinearBackwardFactor = LinearBackwardFactor > 0 ? LinearBackwardFactor : cluster.Gpu.LinearBackwardFactor,
            BlockForwardFactor = BlockForwardFactor > 0 ? BlockForwardFactor : cluster.Gpu.BlockForwardFactor,
            BlockBackwardFactor = BlockBackwardFactor > 0 ? BlockBackwardFactor : cluster.Gpu.BlockBackwardFactor,
            HeadForwardFactor = HeadForwardFactor > 0 ? HeadForwardFactor : cluster.Gpu.HeadForwardFactor,
            HeadBackwardFactor = HeadBackwardFactor > 0 ? HeadBackwardFactor : cluster.Gpu.HeadBackwardFactor,
        };
        return cluster with
        {
            Gpu = gpu,
            IntraNode = new LinkSpec(IntraBandwidthGbs, IntraLatencyUs, 1),
            InterNode = new LinkSpec(InterBandwidthGbs, InterLatencyUs, 1),
        };
    }
}
