namespace Planner.CostModel.Pricing;

/// <summary>How a stack runs mixture-of-experts blocks (YAML keys in the members' docs).</summary>
/// <param name="Dispatcher">The expert-parallel token dispatcher (<c>moe_dispatcher</c>).</param>
/// <param name="Launch">How the router and dispatch preprocessing launch (<c>moe_cuda_graphs</c>).</param>
/// <param name="EagerExpertOverheadSeconds">(<c>moe_expert_overhead_us</c>) Seconds each pass of a MoE block spends per
/// local expert beyond the kernels its op list prices (the software runs each expert's split, casts, bias and activation
/// as kernels of their own), under <see cref="MoeLaunch.Eager"/>. Megatron-Core's 132 µs is fitted to the MoE runs of
/// validation/modern_runs.csv as one regime (docs/validation.md: fitted as two, eager and graphed, the rows
/// give 185 and 108 µs and a worse MAPE; not adopted).</param>
/// <param name="GraphedExpertOverheadSeconds">(<c>moe_expert_overhead_graphed_us</c>) Seconds per local expert and pass
/// under <see cref="MoeLaunch.CudaGraphs"/>; the eager value until a two-regime fit improves on one
/// (docs/validation.md).</param>
/// <param name="ExpertComm">Whether the dispatch and combine hide behind compute (<c>moe_overlap_expert_comm</c>).</param>
public sealed record MoeProfile(
    ExpertDispatcher Dispatcher = ExpertDispatcher.Flex,
    MoeLaunch Launch = MoeLaunch.Eager,
    double EagerExpertOverheadSeconds = 132e-6,
    double GraphedExpertOverheadSeconds = 132e-6,
    ExpertCommOverlap ExpertComm = ExpertCommOverlap.Exposed)
{
    /// <summary>Seconds per local expert and pass of a MoE block in this stack's regime (graphed or eager).</summary>
    public double ExpertOverheadSeconds => Launch == MoeLaunch.CudaGraphs ? GraphedExpertOverheadSeconds : EagerExpertOverheadSeconds;
}

/// <summary>The expert-parallel token dispatcher (YAML <c>moe_dispatcher</c>).</summary>
public enum ExpertDispatcher
{
    /// <summary>[flex] The dispatch of a dropless plan sends each token once to every rank that holds one of its experts
    /// (Megatron-Core's flex dispatcher over DeepEP or HybridEP, as the published MoE runs use): see
    /// <see cref="Plans.ParallelPlan.DeduplicatesDispatch"/>.</summary>
    Flex,

    /// <summary>[alltoall] One copy per routed expert (the all-to-all dispatcher, which token dropping needs).</summary>
    AllToAll,
}

/// <summary>How the MoE blocks' router and dispatch preprocessing launch (YAML <c>moe_cuda_graphs</c>).</summary>
public enum MoeLaunch
{
    /// <summary>[false] Eagerly, kernel by kernel.</summary>
    Eager,

    /// <summary>[true] Inside CUDA graphs (Megatron-Core's <c>cuda_graph_scope</c> with <c>moe_router</c> and
    /// <c>moe_preprocess</c>, or a whole-iteration graph) with the HybridEP dispatcher, as the Blackwell recipes of Qwen3
    /// do: the time per local expert and pass is then <see cref="MoeProfile.GraphedExpertOverheadSeconds"/> rather than
    /// <see cref="MoeProfile.EagerExpertOverheadSeconds"/>.</summary>
    CudaGraphs,
}

/// <summary>How the expert-parallel dispatch and combine meet compute (YAML <c>moe_overlap_expert_comm</c>).</summary>
public enum ExpertCommOverlap
{
    /// <summary>[false] Exposed.</summary>
    Exposed,

    /// <summary>[true] The dispatch and combine of one micro-batch run behind another micro-batch's compute (Megatron-Core's
    /// <c>overlap_moe_expert_parallel_comm</c>): only what the block's compute cannot hide is exposed.</summary>
    Overlapped,
}
