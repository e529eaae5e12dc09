using System.Collections.Concurrent;
using System.Diagnostics;
using Planner.Cli.Milp;
using Planner.CostModel.Memory;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;

namespace Planner.Cli.Search;

public static partial class PlanSearch
{
    /// <summary>Expands shapes into candidates on one thread, with its own cache of block costs.</summary>
    private sealed class Worker(SearchRequest req, PricingOptions options)
    {
        private static readonly int[] EveryZeroStage = [0, 1, 2, 3], NoZero = [0];
        private readonly Dictionary<BlockKey, BlockCosts> _blocks = [];
        public readonly List<Candidate> Fits = [];
        public readonly List<Candidate> NearMisses = [];
        public readonly List<Candidate> Families = [];
        public long Enumerated, Bounded;
        public (ParallelPlan, double)? Smallest;
        public bool StopAtFirstFit;

        public void Expand(Shape s)
        {
            var m = req.Model;
            var c = req.Cluster;
            double capacity = c.Gpu.MemoryBytes;
            foreach (var (ep, etp) in ExpertLayouts(s))
                foreach (int mbs in MicroBatchSizes(s))
                {
                    int gbs = req.GbsIsMaximum ? req.Gbs / (s.Dp * mbs) * (s.Dp * mbs) : req.Gbs;
                    if (gbs < s.Dp * mbs || gbs % (s.Dp * mbs) != 0)
                        continue;
                    int micro = gbs / (s.Dp * mbs);
                    foreach (int vpp in Interleavings(s.Pp, micro))
                        foreach (bool sp in s.Tp > 1 ? m.IsMoe ? [true] : new[] { true, false } : [false])
                            // ZeRO shards over the ranks that reduce gradients: data and context parallel, and expert data parallel.
                            foreach (int zero in s.Dp * s.Cp > 1 || (m.IsMoe && s.Tp * s.Cp * s.Dp / (ep * etp) > 1) ? EveryZeroStage : NoZero)
                                foreach (var tuning in req.TuningList)
                                {
                                    bool fullValid = false, fullFits = false;
                                    foreach (var rc in req.RecomputePolicies)
                                    {
                                        var plan = new ParallelPlan(s.Tp, s.Pp, s.Dp, s.Cp, zero, mbs, gbs, s.Seq, vpp, rc, sp, s.Precision, Ep: ep, Etp: etp, FineTuning: tuning);
                                        if (req.Filter is { } accept && !accept(plan))
                                            continue;
                                        if (PlanCheck.Problem(m, c, plan) is not null)
                                            continue;
                                        Enumerated++;
                                        fullValid |= rc == Recompute.Full;
                                        // Memory first: a plan that fits at no offload fraction (and is no near miss for an uneven
                                        // split) needs no time bound. Memory is linear in the offload fraction, and the first and last
                                        // stages hold the most (PipelineCosts.PeakMemoryBytes).
                                        Bounded++;
                                        var block = Block(plan, rc);
                                        var (first, last, firstAll, lastAll) = PipelineCosts.EndStageMemory(m, c, plan, block, plan with { OptimizerOffload = 1 }, options);
                                        double peak = Math.Max(first.Total, last.Total);
                                        var lean = Leanest(plan, first, last, firstAll, lastAll);
                                        bool nearMiss = peak > capacity && Splittable(plan, m) && last.Total <= capacity;
                                        if (peak > capacity && lean is null && !nearMiss)
                                        {
                                            Enumerated += Offloads.Length - 1;
                                            NoteSmallest(plan, peak);
                                            continue;
                                        }
                                        if (rc == Recompute.Full)
                                            fullFits = true;
                                        // The loose bound: the busiest stage's own work, from the block costs alone. The pipeline's
                                        // costs (and the tight bound) wait until the candidate comes up (Tighten), or a family needs them.
                                        double pipeline = BusyBound(plan, block);
                                        if (peak > capacity)
                                        {
                                            NoteSmallest(plan, peak);
                                            // An uneven split may fit where the even one does not: the last stage holds the fewest
                                            // micro-batches in flight, so if it fits, moving blocks there (or recomputing early) may help.
                                            if (Splittable(plan, m) && last.Total <= capacity)
                                                NearMisses.Add(new Candidate(plan, Score(req, plan, pipeline)));
                                        }
                                        else
                                        {
                                            Fits.Add(new Candidate(plan, Score(req, plan, pipeline), Kind.Plan, Loose: true));
                                            if (StopAtFirstFit)
                                                return;
                                        }
                                        if (Offloads.Length > 1)
                                        {
                                            Enumerated += Offloads.Length - 1;
                                            if (lean is not null)
                                            {
                                                Families.Add(new Candidate(plan, Score(req, plan, pipeline), Kind.OffloadFamily, Loose: true));
                                                if (StopAtFirstFit)
                                                    return;
                                            }
                                        }
                                    }
                                    AddFamily(new ParallelPlan(s.Tp, s.Pp, s.Dp, s.Cp, zero, mbs, gbs, s.Seq, vpp, Recompute.Full, sp, s.Precision, Ep: ep, Etp: etp, FineTuning: tuning), fullValid, fullFits);
                                }
                }
        }

        /// <summary>Optimizer offload fractions searched: tenths from 0 to 1 when the cluster has a host to offload to.</summary>
        private double[] Offloads { get; } = req.Cluster.Host is null || req.Cluster.IsHeterogeneous
            ? [0]
            : Enumerable.Range(0, 11).Select(i => i / 10.0).ToArray();

        /// <summary>The offload fractions above 0 searched.</summary>
        public IReadOnlyList<double> OffloadFractions => Offloads[1..];

        /// <summary>
        /// The optimizer-offload variants of a plan (fractions above 0) have the same pipeline, less GPU memory and
        /// another optimizer step; they enter the search as one family when the largest fraction the hosts take fits
        /// the GPUs. Returns that fraction when it does, else null (and notes the leanest variant). Memory is linear
        /// in the fraction: the first and last stages at 0 and at 1 give every fraction's.
        /// </summary>
        private double? Leanest(ParallelPlan plan, MemoryBreakdown first, MemoryBreakdown last, MemoryBreakdown firstAll, MemoryBreakdown lastAll)
        {
            if (Offloads.Length < 2)
                return null;
            int tenths = HostTenths(Math.Max(firstAll.Host, lastAll.Host));
            if (tenths == 0)
                return null;
            double f = Offloads[tenths];
            double peak = Math.Max(first.Total + f * (firstAll.Total - first.Total), last.Total + f * (lastAll.Total - last.Total));
            if (peak <= req.Cluster.Gpu.MemoryBytes * (1 + 1e-12))
                return f;
            NoteSmallest(plan with { OptimizerOffload = f }, peak);
            return null;
        }

        /// <summary>Keeps the plan with the smallest peak memory among those that do not fit (for the explanation).</summary>
        private void NoteSmallest(ParallelPlan plan, double peak)
        {
            if (Smallest is null || peak < Smallest.Value.Item2)
                Smallest = (plan, peak);
        }

        /// <summary>Tenths of the optimizer state whose host memory fits, given a GPU's host bytes with all of it offloaded.</summary>
        private int HostTenths(double hostAll) =>
            hostAll <= 0 ? 10 : (int)Math.Min(10, Math.Floor(10 * _hostBytesPerGpu / hostAll * (1 + 1e-12)));

        private readonly double _hostBytesPerGpu = PipelineCosts.HostBytesPerGpuOf(req.Cluster);

        /// <summary>A lower bound of the after-flush time of every offload fraction above 0: per stage, its
        /// data-parallel tail plus its fastest optimizer step over those fractions. The step is the slower of the
        /// GPU's share G·(1 − f) and the host's H·f, fastest near f = G/(G + H): the grid points either side of it.</summary>
        private double OffloadTail(PipelineCosts costs)
        {
            double worst = 0;
            for (int s = 0; s < costs.Parts.Length; s++)
            {
                double g = costs.Parts[s].GpuOptimizer, h = costs.Parts[s].OwnedParams * costs.HostSecondsPerParam;
                int at = g + h > 0 ? (int)Math.Clamp(Math.Floor(10 * g / (g + h)), 1, 10) : 10;
                double fastest = costs.OptimizerSeconds(s, Offloads[at]);
                if (at < 10)
                    fastest = Math.Min(fastest, costs.OptimizerSeconds(s, Offloads[at + 1]));
                worst = Math.Max(worst, costs.Parts[s].DpTail + fastest);
            }
            return worst;
        }

        /// <summary>A lower bound of the after-flush time over every offload fraction searched: the optimizer step
        /// (which no recompute choice changes) at its best fraction.</summary>
        private double OptimizerTail(PipelineCosts costs)
        {
            double best = double.MaxValue;
            foreach (double f in Offloads)
            {
                double worst = 0;
                for (int s = 0; s < costs.Parts.Length; s++)
                    worst = Math.Max(worst, costs.OptimizerSeconds(s, f));
                best = Math.Min(best, worst);
            }
            return best;
        }

        /// <summary>
        /// The partial-recompute family of a shape: full recompute of the first k blocks of each chunk for every k
        /// from 1 to one below the blocks per chunk. Its members' memory falls and their time rises with k, so full
        /// recompute bounds their memory from below and no recompute their pipeline time; the family enters the
        /// search with that bound and is unfolded only if the bound can still beat the best plans.
        /// </summary>
        /// <param name="fullValid">The full-recompute plan passed the checks and the filter.</param>
        /// <param name="fullFits">Some offload fraction of it fits the GPUs' memory (else no member fits either).</param>
        private void AddFamily(ParallelPlan fullPlan, bool fullValid, bool fullFits)
        {
            int members = ChunkBlocks(fullPlan) - 1;
            var first = fullPlan with { RecomputeLayers = 1 };
            if (members < 1 || !fullValid || !req.RecomputePolicies.Contains(Recompute.Full))
                return;
            if (req.Filter is { } accept && !accept(first))
                return;
            Enumerated += members * Offloads.Length;
            // None fits when full recompute with the most offload the hosts take (the least GPU memory) does not: the
            // memory check of the full-recompute candidate said so. Members are checked exactly when unfolded.
            if (!fullFits)
                return;
            var none = fullPlan with { Recompute = Recompute.None };
            Families.Add(new Candidate(first, Score(req, first, BusyBound(none, Block(none, Recompute.None))), Kind.RecomputeFamily, Loose: true));
        }

        /// <summary>
        /// An entry with its tight bound: for a plan its pipeline's critical path and the work after the flush; for the
        /// offload variants of a plan that path and the fastest tail over the fractions; for the partial-recompute family
        /// the path without recompute (which every member's exceeds) and the optimizer step at its best fraction.
        /// </summary>
        public Candidate Tighten(Candidate loose)
        {
            var plan = loose.Plan;
            double tight = loose.Kind switch
            {
                Kind.RecomputeFamily => Tail(Costs(plan with { Recompute = Recompute.None, RecomputeLayers = null }), OptimizerTail),
                Kind.OffloadFamily => Tail(Costs(plan), OffloadTail),
                _ => Tail(Costs(plan), c => c.WorstTail),
            };
            double Tail(PipelineCosts costs, Func<PipelineCosts, double> tail) => costs.MakespanLowerBound(plan.MicroBatches) + tail(costs);
            return loose with { Bound = Math.Max(loose.Bound, Score(req, plan, tight)), Loose = false };
        }

        /// <summary>
        /// A lower bound of the step of any split of a plan's blocks over its stages, with any recompute policy per stage,
        /// that fits (the MILP's solutions): with T the least stage time at which the stages can hold every block (each
        /// stage at most as many as its memory and T allow under its best policy), the slowest stage for every micro-batch
        /// but one and one micro-batch through all of them. Infinite when no split fits.
        /// </summary>
        public double BalancedBound(ParallelPlan plan)
        {
            var policies = req.RecomputePolicies;
            var terms = StagePartitioner.StageTerms(req.Model, req.Cluster, plan, policies, options, (_, r) => Block(plan, r));
            double capacity = req.Cluster.Gpu.MemoryBytes;
            int layers = req.Model.Layers;
            long Hold(double t)
            {
                long sum = 0;
                for (int s = 0; s < plan.Pp; s++)
                {
                    long most = 0;
                    for (int k = 0; k < policies.Count; k++)
                    {
                        var x = terms[s, k];
                        double byMemory = x.BytesPerLayer > 0 ? Math.Floor((capacity - x.FixedBytes) / x.BytesPerLayer) : layers;
                        double byTime = x.SecondsPerLayer > 0 ? Math.Floor((t - x.FixedSeconds) / x.SecondsPerLayer) : layers;
                        most = Math.Max(most, (long)Math.Clamp(Math.Min(byMemory, byTime), 0, layers));
                    }
                    sum += most;
                }
                return sum;
            }
            double hi = 0;
            for (int s = 0; s < plan.Pp; s++)
                for (int k = 0; k < policies.Count; k++)
                    hi = Math.Max(hi, terms[s, k].FixedSeconds + layers * terms[s, k].SecondsPerLayer);
            if (Hold(hi) < layers)
                return double.PositiveInfinity;
            double lo = 0;
            for (int i = 0; i < 60 && hi - lo > 1e-9 * hi; i++)
            {
                double mid = (lo + hi) / 2;
                if (Hold(mid) >= layers)
                    hi = mid;
                else
                    lo = mid;
            }
            // The pipeline's critical path: the slowest stage for every micro-batch but one, and one micro-batch through
            // every stage (at least all the blocks at the cheapest policy, and the stages' fixed work).
            double once = layers * Enumerable.Range(0, policies.Count).Min(k => terms[0, k].SecondsPerLayer);
            for (int s = 0; s < plan.Pp; s++)
                once += Enumerable.Range(0, policies.Count).Min(k => terms[s, k].FixedSeconds);
            return (plan.MicroBatches - 1) * lo + Math.Max(lo, once);
        }

        /// <summary>
        /// A lower bound of a plan's step from its block costs alone: the busiest stage's forward and backward work over
        /// all its micro-batches (collectives included), without the pipeline's fill, the exposed ZeRO traffic or the
        /// work after the flush.
        /// </summary>
        private double BusyBound(ParallelPlan plan, BlockCosts block)
        {
            var layout = StageLayout.Of(req.Model, plan);
            double busiest = 0;
            for (int s = 0; s < plan.Pp; s++)
            {
                var mix = layout.MixOnStage(s);
                double busy = 0;
                for (int k = 0; k < mix.Counts.Count; k++)
                    busy += mix.Counts[k] * block.Kinds[k].Total;
                if (s == 0)
                    busy += block.EmbeddingForward + block.EmbeddingBackward + block.TpEmbedding;
                if (s == plan.Pp - 1)
                    busy += block.HeadForward + block.HeadBackward + block.TpEmbedding
                            + req.Model.MtpLayers * (block.Kinds[block.Ops.KindIndex(req.Model.MtpKind)].Total + block.MtpForward + block.MtpBackward
                                                     + block.HeadForward + block.HeadBackward + 2 * block.TpEmbedding);
                busiest = Math.Max(busiest, busy);
            }
            return plan.MicroBatches * busiest;
        }

        /// <summary>
        /// Unfolds a partial-recompute family that starts at k = <see cref="ParallelPlan.RecomputeLayers"/>: the
        /// first member from k up that fits, with its exact bound, and the family of the members after it, with a
        /// bound valid for all of them (their pipeline time is at least this member's).
        /// </summary>
        public IEnumerable<Candidate> Unfold(Candidate family) =>
            family.Kind == Kind.OffloadFamily ? UnfoldOffload(family.Plan) : UnfoldRecompute(family.Plan);

        /// <summary>The offload variants of a plan that fit, each with its exact bound.</summary>
        private IEnumerable<Candidate> UnfoldOffload(ParallelPlan plan)
        {
            var costs = Costs(plan);
            double pipeline = costs.MakespanLowerBound(plan.MicroBatches);
            for (int i = 1; i < Offloads.Length; i++)
            {
                var variant = plan with { OptimizerOffload = Offloads[i] };
                Bounded++;
                if (Fit(variant, costs) && (req.Filter is not { } accept || accept(variant)))
                    yield return new Candidate(variant, Score(req, variant, pipeline + costs.WorstTailWith(Offloads[i])));
            }
        }

        private IEnumerable<Candidate> UnfoldRecompute(ParallelPlan family)
        {
            int last = ChunkBlocks(family) - 1, k = family.RecomputeLayers!.Value;
            bool FitsAt(int j, out PipelineCosts costs)
            {
                // Some offload fraction fits when the largest the hosts take does (GPU memory falls with offload).
                var plan = family with { RecomputeLayers = j };
                Bounded++;
                costs = Costs(plan);
                plan = plan with { OptimizerOffload = MostOffload(plan, costs) };
                return Fit(plan, costs);
            }
            if (!FitsAt(k, out var at))
            {
                // Memory falls with k: find the smallest k that fits by bisection.
                if (!FitsAt(last, out var top))
                    yield break;
                int lo = k, hi = last; // lo does not fit, hi does
                at = top;
                while (hi - lo > 1)
                {
                    int mid = (lo + hi) / 2;
                    if (FitsAt(mid, out var costs))
                    {
                        hi = mid;
                        at = costs;
                    }
                    else
                        lo = mid;
                }
                k = hi;
            }
            double pipeline = at.MakespanLowerBound(family.MicroBatches);
            var member = family with { RecomputeLayers = k };
            if (Fit(member, at) && (req.Filter is not { } accept || accept(member)))
                yield return new Candidate(member, Score(req, member, pipeline + at.WorstTail));
            if (Offloads.Length > 1 && Fit(member with { OptimizerOffload = MostOffload(member, at) }, at))
                yield return new Candidate(member, Score(req, member, pipeline + OffloadTail(at)), Kind.OffloadFamily);
            if (k < last)
            {
                var rest = family with { RecomputeLayers = k + 1 };
                yield return new Candidate(rest, Score(req, rest, pipeline + OptimizerTail(at)), Kind.RecomputeFamily);
            }
        }

        /// <summary>The largest number of blocks in a model chunk of the even split.</summary>
        private int ChunkBlocks(ParallelPlan p) => StageLayout.MostBlocksPerChunk(req.Model.Layers, p.Pp, p.Vpp);

        /// <summary>The largest offload fraction searched whose host memory fits (host memory grows in proportion to
        /// the fraction and does not depend on recompute).</summary>
        private double MostOffload(ParallelPlan plan, PipelineCosts costs)
        {
            if (Offloads.Length < 2)
                return 0;
            var all = plan with { OptimizerOffload = 1 };
            int tenths = HostTenths(Math.Max(costs.StageMemory(0, all).Host, costs.StageMemory(plan.Pp - 1, all).Host));
            while (tenths > 0 && !costs.HostFits(plan with { OptimizerOffload = Offloads[tenths] }))
                tenths--;
            return Offloads[tenths];
        }

        /// <summary>True when a plan (or a variant priced on the same costs) fits its GPUs and hosts.</summary>
        private bool Fit(ParallelPlan plan, PipelineCosts costs) =>
            costs.PeakMemoryBytes(plan) <= req.Cluster.Gpu.MemoryBytes && costs.HostFits(plan);

        private PipelineCosts Costs(ParallelPlan plan) =>
            PipelineCosts.Compute(req.Model, req.Cluster, plan, options, (_, r) => Block(plan, r));

        /// <summary>Block costs of a plan under a recompute policy, computed once per key.</summary>
        public BlockCosts Block(ParallelPlan plan, Recompute recompute)
        {
            var key = BlockCosts.Key(plan) with { Recompute = recompute };
            if (!_blocks.TryGetValue(key, out var block))
                _blocks[key] = block = BlockCosts.Compute(req.Model, req.Cluster, plan with { Recompute = recompute }, options);
            return block;
        }

        /// <summary>
        /// Expert layouts of a shape: every expert-parallel degree dividing the experts, with expert tensor parallelism 1
        /// (the experts whole, Megatron-Core's advice for fine-grained experts) or the shape's tp (the experts split like the
        /// dense layers), as long as ep · etp divides the stage's tp · cp · dp ranks. (1, 1) for a dense model.
        /// </summary>
        private IEnumerable<(int Ep, int Etp)> ExpertLayouts(Shape s)
        {
            if (req.Model.Moe is not { } moe)
            {
                yield return (1, 1);
                yield break;
            }
            int ranks = s.Tp * s.Cp * s.Dp;
            foreach (int etp in s.Tp > 1 ? new[] { 1, s.Tp } : [1])
            {
                if (moe.ExpertFfn % etp != 0)
                    continue;
                for (int ep = 1; ep <= moe.Experts && ep * etp <= ranks; ep++)
                    if (moe.Experts % ep == 0 && ranks % (ep * etp) == 0)
                        yield return (ep, etp);
            }
        }

        private IEnumerable<int> MicroBatchSizes(Shape s)
        {
            int limit = req.Gbs / s.Dp;
            for (int mbs = 1; mbs <= Math.Min(limit, 64); mbs++)
                if (req.GbsIsMaximum ? (mbs & (mbs - 1)) == 0 : (req.Gbs / s.Dp) % mbs == 0 && req.Gbs % s.Dp == 0)
                    yield return mbs;
        }

        private IEnumerable<int> Interleavings(int pp, int micro)
        {
            yield return 1;
            if (pp < 2 || micro % pp != 0)
                yield break;
            for (int v = 2; v * pp <= req.Model.Layers; v++)
                yield return v;
        }
    }
}
