using Planner.CostModel.Comm;
using Planner.CostModel.Specs;

namespace Planner.CostModel.Pricing;

/// <summary>
/// Reads a stack file's facts (<see cref="StackLoader.FactKeys"/>) onto its base stack's: each key a file gives replaces
/// the base's behaviour, each it leaves out keeps it. The YAML keys and values are the stack files' contract; the enums
/// they map to name each behaviour.
/// </summary>
internal static class StackFacts
{
    /// <summary>The facts of <paramref name="map"/> over <paramref name="o"/>, named <paramref name="stack"/>;
    /// <paramref name="source"/> names the file in errors.</summary>
    public static PricingOptions Read(YamlMap map, PricingOptions o, string stack, string source) => o with
    {
        Kernels = Kernels(map, o.Kernels),
        DataParallel = DataParallel(map, o.DataParallel),
        Precision = new(
            Either(map, "fp32_params", Dtype.Fp32, Dtype.TrainingPrecision, o.Precision.Parameters),
            Either(map, "grad_reduce_fp32", Dtype.Fp32, Dtype.TrainingPrecision, o.Precision.Gradients)),
        Moe = Moe(map, o.Moe),
        Activations = Activations(map, o.Activations, source),
        CpGradients = Either(map, "cp_grad_home_hop", CpGradientReturn.HomeHop, CpGradientReturn.HiddenInRing, o.CpGradients),
        Algorithm = map.OptionalChoice("collectives", "ring", "hierarchical") is { } algorithm
            ? algorithm == "ring" ? CollectiveAlgorithm.Ring : CollectiveAlgorithm.Hierarchical
            : o.Algorithm,
        Stack = stack,
    };

    private static KernelProfile Kernels(YamlMap map, KernelProfile o) => new(
        map.OptionalChoice("attention", "flash", "materialized") is { } attention
            ? attention == "flash" ? AttentionKernel.Fused : AttentionKernel.Materialized
            : o.Attention,
        Either(map, "fused_grad_accumulation", GradientAccumulation.FusedIntoGemm, GradientAccumulation.SeparatePass, o.GradAccumulation),
        Either(map, "fused_cross_entropy", CrossEntropyKernel.Fused, CrossEntropyKernel.Fp32Copies, o.Loss));

    private static DataParallelProfile DataParallel(YamlMap map, DataParallelProfile o) => new(
        Either(map, "overlap_grad_reduce", GradientReduction.OverlappedWithBackward, GradientReduction.AfterBackward, o.GradReduce),
        Either(map, "overlap_param_gather", ParameterGather.OverlappedWithForward, ParameterGather.AfterStep, o.ParamGather),
        Either(map, "gradient_bucket_copies", ReductionBuffer.BucketCopies, ReductionBuffer.InPlace, o.Buffer),
        Either(map, "reduce_scatter_per_micro_batch", Zero2Reduction.PerMicroBatch, Zero2Reduction.PerStep, o.Zero2Reduce),
        Either(map, "reduce_scatter_as_all_reduce", ScatterCollective.AllReduce, ScatterCollective.ReduceScatter, o.Scatter),
        Either(map, "fp32_data_parallel", Dtype.Fp32, Dtype.TrainingPrecision, o.Dtype),
        Either(map, "collective_per_bucket", CollectiveGranularity.PerBucket, CollectiveGranularity.OnePerStage, o.Granularity),
        Either(map, "zero3_prefetch", Zero3Schedule.Prefetched, Zero3Schedule.Serial, o.Zero3),
        Either(map, "tied_embedding_reduced_after_flush", TiedEmbeddingReduction.AfterFlush, TiedEmbeddingReduction.InBuckets, o.TiedEmbedding));

    private static MoeProfile Moe(YamlMap map, MoeProfile o) => new(
        map.OptionalChoice("moe_dispatcher", "flex", "alltoall") is { } dispatcher
            ? dispatcher == "flex" ? ExpertDispatcher.Flex : ExpertDispatcher.AllToAll
            : o.Dispatcher,
        Either(map, "moe_cuda_graphs", MoeLaunch.CudaGraphs, MoeLaunch.Eager, o.Launch),
        map.OptionalNumber("moe_expert_overhead_us", 1e6, -1e-12) is double us ? us / 1e6 : o.EagerExpertOverheadSeconds,
        map.OptionalNumber("moe_expert_overhead_graphed_us", 1e6, -1e-12) is double graphed ? graphed / 1e6 : o.GraphedExpertOverheadSeconds,
        Either(map, "moe_overlap_expert_comm", ExpertCommOverlap.Overlapped, ExpertCommOverlap.Exposed, o.ExpertComm));

    private static ActivationProfile Activations(YamlMap map, ActivationProfile o, string source) => new(
        map.OptionalStrings("recompute_modules") is { } modules ? Modules(modules, source) : o.Recompute,
        map.OptionalNumber("activation_offload_layers", 10_000, -1e-12) is double layers
            ? layers == Math.Floor(layers) ? (int)layers : throw new InputException($"{source}: key 'activation_offload_layers': {layers} is not a whole number of layers")
            : o.OffloadLayers);

    /// <summary>The behaviour a boolean key names: <paramref name="whenTrue"/> or <paramref name="whenFalse"/>, or
    /// <paramref name="current"/> (the base stack's) when the file leaves the key out.</summary>
    private static T Either<T>(YamlMap map, string key, T whenTrue, T whenFalse, T current) =>
        map.OptionalBool(key) is { } value ? value ? whenTrue : whenFalse : current;

    private static RecomputeModules Modules(IReadOnlyList<string> names, string source)
    {
        var set = RecomputeModules.None;
        foreach (var name in names)
            set |= RecomputeModuleNames.Parse(name)
                   ?? throw new InputException($"{source}: key 'recompute_modules': '{name}' is not priced (expected {string.Join(", ", RecomputeModuleNames.All.Select(m => m.Name))})");
        return set;
    }
}
