using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;
using Planner.Executor.Distributed;
using Planner.Executor.Model;
using Planner.Executor.Torch;

namespace Planner.Executor.Parallelize;

/// <summary>
/// What the parallelism steps made of one rank's part of the model: the plain model of its pipeline stage's chunks
/// (sharded), and the steps that act on its passes and gradients.
/// </summary>
/// <param name="Layout">The pipeline's split of the blocks (which chunk holds the embedding and the head).</param>
/// <param name="Chunks">The model's block indices of each chunk the rank's stage holds.</param>
/// <param name="Experts">Expert parallelism's dispatch, or null without it.</param>
public sealed record ParallelRank(GptModel Model, StageLayout Layout, IReadOnlyList<int[]> Chunks, Recomputation Recompute,
    DataParallelism Data, ExpertParallelism? Experts = null) : IDisposable
{
    /// <summary>Frees the model and the optimizer.</summary>
    public void Dispose()
    {
        Data.Dispose();
        Model.Dispose();
    }
}

/// <summary>
/// Parallelism applied to a plain <see cref="GptModel"/> from outside, in a fixed order: (1) the pipeline split picks
/// the stage's chunks of blocks (<see cref="PipelineSplit"/>), (2) the plain model of those chunks is
/// built whole, with LoRA's adapters and its base frozen when the plan fine-tunes so (<see cref="LowRankAdapters"/>;
/// under QLoRA the blocks' linear weights marked for NF4), (3) tensor and sequence parallelism shard it
/// (<see cref="TensorParallelism"/>), (3b) expert parallelism keeps the rank's experts and dispatches the routed
/// tokens (<see cref="ExpertParallelism"/>), (3c) context parallelism gives it its chunks' positions and the ring
/// attention (<see cref="ContextParallelism"/>), (4) it is placed on the rank's device (an NF4 weight quantized whole, then cut),
/// (5) recompute is set for the stage (<see cref="Recomputation"/>), (6) data parallelism and ZeRO shard its trainable
/// gradients, optimizer state and, under ZeRO-3, parameters (<see cref="DataParallelism"/>). A new parallelism plugs
/// in as a step of its own here.
/// </summary>
public static class Parallelizer
{
    /// <summary>The dtype a plan's precision trains in.</summary>
    public static DType ComputeType(Precision precision) => precision switch
    {
        Precision.Bf16 => DType.BFloat16,
        Precision.Fp16 => DType.Float16,
        Precision.Fp32 or Precision.Tf32 => DType.Float32,
        _ => throw new NotSupportedException($"{precision.Name()}: the executor has no low-precision GEMMs"),
    };

    /// <summary>Steps 2–4: the plain model of <paramref name="layers"/> (and the embedding and head if asked), with the
    /// adapters of <paramref name="tuning"/> (<see cref="LowRankAdapters"/>, before the split), sharded over
    /// <paramref name="tp"/> (this process its member <paramref name="tpRank"/>), on <paramref name="device"/>.</summary>
    public static GptModel ShardedModel(ModelSpec model, ParallelPlan plan, IEnumerable<int> layers, bool embedding, bool head,
        ProcessGroup? tp, int tpRank, ulong seed, Device device, out TensorParallelism? tensorParallelism, FineTuning? tuning = null,
        ProcessGroup? ep = null)
    {
        var gpt = new GptModel(model, layers, embedding, head, ComputeType(plan.Precision), seed);
        LowRankAdapters.Apply(gpt, tuning ?? FineTuning.Default);
        tensorParallelism = TensorParallelism.Apply(gpt, tp, tpRank, plan.SequenceParallel, model.Vocab, splitExperts: plan.Etp == plan.Tp);
        ExpertParallelism.Apply(gpt, ep);
        gpt.Place(device);
        return gpt;
    }

    /// <summary>Every step, for the rank at <paramref name="groups"/>' coordinates.</summary>
    public static ParallelRank Apply(ModelSpec model, ParallelPlan plan, RankGroups groups, ulong seed, Device device, OptimizerSettings optimizer,
        FineTuning tuning)
    {
        var layout = StageLayout.Of(model, plan);
        int stage = groups.Me.Pp;
        var chunks = PipelineSplit.Chunks(layout, stage);
        var gpt = ShardedModel(model, plan, chunks.SelectMany(c => c),
            layout.HasEmbedding(stage, 0), layout.HasHead(stage, layout.Vpp - 1), groups.Tp, groups.Me.Tp,
            seed, device, out var tp, tuning, groups.Ep);
        ContextParallelism.Apply(gpt, groups.Cp);
        var recompute = new Recomputation(plan, stage);
        var data = new DataParallelism(gpt, plan, layout, stage, groups.Dp, groups.Tied, tp, optimizer, new DeviceClock(device),
            gpt.Dispatch is ExpertParallelism ? new ExpertGroups(groups.Edp) : null);
        return new ParallelRank(gpt, layout, chunks, recompute, data, gpt.Dispatch as ExpertParallelism);
    }
}
