using Planner.CostModel.Comm;
using Planner.CostModel.Compute;
using Planner.CostModel.Memory;
using Planner.CostModel.Pipeline;
using Planner.CostModel.Plans;
using Planner.CostModel.Specs;

namespace Planner.CostModel.Pricing;

/// <summary>What a search asks of a plan's stages before pricing them: the stage-partition MILP's linear terms and the
/// end stages' memory.</summary>
public sealed partial class PipelineCosts
{
    /// <summary>
    /// One micro-batch's forward plus backward seconds on a stage (one chunk, no ZeRO-3), split into a per-block part
    /// and the stage's fixed part (embedding on the first stage, head and loss on the last) — the linear terms the
    /// stage-partition MILP works with, for a model of uniform blocks. What <see cref="Compute(ModelSpec, ClusterSpec,
    /// ParallelPlan, PricingOptions)"/> adds beside them (the quantized weights' casts, unfused gradient accumulation)
    /// is left out: a stage's time is at least this.
    /// </summary>
    public static (double PerLayer, double Fixed) StageSeconds(BlockCosts b, bool first, bool last) =>
        (b.Block.Total,
         (first ? b.EmbeddingForward + b.EmbeddingBackward + b.TpEmbedding : 0) + (last ? b.HeadForward + b.HeadBackward + b.TpEmbedding : 0));

    /// <summary>
    /// The first and last stages' memory of a plan on a homogeneous cluster without pricing its time (what
    /// <see cref="StageMemory"/> gives for those stages): a search's first filter. For a model of blocks of several kinds
    /// the first of the pair is the largest stage before the last (any stage may then peak).
    /// </summary>
    /// <param name="variant">Another value of the knobs that leave the kernels alone (e.g. the optimizer offload), for
    /// the second pair of the result.</param>
    public static (MemoryBreakdown First, MemoryBreakdown Last, MemoryBreakdown VariantFirst, MemoryBreakdown VariantLast) EndStageMemory(
        ModelSpec model, ClusterSpec cluster, ParallelPlan plan, BlockCosts planBlock, ParallelPlan variant, PricingOptions options)
    {
        var layout = StageLayout.Of(model, plan);
        var memory = new MemoryModel(model, plan, planBlock.Ops, cluster.GroupList[0].Gpu, options);
        int last = plan.Pp - 1;
        var layersFirst = layout.MixOnStage(0);
        var layersLast = layout.MixOnStage(last);
        int inFlightFirst = ScheduleGenerator.InFlightBound(plan.Pp, plan.Vpp, plan.MicroBatches, 0);
        int inFlightLast = ScheduleGenerator.InFlightBound(plan.Pp, plan.Vpp, plan.MicroBatches, last);
        MemoryBreakdown At(int s, ParallelPlan p) => s == 0
            ? memory.Stage(0, layersFirst, inFlightFirst, plan.Vpp, variant: p)
            : s == last
                ? memory.Stage(s, layersLast, inFlightLast, plan.Vpp, variant: p)
                : memory.Stage(s, layout.MixOnStage(s), ScheduleGenerator.InFlightBound(plan.Pp, plan.Vpp, plan.MicroBatches, s), plan.Vpp, variant: p);
        int largest = 0;
        var first = At(0, plan);
        if (memory.KindCount > 1)
        {
            // A middle stage with the blocks of the middle stage before it and no more micro-batches in flight holds no
            // more than it: only the stages where the mix changes (or more is in flight) are computed.
            BlockMix? before = null;
            int beforeInFlight = 0;
            for (int s = 1; s < last; s++)
            {
                var mix = layout.MixOnStage(s);
                int inFlight = ScheduleGenerator.InFlightBound(plan.Pp, plan.Vpp, plan.MicroBatches, s);
                if (before is not null && mix.SameBlocks(before) && inFlight <= beforeInFlight)
                    continue;
                (before, beforeInFlight) = (mix, inFlight);
                var middle = At(s, plan);
                if (middle.Total > first.Total)
                    (first, largest) = (middle, s);
            }
        }
        var variantFirst = At(largest, variant);
        return last > 0
            ? (first, At(last, plan), variantFirst, At(last, variant))
            : (first, first, variantFirst, variantFirst);
    }
}
