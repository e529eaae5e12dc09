namespace Planner.CostModel.Specs;

/// <summary>Feed-forward block kind: a plain two-matrix GeLU MLP or a gated SwiGLU MLP (three matrices).</summary>
public enum MlpKind { Gelu, SwiGlu }

/// <summary>Normalisation kind: LayerNorm has a scale and a bias, RMSNorm only a scale.</summary>
public enum NormKind { LayerNorm, RmsNorm }

/// <summary>Position encoding: learned absolute embeddings (a weight matrix) or rotary (no weights).</summary>
public enum PositionKind { Learned, Rotary }

/// <summary>
/// The shape of a decoder-only transformer, as far as cost is concerned.
/// GPT-2 style models carry biases on every linear layer; Llama style models carry none.
/// </summary>
/// <param name="Name">Preset or file name, for display.</param>
/// <param name="Layers">Transformer blocks.</param>
/// <param name="Hidden">Model width h.</param>
/// <param name="Heads">Query heads.</param>
/// <param name="KvHeads">Key/value heads (equal to <paramref name="Heads"/> without GQA).</param>
/// <param name="Ffn">Feed-forward inner width.</param>
/// <param name="Vocab">Vocabulary size.</param>
/// <param name="MaxSeq">Longest sequence the model was built for (learned positions use it).</param>
/// <param name="Experts">Experts per MoE layer (1 means a dense MLP).</param>
/// <param name="ExpertsPerToken">Experts each token is routed to.</param>
/// <param name="Source">How to load the model again: the preset name, or the full path of its config file.</param>
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
    int Experts = 1,
    int ExpertsPerToken = 1,
    string? Source = null)
{
    /// <summary>Width of one attention head.</summary>
    public int HeadDim => Hidden / Heads;

    /// <summary>Width of the key (and of the value) projection: kv heads × head width.</summary>
    public int KvDim => KvHeads * HeadDim;

    /// <summary>True when the MLP is a mixture of experts.</summary>
    public bool IsMoe => Experts > 1;

    /// <summary>Weights of one norm layer.</summary>
    public long NormParams => Norm == NormKind.LayerNorm ? 2L * Hidden : Hidden;

    /// <summary>Attention weights of one block: Q, K, V and output projections (and their biases).</summary>
    public long AttentionParams =>
        (long)Hidden * (Hidden + 2L * KvDim) + (long)Hidden * Hidden
        + (Biases ? Hidden + 2L * KvDim + Hidden : 0);

    /// <summary>Weights of one expert's (or the dense) MLP.</summary>
    public long MlpParamsPerExpert => Mlp == MlpKind.SwiGlu
        ? 3L * Hidden * Ffn + (Biases ? 2L * Ffn + Hidden : 0)
        : 2L * Hidden * Ffn + (Biases ? Ffn + Hidden : 0);

    /// <summary>Router weights of one MoE block (none for a dense block).</summary>
    public long RouterParams => IsMoe ? (long)Hidden * Experts : 0;

    /// <summary>All weights of one transformer block.</summary>
    public long LayerParams => AttentionParams + Experts * MlpParamsPerExpert + RouterParams + 2 * NormParams;

    /// <summary>Token embedding plus learned position embedding.</summary>
    public long EmbeddingParams => (long)Vocab * Hidden + (Positions == PositionKind.Learned ? (long)MaxSeq * Hidden : 0);

    /// <summary>The output projection to the vocabulary (zero when tied to the embedding).</summary>
    public long LmHeadParams => TiedEmbeddings ? 0 : (long)Vocab * Hidden;

    /// <summary>Every weight of the model, counted once.</summary>
    public long TotalParams => EmbeddingParams + Layers * LayerParams + NormParams + LmHeadParams;

    /// <summary>Weights touched by one token: MoE blocks count only the routed experts.</summary>
    public long ActiveParams => TotalParams - (long)Layers * (Experts - ExpertsPerToken) * MlpParamsPerExpert;
}
