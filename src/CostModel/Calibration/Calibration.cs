using Planner.CostModel.Specs;

namespace Planner.CostModel.Calibration;

/// <summary>
/// Measured parameters of one cluster's hardware (from <c>planner profile</c>) that replace the spec-sheet values:
/// the GEMM curve, memory bandwidth, per-kernel overhead, runtime memory, and each network tier's bandwidth and latency.
/// </summary>
/// <param name="Machine">What was measured: the cluster, the host and its CPU (or GPU).</param>
/// <param name="Gemm">The GEMM curve fitted to the measured shapes.</param>
/// <param name="Kernels">What a kernel costs beyond the GEMM curve.</param>
/// <param name="Memory">The memory system's bandwidth and the runtime's own memory.</param>
/// <param name="Intra">The links between ranks of one node.</param>
/// <param name="Inter">The links between nodes.</param>
/// <param name="Versions">The software measured with (libtorch, .NET, the date, the ranks, the device).</param>
/// <param name="Profiled">Corrections measured for the training software (null: none; each value not measured
/// leaves the cluster's own).</param>
public sealed record Calibration(
    MeasuredMachine Machine,
    MeasuredGemm Gemm,
    MeasuredKernels Kernels,
    MeasuredMemory Memory,
    MeasuredLink Intra,
    MeasuredLink Inter,
    IReadOnlyDictionary<string, string> Versions,
    ProfiledCorrections? Profiled = null)
{
    /// <summary>This calibration with a kernel call costing <paramref name="us"/> microseconds.</summary>
    public Calibration WithKernelOverheadUs(double us) => this with { Kernels = Kernels with { OverheadUs = us } };

    /// <summary>The cluster with these measurements in place of its spec values.</summary>
    public ClusterSpec Apply(ClusterSpec cluster)
    {
        var precision = PrecisionInfo.TryParse(Gemm.Precision) ?? Precision.Fp32;
        var peaks = cluster.Gpu.PeakTflops.ToDictionary(kv => kv.Key, kv => kv.Value);
        peaks[precision] = Gemm.PeakTflops;
        var gpu = cluster.Gpu with
        {
            PeakTflops = peaks,
            GemmEfficiency = Gemm.Efficiency,
            GemmHalfDim = Gemm.HalfDim,
            KernelOverheadUs = Kernels.OverheadUs,
            MemoryBandwidthGbs = Memory.BandwidthGbs,
            MemoryEfficiency = 1,
            ReservedGib = Memory.ReservedGib,
            ElementRateG = Kernels.ElementRateG > 0 ? Kernels.ElementRateG : cluster.Gpu.ElementRateG,
            OverlapSlowdown = Kernels.OverlapSlowdown ?? cluster.Gpu.OverlapSlowdown,
            GemmResiduals = Gemm.Residuals,
            Profiled = Profiled?.Over(cluster.Gpu.Profiled) ?? cluster.Gpu.Profiled,
        };
        return cluster with { Gpu = gpu, IntraNode = Intra.Apply(gpu.Profiled), InterNode = Inter.Apply(gpu.Profiled) };
    }
}

/// <summary>What a calibration was measured on.</summary>
/// <param name="Cluster">The cluster name it was measured for.</param>
/// <param name="Host">Host name of the machine.</param>
/// <param name="Cpu">CPU model (from /proc/cpuinfo) or GPU name: a file from other hardware is refused unless forced.</param>
public sealed record MeasuredMachine(string Cluster, string Host, string Cpu);

/// <summary>The GEMM curve fitted to the measured shapes (see <see cref="GpuSpec.GemmEfficiency"/>).</summary>
/// <param name="Precision">The precision the GEMMs ran in.</param>
/// <param name="PeakTflops">Peak rate used for the curve (the best measured rate divided by the fitted efficiency).</param>
/// <param name="Efficiency">The curve's share of the peak for large GEMMs.</param>
/// <param name="HalfDim">The dimension at which a GEMM runs at half its large-size rate along it.</param>
/// <param name="Residuals">Each profiled GEMM's measured time over the fitted curve's (null: none).</param>
public sealed record MeasuredGemm(string Precision, double PeakTflops, double Efficiency, double HalfDim, IReadOnlyList<GemmResidual>? Residuals = null);

/// <summary>What a kernel costs beyond the GEMM curve.</summary>
/// <param name="OverheadUs">A kernel call's cost, microseconds.</param>
/// <param name="ElementRateG">Billions of elements per second of a transcendental elementwise op (0: not measured).</param>
/// <param name="OverlapSlowdown">Measured slowdown of a kernel while an all-reduce runs beside it (null: not measured).</param>
public sealed record MeasuredKernels(double OverheadUs, double ElementRateG = 0, double? OverlapSlowdown = null);

/// <summary>The memory system as measured.</summary>
/// <param name="BandwidthGbs">A memory-bound op's bandwidth per rank, GB/s.</param>
/// <param name="ReservedGib">The runtime's own memory per rank, GiB.</param>
public sealed record MeasuredMemory(double BandwidthGbs, double ReservedGib);

/// <summary>A network tier as fitted to its collectives.</summary>
/// <param name="BandwidthGbs">Bytes per second per rank, in GB/s.</param>
/// <param name="LatencyUs">Latency per ring step, microseconds.</param>
public sealed record MeasuredLink(double BandwidthGbs, double LatencyUs)
{
    /// <summary>The link as priced, with the profile's point-to-point latency and peers' arrival (if measured).</summary>
    public LinkSpec Apply(ProfiledCorrections? profiled) =>
        new(BandwidthGbs, LatencyUs, 1, P2pLatencyUs: profiled?.P2pLatencyUs, ArrivalUs: profiled?.ArrivalUs ?? 0);
}
