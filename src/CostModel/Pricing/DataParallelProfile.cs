namespace Planner.CostModel.Pricing;

/// <summary>How a stack runs data-parallel communication: gradient reductions, ZeRO's reduce-scatters and parameter
/// gathers (YAML keys in the members' docs).</summary>
/// <param name="GradReduce">When gradients are reduced (<c>overlap_grad_reduce</c>).</param>
/// <param name="ParamGather">When ZeRO-1/2 gather the updated parameters (<c>overlap_param_gather</c>).</param>
/// <param name="Buffer">What the reduction works on (<c>gradient_bucket_copies</c>).</param>
/// <param name="Zero2Reduce">How often ZeRO-2 reduce-scatters (<c>reduce_scatter_per_micro_batch</c>).</param>
/// <param name="Scatter">The collective ZeRO's reduce-scatters run as (<c>reduce_scatter_as_all_reduce</c>).</param>
/// <param name="Dtype">What the collectives move (<c>fp32_data_parallel</c>); <see cref="Dtype.Fp32"/>: fp32 whatever the
/// precision, gradient reductions on fp32 copies and ZeRO's parameter gathers from the fp32 master shard (the executor;
/// Gloo reduces no bf16), rather than gradients and weights in the training precision.</param>
/// <param name="Granularity">How many collectives a reduction or gather takes (<c>collective_per_bucket</c>).</param>
/// <param name="Zero3">How ZeRO-3's gathers and reduce-scatters are scheduled (<c>zero3_prefetch</c>).</param>
/// <param name="TiedEmbedding">Where an embedding tied across pipeline stages is reduced (<c>tied_embedding_reduced_after_flush</c>).</param>
public sealed record DataParallelProfile(
    GradientReduction GradReduce = GradientReduction.OverlappedWithBackward,
    ParameterGather ParamGather = ParameterGather.OverlappedWithForward,
    ReductionBuffer Buffer = ReductionBuffer.InPlace,
    Zero2Reduction Zero2Reduce = Zero2Reduction.PerStep,
    ScatterCollective Scatter = ScatterCollective.ReduceScatter,
    Dtype Dtype = Dtype.TrainingPrecision,
    CollectiveGranularity Granularity = CollectiveGranularity.OnePerStage,
    Zero3Schedule Zero3 = Zero3Schedule.Prefetched,
    TiedEmbeddingReduction TiedEmbedding = TiedEmbeddingReduction.InBuckets);

/// <summary>When data-parallel gradients are reduced (YAML <c>overlap_grad_reduce</c>).</summary>
public enum GradientReduction
{
    /// <summary>[true] In buckets behind the last micro-batch's backward (and, with <see cref="ParameterGather.OverlappedWithForward"/>,
    /// ZeRO-1/2's parameter gathers behind the next forward), as PyTorch DDP and current Megatron-LM do.</summary>
    OverlappedWithBackward,

    /// <summary>[false] After the backward pass (Megatron-LM of 2021–22).</summary>
    AfterBackward,
}

/// <summary>When ZeRO-1/2 all-gather the updated parameters (YAML <c>overlap_param_gather</c>).</summary>
public enum ParameterGather
{
    /// <summary>[true] With <see cref="GradientReduction.OverlappedWithBackward"/>, behind the next step's first forward.</summary>
    OverlappedWithForward,

    /// <summary>[false] After the optimizer step, before going on (the executor).</summary>
    AfterStep,
}

/// <summary>What the data-parallel all-reduce works on (YAML <c>gradient_bucket_copies</c>).</summary>
public enum ReductionBuffer
{
    /// <summary>[false] The gradient storage itself (Megatron-LM's contiguous buffer).</summary>
    InPlace,

    /// <summary>[true] Copies of the gradients (PyTorch DDP's default, the executor).</summary>
    BucketCopies,
}

/// <summary>How often ZeRO-2 reduce-scatters the gradients (YAML <c>reduce_scatter_per_micro_batch</c>).</summary>
public enum Zero2Reduction
{
    /// <summary>[false] Once per step, after the last micro-batch.</summary>
    PerStep,

    /// <summary>[true] After every micro-batch's backward, adding each into the gradient shard (the executor).</summary>
    PerMicroBatch,
}

/// <summary>The collective ZeRO's gradient reduce-scatters run as (YAML <c>reduce_scatter_as_all_reduce</c>).</summary>
public enum ScatterCollective
{
    /// <summary>[false] A reduce-scatter.</summary>
    ReduceScatter,

    /// <summary>[true] An all-reduce of the whole buffer of which each rank keeps its slice (the executor: Gloo has no
    /// reduce-scatter), moving twice the bytes.</summary>
    AllReduce,
}

/// <summary>How many collectives a data-parallel reduction or ZeRO-1/2 gather takes (YAML <c>collective_per_bucket</c>).</summary>
public enum CollectiveGranularity
{
    /// <summary>[false] Priced as one collective over the stage's gradients (buckets sized for bandwidth, whose few
    /// latencies the price leaves out).</summary>
    OnePerStage,

    /// <summary>[true] One collective per block, per head and per embedding, each paying the collective's latency (the executor).</summary>
    PerBucket,
}

/// <summary>How ZeRO-3's gathers and reduce-scatters are scheduled (YAML <c>zero3_prefetch</c>).</summary>
public enum Zero3Schedule
{
    /// <summary>[true] Behind the chunk's compute (DeepSpeed's and FSDP's prefetch).</summary>
    Prefetched,

    /// <summary>[false] Gather a chunk, then compute, then reduce (the executor).</summary>
    Serial,
}

/// <summary>Where the gradient of an embedding tied across the first and last pipeline stages is reduced (YAML
/// <c>tied_embedding_reduced_after_flush</c>).</summary>
public enum TiedEmbeddingReduction
{
    /// <summary>[false] Reduced in the buckets and then summed over the pipeline (Megatron-LM).</summary>
    InBuckets,

    /// <summary>[true] Summed over the pipeline after the flush and only then reduced over data parallelism, outside the
    /// overlapped buckets (the executor; under ZeRO-2 after every micro-batch, its shards summed over the pipeline).</summary>
    AfterFlush,
}
