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
    double ElementRateG = 0)
{
    /// <summary>Dense peak at a precision, FLOP/s; throws <see cref="InputException"/> when unsupported.</summary>
    public double PeakFlops(Precision p) =>
        PeakTflops.TryGetValue(p, out var t) && t > 0
            ? t * 1e12
            : throw new InputException($"--precision: GPU '{Name}' has no {p.Name()} rate");

    /// <summary>
    /// Seconds of <paramref name="compute"/> seconds of kernels with <paramref name="comm"/> seconds of communication
    /// overlapped beside them: the compute slows by <see cref="OverlapSlowdown"/> while the communication runs, and
    /// the window lasts at least as long as the communication.
    /// </summary>
    public double Overlapped(double compute, double comm) =>
        comm <= 0 ? compute : Math.Max(comm, compute + OverlapSlowdown * Math.Min(comm, compute / (1 - OverlapSlowdown)));

    /// <summary>Memory in bytes.</summary>
    public double MemoryBytes => MemoryGib * Units.GiB;
}
