namespace Planner.CostModel.Specs;

/// <summary>Feed-forward block kind: a plain two-matrix MLP (GeLU, squared ReLU) or a gated MLP (SwiGLU: three matrices).</summary>
public enum MlpKind { Gelu, SwiGlu }

/// <summary>Normalisation kind: LayerNorm has a scale and a bias, RMSNorm only a scale.</summary>
public enum NormKind { LayerNorm, RmsNorm }

/// <summary>Position encoding: learned absolute embeddings (a weight matrix) or rotary (no weights).</summary>
public enum PositionKind { Learned, Rotary }

/// <summary>
/// The mixture-of-experts blocks of a model (HuggingFace keys in brackets).
/// </summary>
/// <param name="Experts">Routed experts per MoE block [num_local_experts | n_routed_experts | num_experts].</param>
/// <param name="TopK">Experts each token is routed to [num_experts_per_tok].</param>
/// <param name="ExpertFfn">Inner width of one routed expert [moe_intermediate_size; intermediate_size without it].</param>
/// <param name="SharedFfn">Inner width of the shared experts taken together, which every token visits
/// [n_shared_experts × moe_intermediate_size, or shared_expert_intermediate_size]; 0 for none.</param>
/// <param name="Pattern">Which blocks are MoE blocks (the others have a dense MLP of the model's ffn), one entry per
/// block [first_k_dense_replace, moe_layer_freq].</param>
public sealed record MoeSpec(int Experts, int TopK, int ExpertFfn, int SharedFfn, IReadOnlyList<bool> Pattern)
{
    /// <summary>MoE blocks of the model.</summary>
    public int MoeLayers => Pattern.Count(x => x);

    /// <inheritdoc />
    public bool Equals(MoeSpec? other) =>
        other is not null && Experts == other.Experts && TopK == other.TopK && ExpertFfn == other.ExpertFfn
        && SharedFfn == other.SharedFfn && Pattern.SequenceEqual(other.Pattern);

    /// <inheritdoc />
    public override int GetHashCode() => HashCode.Combine(Experts, TopK, ExpertFfn, SharedFfn, Pattern.Count, MoeLayers);
}

/// <summary>
/// Multi-head latent attention (DeepSeek-V2/V3, Kimi K2): queries and keys/values pass through low-rank latent
/// projections; each head's query and key have a part without position (nope) and a rotary part (rope).
/// </summary>
/// <param name="QLoraRank">Rank of the query's down projection (0: queries projected directly) [q_lora_rank].</param>
/// <param name="KvLoraRank">Rank of the joint key/value latent [kv_lora_rank].</param>
/// <param name="QkNopeHeadDim">Per-head query/key width without rotary position [qk_nope_head_dim].</param>
/// <param name="QkRopeHeadDim">Per-head rotary width; the key's rotary part is shared by all heads [qk_rope_head_dim].</param>
/// <param name="VHeadDim">Per-head value width [v_head_dim].</param>
public sealed record MlaSpec(int QLoraRank, int KvLoraRank, int QkNopeHeadDim, int QkRopeHeadDim, int VHeadDim)
{
    /// <summary>Per-head query/key width of the attention scores.</summary>
    public int QkHeadDim => QkNopeHeadDim + QkRopeHeadDim;
}

/// <summary>Sliding-window attention on some blocks (GPT-OSS alternates windowed and full blocks).</summary>
/// <param name="Window">Keys each query attends to on a windowed block [sliding_window].</param>
/// <param name="Layers">Which blocks use the window [layer_types: "sliding_attention"].</param>
public sealed record SlidingWindow(int Window, IReadOnlyList<bool> Layers)
{
    /// <inheritdoc />
    public bool Equals(SlidingWindow? other) => other is not null && Window == other.Window && Layers.SequenceEqual(other.Layers);

    /// <inheritdoc />
    public override int GetHashCode() => HashCode.Combine(Window, Layers.Count(x => x));
}

/// <summary>What a block is made of, as far as its cost differs from another block's of the same model.</summary>
/// <param name="Moe">The block's MLP is a mixture of experts (else the model's dense MLP).</param>
/// <param name="Window">Keys a query attends to (0: the whole causal context).</param>
public readonly record struct LayerKind(bool Moe, int Window)
{
    /// <summary>Short name for tables and tests, e.g. "moe" or "dense/window128".</summary>
    public override string ToString() => (Moe ? "moe" : "dense") + (Window > 0 ? $"/window{Window}" : "");
}

/// <summary>
/// The shape of a decoder-only transformer, as far as cost is concerned.
/// GPT-2 style models carry biases on every linear layer; Llama style models carry none.
/// </summary>
/// <param name="Name">Preset or file name, for display.</param>
/// <param name="Layers">Transformer blocks.</param>
/// <param name="Hidden">Model width h.</param>
/// <param name="Heads">Query heads.</param>
/// <param name="KvHeads">Key/value heads (equal to <paramref name="Heads"/> without GQA).</param>
/// <param name="Ffn">Inner width of the dense MLP (the blocks that are not MoE blocks).</param>
/// <param name="Vocab">Vocabulary size.</param>
/// <param name="MaxSeq">Longest sequence the model was built for (learned positions use it).</param>
/// <param name="Source">How to load the model again: the preset name, or the full path of its config file.</param>
/// <param name="HeadDimension">Width of one attention head when it is not hidden / heads [head_dim]; null: hidden / heads,
/// rounded down when the heads do not divide the hidden size (HuggingFace Llama's head_dim default; Megatron then
/// needs --kv-channels, which export writes).</param>
/// <param name="Moe">The mixture-of-experts blocks; null for a dense model.</param>
/// <param name="Mla">Multi-head latent attention; null for (grouped-query) multi-head attention.</param>
/// <param name="MtpLayers">Multi-token prediction modules after the last block, each a projection, one block and the
/// shared LM head [num_nextn_predict_layers].</param>
/// <param name="Window">Sliding-window attention blocks; null when every block attends to the whole context.</param>
/// <param name="Dropout">The model trains with dropout (GPT-2 and GPT-3 era models: masks saved for the backward, a
/// masking pass in each residual add); current models train without [hidden_dropout, attention_dropout, resid_pdrop].</param>
public sealed record ModelSpec(
    string Name,
    int Layers,
    int Hidden,
    int Heads,
    int KvHeads,
    int Ffn,
    int Vocab,
    int MaxSeq,
    MlpKind Mlp,
    NormKind Norm,
    PositionKind Positions,
    bool Biases,
    bool TiedEmbeddings,
    string? Source = null,
    int? HeadDimension = null,
    MoeSpec? Moe = null,
    MlaSpec? Mla = null,
    int MtpLayers = 0,
    SlidingWindow? Window = null,
    bool Dropout = true)
{
    /// <summary>Width of one attention head (of the values under MLA).</summary>
    public int HeadDim => Mla?.VHeadDim ?? HeadDimension ?? Hidden / Heads;

    /// <summary>Per-head width of queries and keys in the attention scores.</summary>
    public int QkHeadDim => Mla?.QkHeadDim ?? HeadDim;

    /// <summary>Width of the key (and of the value) projection: kv heads × head width.</summary>
    public int KvDim => KvHeads * HeadDim;

    /// <summary>True when some blocks are mixtures of experts.</summary>
    public bool IsMoe => Moe is not null;

    /// <summary>Routed experts per MoE block (1 for a dense model).</summary>
    public int Experts => Moe?.Experts ?? 1;

    /// <summary>Experts a token visits in a MoE block (1 for a dense model).</summary>
    public int ExpertsPerToken => Moe?.TopK ?? 1;

    /// <summary>Weights of one norm layer.</summary>
    public long NormParams => Norm == NormKind.LayerNorm ? 2L * Hidden : Hidden;

    /// <summary>Attention weights of one block: Q, K, V and output projections (and their biases); under MLA the latent
    /// down and up projections and their norms.</summary>
    public long AttentionParams
    {
        get
        {
            long h = Hidden;
            if (Mla is { } a)
            {
                long qkHeads = (long)Heads * a.QkHeadDim;
                long q = a.QLoraRank > 0 ? h * a.QLoraRank + a.QLoraRank + (long)a.QLoraRank * qkHeads : h * qkHeads;
                long kv = h * (a.KvLoraRank + a.QkRopeHeadDim) + a.KvLoraRank + (long)a.KvLoraRank * Heads * (a.QkNopeHeadDim + a.VHeadDim);
                return q + kv + (long)Heads * a.VHeadDim * h;
            }
            long qDim = (long)Heads * HeadDim;
            return h * (qDim + 2L * KvDim) + qDim * h + (Biases ? qDim + 2L * KvDim + h : 0);
        }
    }

    /// <summary>Weights of an MLP of inner width <paramref name="ffn"/> (with biases where the model has them).</summary>
    public long MlpParams(int ffn) => ffn <= 0 ? 0 : Mlp == MlpKind.SwiGlu
        ? 3L * Hidden * ffn + (Biases ? 2L * ffn + Hidden : 0)
        : 2L * Hidden * ffn + (Biases ? ffn + Hidden : 0);

    /// <summary>Weights of one routed expert (of the dense MLP for a dense model).</summary>
    public long MlpParamsPerExpert => MlpParams(Moe?.ExpertFfn ?? Ffn);

    /// <summary>Weights of a MoE block's shared experts (0 without).</summary>
    public long SharedExpertParams => Moe is { } moe ? MlpParams(moe.SharedFfn) : 0;

    /// <summary>Router weights of one MoE block (none for a dense model).</summary>
    public long RouterParams => IsMoe ? (long)Hidden * Experts : 0;

    /// <summary>True when block <paramref name="layer"/> (0-based) is a MoE block.</summary>
    public bool IsMoeLayer(int layer) => Moe is { } moe && moe.Pattern[layer];

    /// <summary>The attention window of block <paramref name="layer"/> (0: full).</summary>
    public int WindowOf(int layer) => Window is { } w && w.Layers[layer] ? w.Window : 0;

    /// <summary>The kind of block <paramref name="layer"/>.</summary>
    public LayerKind KindOf(int layer) => new(IsMoeLayer(layer), WindowOf(layer));

    /// <summary>The kinds of the model's blocks, each once, in order of first appearance.</summary>
    public IReadOnlyList<LayerKind> Kinds => LayerKinds.Of(this).Kinds;

    /// <summary>The kind a multi-token-prediction block has: the last block's.</summary>
    public LayerKind MtpKind => KindOf(Layers - 1);

    /// <summary>All weights of one transformer block of a kind.</summary>
    public long LayerParamsOf(LayerKind kind) => AttentionParams + 2 * NormParams + (kind.Moe
        ? Experts * MlpParamsPerExpert + SharedExpertParams + RouterParams
        : MlpParams(Ffn));

    /// <summary>All weights of one transformer block: the largest kind's (all blocks of a uniform model).</summary>
    public long LayerParams => Kinds.Max(LayerParamsOf);

    /// <summary>Weights of the blocks from <paramref name="first"/>, <paramref name="count"/> of them.</summary>
    public long LayerParamsOf(int first, int count)
    {
        long sum = 0;
        for (int l = first; l < first + count; l++)
            sum += LayerParamsOf(KindOf(l));
        return sum;
    }

    /// <summary>Routed-expert weights of the blocks from <paramref name="first"/>, <paramref name="count"/> of them
    /// (what expert parallelism shards).</summary>
    public long ExpertParamsOf(int first, int count)
    {
        long sum = 0;
        for (int l = first; l < first + count; l++)
            if (IsMoeLayer(l))
                sum += Experts * MlpParamsPerExpert;
        return sum;
    }

    /// <summary>Weights of one multi-token-prediction module besides the shared embedding and head: its two input
    /// norms, the projection of [embedding; hidden] to hidden, its block and its output norm.</summary>
    public long MtpModuleParams => MtpLayers == 0 ? 0 : 3 * NormParams + 2L * Hidden * Hidden + LayerParamsOf(MtpKind);

    /// <summary>Token embedding plus learned position embedding.</summary>
    public long EmbeddingParams => (long)Vocab * Hidden + (Positions == PositionKind.Learned ? (long)MaxSeq * Hidden : 0);

    /// <summary>The output projection to the vocabulary (zero when tied to the embedding).</summary>
    public long LmHeadParams => TiedEmbeddings ? 0 : (long)Vocab * Hidden;

    /// <summary>Every weight of the model, counted once (the multi-token-prediction modules included).</summary>
    public long TotalParams => EmbeddingParams + LayerParamsOf(0, Layers) + NormParams + LmHeadParams + MtpLayers * MtpModuleParams;

    /// <summary>Weights touched by one token of the main model (no multi-token prediction): MoE blocks count only the
    /// routed experts; the embedding and the head count in full.</summary>
    public long ActiveParams => TotalParams - MtpLayers * MtpModuleParams
        - (long)(Moe?.MoeLayers ?? 0) * (Experts - ExpertsPerToken) * MlpParamsPerExpert;
}
