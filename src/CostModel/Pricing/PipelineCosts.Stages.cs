using Planner.CostModel.Comm;
using Planner.CostModel.Compute;
using Planner.CostModel.Memory;
using Planner.CostModel.Plans;
using Planner.CostModel.Specs;
using Bucket = (double Dense, double Expert, int Count);

namespace Planner.CostModel.Pricing;

public sealed partial class PipelineCosts
{
    /// <summary>
    /// Prices one plan's stages for <see cref="Compute(ModelSpec, ClusterSpec, ParallelPlan, PricingOptions, Func{int, Recompute, BlockCosts})"/>:
    /// each chunk's forward and backward for one micro-batch, then each stage's work after the flush. Holds what every
    /// stage shares: the plan's placement, layout and memory model (of the first GPU group), and the bytes of its
    /// collectives.
    /// </summary>
    private sealed class StagePricer(ModelSpec model, ClusterSpec cluster, ParallelPlan plan, PricingOptions options,
        Func<int, Recompute, BlockCosts> blocks, Placement placement, StageLayout layout, MemoryModel memory, Quantization? quantization)
    {
        // The host link of each GPU (for offloaded activations), bytes/s: first, as it refuses the plan.
        private readonly double _hostLink = HostLinkOf(cluster, options);
        private readonly int _m = plan.MicroBatches;
        private readonly bool _mixed = plan.Precision.IsMixed();

        // ZeRO-3 gathers each chunk's parameters for forward (and recompute) and backward, and reduce-scatters its
        // gradients every micro-batch; prefetching hides them behind that chunk's compute (Zero3Schedule.Prefetched).
        private double WeightBytes => _mixed ? 2 : 4;
        // Data-parallel collectives in the training precision or in fp32, and ZeRO's reduce-scatter natively or as an
        // all-reduce (see PricingOptions).
        private double GradBytes => _mixed && options.Precision.Gradients == Dtype.TrainingPrecision ? 2 : 4;
        private double ReduceBytes => options.DataParallel.Dtype == Dtype.Fp32 ? 4 : GradBytes;
        private double GatherBytes => options.DataParallel.Dtype == Dtype.Fp32 ? 4 : WeightBytes;
        private Collective Scatter => options.DataParallel.Scatter == ScatterCollective.AllReduce ? Collective.AllReduce : Collective.ReduceScatter;
        private Collective ReduceOp => plan.Zero == 0 ? Collective.AllReduce : Scatter;

        /// <summary>The cluster's host link, else the GPU's own, bytes/s; offload with neither is refused.</summary>
        private static double HostLinkOf(ClusterSpec cluster, PricingOptions options)
        {
            double hostLink = (cluster.Host?.PcieGbs ?? (cluster.Gpu.HostLinkGbs > 0 ? cluster.Gpu.HostLinkGbs : 0)) * 1e9;
            if (options.Activations.OffloadLayers > 0 && hostLink <= 0)
                throw new InputException($"stack '{options.Stack}': activation_offload_layers needs the GPUs' link to host memory, which cluster '{cluster.Name}' (host.pcie_gbs) and GPU '{cluster.Gpu.Name}' (host_link_gbs) do not give");
            return hostLink;
        }

        /// <summary>
        /// A data-parallel collective over weights (dense, expert): the dense ones over the data- and context-parallel
        /// ranks, the experts over the expert-data-parallel ones.
        /// </summary>
        private double Dp(Collective op, (double Dense, double Expert) weights, double bytes) =>
            CollectiveModel.Seconds(op, weights.Dense * bytes, placement, Axis.DpCp, cluster, options.Algorithm)
            + CollectiveModel.Seconds(op, weights.Expert * bytes, placement, Axis.Edp, cluster, options.Algorithm);

        private (double, double) ChunkParams(int stage, int chunk) =>
            memory.Params(layout.MixOf(stage, chunk), layout.HasEmbedding(stage, chunk), layout.HasHead(stage, chunk));

        // Gradients exist only for the trainable weights (a frozen base has none).
        private (double, double) TrainableChunkParams(int stage, int chunk) =>
            memory.TrainableParams(layout.MixOf(stage, chunk), layout.HasEmbedding(stage, chunk), layout.HasHead(stage, chunk));

        private double Zero3Fwd(int stage, int chunk) => plan.Zero < 3 ? 0 : Dp(Collective.AllGather, ChunkParams(stage, chunk), GatherBytes);

        private double Zero3Reduce(int stage, int chunk) => plan.Zero < 3 ? 0 : Dp(Scatter, TrainableChunkParams(stage, chunk), ReduceBytes);

        /// <summary>
        /// Stage <paramref name="s"/>'s passes: writes its chunks' forward and backward seconds for one micro-batch into
        /// <paramref name="fwd"/> and <paramref name="bwd"/> and returns its accounting over all micro-batches.
        /// </summary>
        public StageParts Passes(int s, double[,] fwd, double[,] bwd)
        {
            var part = new StageParts();
            var block = blocks(plan.GroupOf(s), plan.RecomputeOf(s));
            var gpu = cluster.GroupList[plan.GroupOf(s)].Gpu;
            for (int c = 0; c < plan.Vpp; c++)
            {
                var t = Chunk(s, c, block, gpu);
                fwd[s, c] = t.Forward;
                bwd[s, c] = t.Backward;
                part.Offload += _m * (t.OffloadF + t.OffloadB);
                part.Compute += _m * (t.ComputeF + t.ComputeB + t.Accumulate);
                part.Recompute += _m * t.Recompute;
                part.TpComm += _m * (t.TpF + t.TpB);
                part.CpComm += _m * (t.CpF + t.CpB);
                part.EpComm += _m * (t.EpF + t.EpB);
                part.Zero3 += _m * (t.ZeroF + t.ZeroB);
                part.LastBackward += bwd[s, c];
                part.FirstForward += fwd[s, c];
            }
            return part;
        }

        /// <summary>One micro-batch's pass through chunk <paramref name="c"/> of stage <paramref name="s"/>.</summary>
        private ChunkTimes Chunk(int s, int c, BlockCosts block, GpuSpec gpu)
        {
            var mix = layout.MixOf(s, c);
            int recomputedBlocks = plan.RecomputedBlocks(s, mix.Total);
            var t = Kernels(s, c, block, recomputedBlocks);
            double gather = Zero3Fwd(s, c);
            // Backward gathers again (prefetching software twice with full recompute: for the recompute and for the
            // backward) and reduce-scatters the chunk's gradients; without prefetch all of it waits.
            bool regather = plan.RecomputeOf(s) == Recompute.Full && recomputedBlocks > 0 && options.DataParallel.Zero3 == Zero3Schedule.Prefetched;
            double backComm = gather * (regather ? 2 : 1) + Zero3Reduce(s, c);
            t.ZeroF = options.DataParallel.Zero3 == Zero3Schedule.Prefetched ? gpu.Overlapped(t.ComputeF, gather) - t.ComputeF : gather;
            t.ZeroB = options.DataParallel.Zero3 == Zero3Schedule.Prefetched ? gpu.Overlapped(t.ComputeB + t.Recompute, backComm) - (t.ComputeB + t.Recompute) : backComm;
            // Every micro-batch after the first adds its weight gradients into the accumulated ones (read both,
            // write one): a memory-bound pass over the chunk's gradients, spread over the micro-batches.
            if (_m > 1 && options.Kernels.GradAccumulation == GradientAccumulation.SeparatePass)
            {
                var (dense, expert) = TrainableChunkParams(s, c);
                t.Accumulate = block.Timer.Stream(3 * (dense + expert) * GradBytes) * (_m - 1) / _m;
            }
            // Offloaded activations go to the host behind the chunk's forward and come back behind its backward. The
            // copies run on the copy engines, not the compute's cores: only the part longer than the pass is exposed.
            if (options.Activations.OffloadLayers > 0)
            {
                double copy = memory.OffloadedBytes(mix, 1, plan.RecomputeOf(s)) / _hostLink;
                t.OffloadF = Math.Max(0, copy - t.ComputeF);
                t.OffloadB = Math.Max(0, copy - (t.ComputeB + t.Recompute));
            }
            return t;
        }

        /// <summary>The kernels and the TP, CP and EP collectives of one micro-batch through a chunk.</summary>
        private ChunkTimes Kernels(int s, int c, BlockCosts block, int recomputedBlocks)
        {
            var mix = layout.MixOf(s, c);
            int layers = mix.Total;
            bool hasHead = layout.HasHead(s, c);
            double tpEmbed = block.TpEmbedding;
            var t = new ChunkTimes();
            // Blocks of each kind; the recomputed ones (partial recompute) in proportion.
            for (int k = 0; k < mix.Counts.Count; k++)
                if (mix.Counts[k] > 0)
                    t.Add(block.Kinds[k], mix.Counts[k], layers == 0 ? 0 : (double)recomputedBlocks * mix.Counts[k] / layers);
            if (layout.HasEmbedding(s, c))
            {
                t.ComputeF += block.EmbeddingForward;
                t.ComputeB += block.EmbeddingBackward;
                t.TpF += tpEmbed;
            }
            if (hasHead)
            {
                t.ComputeF += block.HeadForward;
                t.ComputeB += block.HeadBackward;
                t.TpB += tpEmbed;
                // Each multi-token-prediction module: its projection, one block, and the shared head once more.
                for (int d = 0; d < model.MtpLayers; d++)
                {
                    t.Add(block.Kinds[block.Ops.KindIndex(model.MtpKind)], 1, recomputedBlocks > 0 ? 1 : 0);
                    t.ComputeF += block.MtpForward + block.HeadForward;
                    t.ComputeB += block.MtpBackward + block.HeadBackward;
                    t.TpF += tpEmbed;
                    t.TpB += tpEmbed;
                }
            }
            // Quantized weight copies are made at the first micro-batch of the step (read the bf16 weights, write
            // the copies): spread over the micro-batches.
            if (quantization is not null)
                t.ComputeF += block.Timer.Stream(quantization.CastBytes(memory.QuantizedParams(mix, hasHead))) / _m;
            return t;
        }

        /// <summary>
        /// Stage <paramref name="s"/>'s work after the flush into <paramref name="part"/>: gradient reduction, the
        /// ZeRO-1/2 parameter all-gather, the tied embedding's sum over the pipeline, and the optimizer step on the GPU.
        /// </summary>
        public void AfterFlush(int s, StageParts part, double[,] fwd, double[,] bwd)
        {
            var (stageDense, stageExpert) = memory.TrainableParams(layout.MixOnStage(s), s == 0, s == plan.Pp - 1);
            // An embedding tied across stages that software reduces over data parallelism only after its sum over the
            // pipeline, after the flush (TiedEmbeddingReduction.AfterFlush): its reduction is apart from
            // the overlapped buckets and exposed.
            bool tiedHere = model.TiedEmbeddings && plan.Pp > 1 && (s == 0 || s == plan.Pp - 1) && !plan.Tuning.Adapters;
            double tiedParams = tiedHere ? (double)model.Vocab * model.Hidden / plan.Tp : 0;
            double apart = options.DataParallel.TiedEmbedding == TiedEmbeddingReduction.AfterFlush && plan.Zero <= 2 ? tiedParams : 0;
            var (reduce, gather) = GradientCollectives(s, part, bwd, apart);
            // Tied input and output embeddings on different stages: their gradients are summed across the pipeline
            // (software that reduces them apart sums ZeRO-2/3's shards, already reduced over data parallelism).
            double tiedBytes = tiedParams * ReduceBytes / (options.DataParallel.TiedEmbedding == TiedEmbeddingReduction.AfterFlush && plan.Zero >= 2 ? plan.Dp * plan.Cp : 1);
            double tied = tiedHere
                ? CollectiveModel.Seconds(Collective.AllReduce, tiedBytes, 2, placement.CrossesDomains(Axis.Pp) ? 1 : 2, cluster)
                : 0;
            double owned = plan.Sharded(stageDense, stageExpert, 1);
            part.OwnedParams = owned;
            part.GpuOptimizer = blocks(plan.GroupOf(s), plan.RecomputeOf(s)).Timer.Optimizer(owned, owned * OptimizerBytesPerParam(_mixed, plan.Tuning))
                                + SophiaHessianSeconds(plan, fwd, bwd, s);
            part.DpTail = reduce + gather + tied;
        }

        /// <summary>
        /// The exposed gradient reduction (all of a step's when ZeRO-2 reduces every micro-batch) and ZeRO-1/2 parameter
        /// all-gather of stage <paramref name="s"/>, an embedding of <paramref name="apart"/> parameters reduced apart.
        /// </summary>
        private (double Reduce, double Gather) GradientCollectives(int s, StageParts part, double[,] bwd, double apart)
        {
            var chunkBuckets = BucketsOf(s, apart);
            var buckets = chunkBuckets.SelectMany(b => b.Buckets).ToList();
            double reduce = 0, gather = 0, reduceApart = 0;
            if (plan.Zero <= 2)
            {
                reduce = Collect(ReduceOp, buckets, ReduceBytes);
                reduceApart = Dp(ReduceOp, (apart, 0), ReduceBytes);
            }
            if (plan.Zero is 1 or 2)
                gather = Collect(Collective.AllGather, apart > 0 ? buckets.Append((apart, 0, 1)) : buckets, GatherBytes);
            var gpu = cluster.GroupList[plan.GroupOf(s)].Gpu;
            if (options.DataParallel.GradReduce == GradientReduction.OverlappedWithBackward)
            {
                // ZeRO-2 reducing every micro-batch waits for each chunk's buckets at the end of the chunk's backward:
                // under interleaving every chunk exposes its own last bucket. Otherwise the stage's buckets run behind
                // the last micro-batch's whole backward, the first chunk's last bucket exposed.
                if (plan.Zero <= 2)
                    reduce = plan.Zero == 2 && options.DataParallel.Zero2Reduce == Zero2Reduction.PerMicroBatch
                        ? Enumerable.Range(0, plan.Vpp).Sum(c => Exposed(gpu, bwd[s, c], chunkBuckets[c].Buckets, chunkBuckets[c].Last))
                        : Exposed(gpu, part.LastBackward, buckets, chunkBuckets[0].Last);
                if (options.DataParallel.ParamGather == ParameterGather.OverlappedWithForward && plan.Zero is 1 or 2)
                {
                    double overlapped = Collect(Collective.AllGather, apart > 0 ? buckets.Append((apart, 0, 1)) : buckets, GatherBytes, burst: false);
                    gather = gpu.Overlapped(part.FirstForward, overlapped) - part.FirstForward;
                }
            }
            // ZeRO-2 software that reduce-scatters every micro-batch's gradients runs m reduce-scatters a step: each
            // behind its own micro-batch's backward, the last one's exposed part after the flush, the earlier ones'
            // exposed parts counted here too (they hold their stage up as much, only earlier).
            int reductions = plan.Zero == 2 && options.DataParallel.Zero2Reduce == Zero2Reduction.PerMicroBatch ? _m : 1;
            return ((reduce + reduceApart) * reductions, gather);
        }

        /// <summary>Stage <paramref name="s"/>'s gradient buckets, chunk by chunk.</summary>
        private List<(List<Bucket> Buckets, (double Dense, double Expert) Last)> BucketsOf(int s, double apart)
        {
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
            return Enumerable.Range(0, plan.Vpp).Select(ChunkBuckets).ToList();
        }

        /// <summary>
        /// One collective per bucket (each paying its latency), or the buckets priced as one. Issued back to back after
        /// the compute (a burst), the buckets pay the peers' arrival once; issued while a pass still computes
        /// (overlapped), each pays it, the peers' communication threads waiting for computing cores.
        /// </summary>
        private double Collect(Collective op, IEnumerable<Bucket> buckets, double bytes, bool burst = true)
        {
            if (options.DataParallel.Granularity == CollectiveGranularity.PerBucket)
            {
                var list = buckets.ToList();
                double sum = list.Sum(b => b.Count * Dp(op, (b.Dense, b.Expert), bytes));
                if (!burst)
                    return sum;
                int denseCount = list.Where(b => b.Dense > 0).Sum(b => b.Count), expertCount = list.Where(b => b.Expert > 0).Sum(b => b.Count);
                return sum - Math.Max(0, denseCount - 1) * CollectiveModel.Arrival(placement, Axis.DpCp, cluster)
                           - Math.Max(0, expertCount - 1) * CollectiveModel.Arrival(placement, Axis.Edp, cluster);
            }
            double dense = 0, expert = 0;
            foreach (var b in buckets)
            {
                dense += b.Count * b.Dense;
                expert += b.Count * b.Expert;
            }
            return Dp(op, (dense, expert), bytes);
        }

        /// <summary>
        /// The reduction of buckets started behind a backward of <paramref name="seconds"/> on <paramref name="gpu"/>:
        /// the last bucket only after it ends, exposed whatever the overlap.
        /// </summary>
        private double Exposed(GpuSpec gpu, double seconds, List<Bucket> buckets, (double Dense, double Expert) lastBucket)
        {
            double all = Collect(ReduceOp, buckets, ReduceBytes, burst: false);
            double total = buckets.Sum(b => b.Count * (b.Dense + b.Expert));
            if (total <= 0)
                return 0;
            double last = options.DataParallel.Granularity == CollectiveGranularity.PerBucket
                ? Math.Min(all, Collect(ReduceOp, [(lastBucket.Dense, lastBucket.Expert, 1)], ReduceBytes))
                : Math.Min(1, (lastBucket.Dense + lastBucket.Expert) / total) * all;
            return gpu.Overlapped(seconds, all - last) - seconds + last;
        }

        /// <summary>
        /// Seconds per offloaded parameter of the CPU optimizer step, pipelined over buckets: the slowest of the
        /// gradient's copy to the host, the CPU's Adam update and the updated weight's copy back (0 without a host spec).
        /// </summary>
        public double HostSecondsPerParam()
        {
            if (cluster.Host is not { } host)
                return 0;
            double toHost = GradBytes / host.PcieBytesPerSecond, toGpu = WeightBytes / host.PcieBytesPerSecond;
            double cpu = OptimizerBytesPerParam(_mixed, plan.Tuning) / (host.MemoryBandwidthGbs * 1e9 * HostSpec.OptimizerEfficiency / cluster.GpusPerNode);
            return Math.Max(cpu, Math.Max(toHost, toGpu));
        }
    }

    /// <summary>One micro-batch's seconds through one chunk, by part; forward (F) and backward (B).</summary>
    private struct ChunkTimes
    {
        public double ComputeF, ComputeB, Recompute, TpF, TpB, CpF, CpB, EpF, EpB, ZeroF, ZeroB, Accumulate, OffloadF, OffloadB;

        public readonly double Forward => ComputeF + TpF + CpF + EpF + ZeroF + OffloadF;
        public readonly double Backward => ComputeB + Accumulate + Recompute + TpB + CpB + EpB + ZeroB + OffloadB;

        /// <summary>Adds <paramref name="n"/> blocks of one kind, <paramref name="recomputed"/> of them recomputed.</summary>
        public void Add(KindCosts k, double n, double recomputed)
        {
            ComputeF += n * k.Forward;
            ComputeB += n * k.Backward;
            Recompute += recomputed * k.Recompute;
            TpF += n * k.TpForward;
            TpB += n * k.TpBackward + recomputed * k.TpRecompute;
            CpF += n * k.CpForward;
            CpB += n * k.CpBackward;
            EpF += n * k.EpForward;
            EpB += n * k.EpBackward + recomputed * k.EpRecompute;
        }
    }
}
