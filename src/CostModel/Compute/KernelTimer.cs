using Planner.CostModel.Specs;

namespace Planner.CostModel.Compute;

/// <summary>
/// Seconds of kernels on one GPU: GEMMs from the peak rate times an efficiency curve by size, memory-bound ops
/// from the memory bandwidth (or, on CPUs, their transcendental functions' element rate), each plus a fixed launch
/// overhead.
/// </summary>
public sealed class KernelTimer(GpuSpec gpu, Precision precision)
{
    /// <summary>Peak of the GEMMs a low-precision format quantizes (the blocks' linear layers); every GEMM otherwise.</summary>
    private readonly double _peak = gpu.PeakFlops(precision);
    /// <summary>Peak of the GEMMs a low-precision format leaves in bf16 (attention core, router, LM head).</summary>
    private readonly double _unquantizedPeak = precision.IsQuantized() ? gpu.PeakFlops(Precision.Bf16) : gpu.PeakFlops(precision);
    private readonly bool _quantized = precision.IsQuantized();
    private readonly double _quantizedEfficiency = gpu.QuantizedEfficiency(precision);
    private readonly double _bandwidth = gpu.MemoryBandwidthGbs * 1e9 * gpu.MemoryEfficiency;
    private readonly double _overhead = gpu.KernelOverheadUs * 1e-6;
    private readonly double _forwardFactor = gpu.Profiled?.LinearForward ?? 1;
    private readonly double _backwardFactor = gpu.Profiled?.LinearBackward ?? 1;
    private readonly double _elementSeconds = gpu.ElementRateG > 0 ? 1 / (gpu.ElementRateG * 1e9) : 0;

    /// <summary>
    /// Fraction of peak a GEMM reaches: the large-GEMM efficiency, scaled by d/(d + d½) for each dimension, so
    /// that thin GEMMs (a small hidden size per TP rank, a head dimension of 64) run further below peak.
    /// </summary>
    public double GemmEfficiency(GemmShape g)
    {
        double half = gpu.GemmHalfDim;
        return gpu.GemmEfficiency * g.M / (g.M + half) * g.N / (g.N + half) * g.K / (g.K + half);
    }

    /// <summary>Seconds of one GEMM: the efficiency curve, corrected by the nearest profiled shape if there is one
    /// within a factor 2 in each dimension.</summary>
    public double Gemm(GemmShape g) => Gemm(g, _unquantizedPeak);

    /// <summary>Seconds of one GEMM at a given peak (see <see cref="Gemm(GemmShape)"/>).</summary>
    private double Gemm(GemmShape g, double peak) => g.Flops / (peak * GemmEfficiency(g)) * Residual(g) + _overhead;

    /// <summary>Seconds of an op's GEMM: at the format's rate when quantized, over the grouped-GEMM efficiency when grouped.</summary>
    /// <remarks>A grouped GEMM runs one GEMM per expert (Transformer Engine's grouped linear layers): each pays the launch
    /// overhead.</remarks>
    private double Gemm(Op op, GemmShape g)
    {
        double seconds = op.Quantized && _quantized ? Gemm(g, _peak * _quantizedEfficiency) : Gemm(g, _unquantizedPeak);
        return op.Grouped ? (seconds - _overhead) / gpu.GroupedGemmEfficiency + g.Batch * _overhead : seconds;
    }

    private double Residual(GemmShape g)
    {
        if (gpu.GemmResiduals is not { Count: > 0 } residuals)
            return 1;
        double best = double.MaxValue, ratio = 1;
        foreach (var r in residuals)
        {
            var (sum, max) = r.Distance(g.M, g.N, g.K);
            if (max <= Math.Log(2) + 1e-9 && sum < best)
            {
                best = sum;
                ratio = r.Ratio;
            }
        }
        return ratio;
    }

    /// <summary>Seconds of a memory-bound kernel moving <paramref name="bytes"/> (and evaluating a transcendental
    /// function on <paramref name="elements"/> elements, when that is the slower part).</summary>
    public double Memory(double bytes, double elements = 0) => Math.Max(bytes / _bandwidth, elements * _elementSeconds) + _overhead;

    /// <summary>Forward seconds of an op.</summary>
    public double Forward(Op op) => op.Gemm is { } g ? _forwardFactor * Gemm(op, g) : Measured(op) is { } r ? op.Elements * r.ForwardNs * 1e-9 + _overhead : Memory(op.Bytes, op.Elements);

    /// <summary>The profiled rate of a memory-bound op, if the GPU has one for its name.</summary>
    private OpRate? Measured(Op op) =>
        op.Elements > 0 && gpu.Profiled?.OpRates is { } rates && rates.TryGetValue(op.Name, out var r) ? r : null;

    /// <summary>
    /// Backward seconds of an op: a GEMM's input gradient [M×N]·[N×K] and weight gradient [K×M]·[M×N] (the input
    /// gradient only for a frozen weight); a memory-bound op reads its saved input and the output gradient and writes
    /// the input gradient.
    /// </summary>
    public double Backward(Op op) => op.Gemm is { } g
        ? _backwardFactor * op.BackwardRatio / 2 * (Gemm(op, new GemmShape(g.M, g.K, g.N, g.Batch)) + (op.Frozen ? 0 : Gemm(op, new GemmShape(g.K, g.N, g.M, g.Batch))))
        : Measured(op) is { } r ? op.Elements * r.BackwardNs * 1e-9 + _overhead : Memory(op.BackwardBytes ?? 2 * op.Bytes, op.Elements);

    /// <summary>Forward seconds of a transformer block's ops (optionally only the attention core), with the profiled
    /// whole-block correction (its context-parallel one for a block whose sequence is split over <paramref name="cp"/>
    /// &gt; 1 ranks, its tensor-parallel one for a block split over <paramref name="tp"/> &gt; 1 ranks).</summary>
    public double BlockForward(IReadOnlyList<Op> ops, bool attentionCoreOnly = false, int tp = 1, int cp = 1) =>
        Forward(ops, attentionCoreOnly) * ((cp > 1 ? gpu.Profiled?.CpBlockForward : null)
            ?? BlockFactor(tp, gpu.Profiled?.TpBlockForward, gpu.Profiled?.BlockForward));

    /// <summary>Backward seconds of a transformer block's ops, with the profiled whole-block correction (its
    /// context-parallel one for <paramref name="cp"/> &gt; 1, its tensor-parallel one for <paramref name="tp"/> &gt; 1).</summary>
    public double BlockBackward(IReadOnlyList<Op> ops, int tp = 1, int cp = 1) =>
        Backward(ops) * ((cp > 1 ? gpu.Profiled?.CpBlockBackward : null)
            ?? BlockFactor(tp, gpu.Profiled?.TpBlockBackward, gpu.Profiled?.BlockBackward));

    /// <summary>The tensor-parallel factor for a split block where measured, else the whole block's, else 1.</summary>
    private static double BlockFactor(int tp, double? tensorParallel, double? whole) => (tp > 1 ? tensorParallel : null) ?? whole ?? 1;

    /// <summary>Forward seconds of the final norm, LM head and loss, with the profiled correction.</summary>
    public double HeadForward(IReadOnlyList<Op> ops) => Forward(ops) * (gpu.Profiled?.HeadForward ?? 1);

    /// <summary>Their backward seconds, with the profiled correction.</summary>
    public double HeadBackward(IReadOnlyList<Op> ops) => Backward(ops) * (gpu.Profiled?.HeadBackward ?? 1);

    /// <summary>Forward seconds of a list of ops (optionally only the attention core).</summary>
    public double Forward(IReadOnlyList<Op> ops, bool attentionCoreOnly = false)
    {
        double s = 0;
        foreach (var op in ops)
            if (!attentionCoreOnly || op.AttentionCore)
                s += Forward(op);
        return s;
    }

    /// <summary>Backward seconds of a list of ops.</summary>
    public double Backward(IReadOnlyList<Op> ops)
    {
        double s = 0;
        foreach (var op in ops)
            s += Backward(op);
        return s;
    }

    /// <summary>Seconds of an optimizer step over <paramref name="parameters"/> parameters whose state is
    /// <paramref name="bytes"/>: the profiled time per parameter where there is one, else a pass over the bytes.</summary>
    public double Optimizer(double parameters, double bytes) =>
        gpu.Profiled?.OptimizerNsPerParam is double ns ? parameters * ns * 1e-9 : Stream(bytes);

    /// <summary>Seconds of a memory-bound pass over <paramref name="bytes"/> with no launch cost (optimizer sweeps).</summary>
    public double Stream(double bytes) => bytes / _bandwidth;
}
