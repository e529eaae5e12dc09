namespace Planner.CostModel.Specs;

/// <summary>
/// One accelerator: peak dense rates, memory, and the few efficiency parameters that turn peaks into time.
/// </summary>
/// <param name="Name">Preset name or free text.</param>
/// <param name="PeakTflops">Dense (no sparsity) peak TFLOP/s per precision; a missing precision is unsupported.</param>
/// <param name="MemoryGib">Device memory, GiB.</param>
/// <param name="MemoryBandwidthGbs">Device memory bandwidth, GB/s (1e9 bytes/s).</param>
/// <param name="GemmEfficiency">Fraction of peak a large, well-shaped GEMM reaches.</param>
/// <param name="GemmHalfDim">GEMM dimension (elements) at which efficiency falls to half of <paramref name="GemmEfficiency"/>:
/// efficiency = GemmEfficiency · d / (d + GemmHalfDim) for each of the three GEMM dimensions, multiplied.</param>
/// <param name="MemoryEfficiency">Fraction of memory bandwidth that elementwise kernels reach.</param>
/// <param name="KernelOverheadUs">Fixed cost per kernel launch, microseconds.</param>
/// <param name="OverlapSlowdown">Fraction by which compute slows while a collective runs beside it (the
/// communication kernels take streaming multiprocessors and memory bandwidth).</param>
/// <param name="ReservedGib">Memory the runtime holds outside the allocator (CUDA context, library workspaces), GiB.</param>
/// <param name="ElementRateG">Billions of elements per second that ops evaluating a transcendental function per element
/// (softmax, GELU, SiLU, the loss's log-softmax) reach; 0 when they are memory-bound (GPUs, whose special-function
/// units outpace memory). On CPUs the exp and tanh cost more than moving the bytes.</param>
/// <param name="GemmResiduals">Measured GEMM shapes (dimensions sorted, largest first) with their measured time over
/// the efficiency curve's, from a profile; a GEMM near one of them (within 2x in each dimension) is priced with its
/// correction. Null: the curve alone.</param>
/// <param name="Profiled">Corrections a profile measured for the training software on this hardware (null: none).</param>
/// <param name="GroupedGemmEfficiency">Fraction of the dense GEMM curve's rate that the experts' grouped GEMMs reach
/// (one kernel over many small, unevenly sized GEMMs, with the token permutation's padding).</param>
/// <param name="QuantizedGemmEfficiency">Per low-precision format (<see cref="Precision.Fp8"/> for both per-tensor FP8
/// recipes, <see cref="Precision.Mxfp8"/>, <see cref="Precision.Nvfp4"/>), the fraction of the GEMM curve's efficiency
/// its GEMMs reach at that format's peak (scaled GEMMs fall further below their doubled peak than bf16 ones). The
/// loader fills in a format a GPU file leaves out with the fitted defaults (ClusterLoader.DefaultGpu); a spec built in
/// code without one reaches the curve.</param>
/// <param name="HostLinkGbs">The GPU's link to host memory, GB/s per direction as achieved (GPU key <c>host_link_gbs</c>),
/// for clusters that give no host (a cluster's <c>host.pcie_gbs</c> wins); 0: not known.</param>
/// <param name="TdpW">The spec sheet's maximum power of one GPU, W (GPU key <c>tdp_w</c>); null: not known.</param>
/// <param name="ClockFraction">The share of the peak rates a power cap leaves the GPU (<see cref="PowerCap"/>); 1 uncapped.</param>
public sealed record GpuSpec(
    string Name,
    IReadOnlyDictionary<Precision, double> PeakTflops,
    double MemoryGib,
    double MemoryBandwidthGbs,
    double GemmEfficiency,
    double GemmHalfDim,
    double MemoryEfficiency,
    double KernelOverheadUs,
    double OverlapSlowdown,
    double ReservedGib,
    double ElementRateG = 0,
    IReadOnlyList<GemmResidual>? GemmResiduals = null,
    ProfiledCorrections? Profiled = null,
    double GroupedGemmEfficiency = 1,
    IReadOnlyDictionary<Precision, double>? QuantizedGemmEfficiency = null,
    double HostLinkGbs = 0,
    double? TdpW = null,
    double ClockFraction = 1)
{
    /// <summary>The quantized-GEMM efficiency of a precision's format (1 for formats that quantize nothing or are not listed).</summary>
    public double QuantizedEfficiency(Precision p) =>
        p.IsQuantized() && QuantizedGemmEfficiency is { } q && q.TryGetValue(p.RateKey(), out double f) ? f : 1;

    /// <summary>Dense peak at a precision, FLOP/s; throws <see cref="InputException"/> when unsupported.</summary>
    public double PeakFlops(Precision p) =>
        PeakTflops.TryGetValue(p.RateKey(), out var t) && t > 0
            ? t * 1e12 * ClockFraction
            : throw new InputException($"precision: GPU '{Name}' has no {p.Name()} rate");

    /// <summary>The spec sheet's dense peak at a precision, FLOP/s, a power cap's slower clock left out: what MFU is
    /// counted against.</summary>
    public double SpecPeakFlops(Precision p) => PeakFlops(p) / ClockFraction;

    /// <summary>True when the GPU lists a rate for the precision (current-scaling FP8 runs at the FP8 rate).</summary>
    public bool Supports(Precision p) => PeakTflops.TryGetValue(p.RateKey(), out var t) && t > 0;

    /// <summary>
    /// Seconds of <paramref name="compute"/> seconds of kernels with <paramref name="comm"/> seconds of communication
    /// overlapped beside them: the compute slows by <see cref="OverlapSlowdown"/> while the communication runs, and
    /// the window lasts at least as long as the communication.
    /// </summary>
    /// <remarks>A slowdown of 1 or more (a measured machine whose communication takes the compute's own core, as
    /// CPU ranks do) overlaps nothing: the communication's time is paid in full, or more.</remarks>
    public double Overlapped(double compute, double comm) =>
        comm <= 0 ? compute
        : OverlapSlowdown >= 1 ? compute + OverlapSlowdown * comm
        : Math.Max(comm, compute + OverlapSlowdown * Math.Min(comm, compute / (1 - OverlapSlowdown)));

    /// <summary>The largest slowdown a profile may measure: communication beside compute costing twice its own time.</summary>
    public const double MaxOverlapSlowdown = 2;

    /// <summary>Memory in bytes.</summary>
    public double MemoryBytes => MemoryGib * Units.GiB;
}

/// <summary>A profiled GEMM: its dimensions sorted (largest first) and its measured time over the curve's.</summary>
public readonly record struct GemmResidual(double D1, double D2, double D3, double Ratio)
{
    /// <summary>The residual of a shape (dimensions in any order).</summary>
    public static GemmResidual Of(double m, double n, double k, double ratio)
    {
        var d = new[] { m, n, k };
        Array.Sort(d);
        return new GemmResidual(d[2], d[1], d[0], ratio);
    }

    /// <summary>Distance to a shape in log space over sorted dimensions: the sum and the largest of |ln(a/b)|.</summary>
    public (double Sum, double Max) Distance(double m, double n, double k)
    {
        var d = new[] { m, n, k };
        Array.Sort(d);
        double a = Math.Abs(Math.Log(D1 / d[2])), b = Math.Abs(Math.Log(D2 / d[1])), c = Math.Abs(Math.Log(D3 / d[0]));
        return (a + b + c, Math.Max(a, Math.Max(b, c)));
    }
}
