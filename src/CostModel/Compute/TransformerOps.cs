using Planner.CostModel.Plans;
using Planner.CostModel.Specs;

namespace Planner.CostModel.Compute;

/// <summary>
/// The forward kernels of one micro-batch on one rank, with shapes local to the rank under TP, SP, CP and EP: one list
/// per kind of block (dense or MoE MLP, full or windowed attention), the embedding, the head and the extra work of a
/// multi-token-prediction module. Backward passes are derived from these (two GEMMs per forward GEMM: input and weight
/// gradients; memory-bound ops read and write about twice the bytes).
/// </summary>
/// <remarks>
/// The attention core is either fused flash attention (current frameworks) or materialised attention (scores GEMM,
/// softmax, dropout, values GEMM over the full s×s score matrix), the kernels of the Megatron-LM runs of 2021–22
/// that <c>validate</c> compares with. Dropout masks are one byte per element as in Korthikanti et al. 2022.
/// Under a low-precision format (<see cref="Quantization"/>) the blocks' linear layers are quantized GEMMs and each
/// block gains the casts of their inputs (forward), output gradients (backward) and weights (once per step).
/// </remarks>
public sealed class TransformerOps
{
    private readonly ModelSpec _m;
    private readonly ParallelPlan _p;
    private readonly Quantization? _q;
    private readonly bool _fusedLoss;

    /// <summary>Builds the op lists for a model and plan.</summary>
    /// <param name="model">The model.</param>
    /// <param name="plan">The plan (shapes are local to one rank).</param>
    /// <param name="flashAttention">Fused attention without a score matrix in memory.</param>
    /// <param name="quantization">The low-precision format of the blocks' linear layers (null: none).</param>
    /// <param name="fusedLoss">The loss is one fused kernel over the logits (see <see cref="Pricing.CrossEntropyKernel.Fused"/>).</param>
    public TransformerOps(ModelSpec model, ParallelPlan plan, bool flashAttention, Quantization? quantization = null, bool fusedLoss = false)
    {
        _fusedLoss = fusedLoss;
        _m = model;
        _p = plan;
        _q = quantization;
        FlashAttention = flashAttention;
        Kinds = model.Kinds;
        Blocks = Kinds.Select(BuildBlock).ToList();
        Embedding = BuildEmbedding();
        Head = BuildHead();
        MtpProjection = BuildMtpProjection();
    }

    /// <summary>True when the attention core is one fused kernel with no score matrix in memory.</summary>
    public bool FlashAttention { get; }

    /// <summary>The low-precision format of the blocks' linear layers, or null.</summary>
    public Quantization? Quantization => _q;

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

    /// <summary>Tokens a rank routes in a MoE block: its part of the sequence under tensor parallelism (its
    /// sequence-parallel shard, or without sequence parallelism the part of the replicated tokens its experts, held
    /// whole, take: the executor's way; Megatron-Core requires sequence parallelism for MoE with tp &gt; 1).</summary>
    public double RoutedTokens => Tokens / _p.Tp;

    /// <summary>Token copies the busiest rank's experts process in a MoE block: every routed token top-k times, times the
    /// expert load (<see cref="ParallelPlan.ExpertLoad"/>), gathered over the expert-tensor-parallel group.</summary>
    public double ExpertTokens => RoutedTokens * _m.ExpertsPerToken * _p.ExpertLoad(_m.Experts) * _p.Etp;

    /// <summary>Experts on each expert-parallel rank.</summary>
    public double LocalExperts => (double)_m.Experts / _p.Ep;

    /// <summary>The kinds of the model's blocks (<see cref="ModelSpec.Kinds"/>), indexing <see cref="Blocks"/>.</summary>
    public IReadOnlyList<LayerKind> Kinds { get; }

    /// <summary>Forward kernels of a block of each kind.</summary>
    public IReadOnlyList<IReadOnlyList<Op>> Blocks { get; }

    /// <summary>Forward kernels of the first block's kind (every block of a uniform model).</summary>
    public IReadOnlyList<Op> Block => Blocks[0];

    /// <summary>The index in <see cref="Kinds"/> of a kind.</summary>
    public int KindIndex(LayerKind kind)
    {
        for (int i = 0; i < Kinds.Count; i++)
            if (Kinds[i] == kind)
                return i;
        throw new ArgumentException($"the model has no block of kind {kind}", nameof(kind));
    }

    /// <summary>Forward kernels of the input embedding (first pipeline stage).</summary>
    public IReadOnlyList<Op> Embedding { get; }

    /// <summary>Forward kernels of the final norm, LM head and cross-entropy loss (last pipeline stage).</summary>
    public IReadOnlyList<Op> Head { get; }

    /// <summary>Forward kernels of one multi-token-prediction module besides its block and its head: the norms of the
    /// shifted embedding and of the hidden state and their projection to the hidden width.</summary>
    public IReadOnlyList<Op> MtpProjection { get; }

    private int E => _p.Precision.ActivationBytes();

    private List<Op> BuildBlock(LayerKind kind)
    {
        double t = Tokens, tn = NormTokens, h = _m.Hidden, e = E;
        var ops = new List<Op> { Op.Memory("ln1", 2 * tn * h * e) };
        var linears = new List<(double In, double Out)>();
        Op Linear(string name, double m, double n, double k, double batch = 1, bool grouped = false)
        {
            linears.Add((m * k * batch, m * n * batch));
            return new Op(name, new GemmShape(m, n, k, batch), 0, Quantized: _q is not null, Grouped: grouped, Frozen: Frozen);
        }
        AddAttention(ops, Linear, kind.Window);
        ops.Add(ResidualAdd("bias_dropout_add1"));
        ops.Add(Op.Memory("ln2", 2 * tn * h * e));
        if (kind.Moe)
            AddExperts(ops, Linear);
        else
            AddMlp(ops, Linear, "mlp", t, (double)_m.Ffn / _p.Tp);
        ops.Add(ResidualAdd("bias_dropout_add2"));
        if (_q is { } q && linears.Count > 0)
        {
            // Inputs cast in the forward, output gradients in the backward (the weights once per step: see PipelineCosts).
            double inputs = linears.Sum(l => l.In), outputs = linears.Sum(l => l.Out);
            ops.Add(new Op("quantize", null, q.CastBytes(inputs), BackwardBytes: q.CastBytes(outputs)));
        }
        AddAdapters(ops, kind);
        return ops;
    }

    /// <summary>True when the base weights are frozen (LoRA, QLoRA): their GEMMs skip the weight gradients.</summary>
    private bool Frozen => _p.Tuning.Adapters;

    /// <summary>
    /// LoRA's kernels in a block: per targeted linear layer (and per local expert) x·A, then (x·A)·B, and PEFT's scaling
    /// and add of the result onto the base's output (<c>result + lora_B(lora_A(x)) * scaling</c>: a multiply, read and
    /// write, and an add, read two and write one). Under QLoRA every base weight of the block is first dequantized from
    /// NF4 to bf16 for its GEMM, forward and backward alike (a memory-bound pass: read the 4-bit weights and their
    /// constants, write bf16; bitsandbytes' dequantize kernel).
    /// </summary>
    private void AddAdapters(List<Op> ops, LayerKind kind)
    {
        var t = _p.Tuning;
        if (!t.Adapters)
            return;
        double e = E, weights = 0;
        foreach (var l in BlockLinears.Of(_m, kind))
        {
            weights += l.LocalWeights(_p.Tp, _p.Ep, _p.Etp);
            if (!l.Targeted(t.Targets))
                continue;
            double copies = l.LocalCopies(_p.Ep), tokens = l.Expert ? ExpertTokens / copies : Tokens;
            double inputs = l.LocalIn(_p.Tp, _p.Etp), outputs = l.LocalOut(_p.Tp, _p.Etp);
            ops.Add(Op.Matmul("lora_a_" + l.Name, tokens, t.Rank, inputs, copies));
            ops.Add(Op.Matmul("lora_b_" + l.Name, tokens, outputs, t.Rank, copies));
            ops.Add(Op.Memory("lora_add_" + l.Name, 5 * copies * tokens * outputs * e));
        }
        if (t.QuantizedBase)
        {
            double bytes = weights * (FineTuning.Nf4BytesPerWeight + 2);
            ops.Add(new Op("dequantize", null, bytes, BackwardBytes: bytes));
        }
    }

    /// <summary>A residual add (read both, write one), with dropout's mask written when the model trains with dropout.</summary>
    private Op ResidualAdd(string name) => Op.Memory(name, NormTokens * _m.Hidden * (3 * E + (_m.Dropout ? 1 : 0)));

    private void AddAttention(List<Op> ops, Func<string, double, double, double, double, bool, Op> linear, int window)
    {
        double t = Tokens, h = _m.Hidden, e = E;
        double aq = LocalHeads, akv = LocalKvHeads;
        double sq = LocalSeq, sk = _p.Seq; // queries of this CP rank attend to keys of the whole sequence
        double batchHeads = _p.Mbs * aq;
        int qk = _m.QkHeadDim, dv = _m.HeadDim;
        if (_m.Mla is { } a)
        {
            // Latent attention: the down projections are replicated over the TP ranks, the up projections split by head.
            if (a.QLoraRank > 0)
            {
                ops.Add(linear("q_down", t, a.QLoraRank, h, 1, false));
                ops.Add(Op.Memory("q_norm", 2 * t * a.QLoraRank * e));
                ops.Add(linear("q_up", t, aq * qk, a.QLoraRank, 1, false));
            }
            else
                ops.Add(linear("q", t, aq * qk, h, 1, false));
            ops.Add(linear("kv_down", t, a.KvLoraRank + a.QkRopeHeadDim, h, 1, false));
            ops.Add(Op.Memory("kv_norm", 2 * t * a.KvLoraRank * e));
            ops.Add(linear("kv_up", t, aq * (a.QkNopeHeadDim + a.VHeadDim), a.KvLoraRank, 1, false));
            ops.Add(Op.Memory("rope", 2 * t * (aq + 1) * a.QkRopeHeadDim * e));
        }
        else
        {
            ops.Add(linear("qkv", t, (aq + 2 * akv) * dv, h, 1, false));
            if (_m.Positions == PositionKind.Rotary)
                ops.Add(Op.Memory("rope", 2 * t * (aq + akv) * dv * e));
        }
        if (FlashAttention)
            ops.Add(Op.FlashAttention(sq, sk, qk, dv, batchHeads, window));
        else
        {
            double keys = window > 0 ? Math.Min(window, sk) : sk;
            double scoreElems = batchHeads * sq * keys;
            ops.Add(Op.Matmul("scores", sq, keys, qk, batchHeads, attentionCore: true));
            // scale+mask+softmax in one kernel (read, write), then dropout (read, write, mask).
            ops.Add(Op.Memory("softmax", 2 * scoreElems * e, attentionCore: true, elements: scoreElems));
            if (_m.Dropout)
                ops.Add(Op.Memory("attn_dropout", scoreElems * (2 * e + 1), attentionCore: true));
            ops.Add(Op.Matmul("values", sq, dv, keys, batchHeads, attentionCore: true));
        }
        ops.Add(linear("proj", t, h, aq * dv, 1, false));
    }

    private void AddMlp(List<Op> ops, Func<string, double, double, double, double, bool, Op> linear, string name, double tokens, double ffn)
    {
        double h = _m.Hidden, e = E;
        if (_m.Mlp == MlpKind.SwiGlu)
        {
            ops.Add(linear(name + "_gate_up", tokens, 2 * ffn, h, 1, false));
            ops.Add(Op.Memory(name == "mlp" ? "swiglu" : name + "_swiglu", 3 * tokens * ffn * e, elements: tokens * ffn));
        }
        else
        {
            ops.Add(linear(name + "_up", tokens, ffn, h, 1, false));
            ops.Add(Op.Memory(name == "mlp" ? "gelu" : name + "_gelu", 2 * tokens * ffn * e, elements: tokens * ffn));
        }
        ops.Add(linear(name + "_down", tokens, h, ffn, 1, false));
    }

    private void AddExperts(List<Op> ops, Func<string, double, double, double, double, bool, Op> linear)
    {
        var moe = _m.Moe!;
        double h = _m.Hidden, e = E, tr = RoutedTokens, k = _m.ExpertsPerToken;
        // The router scores every expert in bf16 (never quantized), then picks the top k.
        // Without sequence parallelism every TP rank scores all its (replicated) tokens.
        ops.Add(Op.Matmul("router", NormTokens, moe.Experts, h, frozen: Frozen));
        ops.Add(Op.Memory("router_topk", 3 * NormTokens * moe.Experts * 4, elements: NormTokens * moe.Experts));
        if (moe.SharedFfn > 0)
            AddMlp(ops, linear, "shared", Tokens, (double)moe.SharedFfn / _p.Tp);
        // Permute the routed copies into expert order before the dispatch, and back after the combine (read and write each).
        double routed = tr * k * _p.ExpertLoad(moe.Experts);
        ops.Add(Op.Memory("moe_permute", 4 * routed * h * e));
        // One grouped GEMM over the rank's experts, each with its share of the tokens; widths split by expert TP.
        double local = LocalExperts, perExpert = ExpertTokens / local, ffn = (double)moe.ExpertFfn / _p.Etp;
        bool gated = _m.Mlp == MlpKind.SwiGlu;
        ops.Add(linear("expert_fc1", perExpert, (gated ? 2 : 1) * ffn, h, local, true));
        ops.Add(Op.Memory(gated ? "expert_swiglu" : "expert_act", (gated ? 3 : 2) * ExpertTokens * ffn * e, elements: ExpertTokens * ffn));
        ops.Add(linear("expert_fc2", perExpert, h, ffn, local, true));
    }

    private List<Op> BuildEmbedding()
    {
        double h = _m.Hidden, e = E;
        // Gather rows of the (vocab-parallel) table, add positions, write the block input.
        // A frozen table has no backward.
        return [new Op("embedding", null, 3 * Tokens * h * e, BackwardBytes: Frozen ? 0 : null)];
    }

    private List<Op> BuildHead()
    {
        double h = _m.Hidden, e = E, vLocal = (double)_m.Vocab / _p.Tp;
        return
        [
            Op.Memory("final_norm", 2 * NormTokens * h * e),
            Op.Matmul("lm_head", Tokens, vLocal, h, frozen: Frozen),
            // Logits to fp32, softmax statistics and the loss: read the logits, write and re-read fp32 copies. Over a
            // vocabulary split across TP ranks it is a different kernel sequence (max, exp-sum and the target's logit,
            // each summed across the ranks), profiled under its own name.
            _fusedLoss
                ? new Op("fused_cross_entropy", null, Tokens * vLocal * e, Elements: Tokens * vLocal, BackwardBytes: 2 * Tokens * vLocal * e)
                : Op.Memory(_p.Tp > 1 ? "vocab_parallel_cross_entropy" : "cross_entropy", Tokens * vLocal * (e + 8), elements: Tokens * vLocal),
        ];
    }

    private List<Op> BuildMtpProjection()
    {
        if (_m.MtpLayers == 0)
            return [];
        double h = _m.Hidden, e = E;
        // The shifted tokens' embedding (looked up again) and the last hidden state, each normed, joined and projected.
        return
        [
            Op.Memory("mtp_embedding", 3 * Tokens * h * e),
            Op.Memory("mtp_norms", 4 * NormTokens * h * e),
            Op.Matmul("mtp_projection", Tokens, h / _p.Tp, 2 * h, frozen: Frozen),
        ];
    }

    /// <summary>FLOPs the backward of the ops skips: the weight gradients of frozen GEMMs.</summary>
    public static double SkippedBackward(IReadOnlyList<Op> ops)
    {
        double s = 0;
        foreach (var op in ops)
            s += op.SkippedBackwardFlops;
        return s;
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
