namespace Planner.CostModel.Compute;

/// <summary>Dimensions of a (batched) GEMM: [M×K]·[K×N], repeated <see cref="Batch"/> times.</summary>
public readonly record struct GemmShape(double M, double N, double K, double Batch = 1)
{
    /// <summary>Multiply-adds count twice.</summary>
    public double Flops => 2 * M * N * K * Batch;
}

/// <summary>
/// One kernel of the forward pass on one rank: a GEMM (priced by FLOPs) or a memory-bound op (priced by bytes).
/// </summary>
/// <param name="Name">What it is, for breakdowns and tests.</param>
/// <param name="Gemm">The GEMM's shape, or null for a memory-bound op.</param>
/// <param name="Bytes">Bytes a memory-bound op reads and writes (0 for GEMMs: their traffic is within the FLOP-bound time).</param>
/// <param name="AttentionCore">Part of the attention core (scores, softmax, dropout, values): what selective recompute redoes.</param>
/// <param name="BackwardRatio">Backward FLOPs over forward FLOPs: 2 for a GEMM (input and weight gradients); 2.5 for
/// fused flash attention, whose backward recomputes the scores (Dao 2023: five GEMMs against the forward's two).</param>
/// <param name="Elements">Elements a memory-bound op evaluates a transcendental function on (exp, tanh), forward; its
/// backward evaluates as many again.</param>
/// <param name="Quantized">A linear layer of a block whose operands a low-precision format quantizes: it runs at that
/// format's rate (every other GEMM runs in bf16 under those formats).</param>
/// <param name="Grouped">The experts' GEMMs, run as one grouped GEMM over the rank's experts (<see cref="GemmShape.Batch"/>
/// of them, <see cref="GemmShape.M"/> tokens each).</param>
/// <param name="BackwardBytes">Bytes of the backward's memory-bound counterpart when it is not the default (reading the
/// saved input and the output gradient, writing the input gradient: twice the forward bytes); the quantization of the
/// output gradients for a quantize op.</param>
/// <param name="Frozen">A GEMM with a frozen weight (the base under LoRA): its backward computes the input gradient only,
/// no weight gradient.</param>
public sealed record Op(string Name, GemmShape? Gemm, double Bytes, bool AttentionCore = false, double BackwardRatio = 2, double Elements = 0,
    bool Quantized = false, bool Grouped = false, double? BackwardBytes = null, bool Frozen = false)
{
    /// <summary>FLOPs of the op (memory-bound ops count none).</summary>
    public double Flops => Gemm?.Flops ?? 0;

    /// <summary>A GEMM op.</summary>
    public static Op Matmul(string name, double m, double n, double k, double batch = 1, bool attentionCore = false, bool frozen = false) =>
        new(name, new GemmShape(m, n, k, batch), 0, attentionCore, Frozen: frozen);

    /// <summary>FLOPs of the weight gradients that a frozen GEMM skips in the backward (as many as its forward's).</summary>
    public double SkippedBackwardFlops => Frozen ? Flops : 0;

    /// <summary>Fused (flash) attention: both attention GEMMs in one kernel, no score matrix in memory. Causal
    /// masking lets it skip the blocks above the diagonal, about half of the work; a sliding window of
    /// <paramref name="window"/> keys leaves each query about that many.</summary>
    /// <param name="queries">Queries of one head.</param>
    /// <param name="keys">Keys of one head (the whole sequence).</param>
    /// <param name="qkDim">Width of a query and key.</param>
    /// <param name="vDim">Width of a value.</param>
    /// <param name="batchHeads">Sequences times heads.</param>
    /// <param name="window">Keys a query attends to (0: the causal context).</param>
    public static Op FlashAttention(double queries, double keys, double qkDim, double vDim, double batchHeads, int window = 0)
    {
        double d = (qkDim + vDim) / 2;
        if (window <= 0 || window >= keys)
            return new("flash_attention", new GemmShape(queries, keys, d, 2 * batchHeads * 0.5), 0, AttentionCore: true, BackwardRatio: 2.5);
        // Query p attends to min(p + 1, w) keys: on average w − w(w − 1)/(2s) of them.
        double mean = window - window * (window - 1.0) / (2 * keys);
        return new("flash_attention", new GemmShape(queries, window, d, 2 * batchHeads * mean / window), 0, AttentionCore: true, BackwardRatio: 2.5);
    }

    /// <summary>A memory-bound op (evaluating a transcendental function on <paramref name="elements"/> elements).</summary>
    public static Op Memory(string name, double bytes, bool attentionCore = false, double elements = 0) =>
        new(name, null, bytes, attentionCore, Elements: elements);
}
