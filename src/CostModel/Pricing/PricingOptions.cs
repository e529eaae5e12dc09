using Planner.CostModel.Comm;

namespace Planner.CostModel.Pricing;

/// <summary>
/// Behaviours of the training software that change the price of the same plan on the same hardware: a software stack
/// (<c>stacks/*.yaml</c>, read by <see cref="StackLoader"/>). The defaults are Megatron-Core's (<c>stacks/megatron-core.yaml</c>).
/// </summary>
/// <param name="OverlapGradReduce">Data-parallel gradient reduction (and, with <paramref name="OverlapParamGather"/>,
/// ZeRO-1/2 parameter gathers) run in buckets behind the last micro-batch's backward (and the next forward), as
/// PyTorch DDP and current Megatron-LM do; false for software that reduces after the backward pass (Megatron-LM of
/// 2021–22).</param>
/// <param name="Algorithm">How collectives over groups that span nodes run.</param>
/// <param name="FlashAttention">Fused attention (FlashAttention 2 and its kin, as current frameworks use); false for
/// the materialised softmax of Megatron-LM of 2021–22. Under flash attention selective recompute has nothing left
/// to recompute: the fused backward already redoes the scores.</param>
/// <param name="FusedGradAccumulation">Weight-gradient GEMMs add into the accumulated gradients themselves
/// (Megatron-LM's gradient accumulation fusion); false for plain autograd, where each micro-batch after the first
/// adds its gradients in a memory-bound pass.</param>
/// <param name="GradientBucketCopies">The data-parallel all-reduce works on copies of the gradients (PyTorch DDP's
/// default, the executor) rather than on the gradient storage (Megatron-LM's contiguous buffer).</param>
/// <param name="OverlapParamGather">With <paramref name="OverlapGradReduce"/>, ZeRO-1/2's all-gather of the updated
/// parameters runs behind the next step's first forward; false for software that gathers them after the optimizer
/// step before going on (the executor).</param>
/// <param name="ReduceScatterPerMicroBatch">ZeRO-2 reduce-scatters the gradients after every micro-batch's backward,
/// adding each into the gradient shard (the executor), rather than once per step after the last micro-batch.</param>
/// <param name="ReduceScatterAsAllReduce">ZeRO's gradient reduce-scatters run as an all-reduce of the whole buffer of
/// which each rank keeps its slice (the executor: Gloo has no reduce-scatter), moving twice the bytes.</param>
/// <param name="Fp32DataParallel">Data-parallel collectives move fp32 whatever the precision: gradient reductions
/// on fp32 copies and ZeRO's parameter gathers from the fp32 master shard (the executor; Gloo reduces no bf16), rather
/// than gradients and weights in the training precision.</param>
/// <param name="Fp32GradReduce">Gradients accumulate in an fp32 buffer and are reduced in fp32 while the parameters
/// stay in the training precision (Megatron-Core's grad_reduce_in_fp32, on in NeMo's and Megatron-Bridge's mixed-precision
/// recipes; torchtitan's float32 reduce dtype): 4 bytes a gradient in memory and in the data-parallel reductions.</param>
/// <param name="Fp32Params">Parameters kept in fp32 and cast to the compute precision at each use (the executor),
/// rather than in the training precision beside the optimizer's fp32 master copy: see <see cref="Memory.MemoryModel"/>.</param>
/// <param name="PrefetchZero3">ZeRO-3's gathers and reduce-scatters run behind the chunk's compute (DeepSpeed's and
/// FSDP's prefetch); false for software that gathers a chunk, then computes, then reduces (the executor).</param>
/// <param name="TiedEmbeddingReducedAfterFlush">An embedding tied across the first and last pipeline stages is summed
/// over the pipeline after the flush and only then reduced over data parallelism, outside the overlapped buckets
/// (the executor; under ZeRO-2 after every micro-batch, its shards summed over the pipeline), rather than reduced in
/// the buckets and then summed (Megatron-LM).</param>
/// <param name="CollectivePerBucket">Data-parallel reductions and ZeRO-1/2's gathers run one collective per block, per
/// head and per embedding, each paying the collective's latency (the executor), rather than priced as one collective
/// over the stage's gradients (buckets sized for bandwidth, whose few latencies the price leaves out).</param>
/// <param name="FusedCrossEntropy">The loss is one fused kernel over the logits that writes their gradient in place
/// (Megatron-Core's cross-entropy fusion): the logits in the training precision are all it keeps, one read and one
/// write of them; false for a loss that makes fp32 softmax and gradient copies (Megatron-LM of 2021–22, the executor).</param>
/// <param name="DeduplicatedDispatch">The expert-parallel dispatch of a dropless plan sends each token once to every rank
/// that holds one of its experts (Megatron-Core's flex dispatcher over DeepEP or HybridEP, as the published MoE runs
/// use), rather than one copy per routed expert (the all-to-all dispatcher, which token dropping needs).</param>
/// <param name="MoeExpertOverheadSeconds">Seconds each pass of a MoE block spends per local expert beyond the kernels its
/// op list prices (the software runs each expert's split, casts, bias and activation as kernels of their own). Megatron-Core's
/// 132 µs is fitted to the MoE runs of validation/modern_runs.csv as one regime (docs/2026-12-07-modern-fit.md: fitted
/// as two, eager and graphed, the rows give 185 and 108 µs and a worse MAPE; not adopted).</param>
/// <param name="MoeCudaGraphs">The MoE blocks' router and dispatch preprocessing run inside CUDA graphs (Megatron-Core's
/// <c>cuda_graph_scope</c> with <c>moe_router</c> and <c>moe_preprocess</c>, or a whole-iteration graph) with the HybridEP
/// dispatcher, as the Blackwell recipes of Qwen3 do: the time per local expert and pass is then
/// <paramref name="MoeGraphedExpertOverheadSeconds"/> rather than <paramref name="MoeExpertOverheadSeconds"/> (the eager regime).</param>
/// <param name="MoeGraphedExpertOverheadSeconds">Seconds per local expert and pass under <paramref name="MoeCudaGraphs"/>; the
/// eager value until a two-regime fit improves on one (docs/2026-12-07-modern-fit.md).</param>
/// <param name="OverlapExpertComm">The expert-parallel dispatch and combine of one micro-batch run behind another
/// micro-batch's compute (Megatron-Core's <c>overlap_moe_expert_parallel_comm</c>): only what the block's compute cannot
/// hide is exposed.</param>
/// <param name="ActivationOffloadLayers">Layers of each model chunk whose saved activations go to host memory during the
/// forward and come back before their backward (Megatron-Core's <c>cpu_offloading_num_layers</c>, activations only): their
/// activations leave device memory, and the copies over the host link run behind the chunk's forward and backward, what
/// those cannot hide exposed. At most the chunk's layers less one (the last layer's backward follows its forward).</param>
/// <param name="CpGradHomeHop">The ring attention's backward sends each rank's key and value gradients one hop more
/// than its keys and values: home to their owner after the ring's last block, with no attention compute left to hide
/// that transfer (the executor: the gradients travel with the blocks they belong to and come back complete), rather
/// than the 2·(cp-1) transfers that the attention core's backward hides.</param>
/// <param name="RecomputeModules">What selective recompute redoes (Megatron-Core's <c>recompute_modules</c>, default
/// <c>core_attn</c>): see <see cref="Pricing.RecomputeModules"/>. Read only when the plan's recompute is selective.</param>
/// <param name="Stack">The name of the stack these facts are (a preset's, or the <c>name</c> a stack file gives): what
/// outputs and plan files record under <c>stack</c>.</param>
public sealed record PricingOptions(
    bool OverlapGradReduce = true,
    CollectiveAlgorithm Algorithm = CollectiveAlgorithm.Ring,
    bool FlashAttention = true,
    bool FusedGradAccumulation = true,
    bool GradientBucketCopies = false,
    bool OverlapParamGather = true,
    bool ReduceScatterPerMicroBatch = false,
    bool ReduceScatterAsAllReduce = false,
    bool Fp32DataParallel = false,
    bool Fp32Params = false,
    bool Fp32GradReduce = false,
    bool PrefetchZero3 = true,
    bool TiedEmbeddingReducedAfterFlush = false,
    bool CollectivePerBucket = false,
    bool FusedCrossEntropy = true,
    bool DeduplicatedDispatch = true,
    double MoeExpertOverheadSeconds = 132e-6,
    bool MoeCudaGraphs = false,
    double MoeGraphedExpertOverheadSeconds = 132e-6,
    bool OverlapExpertComm = false,
    int ActivationOffloadLayers = 0,
    bool CpGradHomeHop = false,
    RecomputeModules RecomputeModules = RecomputeModules.CoreAttention,
    string Stack = PricingOptions.DefaultStack)
{
    /// <summary>The stack priced when none is named.</summary>
    public const string DefaultStack = "megatron-core";

    /// <summary>The stack of this project's executor (<c>planner run</c>), what its runs and profiles are priced with.</summary>
    public const string ExecutorStack = "planner";

    /// <summary>Megatron-Core's facts, the default stack.</summary>
    public static PricingOptions Default { get; } = new();

    /// <summary>Seconds per local expert and pass of a MoE block in this stack's regime (graphed or eager).</summary>
    public double ExpertOverheadSeconds => MoeCudaGraphs ? MoeGraphedExpertOverheadSeconds : MoeExpertOverheadSeconds;
}

/// <summary>
/// The submodules selective recompute redoes in the backward instead of keeping their outputs (Megatron-Core's
/// <c>recompute_modules</c>; YAML names in brackets).
/// </summary>
[Flags]
public enum RecomputeModules
{
    /// <summary>Nothing.</summary>
    None = 0,
    /// <summary>[core_attn] The attention core: nothing to redo under fused attention, which redoes its scores anyway.</summary>
    CoreAttention = 1,
    /// <summary>[layernorm] The two norms of a block: their outputs (the attention's and the MLP's or router's inputs) are
    /// not kept; the norms run again.</summary>
    LayerNorm = 2,
    /// <summary>[moe_act] The experts' activation function: its output (the second expert GEMM's input) is not kept.</summary>
    MoeAct = 4,
    /// <summary>[mla_up_proj] Latent attention's up-projections (and their rotary embedding): the queries, keys and values
    /// are not kept; the up-projection GEMMs run again.</summary>
    MlaUpProj = 8,
    /// <summary>[mlp] A dense block's MLP (the dense first blocks of a MoE model, every block of a dense one): only its
    /// input is kept; the MLP's forward runs again.</summary>
    Mlp = 16,
}

/// <summary>The YAML names of <see cref="RecomputeModules"/>.</summary>
public static class RecomputeModuleNames
{
    /// <summary>Name and flag of each module.</summary>
    public static IReadOnlyList<(string Name, RecomputeModules Module)> All { get; } =
    [
        ("core_attn", RecomputeModules.CoreAttention), ("layernorm", RecomputeModules.LayerNorm), ("moe_act", RecomputeModules.MoeAct),
        ("mla_up_proj", RecomputeModules.MlaUpProj), ("mlp", RecomputeModules.Mlp),
    ];

    /// <summary>The flag of a name, or null when the model does not price that module.</summary>
    public static RecomputeModules? Parse(string name) =>
        All.FirstOrDefault(m => m.Name == name) is { Name: not null } found ? found.Module : null;
}
