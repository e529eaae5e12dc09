using Planner.CostModel.Plans;
using Planner.CostModel.Specs;
using Planner.Executor.Torch;

namespace Planner.Cli.Profiling;

/// <summary>
/// What <c>profile</c> measures at, by device: on CPU cores, the sizes of a small GPT that two cores train in fp32; on a
/// CUDA device, a GPT of hidden 1024 in the cluster's training precision, large enough that a kernel's time is more than
/// its launch, and messages up to 256 MB (where NCCL's bus bandwidth levels off). The rank measures and the fit prices
/// the same sizes: the measurements name the device and precision, and the fit takes its sizes from them.
/// </summary>
/// <param name="Device">"cpu" or "cuda".</param>
/// <param name="Precision">The precision of the GEMMs, the blocks and the training steps.</param>
/// <param name="GemmShapes">GEMM shapes (m, n, k): square sizes, thin ones and a transformer's own.</param>
/// <param name="MessageBytes">Message sizes of the collective sweep.</param>
/// <param name="LinearShapes">Linear layers (tokens, in, out) timed through autograd as training runs them.</param>
/// <param name="LossTokens">Tokens of the loss measurements.</param>
/// <param name="LossVocab">Vocabulary of the loss measurements (the vocabulary-parallel loss takes half).</param>
/// <param name="BlockConfig">The one-block GPT whose block and head are timed (HF config JSON).</param>
/// <param name="BlockMbs">Sequences per micro-batch of the block's measurement.</param>
/// <param name="BlockSeq">Their length.</param>
/// <param name="SmallSeq">One sequence this long: the block's size for the cost of a call.</param>
/// <param name="Step">The small GPT trained for whole steps, its compute mostly in its kernels' work.</param>
/// <param name="SmallStep">A tiny GPT trained for whole steps, its compute mostly in the calls (what a kernel call costs
/// as a training step pays it: autograd, the executor's hooks, the binding).</param>
/// <param name="OptimizerMatrices">Square parameter matrices of the optimizer's measurement.</param>
/// <param name="OptimizerDim">Their side.</param>
/// <param name="ElementwiseElements">Elements of the memory-bound add and the GELU.</param>
public sealed record ProfileSizes(
    string Device,
    Precision Precision,
    (int M, int N, int K)[] GemmShapes,
    long[] MessageBytes,
    (int Tokens, int In, int Out)[] LinearShapes,
    int LossTokens,
    int LossVocab,
    string BlockConfig,
    int BlockMbs,
    int BlockSeq,
    int SmallSeq,
    StepShape Step,
    StepShape SmallStep,
    int OptimizerMatrices,
    int OptimizerDim,
    long ElementwiseElements)
{
    /// <summary>A GPT-2 config; <paramref name="tied"/> writes tie_word_embeddings (without it, the loader's default).</summary>
    private static string Gpt(int layers, int hidden, int heads, int positions, int vocab, bool tied) =>
        FormattableString.Invariant($$"""{"model_type": "gpt2", "n_layer": {{layers}}, "n_embd": {{hidden}}, "n_head": {{heads}}, "n_positions": {{positions}}, "vocab_size": {{vocab}}, "n_inner": null{{(tied ? ", \"tie_word_embeddings\": true" : "")}}}""");

    /// <summary>CPU cores, fp32: a GPT-2 block of hidden 256 and 8 heads over 4 x 128 tokens, an 8k vocabulary (the
    /// closed loop's models are of this shape).</summary>
    public static readonly ProfileSizes Cpu = new(
        "cpu", Precision.Fp32,
        [
            (64, 64, 64), (128, 128, 128), (256, 256, 256), (512, 512, 512), (1024, 1024, 1024), (2048, 2048, 2048),
            (2048, 256, 256), (256, 2048, 256), (256, 256, 2048), (1024, 256, 1024), (2048, 1024, 256), (512, 2048, 512),
            (32, 1024, 1024), (1024, 32, 1024), (1024, 1024, 32), (4096, 512, 128),
            // A transformer's own: tokens of a micro-batch against hidden, 3/4x hidden and vocabulary-sized dimensions.
            (128, 768, 256), (128, 1024, 256), (128, 256, 1024), (128, 8192, 256), (256, 8192, 128),
            (512, 768, 256), (512, 8192, 256), (2048, 3072, 1024), (2048, 4096, 1024), (2048, 1024, 4096), (1024, 8192, 512),
        ],
        [4 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20],
        [(512, 256, 768), (512, 256, 1024), (512, 1024, 256), (512, 256, 8192)],
        512, 8192,
        Gpt(1, 256, 8, 128, 8192, tied: false), 4, 128, 32,
        new StepShape(Gpt(2, 256, 8, 128, 8192, tied: true), 4, 8, 128),
        // Between the closed loop's two smallest shapes, equal to neither.
        new StepShape(Gpt(3, 96, 4, 48, 384, tied: true), 2, 8, 48),
        4, 1024, 4 << 20);

    /// <summary>A CUDA device in <paramref name="precision"/>: a GPT-2 block of hidden 1024 and 16 heads over 4 x 1024
    /// tokens, a 32k vocabulary; GEMMs to 8192 on a side.</summary>
    public static ProfileSizes Cuda(Precision precision) => new(
        "cuda", precision,
        [
            (256, 256, 256), (512, 512, 512), (1024, 1024, 1024), (2048, 2048, 2048), (4096, 4096, 4096), (8192, 8192, 8192),
            (8192, 1024, 1024), (1024, 8192, 1024), (1024, 1024, 8192), (64, 4096, 4096), (4096, 64, 4096), (4096, 4096, 64),
            (4096, 3072, 1024), (4096, 1024, 1024), (4096, 1024, 4096), (4096, 4096, 1024), (4096, 32768, 1024),
            (8192, 12288, 4096), (8192, 4096, 16384), (16384, 4096, 4096),
        ],
        [64 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20, 256 << 20],
        [(4096, 1024, 3072), (4096, 1024, 4096), (4096, 4096, 1024), (4096, 1024, 32768)],
        4096, 32768,
        Gpt(1, 1024, 16, 1024, 32768, tied: false), 4, 1024, 128,
        new StepShape(Gpt(2, 1024, 16, 1024, 32768, tied: true), 4, 8, 1024),
        new StepShape(Gpt(2, 256, 4, 128, 4096, tied: true), 2, 8, 128),
        4, 4096, 64 << 20);

    /// <summary>The sizes of a device ("cpu" or "cuda"); the CPU's are fp32 whatever the cluster trains in.</summary>
    public static ProfileSizes For(string device, Precision precision) => device == "cuda" ? Cuda(precision) : Cpu;

    /// <summary>The GEMMs' and blocks' element type.</summary>
    public DType DType => Precision switch
    {
        Precision.Fp16 => DType.Float16,
        Precision.Fp32 or Precision.Tf32 => DType.Float32,
        _ => DType.BFloat16, // bf16, and the low-precision formats' bf16 parts (their GEMMs are measured in bf16)
    };

    /// <summary>The block measurement's model.</summary>
    public ModelSpec BlockModel() => ModelLoader.Parse(BlockConfig, "profile", "profile-block");

    /// <summary>The block's shape with a mixture-of-experts MLP (4 SwiGLU experts of twice the hidden size, top 2, no
    /// shared expert): what the expert-parallel exchange is measured on.</summary>
    public ModelSpec MoeBlockModel()
    {
        var b = BlockModel();
        return ModelLoader.Parse(FormattableString.Invariant(
            $$"""{"num_hidden_layers": 1, "hidden_size": {{b.Hidden}}, "num_attention_heads": {{b.Heads}}, "num_key_value_heads": {{b.Heads}}, "intermediate_size": {{2 * b.Hidden}}, "vocab_size": {{b.Vocab}}, "max_position_embeddings": {{b.MaxSeq}}, "hidden_act": "silu", "num_local_experts": 4, "num_experts_per_tok": 2}"""),
            "profile", "profile-moe-block");
    }

    /// <summary>The MoE block's plan: two data-parallel ranks that split its experts (ep 2), over the short sequence (few
    /// tokens per expert: the exchange's latency and the calls per expert show, as in small models' training).</summary>
    public ParallelPlan MoeBlockPlan() => new(1, 1, 2, 1, 0, BlockMbs, 2 * BlockMbs, SmallSeq, 1, Recompute.None, false, Precision, Ep: 2);

    /// <summary>The block's plan over two context-parallel ranks (ring attention), over the short sequence as the MoE
    /// block's.</summary>
    public ParallelPlan CpBlockPlan() => new(1, 1, 1, 2, 0, BlockMbs, BlockMbs, 2 * SmallSeq, 1, Recompute.None, false, Precision);

    /// <summary>The block measurement's plan over <paramref name="tp"/> tensor-parallel ranks.</summary>
    public ParallelPlan BlockPlan(int tp = 1) => new(tp, 1, 1, 1, 0, BlockMbs, BlockMbs, BlockSeq, 1, Recompute.None, false, Precision);

    /// <summary>The block over one short sequence (the same calls on fewer tokens).</summary>
    public ParallelPlan SmallPlan() => new(1, 1, 1, 1, 0, 1, 1, SmallSeq, 1, Recompute.None, false, Precision);

    /// <summary>The training steps' model.</summary>
    public ModelSpec StepModel(StepShape shape) => ModelLoader.Parse(shape.Config, "profile", "profile-step");

    /// <summary>The training steps' plan: one rank, gbs / mbs micro-batches.</summary>
    public ParallelPlan StepPlan(StepShape shape) => new(1, 1, 1, 1, 0, shape.Mbs, shape.Gbs, shape.Seq, 1, Recompute.None, false, Precision);

    /// <summary>The precision a device's profile measures for <paramref name="cluster"/>: fp32 on CPU cores (or the
    /// first the cluster lists when it has no fp32); on CUDA the cluster's training precision, bf16 where its devices
    /// have it, else fp16, else fp32.</summary>
    public static Precision PrecisionFor(ClusterSpec cluster, bool cuda)
    {
        var peaks = cluster.Gpu.PeakTflops;
        if (!cuda)
            return peaks.ContainsKey(Precision.Fp32) ? Precision.Fp32 : peaks.Keys.First();
        foreach (var p in new[] { Precision.Bf16, Precision.Fp16, Precision.Fp32 })
            if (peaks.ContainsKey(p))
                return p;
        return peaks.Keys.First();
    }
}

/// <summary>A GPT trained for whole steps on one rank by the profile.</summary>
/// <param name="Config">Its HF config JSON.</param>
/// <param name="Mbs">Its micro-batch (sequences).</param>
/// <param name="Gbs">Its global batch (sequences).</param>
/// <param name="Seq">Its sequence length.</param>
public sealed record StepShape(string Config, int Mbs, int Gbs, int Seq)
{
    /// <summary>"layers-block GPT (micro-batches x mbs x seq tokens)" for reports.</summary>
    public string Describe(ModelSpec model) => $"{model.Layers}-block GPT of hidden {model.Hidden} ({Gbs / Mbs} x {Mbs} x {Seq} tokens, vocabulary {model.Vocab})";
}
