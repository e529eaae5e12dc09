using Planner.CostModel.Comm;
using Planner.CostModel.Compute;
using Planner.CostModel.Memory;
using Planner.CostModel.Pipeline;
using Planner.CostModel.Plans;
using Planner.CostModel.Specs;

namespace Planner.CostModel.Pricing;

/// <summary>
/// The per-chunk forward and backward durations of every pipeline stage for one micro-batch (kernels, TP/CP
/// collectives, exposed ZeRO-3 traffic) and the work after the flush; the input of the pipeline simulation and of
/// the search's lower bound.
/// </summary>
public sealed partial class PipelineCosts
{
    /// <summary>Bytes the optimizer step streams per parameter it owns: read and write the fp32 master (or the
    /// weights), the gradient (fp32) read for its norm and for the update, the optimizer's state read and written
    /// (<see cref="FineTuning.StepStateBytes"/>: AdamW's m and v), and the working copy written (16-bit in mixed
    /// precision). AdamW: 7·4 + 4 (+ 2) bytes.</summary>
    private static double OptimizerBytesPerParam(bool mixed, OptimizerKind optimizer) => 2 * 4 + FineTuning.StepStateBytes(optimizer, 4) + (mixed ? 2 : 0);

    /// <summary>
    /// Sophia's Hessian estimate (Liu et al. 2023, Gauss-Newton-Bartlett): every k = 10 steps a forward and a backward
    /// of the step's micro-batches on labels sampled from the model's own outputs, whose squared gradients refresh the
    /// diagonal; amortized over the k steps and counted with the optimizer. 0 for every other optimizer.
    /// </summary>
    private static double SophiaHessianSeconds(ParallelPlan plan, double[,] fwd, double[,] bwd, int stage)
    {
        if (plan.Tuning.Optimizer != OptimizerKind.Sophia)
            return 0;
        double pass = 0;
        for (int c = 0; c < fwd.GetLength(1); c++)
            pass += fwd[stage, c] + bwd[stage, c];
        return pass * plan.MicroBatches / FineTuning.SophiaHessianInterval;
    }

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

    /// <summary>True when the plan's offloaded state fits its nodes' host memory (the first and last stages hold the
    /// most of an even split of uniform blocks; every stage is checked otherwise).</summary>
    public bool HostFits(ParallelPlan plan)
    {
        if (plan.OptimizerOffload <= 0)
            return true;
        if (AnyStageMayPeak(plan))
            return Enumerable.Range(0, plan.Pp).All(s => StageMemory(s, plan).Host <= HostBytesPerGpu);
        return StageMemory(0, plan).Host <= HostBytesPerGpu && StageMemory(plan.Pp - 1, plan).Host <= HostBytesPerGpu;
    }

    /// <summary>True when a middle stage may hold more than the end stages: blocks of several kinds, or an uneven split.</summary>
    private bool AnyStageMayPeak(ParallelPlan plan) => Memories[0].KindCount > 1 || plan.Stages is not null;

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
        Memories[plan.GroupOf(stage)].Stage(stage, Layout.MixOnStage(stage), ScheduleGenerator.InFlightBound(plan.Pp, plan.Vpp, plan.MicroBatches, stage), plan.Vpp, variant: plan);

    /// <summary>
    /// The largest per-rank peak, bytes. For a model of uniform blocks only the first and last stages can hold it:
    /// layers per stage and in-flight micro-batches never increase along the pipeline and the first stage adds the
    /// embedding, so stage 0 bounds every middle stage; the last stage adds the head, the logits and a tied embedding's
    /// copy. Blocks of several kinds (dense first blocks before MoE ones) or an uneven split can make a middle stage the
    /// largest: every stage is then computed.
    /// </summary>
    public double PeakMemoryBytes(ParallelPlan plan)
    {
        double peak = Math.Max(StageMemory(0, plan).Total, plan.Pp > 1 ? StageMemory(plan.Pp - 1, plan).Total : 0);
        if (AnyStageMayPeak(plan))
            for (int s = 1; s < plan.Pp - 1; s++)
                peak = Math.Max(peak, StageMemory(s, plan).Total);
        return peak;
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
        var placement = Placement.For(plan, cluster);
        var layout = StageLayout.Of(model, plan);
        var planBlock = blocks(0, plan.Recompute);
        var memories = new MemoryModel[cluster.GroupList.Count];
        for (int g = 0; g < memories.Length; g++)
            memories[g] = new MemoryModel(model, plan, planBlock.Ops, cluster.GroupList[g].Gpu, options);
        var memory = memories[0];
        int m = plan.MicroBatches;
        bool mixed = plan.Precision.IsMixed();
        double hiddenBytes = planBlock.HiddenBytes;
        var quantization = planBlock.Ops.Quantization;

        // ZeRO-3 gathers each chunk's parameters for forward (and recompute) and backward, and reduce-scatters its
        // gradients every micro-batch; prefetching hides them behind that chunk's compute (PricingOptions.PrefetchZero3).
        double weightBytes = mixed ? 2 : 4;
        // Data-parallel collectives in the training precision or in fp32, and ZeRO's reduce-scatter natively or as an
        // all-reduce (see PricingOptions).
        double gradBytes = mixed && !options.Fp32GradReduce ? 2 : 4;
        double reduceBytes = options.Fp32DataParallel ? 4 : gradBytes, gatherBytes = options.Fp32DataParallel ? 4 : weightBytes;
        var scatter = options.ReduceScatterAsAllReduce ? Collective.AllReduce : Collective.ReduceScatter;
        // A data-parallel collective over weights (dense, expert): the dense ones over the data- and context-parallel
        // ranks, the experts over the expert-data-parallel ones.
        double Dp(Collective op, (double Dense, double Expert) weights, double bytes) =>
            CollectiveModel.Seconds(op, weights.Dense * bytes, placement, Axis.DpCp, cluster, options.Algorithm)
            + CollectiveModel.Seconds(op, weights.Expert * bytes, placement, Axis.Edp, cluster, options.Algorithm);
        (double, double) ChunkParams(int stage, int chunk) =>
            memory.Params(layout.MixOf(stage, chunk), layout.HasEmbedding(stage, chunk), layout.HasHead(stage, chunk));
        // Gradients exist only for the trainable weights (a frozen base has none).
        (double, double) TrainableChunkParams(int stage, int chunk) =>
            memory.TrainableParams(layout.MixOf(stage, chunk), layout.HasEmbedding(stage, chunk), layout.HasHead(stage, chunk));
        double Zero3Fwd(int stage, int chunk) => plan.Zero < 3 ? 0 : Dp(Collective.AllGather, ChunkParams(stage, chunk), gatherBytes);
        double Zero3Reduce(int stage, int chunk) => plan.Zero < 3 ? 0 : Dp(scatter, TrainableChunkParams(stage, chunk), reduceBytes);

        int chunks = plan.Vpp;
        // The host link of each GPU (for offloaded activations): the cluster's host, else the GPU's own; offload with
        // neither is refused.
        double hostLink = (cluster.Host?.PcieGbs ?? (cluster.Gpu.HostLinkGbs > 0 ? cluster.Gpu.HostLinkGbs : 0)) * 1e9;
        if (options.ActivationOffloadLayers > 0 && hostLink <= 0)
            throw new InputException($"stack '{options.Stack}': activation_offload_layers needs the GPUs' link to host memory, which cluster '{cluster.Name}' (host.pcie_gbs) and GPU '{cluster.Gpu.Name}' (host_link_gbs) do not give");
        double gradAccumulationBytes = gradBytes;
        var fwd = new double[plan.Pp, chunks];
        var bwd = new double[plan.Pp, chunks];
        var parts = new StageParts[plan.Pp];
        for (int s = 0; s < plan.Pp; s++)
        {
            var part = new StageParts();
            var block = blocks(plan.GroupOf(s), plan.RecomputeOf(s));
            var gpu = cluster.GroupList[plan.GroupOf(s)].Gpu;
            double tpEmbed = block.TpEmbedding;
            for (int c = 0; c < chunks; c++)
            {
                var mix = layout.MixOf(s, c);
                int layers = mix.Total;
                bool hasEmbed = layout.HasEmbedding(s, c), hasHead = layout.HasHead(s, c);
                // Blocks of each kind; the recomputed ones (partial recompute) in proportion.
                int recomputedBlocks = plan.RecomputedBlocks(s, layers);
                double computeF = 0, computeB = 0, recompute = 0, tpF = 0, tpB = 0, cpF = 0, cpB = 0, epF = 0, epB = 0;
                void Add(KindCosts k, double n, double recomputed)
                {
                    computeF += n * k.Forward;
                    computeB += n * k.Backward;
                    recompute += recomputed * k.Recompute;
                    tpF += n * k.TpForward;
                    tpB += n * k.TpBackward + recomputed * k.TpRecompute;
                    cpF += n * k.CpForward;
                    cpB += n * k.CpBackward;
                    epF += n * k.EpForward;
                    epB += n * k.EpBackward + recomputed * k.EpRecompute;
                }
                for (int k = 0; k < mix.Counts.Count; k++)
                    if (mix.Counts[k] > 0)
                        Add(block.Kinds[k], mix.Counts[k], layers == 0 ? 0 : (double)recomputedBlocks * mix.Counts[k] / layers);
                if (hasEmbed)
                {
                    computeF += block.EmbeddingForward;
                    computeB += block.EmbeddingBackward;
                    tpF += tpEmbed;
                }
                if (hasHead)
                {
                    computeF += block.HeadForward;
                    computeB += block.HeadBackward;
                    tpB += tpEmbed;
                    // Each multi-token-prediction module: its projection, one block, and the shared head once more.
                    for (int d = 0; d < model.MtpLayers; d++)
                    {
                        Add(block.Kinds[block.Ops.KindIndex(model.MtpKind)], 1, recomputedBlocks > 0 ? 1 : 0);
                        computeF += block.MtpForward + block.HeadForward;
                        computeB += block.MtpBackward + block.HeadBackward;
                        tpF += tpEmbed;
                        tpB += tpEmbed;
                    }
                }
                // Quantized weight copies are made at the first micro-batch of the step (read the bf16 weights, write
                // the copies): spread over the micro-batches.
                if (quantization is not null)
                    computeF += block.Timer.Stream(quantization.CastBytes(memory.QuantizedParams(mix, hasHead))) / m;
                double gather = Zero3Fwd(s, c);
                // Backward gathers again (prefetching software twice with full recompute: for the recompute and for the
                // backward) and reduce-scatters the chunk's gradients; without prefetch all of it waits.
                bool regather = plan.RecomputeOf(s) == Recompute.Full && recomputedBlocks > 0 && options.PrefetchZero3;
                double backComm = gather * (regather ? 2 : 1) + Zero3Reduce(s, c);
                double zeroF = options.PrefetchZero3 ? gpu.Overlapped(computeF, gather) - computeF : gather;
                double zeroB = options.PrefetchZero3 ? gpu.Overlapped(computeB + recompute, backComm) - (computeB + recompute) : backComm;
                // Every micro-batch after the first adds its weight gradients into the accumulated ones (read both,
                // write one): a memory-bound pass over the chunk's gradients, spread over the micro-batches.
                double accumulate = 0;
                if (m > 1 && !options.FusedGradAccumulation)
                {
                    var (dense, expert) = TrainableChunkParams(s, c);
                    accumulate = block.Timer.Stream(3 * (dense + expert) * gradAccumulationBytes) * (m - 1) / m;
                }
                // Offloaded activations go to the host behind the chunk's forward and come back behind its backward. The
                // copies run on the copy engines, not the compute's cores: only the part longer than the pass is exposed.
                double offloadF = 0, offloadB = 0;
                if (options.ActivationOffloadLayers > 0)
                {
                    double copy = memory.OffloadedBytes(mix, 1, plan.RecomputeOf(s)) / hostLink;
                    offloadF = Math.Max(0, copy - computeF);
                    offloadB = Math.Max(0, copy - (computeB + recompute));
                }
                fwd[s, c] = computeF + tpF + cpF + epF + zeroF + offloadF;
                bwd[s, c] = computeB + accumulate + recompute + tpB + cpB + epB + zeroB + offloadB;
                part.Offload += m * (offloadF + offloadB);
                part.Compute += m * (computeF + computeB + accumulate);
                part.Recompute += m * recompute;
                part.TpComm += m * (tpF + tpB);
                part.CpComm += m * (cpF + cpB);
                part.EpComm += m * (epF + epB);
                part.Zero3 += m * (zeroF + zeroB);
                part.LastBackward += bwd[s, c];
                part.FirstForward += fwd[s, c];
            }
            parts[s] = part;
        }

        double p2pBytes = hiddenBytes / plan.Tp; // scatter/gather across the TP ranks of a stage (Narayanan et al. 2021)
        double p2p = plan.Pp > 1 ? CollectiveModel.Seconds(Collective.SendRecv, p2pBytes, 2, placement.CrossesDomains(Axis.Pp) ? 1 : 2, cluster) : 0;

        // After the flush: gradient reduction, the optimizer step, and for ZeRO-1/2 the parameter all-gather. ZeRO-2
        // software that reduce-scatters every micro-batch's gradients runs m reduce-scatters a step: each behind its
        // own micro-batch's backward, the last one's exposed part after the flush, the earlier ones' exposed parts
        // counted here too (they hold their stage up as much, only earlier).
        int reductions = plan.Zero == 2 && options.ReduceScatterPerMicroBatch ? m : 1;
        for (int s = 0; s < plan.Pp; s++)
        {
            var (stageDense, stageExpert) = memory.TrainableParams(layout.MixOnStage(s), s == 0, s == plan.Pp - 1);
            // An embedding tied across stages that software reduces over data parallelism only after its sum over the
            // pipeline, after the flush (PricingOptions.TiedEmbeddingReducedAfterFlush): its reduction is apart from
            // the overlapped buckets and exposed.
            bool tiedHere = model.TiedEmbeddings && plan.Pp > 1 && (s == 0 || s == plan.Pp - 1) && !plan.Tuning.Adapters;
            double tiedParams = tiedHere ? (double)model.Vocab * model.Hidden / plan.Tp : 0;
            double apart = options.TiedEmbeddingReducedAfterFlush && plan.Zero <= 2 ? tiedParams : 0;
            // Each chunk's gradients by bucket (dense, expert): its blocks', the head's (final norm and output layer,
            // multi-token prediction) on the last virtual stage, the embedding's on the first; an embedding reduced apart
            // is left out. Last: the bucket whose gradients the chunk's backward finishes last (the embedding where there
            // is one, else the first block).
            // Buckets of equal size come as one entry with their count.
            (List<(double Dense, double Expert, int Count)> Buckets, (double Dense, double Expert) Last) ChunkBuckets(int c)
            {
                var mix = layout.MixOf(s, c);
                bool first = layout.HasEmbedding(s, c), last = layout.HasHead(s, c);
                var list = new List<(double Dense, double Expert, int Count)>(mix.Counts.Count + 2);
                double blocksDense = 0, blocksExpert = 0;
                for (int k = 0; k < mix.Counts.Count; k++)
                    if (mix.Counts[k] > 0)
                    {
                        var (d, x) = memory.TrainableBlockParams(k);
                        list.Add((d, x, mix.Counts[k]));
                        blocksDense += mix.Counts[k] * d;
                        blocksExpert += mix.Counts[k] * x;
                    }
                var (allDense, allExpert) = memory.TrainableParams(mix, first, last);
                double embedding = first && !plan.Tuning.Adapters ? (double)model.EmbeddingParams / plan.Tp : 0;
                var head = (Dense: allDense - blocksDense - embedding, Expert: allExpert - blocksExpert);
                if (first)
                    embedding -= apart;
                else if (last)
                    head.Dense -= apart;
                if (head.Dense + head.Expert > 0)
                    list.Add((head.Dense, head.Expert, 1));
                if (embedding > 0)
                    list.Add((embedding, 0, 1));
                var lastBucket = GradientBuckets.LastFinished(layout, s, c, embeddingApart: embedding <= 0);
                return (list, lastBucket.Kind switch
                {
                    BucketKind.Embedding => (embedding, 0),
                    BucketKind.Block => memory.TrainableBlockParams(layout.KindOfLayer(lastBucket.Layer)),
                    _ => head,
                });
            }
            var chunkBuckets = Enumerable.Range(0, chunks).Select(ChunkBuckets).ToList();
            var buckets = chunkBuckets.SelectMany(b => b.Buckets).ToList();
            // One collective per bucket (each paying its latency), or the buckets priced as one. Issued back to back after
            // the compute (a burst), the buckets pay the peers' arrival once; issued while a pass still computes (overlapped),
            // each pays it, the peers' communication threads waiting for computing cores.
            double Collect(Collective op, IEnumerable<(double Dense, double Expert, int Count)> parts, double bytes, bool burst = true)
            {
                if (options.CollectivePerBucket)
                {
                    var list = parts.ToList();
                    double sum = list.Sum(b => b.Count * Dp(op, (b.Dense, b.Expert), bytes));
                    if (!burst)
                        return sum;
                    int denseCount = list.Where(b => b.Dense > 0).Sum(b => b.Count), expertCount = list.Where(b => b.Expert > 0).Sum(b => b.Count);
                    return sum - Math.Max(0, denseCount - 1) * CollectiveModel.Arrival(placement, Axis.DpCp, cluster)
                               - Math.Max(0, expertCount - 1) * CollectiveModel.Arrival(placement, Axis.Edp, cluster);
                }
                double dense = 0, expert = 0;
                foreach (var b in parts)
                {
                    dense += b.Count * b.Dense;
                    expert += b.Count * b.Expert;
                }
                return Dp(op, (dense, expert), bytes);
            }
            double reduce = 0, gather = 0, reduceApart = 0;
            var reduceOp = plan.Zero == 0 ? Collective.AllReduce : scatter;
            if (plan.Zero <= 2)
            {
                reduce = Collect(reduceOp, buckets, reduceBytes);
                reduceApart = Dp(reduceOp, (apart, 0), reduceBytes);
            }
            if (plan.Zero is 1 or 2)
                gather = Collect(Collective.AllGather, apart > 0 ? buckets.Append((apart, 0, 1)) : buckets, gatherBytes);
            var gpu = cluster.GroupList[plan.GroupOf(s)].Gpu;
            // The reduction of buckets started behind a backward of `seconds`: the last bucket only after it ends,
            // exposed whatever the overlap.
            double Exposed(double seconds, List<(double Dense, double Expert, int Count)> parts, (double Dense, double Expert) lastBucket)
            {
                double all = Collect(reduceOp, parts, reduceBytes, burst: false);
                double total = parts.Sum(b => b.Count * (b.Dense + b.Expert));
                if (total <= 0)
                    return 0;
                double last = options.CollectivePerBucket
                    ? Math.Min(all, Collect(reduceOp, [(lastBucket.Dense, lastBucket.Expert, 1)], reduceBytes))
                    : Math.Min(1, (lastBucket.Dense + lastBucket.Expert) / total) * all;
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
                if (options.OverlapParamGather && plan.Zero is 1 or 2)
                {
                    double overlapped = Collect(Collective.AllGather, apart > 0 ? buckets.Append((apart, 0, 1)) : buckets, gatherBytes, burst: false);
                    gather = gpu.Overlapped(parts[s].FirstForward, overlapped) - parts[s].FirstForward;
                }
            }
            reduce = (reduce + reduceApart) * reductions;
            // Tied input and output embeddings on different stages: their gradients are summed across the pipeline
            // (software that reduces them apart sums ZeRO-2/3's shards, already reduced over data parallelism).
            double tiedBytes = tiedParams * reduceBytes / (options.TiedEmbeddingReducedAfterFlush && plan.Zero >= 2 ? plan.Dp * plan.Cp : 1);
            double tied = tiedHere
                ? CollectiveModel.Seconds(Collective.AllReduce, tiedBytes, 2, placement.CrossesDomains(Axis.Pp) ? 1 : 2, cluster)
                : 0;
            double owned = plan.Sharded(stageDense, stageExpert, 1);
            parts[s].OwnedParams = owned;
            parts[s].GpuOptimizer = blocks(plan.GroupOf(s), plan.RecomputeOf(s)).Timer.Optimizer(owned, owned * OptimizerBytesPerParam(mixed, plan.Tuning.Optimizer))
                                    + SophiaHessianSeconds(plan, fwd, bwd, s);
            parts[s].DpTail = reduce + gather + tied;
        }
        double hostSecondsPerParam = 0, hostBytesPerGpu = 0;
        if (cluster.Host is { } host)
        {
            double toHost = gradBytes / host.PcieBytesPerSecond, toGpu = weightBytes / host.PcieBytesPerSecond;
            double cpu = OptimizerBytesPerParam(mixed, plan.Tuning.Optimizer) / (host.MemoryBandwidthGbs * 1e9 * HostSpec.OptimizerEfficiency / cluster.GpusPerNode);
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
