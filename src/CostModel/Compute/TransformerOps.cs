using Planner.CostModel.Plans;
using Planner.CostModel.Specs;

namespace Planner.CostModel.Compute;

/// <summary>
/// The forward kernels of one micro-batch on one rank, with shapes local to the rank under TP, SP and CP.
/// Backward passes are derived from these (two GEMMs per forward GEMM: input and weight gradients; memory-bound
/// ops read and write about twice the bytes).
/// </summary>
/// <remarks>
/// The attention core is either fused flash attention (current frameworks) or materialised attention (scores GEMM,
/// softmax, dropout, values GEMM over the full s×s score matrix), the kernels of the Megatron-LM runs of 2021–22
/// that <c>validate</c> compares with. Dropout masks are one byte per element as in Korthikanti et al. 2022.
/// </remarks>
public sealed class TransformerOps
{
    private readonly ModelSpec _m;
    private readonly ParallelPlan _p;

    /// <summary>Builds the op lists for a model and plan.</summary>
    /// <param name="model">The model.</param>
    /// <param name="plan">The plan (shapes are local to one rank).</param>
    /// <param name="flashAttention">Fused attention without a score matrix in memory.</param>
    public TransformerOps(ModelSpec model, ParallelPlan plan, bool flashAttention)
    {
        _m = model;
        _p = plan;
        FlashAttention = flashAttention;
        Block = BuildBlock();
        Embedding = BuildEmbedding();
        Head = BuildHead();
    }

    /// <summary>True when the attention core is one fused kernel with no score matrix in memory.</summary>
    public bool FlashAttention { get; }

    /// <summary>Sequence length each rank holds: seq / cp.</summary>
    public double LocalSeq => (double)_p.Seq / _p.Cp;

    /// <summary>Tokens of one micro-batch on one rank: mbs · seq / cp.</summary>
    public double Tokens => _p.Mbs * LocalSeq;

    /// <summary>Tokens of the replicated (non-TP) parts: divided by tp under sequence parallelism.</summary>
    public double NormTokens => _p.SequenceParallel ? Tokens / _p.Tp : Tokens;

    /// <summary>Query heads per TP rank.</summary>
    public double LocalHeads => (double)_m.Heads / _p.Tp;

    /// <summary>Key/value heads per TP rank (replicated when there are fewer KV heads than TP ranks).</summary>
    public double LocalKvHeads => Math.Max(1.0, (double)_m.KvHeads / _p.Tp);

    /// <summary>Forward kernels of one transformer block.</summary>
    public IReadOnlyList<Op> Block { get; }

    /// <summary>Forward kernels of the input embedding (first pipeline stage).</summary>
    public IReadOnlyList<Op> Embedding { get; }

    /// <summary>Forward kernels of the final norm, LM head and cross-entropy loss (last pipeline stage).</summary>
    public IReadOnlyList<Op> Head { get; }

    private int E => _p.Precision.ActivationBytes();

    private List<Op> BuildBlock()
    {
        double t = Tokens, tn = NormTokens, h = _m.Hidden, d = _m.HeadDim, e = E;
        double aq = LocalHeads, akv = LocalKvHeads;
        double sq = LocalSeq, sk = _p.Seq; // queries of this CP rank attend to keys of the whole sequence
        double batchHeads = _p.Mbs * aq;
        double scoreElems = batchHeads * sq * sk;
        double fLocal = (double)_m.Ffn / _p.Tp;
        // A token visits ExpertsPerToken experts; the router picks them.
        double routed = t * _m.ExpertsPerToken;
        var ops = new List<Op>
        {
            Op.Memory("ln1", 2 * tn * h * e),
            Op.Matmul("qkv", t, (aq + 2 * akv) * d, h),
        };
        if (_m.Positions == PositionKind.Rotary)
            ops.Add(Op.Memory("rope", 2 * t * (aq + akv) * d * e));
        if (FlashAttention)
            ops.Add(Op.FlashAttention(sq, sk, d, batchHeads));
        else
        {
            ops.Add(Op.Matmul("scores", sq, sk, d, batchHeads, attentionCore: true));
            // scale+mask+softmax in one kernel (read, write), then dropout (read, write, mask).
            ops.Add(Op.Memory("softmax", 2 * scoreElems * e, attentionCore: true, elements: scoreElems));
            ops.Add(Op.Memory("attn_dropout", scoreElems * (2 * e + 1), attentionCore: true));
            ops.Add(Op.Matmul("values", sq, d, sk, batchHeads, attentionCore: true));
        }
        ops.Add(Op.Matmul("proj", t, h, aq * d));
        ops.Add(Op.Memory("bias_dropout_add1", tn * h * (3 * e + 1)));
        ops.Add(Op.Memory("ln2", 2 * tn * h * e));
        if (_m.IsMoe)
        {
            ops.Add(Op.Matmul("router", t, _m.Experts, h));
            // Dispatch and combine copy each routed token's hidden state in and out.
            ops.Add(Op.Memory("moe_dispatch", 4 * routed * h * e));
        }
        if (_m.Mlp == MlpKind.SwiGlu)
        {
            ops.Add(Op.Matmul("mlp_gate_up", routed, 2 * fLocal, h));
            ops.Add(Op.Memory("swiglu", 3 * routed * fLocal * e, elements: routed * fLocal));
        }
        else
        {
            ops.Add(Op.Matmul("mlp_up", routed, fLocal, h));
            ops.Add(Op.Memory("gelu", 2 * routed * fLocal * e, elements: routed * fLocal));
        }
        ops.Add(Op.Matmul("mlp_down", routed, h, fLocal));
        ops.Add(Op.Memory("bias_dropout_add2", tn * h * (3 * e + 1)));
        return ops;
    }

    private List<Op> BuildEmbedding()
    {
        double h = _m.Hidden, e = E;
        // Gather rows of the (vocab-parallel) table, add positions, write the block input.
        return [Op.Memory("embedding", 3 * Tokens * h * e)];
    }

    private List<Op> BuildHead()
    {
        double h = _m.Hidden, e = E, vLocal = (double)_m.Vocab / _p.Tp;
        return
        [
            Op.Memory("final_norm", 2 * NormTokens * h * e),
            Op.Matmul("lm_head", Tokens, vLocal, h),
            // Logits to fp32, softmax statistics and the loss: read the logits, write and re-read fp32 copies. Over a
            // vocabulary split across TP ranks it is a different kernel sequence (max, exp-sum and the target's logit,
            // each summed across the ranks), profiled under its own name.
            Op.Memory(_p.Tp > 1 ? "vocab_parallel_cross_entropy" : "cross_entropy", Tokens * vLocal * (e + 8), elements: Tokens * vLocal),
        ];
    }

    /// <summary>FLOPs of the forward ops.</summary>
    public static double Sum(IReadOnlyList<Op> ops)
    {
        double s = 0;
        foreach (var op in ops)
            s += op.Flops;
        return s;
    }
}
