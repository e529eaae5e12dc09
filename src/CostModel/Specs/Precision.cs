namespace Planner.CostModel.Specs;

/// <summary>Arithmetic precision of the GEMMs (and, for mixed precision, of weights and activations).</summary>
public enum Precision { Fp32, Tf32, Fp16, Bf16, Fp8 }

/// <summary>Byte sizes and names of precisions.</summary>
public static class PrecisionInfo
{
    /// <summary>Bytes per element of activations and working weights at this precision.
    /// fp8 training keeps activations and weights in 16-bit and runs only the GEMMs in fp8.</summary>
    public static int ActivationBytes(this Precision p) => p switch
    {
        Precision.Fp32 or Precision.Tf32 => 4,
        _ => 2,
    };

    /// <summary>True when the optimizer keeps fp32 master weights beside lower-precision working weights.</summary>
    public static bool IsMixed(this Precision p) => p.ActivationBytes() < 4;

    /// <summary>The lower-case name used in flags, JSON and YAML.</summary>
    public static string Name(this Precision p) => p.ToString().ToLowerInvariant();

    /// <summary>Parses a lower-case precision name; null if unknown.</summary>
    public static Precision? TryParse(string s) => s.ToLowerInvariant() switch
    {
        "fp32" => Precision.Fp32,
        "tf32" => Precision.Tf32,
        "fp16" => Precision.Fp16,
        "bf16" => Precision.Bf16,
        "fp8" => Precision.Fp8,
        _ => null,
    };
}
