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
/// <param name="Elements">Elements a memory-bound op evaluates a transcendental function on (exp, tanh), forward; its
/// backward evaluates as many again.</param>
/// <param name="BackwardRatio">Backward FLOPs over forward FLOPs: 2 for a GEMM (input and weight gradients); 2.5 for
/// fused flash attention, whose backward recomputes the scores (Dao 2023: five GEMMs against the forward's two).</param>
public sealed record Op(string Name, GemmShape? Gemm, double Bytes, bool AttentionCore = false, double BackwardRatio = 2, double Elements = 0)
{
    /// <summary>FLOPs of the op (memory-bound ops count none).</summary>
    public double Flops => Gemm?.Flops ?? 0;

    /// <summary>A GEMM op.</summary>
    public static Op Matmul(string name, double m, double n, double k, double batch = 1, bool attentionCore = false) =>
        new(name, new GemmShape(m, n, k, batch), 0, attentionCore);

    /// <summary>Fused (flash) attention: both attention GEMMs in one kernel, no score matrix in memory. Causal
    /// masking lets it skip the blocks above the diagonal, about half of the work.</summary>
    public static Op FlashAttention(double queries, double keys, double headDim, double batchHeads) =>
        new("flash_attention", new GemmShape(queries, keys, headDim, 2 * batchHeads * 0.5), 0, AttentionCore: true, BackwardRatio: 2.5);

    /// <summary>A memory-bound op (evaluating a transcendental function on <paramref name="elements"/> elements).</summary>
    public static Op Memory(string name, double bytes, bool attentionCore = false, double elements = 0) =>
        new(name, null, bytes, attentionCore, Elements: elements);
}
