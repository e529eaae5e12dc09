namespace Planner.CostModel.Specs;

/// <summary>
/// Arithmetic precision of the GEMMs (and, for mixed precision, of weights and activations). The low-precision formats
/// run the blocks' linear layers in 8 or 4 bits and everything else in bf16; they differ in how values are scaled.
/// </summary>
public enum Precision
{
    /// <summary>IEEE single precision.</summary>
    Fp32,
    /// <summary>TensorFloat-32 GEMMs on fp32 values.</summary>
    Tf32,
    /// <summary>Half precision with loss scaling.</summary>
    Fp16,
    /// <summary>bfloat16.</summary>
    Bf16,
    /// <summary>FP8 with delayed scaling: one scale per tensor from the amax history of earlier steps.</summary>
    Fp8,
    /// <summary>FP8 with current (per-tensor, just-in-time) scaling: each cast first reduces the tensor's amax.</summary>
    Fp8Cs,
    /// <summary>MXFP8: FP8 values with one power-of-two scale per 32 consecutive elements (Blackwell).</summary>
    Mxfp8,
    /// <summary>NVFP4: 4-bit values with an FP8 scale per 16 elements and a per-tensor scale (Blackwell).</summary>
    Nvfp4,
}

/// <summary>Byte sizes and names of precisions.</summary>
public static class PrecisionInfo
{
    /// <summary>Every precision with its name in flags, JSON and YAML.</summary>
    public static IReadOnlyList<(Precision Precision, string Name)> All { get; } =
    [
        (Precision.Fp32, "fp32"), (Precision.Tf32, "tf32"), (Precision.Fp16, "fp16"), (Precision.Bf16, "bf16"),
        (Precision.Fp8, "fp8"), (Precision.Fp8Cs, "fp8-cs"), (Precision.Mxfp8, "mxfp8"), (Precision.Nvfp4, "nvfp4"),
    ];

    /// <summary>Names of every precision, for help texts and errors.</summary>
    public static string Names => string.Join(", ", All.Select(p => p.Name));

    /// <summary>Bytes per element of activations and working weights at this precision.
    /// The low-precision formats keep activations and weights in bf16 and quantize the GEMMs' operands.</summary>
    public static int ActivationBytes(this Precision p) => p switch
    {
        Precision.Fp32 or Precision.Tf32 => 4,
        _ => 2,
    };

    /// <summary>True when the optimizer keeps fp32 master weights beside lower-precision working weights.</summary>
    public static bool IsMixed(this Precision p) => p.ActivationBytes() < 4;

    /// <summary>True for the formats that quantize the linear layers' operands (FP8 and FP4).</summary>
    public static bool IsQuantized(this Precision p) => p >= Precision.Fp8;

    /// <summary>The precision whose peak rate a GPU lists for this one: current scaling runs at the FP8 rate.</summary>
    public static Precision RateKey(this Precision p) => p == Precision.Fp8Cs ? Precision.Fp8 : p;

    /// <summary>The lower-case name used in flags, JSON and YAML.</summary>
    public static string Name(this Precision p) => All.First(x => x.Precision == p).Name;

    /// <summary>Parses a precision name; null if unknown.</summary>
    public static Precision? TryParse(string s)
    {
        foreach (var (p, name) in All)
            if (string.Equals(name, s, StringComparison.OrdinalIgnoreCase))
                return p;
        return null;
    }
}
