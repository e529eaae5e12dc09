using Planner.CostModel.Comm;
using Planner.CostModel.Compute;
using Planner.CostModel.Memory;
using Planner.CostModel.Pipeline;
using Planner.CostModel.Plans;
using Planner.CostModel.Specs;

namespace Planner.CostModel.Pricing;

/// <summary>
/// Prices a plan: per-chunk forward and backward times from the kernels and the TP/CP collectives, the pipeline
/// simulated from the same schedule the executor runs, data-parallel reduction and ZeRO traffic with their overlap,
/// the optimizer step, and each stage's peak memory.
/// </summary>
public static class Pricer
{
    /// <summary>Bytes the Adam step streams per parameter it owns: read master, m, v, gradient; write master, m, v
    /// (fp32), the working copy (16-bit in mixed precision), and one more read of the gradient for its norm.</summary>
    private static double OptimizerBytesPerParam(bool mixed) => mixed ? 7 * 4 + 2 + 4 : 7 * 4 + 4;

    /// <summary>Prices a plan that passed <see cref="PlanCheck.Problem"/>; throws <see cref="InputException"/> otherwise.</summary>
    public static Prediction Price(ModelSpec model, ClusterSpec cluster, ParallelPlan plan, PricingOptions? options = null)
    {
        if (PlanCheck.Problem(model, cluster, plan) is { } problem)
            throw new InputException(problem);
        options ??= PricingOptions.Default;
        var ops = new TransformerOps(model, plan, options.FlashAttention);
        var timer = new KernelTimer(cluster.Gpu, plan.Precision);
        var placement = new Placement(plan, cluster.GpusPerNode);
        var layout = new StageLayout(model.Layers, plan.Pp, plan.Vpp);
        var memory = new MemoryModel(model, plan, ops, cluster.Gpu);
        int m = plan.MicroBatches;
        double e = plan.Precision.ActivationBytes();
        bool mixed = plan.Precision.IsMixed();

        // Per block, per micro-batch.
        double blockFwd = timer.Forward(ops.Block);
        double blockBwd = timer.Backward(ops.Block);
        double blockRecompute = plan.Recompute switch
        {
            Recompute.Full => blockFwd,
            Recompute.Selective => ops.FlashAttention ? 0 : timer.Forward(ops.Block, attentionCoreOnly: true),
            _ => 0,
        };
        // Two TP collectives per block per pass on one hidden-state tensor: all-reduces, or under sequence
        // parallelism an all-gather and a reduce-scatter each, which move the same bytes.
        double hiddenBytes = ops.Tokens * model.Hidden * e;
        double tpPair = 2 * CollectiveModel.Seconds(Collective.AllReduce, hiddenBytes, placement, Axis.Tp, cluster, options.Algorithm);
        double tpBlockFwd = tpPair, tpBlockBwd = tpPair, tpBlockRecompute = plan.Recompute == Recompute.Full ? tpPair : 0;
        // Ring attention passes each CP rank's K and V around the ring (and their gradients back), behind the attention core.
        double kvBytes = 2 * ops.Tokens * ops.LocalKvHeads * model.HeadDim * e;
        double cpStep = CollectiveModel.Seconds(Collective.SendRecv, kvBytes, placement, Axis.Cp, cluster, options.Algorithm);
        double coreFwd = timer.Forward(ops.Block, attentionCoreOnly: true);
        var gpu = cluster.Gpu;
        double cpFwd = plan.Cp > 1 ? gpu.Overlapped(coreFwd, (plan.Cp - 1) * cpStep) - coreFwd : 0;
        double cpBwd = plan.Cp > 1 ? gpu.Overlapped(2 * coreFwd, 2 * (plan.Cp - 1) * cpStep) - 2 * coreFwd : 0;
        double embedFwd = timer.Forward(ops.Embedding), embedBwd = timer.Backward(ops.Embedding);
        double headFwd = timer.Forward(ops.Head), headBwd = timer.Backward(ops.Head);
        // Vocab-parallel embedding: one all-reduce of its output; the LM head's input gradient: one more.
        double tpEmbed = CollectiveModel.Seconds(Collective.AllReduce, hiddenBytes, placement, Axis.Tp, cluster, options.Algorithm);

        // ZeRO-3 gathers each chunk's parameters for forward (and recompute) and backward, and reduce-scatters its
        // gradients every micro-batch; prefetching hides them behind that chunk's compute.
        double weightBytes = mixed ? 2 : 4;
        double Zero3Fwd(int stage, int chunk) => plan.Zero < 3 ? 0 : CollectiveModel.Seconds(Collective.AllGather,
            ChunkParams(stage, chunk) * weightBytes, placement, Axis.Dp, cluster, options.Algorithm);
        double ChunkParams(int stage, int chunk) =>
            memory.StageParams(layout.LayersOf(stage, chunk), layout.HasEmbedding(stage, chunk), layout.HasHead(stage, chunk));

        int chunks = plan.Vpp;
        var fwd = new double[plan.Pp, chunks];
        var bwd = new double[plan.Pp, chunks];
        var parts = new StageParts[plan.Pp];
        for (int s = 0; s < plan.Pp; s++)
        {
            var part = new StageParts();
            for (int c = 0; c < chunks; c++)
            {
                int layers = layout.LayersOf(s, c);
                bool hasEmbed = layout.HasEmbedding(s, c), hasHead = layout.HasHead(s, c);
                double computeF = layers * blockFwd + (hasEmbed ? embedFwd : 0) + (hasHead ? headFwd : 0);
                double computeB = layers * blockBwd + (hasEmbed ? embedBwd : 0) + (hasHead ? headBwd : 0);
                double recompute = layers * blockRecompute;
                double commF = layers * (tpBlockFwd + cpFwd) + (hasEmbed ? tpEmbed : 0);
                double commB = layers * (tpBlockBwd + tpBlockRecompute + cpBwd) + (hasHead ? tpEmbed : 0);
                double gather = Zero3Fwd(s, c);
                double zeroF = gpu.Overlapped(computeF, gather) - computeF;
                // Backward gathers again (twice with full recompute) and reduce-scatters as many bytes.
                double zeroB = gpu.Overlapped(computeB + recompute, gather * (plan.Recompute == Recompute.Full ? 3 : 2)) - (computeB + recompute);
                fwd[s, c] = computeF + commF + zeroF;
                bwd[s, c] = computeB + recompute + commB + zeroB;
                part.Compute += m * (computeF + computeB);
                part.Recompute += m * recompute;
                part.TpComm += m * (commF + commB);
                part.Zero3 += m * (zeroF + zeroB);
                part.LastBackward += bwd[s, c];
                part.FirstForward += fwd[s, c];
            }
            parts[s] = part;
        }

        var schedule = ScheduleGenerator.Generate(plan.Pp, plan.Vpp, m);
        double Duration(int s, int c, PassKind k) => k == PassKind.Forward ? fwd[s, c] : bwd[s, c];
        double p2pBytes = hiddenBytes / plan.Tp; // scatter/gather across the TP ranks of a stage (Narayanan et al. 2021)
        double p2p = plan.Pp > 1 ? CollectiveModel.Seconds(Collective.SendRecv, p2pBytes, 2, placement.CrossesNodes(Axis.Pp) ? 1 : 2, cluster) : 0;
        var withP2p = PipelineSimulator.Simulate(schedule, Duration, p2p);
        var withoutP2p = p2p > 0 ? PipelineSimulator.Simulate(schedule, Duration, 0) : withP2p;

        // After the flush: gradient reduction, the optimizer step, and for ZeRO-1/2 the parameter all-gather.
        double gradBytes = mixed ? 2 : 4;
        double worstTail = 0;
        int critical = 0;
        double[] tails = new double[plan.Pp];
        for (int s = 0; s < plan.Pp; s++)
        {
            double stageParams = memory.StageParams(layout.LayersOnStage(s), s == 0, s == plan.Pp - 1);
            double reduce = 0, gather = 0;
            if (plan.Zero == 0)
                reduce = CollectiveModel.Seconds(Collective.AllReduce, stageParams * gradBytes, placement, Axis.Dp, cluster, options.Algorithm);
            else if (plan.Zero <= 2)
            {
                reduce = CollectiveModel.Seconds(Collective.ReduceScatter, stageParams * gradBytes, placement, Axis.Dp, cluster, options.Algorithm);
                gather = CollectiveModel.Seconds(Collective.AllGather, stageParams * weightBytes, placement, Axis.Dp, cluster, options.Algorithm);
            }
            if (options.OverlapGradReduce)
            {
                reduce = gpu.Overlapped(parts[s].LastBackward, reduce) - parts[s].LastBackward;
                gather = gpu.Overlapped(parts[s].FirstForward, gather) - parts[s].FirstForward;
            }
            // Tied input and output embeddings on different stages: their gradients are summed across the pipeline.
            double tied = model.TiedEmbeddings && plan.Pp > 1 && (s == 0 || s == plan.Pp - 1)
                ? CollectiveModel.Seconds(Collective.AllReduce, (double)model.Vocab * model.Hidden / plan.Tp * gradBytes, 2, placement.CrossesNodes(Axis.Pp) ? 1 : 2, cluster)
                : 0;
            double owned = plan.Zero >= 1 ? stageParams / plan.Dp : stageParams;
            double optimizer = timer.Stream(owned * OptimizerBytesPerParam(mixed));
            parts[s].DpTail = reduce + gather + tied;
            parts[s].Optimizer = optimizer;
            tails[s] = reduce + gather + tied + optimizer;
            if (tails[s] > worstTail)
                worstTail = tails[s];
        }
        // The busiest stage explains the step.
        for (int s = 1; s < plan.Pp; s++)
            if (withP2p.StageBusySeconds[s] > withP2p.StageBusySeconds[critical])
                critical = s;
        var cp = parts[critical];
        double busy = withP2p.StageBusySeconds[critical];
        double step = withP2p.MakespanSeconds + worstTail;
        var breakdown = new Breakdown(
            Compute: cp.Compute,
            Recompute: cp.Recompute,
            TpComm: cp.TpComm,
            PpComm: withP2p.MakespanSeconds - withoutP2p.MakespanSeconds,
            DpComm: cp.Zero3 + (worstTail - cp.Optimizer),
            Bubble: withoutP2p.MakespanSeconds - busy,
            Optimizer: cp.Optimizer);

        // Memory per stage, with the schedule's in-flight count.
        var mem = new MemoryBreakdown[plan.Pp];
        for (int s = 0; s < plan.Pp; s++)
            mem[s] = memory.Stage(s, layout.LayersOnStage(s), ScheduleGenerator.MaxInFlight(schedule, s), chunks);
        double peak = 0;
        foreach (var b in mem)
            peak = Math.Max(peak, b.Total);

        // FLOPs of the whole model for the global batch: per-sequence FLOPs of an unsharded model.
        var flops = Flops.PerStep(model, plan, options.FlashAttention);
        int gpus = plan.Gpus;
        double modelTflops = flops.Model / (gpus * step) / 1e12;
        double hardwareTflops = flops.Hardware / (gpus * step) / 1e12;
        return new Prediction(
            plan,
            model.Name,
            cluster.Name,
            step,
            (double)plan.Gbs * plan.Seq / step,
            modelTflops,
            hardwareTflops,
            modelTflops * 1e12 / cluster.Gpu.PeakFlops(plan.Precision),
            peak / Units.GiB,
            cluster.Gpu.MemoryGib,
            peak <= cluster.Gpu.MemoryBytes,
            breakdown,
            mem);
    }

    private sealed class StageParts
    {
        public double Compute, Recompute, TpComm, Zero3, LastBackward, FirstForward, DpTail, Optimizer;
    }
}
