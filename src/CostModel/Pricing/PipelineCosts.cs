using Planner.CostModel.Comm;
using Planner.CostModel.Compute;
using Planner.CostModel.Memory;
using Planner.CostModel.Pipeline;
using Planner.CostModel.Plans;
using Planner.CostModel.Specs;

namespace Planner.CostModel.Pricing;

/// <summary>What one stage spends per step, by cause (seconds), before the pipeline is simulated.</summary>
public sealed class StageParts
{
    /// <summary>Forward and backward kernels, all micro-batches.</summary>
    public double Compute;
    /// <summary>Recomputed forward kernels.</summary>
    public double Recompute;
    /// <summary>TP and CP collectives.</summary>
    public double TpComm;
    /// <summary>ZeRO-3 gathers and reduce-scatters not hidden behind compute.</summary>
    public double Zero3;
    /// <summary>One micro-batch's backward over all chunks: what DP reduction can hide behind.</summary>
    public double LastBackward;
    /// <summary>One micro-batch's forward over all chunks: what a ZeRO-1/2 parameter gather can hide behind.</summary>
    public double FirstForward;
    /// <summary>Exposed data-parallel time after the pipeline flush (reduction, gathers, tied embeddings); with ZeRO-2
    /// reducing every micro-batch (<see cref="PricingOptions.ReduceScatterPerMicroBatch"/>) also the exposed parts of the
    /// earlier micro-batches' reduce-scatters, which hold the stage up as long, only before the flush.</summary>
    public double DpTail;
    /// <summary>The optimizer step.</summary>
    public double Optimizer;
    /// <summary>The optimizer step with all the rank's optimizer state on the GPU.</summary>
    public double GpuOptimizer;
    /// <summary>Parameters whose optimizer state the rank owns (after ZeRO sharding).</summary>
    public double OwnedParams;
    /// <summary>Everything after the flush: <see cref="DpTail"/> + <see cref="Optimizer"/>.</summary>
    public double Tail => DpTail + Optimizer;
}

/// <summary>
/// The per-chunk forward and backward durations of every pipeline stage for one micro-batch (kernels, TP/CP
/// collectives, exposed ZeRO-3 traffic) and the work after the flush; the input of the pipeline simulation and of
/// the search's lower bound.
/// </summary>
public sealed class PipelineCosts
{
    /// <summary>Bytes the Adam step streams per parameter it owns: read master, m, v, gradient; write master, m, v
    /// (fp32), the working copy (16-bit in mixed precision), and one more read of the gradient for its norm.</summary>
    private static double OptimizerBytesPerParam(bool mixed) => mixed ? 7 * 4 + 2 + 4 : 7 * 4 + 4;

    /// <summary>Forward seconds of [stage, chunk] for one micro-batch.</summary>
    public required double[,] Forward { get; init; }
    /// <summary>Backward seconds (with recompute) of [stage, chunk] for one micro-batch.</summary>
    public required double[,] Backward { get; init; }
    /// <summary>Per-stage accounting.</summary>
    public required StageParts[] Parts { get; init; }
    /// <summary>Seconds of one point-to-point activation transfer between neighbouring stages.</summary>
    public required double P2p { get; init; }
    /// <summary>Blocks per stage and chunk.</summary>
    public required StageLayout Layout { get; init; }
    /// <summary>The memory model of the plan, per GPU group.</summary>
    public required MemoryModel[] Memories { get; init; }
    /// <summary>Host memory each GPU may fill with offloaded state, bytes (0 without a host spec).</summary>
    public required double HostBytesPerGpu { get; init; }
    /// <summary>Seconds per offloaded parameter of the CPU optimizer step, pipelined over buckets: the slowest of the
    /// gradient's copy to the host, the CPU's Adam update and the updated weight's copy back (0 without a host spec).</summary>
    public required double HostSecondsPerParam { get; init; }

    /// <summary>
    /// The optimizer step of a stage with <paramref name="offload"/> of its state on the host: the GPU steps the rest
    /// while the CPU steps that part, so the slower of the two.
    /// </summary>
    public double OptimizerSeconds(int stage, double offload)
    {
        var part = Parts[stage];
        return offload <= 0 ? part.GpuOptimizer : Math.Max(part.GpuOptimizer * (1 - offload), part.OwnedParams * offload * HostSecondsPerParam);
    }

    /// <summary>The largest after-flush time over stages with another optimizer offload than the plan's.</summary>
    public double WorstTailWith(double offload)
    {
        double w = 0;
        for (int s = 0; s < Parts.Length; s++)
            w = Math.Max(w, Parts[s].DpTail + OptimizerSeconds(s, offload));
        return w;
    }

    /// <summary>True when the plan's offloaded state fits its nodes' host memory (first and last stages hold the most).</summary>
    public bool HostFits(ParallelPlan plan) =>
        plan.OptimizerOffload <= 0
        || (StageMemory(0, plan).Host <= HostBytesPerGpu && StageMemory(plan.Pp - 1, plan).Host <= HostBytesPerGpu);

    /// <summary>The largest after-flush time over stages.</summary>
    public double WorstTail
    {
        get
        {
            double w = 0;
            foreach (var p in Parts)
                w = Math.Max(w, p.Tail);
            return w;
        }
    }

    /// <summary>
    /// A lower bound of the simulated pipeline's makespan that is tight for the schedules we generate: stage s
    /// cannot start before the first micro-batch's chunk-0 forwards on stages 0..s−1 (and their transfers), runs
    /// its own actions one after another, and ends with the last micro-batch's chunk-0 backward, after which stages
    /// s−1..0 still run theirs. Equal to the makespan for uniform stages.
    /// </summary>
    public double MakespanLowerBound(int microBatches)
    {
        int pp = Parts.Length, vpp = Forward.GetLength(1);
        double best = 0, prefix = 0;
        for (int s = 0; s < pp; s++)
        {
            double busy = 0;
            for (int c = 0; c < vpp; c++)
                busy += Forward[s, c] + Backward[s, c];
            best = Math.Max(best, prefix + microBatches * busy);
            prefix += Forward[s, 0] + Backward[s, 0] + 2 * P2p;
        }
        return best;
    }

    /// <summary>Peak memory of one stage's rank.</summary>
    public MemoryBreakdown StageMemory(int stage, ParallelPlan plan) =>
        Memories[plan.GroupOf(stage)].Stage(stage, Layout.LayersOnStage(stage), ScheduleGenerator.InFlightBound(plan.Pp, plan.Vpp, plan.MicroBatches, stage), plan.Vpp, variant: plan);

    /// <summary>
    /// The largest per-rank peak, bytes. Only the first and last stages can hold it: layers per stage and in-flight
    /// micro-batches never increase along the pipeline and the first stage adds the embedding, so stage 0 bounds
    /// every middle stage; the last stage adds the head, the logits and a tied embedding's copy.
    /// </summary>
    public double PeakMemoryBytes(ParallelPlan plan) =>
        Math.Max(StageMemory(0, plan).Total, plan.Pp > 1 ? StageMemory(plan.Pp - 1, plan).Total : 0);

    /// <summary>
    /// One micro-batch's forward plus backward seconds on a stage (one chunk, no ZeRO-3), split into a per-block part
    /// and the stage's fixed part (embedding on the first stage, head and loss on the last) — the linear terms the
    /// stage-partition MILP works with. Agrees with <see cref="Compute(ModelSpec, ClusterSpec, ParallelPlan, PricingOptions)"/>.
    /// </summary>
    public static (double PerLayer, double Fixed) StageSeconds(BlockCosts b, bool first, bool last) =>
        (b.Forward + b.Backward + b.Recompute + b.TpForward + b.TpBackward + b.TpRecompute + b.CpForward + b.CpBackward,
         (first ? b.EmbeddingForward + b.EmbeddingBackward + b.TpEmbedding : 0) + (last ? b.HeadForward + b.HeadBackward + b.TpEmbedding : 0));

    /// <summary>
    /// The first and last stages' memory of a plan on a homogeneous cluster without pricing its time (what
    /// <see cref="StageMemory"/> gives for those stages): a search's first filter.
    /// </summary>
    /// <param name="variant">Another value of the knobs that leave the kernels alone (e.g. the optimizer offload), for
    /// the second pair of the result.</param>
    public static (MemoryBreakdown First, MemoryBreakdown Last, MemoryBreakdown VariantFirst, MemoryBreakdown VariantLast) EndStageMemory(
        ModelSpec model, ClusterSpec cluster, ParallelPlan plan, BlockCosts planBlock, ParallelPlan variant, PricingOptions options)
    {
        var layout = StageLayout.Of(model, plan);
        var memory = new MemoryModel(model, plan, planBlock.Ops, cluster.GroupList[0].Gpu, options.GradientBucketCopies, options.Fp32Params);
        int last = plan.Pp - 1;
        int layersFirst = layout.LayersOnStage(0), layersLast = layout.LayersOnStage(last);
        int inFlightFirst = ScheduleGenerator.InFlightBound(plan.Pp, plan.Vpp, plan.MicroBatches, 0);
        int inFlightLast = ScheduleGenerator.InFlightBound(plan.Pp, plan.Vpp, plan.MicroBatches, last);
        MemoryBreakdown At(int s, ParallelPlan p) => s == 0
            ? memory.Stage(0, layersFirst, inFlightFirst, plan.Vpp, variant: p)
            : memory.Stage(s, layersLast, inFlightLast, plan.Vpp, variant: p);
        var first = At(0, plan);
        var variantFirst = At(0, variant);
        return last > 0
            ? (first, At(last, plan), variantFirst, At(last, variant))
            : (first, first, variantFirst, variantFirst);
    }

    /// <summary>Host memory each GPU of the cluster may fill with offloaded state, bytes (0 without a host spec).</summary>
    public static double HostBytesPerGpuOf(ClusterSpec cluster) => cluster.Host is { } host ? host.UsableBytes / cluster.GpusPerNode : 0;

    /// <summary>Computes the costs of a plan that passed <see cref="PlanCheck"/>.</summary>
    public static PipelineCosts Compute(ModelSpec model, ClusterSpec cluster, ParallelPlan plan, PricingOptions options)
    {
        var cache = new Dictionary<(int, Recompute), BlockCosts>();
        return Compute(model, cluster, plan, options, (g, r) =>
            cache.TryGetValue((g, r), out var b) ? b : cache[(g, r)] = BlockCosts.Compute(model, cluster.ForGroup(g), plan with { Recompute = r }, options));
    }

    /// <summary>
    /// Computes the costs of a plan from its (possibly cached) per-block costs for each GPU group and recompute policy.
    /// </summary>
    public static PipelineCosts Compute(ModelSpec model, ClusterSpec cluster, ParallelPlan plan, PricingOptions options, Func<int, Recompute, BlockCosts> blocks)
    {
        var placement = new Placement(plan, cluster.GpusPerNode);
        var layout = StageLayout.Of(model, plan);
        var planBlock = blocks(0, plan.Recompute);
        var memories = new MemoryModel[cluster.GroupList.Count];
        for (int g = 0; g < memories.Length; g++)
            memories[g] = new MemoryModel(model, plan, planBlock.Ops, cluster.GroupList[g].Gpu, options.GradientBucketCopies, options.Fp32Params);
        var memory = memories[0];
        int m = plan.MicroBatches;
        bool mixed = plan.Precision.IsMixed();
        double hiddenBytes = planBlock.HiddenBytes;

        // ZeRO-3 gathers each chunk's parameters for forward (and recompute) and backward, and reduce-scatters its
        // gradients every micro-batch; prefetching hides them behind that chunk's compute (PricingOptions.PrefetchZero3).
        double weightBytes = mixed ? 2 : 4;
        // Data-parallel collectives in the training precision or in fp32, and ZeRO's reduce-scatter natively or as an
        // all-reduce (see PricingOptions).
        double gradBytes = mixed ? 2 : 4;
        double reduceBytes = options.Fp32DataParallel ? 4 : gradBytes, gatherBytes = options.Fp32DataParallel ? 4 : weightBytes;
        var scatter = options.ReduceScatterAsAllReduce ? Collective.AllReduce : Collective.ReduceScatter;
        double Zero3Fwd(int stage, int chunk) => plan.Zero < 3 ? 0 : CollectiveModel.Seconds(Collective.AllGather,
            ChunkParams(stage, chunk) * gatherBytes, placement, Axis.Dp, cluster, options.Algorithm);
        double Zero3Reduce(int stage, int chunk) => plan.Zero < 3 ? 0 : CollectiveModel.Seconds(scatter,
            ChunkParams(stage, chunk) * reduceBytes, placement, Axis.Dp, cluster, options.Algorithm);
        double ChunkParams(int stage, int chunk) =>
            memory.StageParams(layout.LayersOf(stage, chunk), layout.HasEmbedding(stage, chunk), layout.HasHead(stage, chunk));

        int chunks = plan.Vpp;
        double gradAccumulationBytes = mixed ? 2 : 4;
        var fwd = new double[plan.Pp, chunks];
        var bwd = new double[plan.Pp, chunks];
        var parts = new StageParts[plan.Pp];
        for (int s = 0; s < plan.Pp; s++)
        {
            var part = new StageParts();
            var block = blocks(plan.GroupOf(s), plan.RecomputeOf(s));
            var gpu = cluster.GroupList[plan.GroupOf(s)].Gpu;
            double blockFwd = block.Forward, blockBwd = block.Backward, blockRecompute = block.Recompute;
            double tpBlockFwd = block.TpForward, tpBlockBwd = block.TpBackward, tpBlockRecompute = block.TpRecompute;
            double cpFwd = block.CpForward, cpBwd = block.CpBackward, tpEmbed = block.TpEmbedding;
            double embedFwd = block.EmbeddingForward, embedBwd = block.EmbeddingBackward, headFwd = block.HeadForward, headBwd = block.HeadBackward;
            for (int c = 0; c < chunks; c++)
            {
                int layers = layout.LayersOf(s, c);
                bool hasEmbed = layout.HasEmbedding(s, c), hasHead = layout.HasHead(s, c);
                double computeF = layers * blockFwd + (hasEmbed ? embedFwd : 0) + (hasHead ? headFwd : 0);
                double computeB = layers * blockBwd + (hasEmbed ? embedBwd : 0) + (hasHead ? headBwd : 0);
                int recomputed = plan.RecomputedBlocks(s, layers);
                double recompute = recomputed * blockRecompute;
                double commF = layers * (tpBlockFwd + cpFwd) + (hasEmbed ? tpEmbed : 0);
                double commB = layers * (tpBlockBwd + cpBwd) + recomputed * tpBlockRecompute + (hasHead ? tpEmbed : 0);
                double gather = Zero3Fwd(s, c);
                // Backward gathers again (prefetching software twice with full recompute: for the recompute and for the
                // backward) and reduce-scatters the chunk's gradients; without prefetch all of it waits.
                bool regather = plan.RecomputeOf(s) == Recompute.Full && recomputed > 0 && options.PrefetchZero3;
                double backComm = gather * (regather ? 2 : 1) + Zero3Reduce(s, c);
                double zeroF = options.PrefetchZero3 ? gpu.Overlapped(computeF, gather) - computeF : gather;
                double zeroB = options.PrefetchZero3 ? gpu.Overlapped(computeB + recompute, backComm) - (computeB + recompute) : backComm;
                // Every micro-batch after the first adds its weight gradients into the accumulated ones (read both,
                // write one): a memory-bound pass over the chunk's gradients, spread over the micro-batches.
                double accumulate = m > 1 && !options.FusedGradAccumulation ? block.Timer.Stream(3 * ChunkParams(s, c) * gradAccumulationBytes) * (m - 1) / m : 0;
                fwd[s, c] = computeF + commF + zeroF;
                bwd[s, c] = computeB + accumulate + recompute + commB + zeroB;
                part.Compute += m * (computeF + computeB + accumulate);
                part.Recompute += m * recompute;
                part.TpComm += m * (commF + commB);
                part.Zero3 += m * (zeroF + zeroB);
                part.LastBackward += bwd[s, c];
                part.FirstForward += fwd[s, c];
            }
            parts[s] = part;
        }

        double p2pBytes = hiddenBytes / plan.Tp; // scatter/gather across the TP ranks of a stage (Narayanan et al. 2021)
        double p2p = plan.Pp > 1 ? CollectiveModel.Seconds(Collective.SendRecv, p2pBytes, 2, placement.CrossesNodes(Axis.Pp) ? 1 : 2, cluster) : 0;

        // After the flush: gradient reduction, the optimizer step, and for ZeRO-1/2 the parameter all-gather. ZeRO-2
        // software that reduce-scatters every micro-batch's gradients runs m reduce-scatters a step: each behind its
        // own micro-batch's backward, the last one's exposed part after the flush, the earlier ones' exposed parts
        // counted here too (they hold their stage up as much, only earlier).
        int reductions = plan.Zero == 2 && options.ReduceScatterPerMicroBatch ? m : 1;
        for (int s = 0; s < plan.Pp; s++)
        {
            double stageParams = memory.StageParams(layout.LayersOnStage(s), s == 0, s == plan.Pp - 1);
            // An embedding tied across stages that software reduces over data parallelism only after its sum over the
            // pipeline, after the flush (PricingOptions.TiedEmbeddingReducedAfterFlush): its reduction is apart from
            // the overlapped buckets and exposed.
            bool tiedHere = model.TiedEmbeddings && plan.Pp > 1 && (s == 0 || s == plan.Pp - 1);
            double tiedParams = tiedHere ? (double)model.Vocab * model.Hidden / plan.Tp : 0;
            double apart = options.TiedEmbeddingReducedAfterFlush && plan.Zero <= 2 ? tiedParams : 0;
            // Each chunk's gradients by bucket: its blocks', the head's (final norm and output layer) on the last virtual
            // stage, the embedding's on the first; an embedding reduced apart is left out. Last: the bucket whose
            // gradients the chunk's backward finishes last (the embedding where there is one, else the first block).
            (List<double> Buckets, double Last) ChunkBuckets(int c)
            {
                int layers = layout.LayersOf(s, c);
                bool first = layout.HasEmbedding(s, c), last = layout.HasHead(s, c);
                double block = (double)model.LayerParams / plan.Tp;
                double embedding = first ? (double)model.EmbeddingParams / plan.Tp : 0;
                double head = memory.StageParams(layers, first, last) - layers * block - embedding;
                if (first)
                    embedding -= apart;
                else if (last)
                    head -= apart;
                var list = Enumerable.Repeat(block, layers).Append(head).Append(embedding).Where(b => b > 0).ToList();
                return (list, embedding > 0 ? embedding : layers > 0 ? block : head);
            }
            var chunkBuckets = Enumerable.Range(0, chunks).Select(ChunkBuckets).ToList();
            var buckets = chunkBuckets.SelectMany(b => b.Buckets).ToList();
            // One collective per bucket (each paying its latency), or the buckets priced as one.
            double Collect(Collective op, IEnumerable<double> parts, double bytes) => options.CollectivePerBucket
                ? parts.Sum(b => CollectiveModel.Seconds(op, b * bytes, placement, Axis.Dp, cluster, options.Algorithm))
                : CollectiveModel.Seconds(op, parts.Sum() * bytes, placement, Axis.Dp, cluster, options.Algorithm);
            double reduce = 0, gather = 0, reduceApart = 0;
            var reduceOp = plan.Zero == 0 ? Collective.AllReduce : scatter;
            if (plan.Zero <= 2)
            {
                reduce = Collect(reduceOp, buckets, reduceBytes);
                reduceApart = CollectiveModel.Seconds(reduceOp, apart * reduceBytes, placement, Axis.Dp, cluster, options.Algorithm);
            }
            if (plan.Zero is 1 or 2)
                gather = Collect(Collective.AllGather, apart > 0 ? buckets.Append(apart) : buckets, gatherBytes);
            var gpu = cluster.GroupList[plan.GroupOf(s)].Gpu;
            // The reduction of buckets started behind a backward of `seconds`: the last bucket only after it ends,
            // exposed whatever the overlap.
            double Exposed(double seconds, List<double> parts, double lastParams)
            {
                double all = Collect(reduceOp, parts, reduceBytes), total = parts.Sum();
                if (total <= 0)
                    return 0;
                double last = options.CollectivePerBucket
                    ? Math.Min(all, Collect(reduceOp, [Math.Min(lastParams, total)], reduceBytes))
                    : Math.Min(1, lastParams / total) * all;
                return gpu.Overlapped(seconds, all - last) - seconds + last;
            }
            if (options.OverlapGradReduce)
            {
                // ZeRO-2 reducing every micro-batch waits for each chunk's buckets at the end of the chunk's backward:
                // under interleaving every chunk exposes its own last bucket. Otherwise the stage's buckets run behind
                // the last micro-batch's whole backward, the first chunk's last bucket exposed.
                if (plan.Zero <= 2)
                    reduce = plan.Zero == 2 && options.ReduceScatterPerMicroBatch
                        ? Enumerable.Range(0, chunks).Sum(c => Exposed(bwd[s, c], chunkBuckets[c].Buckets, chunkBuckets[c].Last))
                        : Exposed(parts[s].LastBackward, buckets, chunkBuckets[0].Last);
                if (options.OverlapParamGather)
                    gather = gpu.Overlapped(parts[s].FirstForward, gather) - parts[s].FirstForward;
            }
            reduce = (reduce + reduceApart) * reductions;
            // Tied input and output embeddings on different stages: their gradients are summed across the pipeline
            // (software that reduces them apart sums ZeRO-2/3's shards, already reduced over data parallelism).
            double tiedBytes = tiedParams * reduceBytes / (options.TiedEmbeddingReducedAfterFlush && plan.Zero >= 2 ? plan.Dp : 1);
            double tied = tiedHere
                ? CollectiveModel.Seconds(Collective.AllReduce, tiedBytes, 2, placement.CrossesNodes(Axis.Pp) ? 1 : 2, cluster)
                : 0;
            double owned = plan.Zero >= 1 ? stageParams / plan.Dp : stageParams;
            parts[s].OwnedParams = owned;
            parts[s].GpuOptimizer = blocks(plan.GroupOf(s), plan.RecomputeOf(s)).Timer.Optimizer(owned, owned * OptimizerBytesPerParam(mixed));
            parts[s].DpTail = reduce + gather + tied;
        }
        double hostSecondsPerParam = 0, hostBytesPerGpu = 0;
        if (cluster.Host is { } host)
        {
            double toHost = gradBytes / host.PcieBytesPerSecond, toGpu = weightBytes / host.PcieBytesPerSecond;
            double cpu = OptimizerBytesPerParam(mixed) / (host.MemoryBandwidthGbs * 1e9 * HostSpec.OptimizerEfficiency / cluster.GpusPerNode);
            hostSecondsPerParam = Math.Max(cpu, Math.Max(toHost, toGpu));
            hostBytesPerGpu = HostBytesPerGpuOf(cluster);
        }
        var costs = new PipelineCosts
        {
            Forward = fwd, Backward = bwd, Parts = parts, P2p = p2p, Layout = layout, Memories = memories,
            HostBytesPerGpu = hostBytesPerGpu, HostSecondsPerParam = hostSecondsPerParam,
        };
        for (int s = 0; s < plan.Pp; s++)
            parts[s].Optimizer = costs.OptimizerSeconds(s, plan.OptimizerOffload);
        return costs;
    }
}
