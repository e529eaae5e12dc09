using Planner.CostModel.Plans;
using Planner.CostModel.Specs;

namespace Planner.CostModel.Compute;

/// <summary>FLOPs of one optimizer step over the whole model.</summary>
/// <param name="Model">Forward and backward (3× forward) without recompute: what MFU counts.</param>
/// <param name="Hardware">The same plus recomputed forward kernels: what the GPUs execute.</param>
public readonly record struct Flops(double Model, double Hardware)
{
    /// <summary>
    /// Counted from the GEMMs of an unsharded model (tp = cp = 1, one sequence) times the global batch.
    /// For a standard GPT this equals 72·B·s·l·h²·(1 + s/(6h) + V/(12·l·h)) (Narayanan et al. 2021, Eq. 3 without
    /// recompute); with full recompute the hardware count is 96·B·s·l·h²·(1 + s/(6h) + V/(16·l·h)).
    /// </summary>
    /// <param name="model">The model.</param>
    /// <param name="plan">The plan (only gbs, seq and recompute matter).</param>
    /// <param name="flashAttention">Under fused attention selective recompute re-executes nothing beyond the fused backward.</param>
    public static Flops PerStep(ModelSpec model, ParallelPlan plan, bool flashAttention)
    {
        var one = plan with { Tp = 1, Cp = 1, Pp = 1, Dp = 1, Mbs = 1, Gbs = 1, Vpp = 1, SequenceParallel = false, Stages = null, Ep = 1, Etp = 1, MoeImbalance = 1, MoeCapacity = null };
        // Counted on materialised attention: the convention of the published formulas (no causal saving).
        var ops = new TransformerOps(model, one, flashAttention: false);
        var kinds = ops.Blocks.Select(TransformerOps.Sum).ToArray();
        double blocks = 0;
        for (int l = 0; l < model.Layers; l++)
            blocks += kinds[ops.KindIndex(model.KindOf(l))];
        double head = TransformerOps.Sum(ops.Head);
        // Each multi-token-prediction module: its projection, one block and the shared head again.
        double mtp = model.MtpLayers * (TransformerOps.Sum(ops.MtpProjection) + kinds[ops.KindIndex(model.MtpKind)] + head);
        // A frozen base (LoRA) skips its weight gradients: the forward's FLOPs of its GEMMs, once each.
        double skipped = 0;
        if (plan.Tuning.Adapters)
        {
            var kindsSkipped = ops.Blocks.Select(TransformerOps.SkippedBackward).ToArray();
            for (int l = 0; l < model.Layers; l++)
                skipped += kindsSkipped[ops.KindIndex(model.KindOf(l))];
            skipped += TransformerOps.SkippedBackward(ops.Head)
                + model.MtpLayers * (TransformerOps.SkippedBackward(ops.MtpProjection) + kindsSkipped[ops.KindIndex(model.MtpKind)] + TransformerOps.SkippedBackward(ops.Head));
        }
        double modelFlops = (3 * (blocks + head + mtp) - skipped) * plan.Gbs;
        double mean = blocks / model.Layers;
        double Extra(Recompute r) => r switch
        {
            Recompute.Full => mean,
            Recompute.Selective => flashAttention ? 0 : CoreFlops(ops.Block),
            _ => 0,
        };
        double recomputed = plan.Stages is { } st
            ? st.Layers.Select((l, s) => l * Extra(st.Recompute[s])).Sum()
            : RecomputedBlocks(model, plan) * Extra(plan.Recompute);
        return new Flops(modelFlops, modelFlops + recomputed * plan.Gbs);
    }

    /// <summary>Blocks the recompute policy applies to over the whole model (all chunks of all stages).</summary>
    private static int RecomputedBlocks(ModelSpec model, ParallelPlan plan)
    {
        if (plan.RecomputeLayers is null)
            return model.Layers;
        var layout = new Pricing.StageLayout(model.Layers, plan.Pp, plan.Vpp);
        int n = 0;
        for (int v = 0; v < plan.Pp * plan.Vpp; v++)
            n += plan.RecomputedBlocks(v % plan.Pp, layout.LayersOf(v));
        return n;
    }

    private static double CoreFlops(IReadOnlyList<Op> ops)
    {
        double s = 0;
        foreach (var op in ops)
            if (op.AttentionCore)
                s += op.Flops;
        return s;
    }
}
