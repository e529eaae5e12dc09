using Planner.CostModel.Calibration;
using Planner.CostModel.Specs;
using Cal = Planner.CostModel.Calibration.Calibration;

namespace Planner.Cli.Profiling;

/// <summary>
/// One key of a calibration file: how its value is taken from a calibration (null: not written) and how a value read
/// is put into one. Text keys have <see cref="GetText"/> and <see cref="SetText"/>, number keys
/// <see cref="GetNumber"/> and <see cref="SetNumber"/>.
/// </summary>
/// <param name="Key">The file's key.</param>
/// <param name="Required">A file without it is refused (else a calibration read keeps the blank's value).</param>
/// <param name="Positive">A number the cost model divides by (a rate): 0 is refused, not priced as infinitely slow.</param>
public sealed record CalibrationKey(string Key, bool Required, Func<Cal, string>? GetText = null, Func<Cal, string, Cal>? SetText = null,
    Func<Cal, double?>? GetNumber = null, Func<Cal, double, Cal>? SetNumber = null, bool Positive = false)
{
    private static CalibrationKey Text(string key, Func<Cal, string> get, Func<Cal, string, Cal> set) => new(key, true, get, set);

    private static CalibrationKey Number(string key, Func<Cal, double?> get, Func<Cal, double, Cal> set, bool required = true, bool positive = false) =>
        new(key, required, GetNumber: get, SetNumber: set, Positive: positive);

    /// <summary>
    /// The calibration's keys of one value each, in the order written: one list for writing and reading. The keys of
    /// several values follow them: <see cref="ResidualPrefix"/>, <see cref="OpPrefix"/>, the profiled corrections
    /// (<see cref="ProfiledCorrections.Scalars"/>) and <see cref="VersionPrefix"/>.
    /// </summary>
    public static IReadOnlyList<CalibrationKey> Fields { get; } =
    [
        Text("cluster", c => c.Machine.Cluster, (c, v) => c with { Machine = c.Machine with { Cluster = v } }),
        Text("host", c => c.Machine.Host, (c, v) => c with { Machine = c.Machine with { Host = v } }),
        Text("cpu", c => c.Machine.Cpu, (c, v) => c with { Machine = c.Machine with { Cpu = v } }),
        Text("precision", c => c.Gemm.Precision, (c, v) => c with { Gemm = c.Gemm with { Precision = v } }),
        Number("peak_tflops", c => c.Gemm.PeakTflops, (c, v) => c with { Gemm = c.Gemm with { PeakTflops = v } }, positive: true),
        Number("gemm_efficiency", c => c.Gemm.Efficiency, (c, v) => c with { Gemm = c.Gemm with { Efficiency = v } }, positive: true),
        Number("gemm_half_dim", c => c.Gemm.HalfDim, (c, v) => c with { Gemm = c.Gemm with { HalfDim = v } }),
        Number("kernel_overhead_us", c => c.Kernels.OverheadUs, (c, v) => c.WithKernelOverheadUs(v)),
        Number("memory_bandwidth_gbs", c => c.Memory.BandwidthGbs, (c, v) => c with { Memory = c.Memory with { BandwidthGbs = v } }, positive: true),
        Number("reserved_gib", c => c.Memory.ReservedGib, (c, v) => c with { Memory = c.Memory with { ReservedGib = v } }),
        Number("intra_bandwidth_gbs", c => c.Intra.BandwidthGbs, (c, v) => c with { Intra = c.Intra with { BandwidthGbs = v } }, positive: true),
        Number("intra_latency_us", c => c.Intra.LatencyUs, (c, v) => c with { Intra = c.Intra with { LatencyUs = v } }),
        Number("inter_bandwidth_gbs", c => c.Inter.BandwidthGbs, (c, v) => c with { Inter = c.Inter with { BandwidthGbs = v } }, positive: true),
        Number("inter_latency_us", c => c.Inter.LatencyUs, (c, v) => c with { Inter = c.Inter with { LatencyUs = v } }),
        // Files from before these keys: not measured (element rate 0, no slowdown).
        Number("element_rate_g", c => c.Kernels.ElementRateG, (c, v) => c with { Kernels = c.Kernels with { ElementRateG = v } }, required: false),
        Number("overlap_slowdown", c => c.Kernels.OverlapSlowdown,
            (c, v) => c with { Kernels = c.Kernels with { OverlapSlowdown = Math.Min(v, GpuSpec.MaxOverlapSlowdown) } }, required: false),
    ];

    /// <summary>Keys of the GEMM residuals: this and the row's index; the value the three dimensions and the ratio.</summary>
    public const string ResidualPrefix = "gemm_residual.";

    /// <summary>Keys of the measured op rates: this and the op's name; the value ns per element forward and backward.</summary>
    public const string OpPrefix = "op.";

    /// <summary>Keys of the versions measured with: this and the version's name.</summary>
    public const string VersionPrefix = "version.";

    /// <summary>The calibration a file's values are read into: nothing measured.</summary>
    public static Cal Blank { get; } = new(new MeasuredMachine("", "", ""), new MeasuredGemm("", 0, 0, 0), new MeasuredKernels(0), new MeasuredMemory(0, 0),
        new MeasuredLink(0, 0), new MeasuredLink(0, 0), new Dictionary<string, string>());
}
