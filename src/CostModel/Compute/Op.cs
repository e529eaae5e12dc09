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
public sealed record Op(string Name, GemmShape? Gemm, double Bytes, bool AttentionCore = false)
{
    /// <summary>FLOPs of the op (memory-bound ops count none).</summary>
    public double Flops => Gemm?.Flops ?? 0;

    /// <summary>A GEMM op.</summary>
    public static Op Matmul(string name, double m, double n, double k, double batch = 1, bool attentionCore = false) =>
        new(name, new GemmShape(m, n, k, batch), 0, attentionCore);

    /// <summary>A memory-bound op.</summary>
    public static Op Memory(string name, double bytes, bool attentionCore = false) =>
        new(name, null, bytes, attentionCore);
}
