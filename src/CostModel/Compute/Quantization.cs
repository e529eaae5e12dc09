using Planner.CostModel.Specs;

namespace Planner.CostModel.Compute;

/// <summary>
/// How a low-precision format stores a quantized tensor and what casting a bf16 tensor to it costs (Transformer
/// Engine's recipes as Megatron-Core runs them). A GEMM's input is needed row-wise by the forward GEMM and column-wise by
/// the weight-gradient GEMM, its output gradient row-wise by the input-gradient GEMM and column-wise by the
/// weight-gradient GEMM: block-scaled formats quantize the two usages apart (their blocks run along different
/// dimensions), and per-tensor FP8 needs a transposed copy on GPUs whose FP8 tensor cores take one layout only (Hopper).
/// </summary>
/// <param name="ValueBytes">Bytes per quantized value: 1 for FP8, 0.5 for FP4.</param>
/// <param name="ScaleBytes">Bytes of scale per value: 1/32 for MXFP8 (an E8M0 exponent per 32 values), 1/16 for NVFP4
/// (an E4M3 scale per 16 values), 0 for one scale per tensor.</param>
/// <param name="AmaxPass">The cast first reads the tensor to find its absolute maximum (current scaling; NVFP4's
/// per-tensor scale); delayed scaling takes the scale from earlier steps and records the amax while casting.</param>
/// <param name="Usages">Quantized copies of a tensor: 2 when row-wise and column-wise usages are quantized apart or
/// transposed, else 1.</param>
public sealed record Quantization(double ValueBytes, double ScaleBytes, bool AmaxPass, int Usages)
{
    /// <summary>The format of a precision, or null when the precision quantizes nothing (bf16, fp16, fp32, tf32).</summary>
    /// <param name="precision">The training precision.</param>
    /// <param name="gpu">The GPU: a GPU with block-scaled formats (Blackwell) takes per-tensor FP8 in both layouts.</param>
    public static Quantization? Of(Precision precision, GpuSpec gpu)
    {
        bool oneLayout = !gpu.Supports(Precision.Mxfp8);
        return precision switch
        {
            Precision.Fp8 => new(1, 0, AmaxPass: false, Usages: oneLayout ? 2 : 1),
            Precision.Fp8Cs => new(1, 0, AmaxPass: true, Usages: oneLayout ? 2 : 1),
            Precision.Mxfp8 => new(1, 1.0 / 32, AmaxPass: false, Usages: 2),
            Precision.Nvfp4 => new(0.5, 1.0 / 16, AmaxPass: true, Usages: 2),
            _ => null,
        };
    }

    /// <summary>Bytes of one quantized copy per value.</summary>
    public double CopyBytes => ValueBytes + ScaleBytes;

    /// <summary>Bytes a cast of <paramref name="elements"/> bf16 values moves: the reads (two with an amax pass) and the
    /// quantized copies written.</summary>
    public double CastBytes(double elements) => elements * (2 * (AmaxPass ? 2 : 1) + Usages * CopyBytes);

    /// <summary>Bytes per parameter of the quantized weight copies kept beside the bf16 weights for a whole step (built at
    /// the first micro-batch and reused by the others).</summary>
    public double WeightCopyBytes => Usages * CopyBytes;

    /// <summary>Bytes per element of a GEMM input saved for the weight gradient (its column-wise copy).</summary>
    public double SavedInputBytes => CopyBytes;
}
