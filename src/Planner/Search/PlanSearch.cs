using System.Collections.Concurrent;
using System.Diagnostics;
using Planner.Cli.Milp;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;

namespace Planner.Cli.Search;

/// <summary>The outcome of a search.</summary>
/// <param name="Plans">The best plans that fit, best first, exactly priced.</param>
/// <param name="Enumerated">Candidate plans generated (valid shapes).</param>
/// <param name="Bounded">Candidates whose lower bound and memory were computed (the rest fell to a shape-level bound).</param>
/// <param name="Priced">Candidates priced exactly (pipeline simulated).</param>
/// <param name="Seconds">Wall time of the search.</param>
/// <param name="Smallest">The candidate with the smallest peak memory when none fits (for the explanation).</param>
public sealed record SearchResult(
    IReadOnlyList<Prediction> Plans,
    long Enumerated,
    long Bounded,
    int Priced,
    double Seconds,
    (ParallelPlan Plan, double PeakBytes)? Smallest);

/// <summary>
/// Exact search by bounds: every candidate plan gets a cheap lower bound of its step time (the pipeline's critical
/// path without simulating it, <see cref="PipelineCosts.MakespanLowerBound"/>) and its exact peak memory; those
/// that fit are priced exactly in order of their bound until the next bound cannot beat the K-th best exact price.
/// The result is the same as pricing every candidate, at a small fraction of the cost.
/// </summary>
public static class PlanSearch
{
    private readonly record struct Candidate(ParallelPlan Plan, double Bound);

    /// <summary>Relative difference under which two step times count as equal (rounding of the same sums).</summary>
    public const double TieTolerance = 1e-9;

    /// <summary>True when two scores are equal up to <see cref="TieTolerance"/>.</summary>
    public static bool Tie(double a, double b) => Math.Abs(a - b) <= TieTolerance * Math.Max(Math.Abs(a), Math.Abs(b));

    /// <summary>How many shapes the stage-partition MILP refines per search.</summary>
    public const int MilpRefinements = 16;

    /// <summary>Plans whose stages the MILP may split unevenly.</summary>
    private static bool Splittable(ParallelPlan p) => p.Pp > 1 && p.Vpp == 1 && p.Zero < 3;

    /// <summary>Runs the search.</summary>
    public static SearchResult Run(SearchRequest req)
    {
        if (req.Objective == Objective.Cost && req.Cluster.PricePerGpuHour is null)
            throw new InputException($"--objective cost: cluster '{req.Cluster.Name}' has no price_per_gpu_hour");
        if (req.Cluster.IsHeterogeneous)
            return HeterogeneousSearch.Run(req);
        var watch = Stopwatch.StartNew();
        var options = req.Options ?? PricingOptions.Default;
        var shapes = Shapes(req).ToList();
        var found = new ConcurrentBag<List<Candidate>>();
        var nearMisses = new ConcurrentBag<List<Candidate>>();
        long enumerated = 0, bounded = 0;
        var smallest = new ConcurrentBag<(ParallelPlan, double)>();
        Parallel.ForEach(shapes, new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount },
            () => new Worker(req, options),
            (shape, _, worker) => { worker.Expand(shape); return worker; },
            worker =>
            {
                found.Add(worker.Fits);
                nearMisses.Add(worker.NearMisses);
                Interlocked.Add(ref enumerated, worker.Enumerated);
                Interlocked.Add(ref bounded, worker.Bounded);
                if (worker.Smallest is { } s)
                    smallest.Add(s);
            });

        var all = found.SelectMany(l => l).ToList();
        all.Sort((a, b) => a.Bound.CompareTo(b.Bound));
        var best = new List<(double Score, Prediction P)>();
        int priced = 0;
        foreach (var c in all)
        {
            if (best.Count >= req.Top && c.Bound > best[^1].Score * (1 + TieTolerance))
                break; // no remaining candidate can enter the top K (ties included, for the memory tie-break)
            var p = Pricer.Price(req.Model, req.Cluster, c.Plan, options);
            priced++;
            Insert(req, best, p);
        }
        int refined = Refine(req, options, all, nearMisses.SelectMany(l => l).ToList(), best);
        (ParallelPlan, double)? least = smallest.IsEmpty ? null : smallest.MinBy(x => x.Item2);
        return new SearchResult(best.Select(x => x.P).ToList(), enumerated, bounded, priced + refined, watch.Elapsed.TotalSeconds, least);
    }

    /// <summary>
    /// Runs the stage-partition MILP on the most promising splittable shapes (even plans that fit, and near misses
    /// whose even split does not) and inserts the uneven plans that beat the current top K. Returns the plans priced.
    /// </summary>
    private static int Refine(SearchRequest req, PricingOptions options, List<Candidate> fitting, List<Candidate> nearMisses,
        List<(double Score, Prediction P)> best)
    {
        if (!CbcSolver.IsAvailable)
            return 0;
        var pool = fitting.Where(c => Splittable(c.Plan)).Take(MilpRefinements).Concat(nearMisses)
            .OrderBy(c => c.Bound)
            .DistinctBy(c => c.Plan with { Recompute = Recompute.None })
            .Take(MilpRefinements)
            .ToList();
        var partitioner = new StagePartitioner(new CbcSolver());
        var worker = new Worker(req, options);
        int priced = 0;
        foreach (var c in pool)
        {
            if (best.Count >= req.Top && c.Bound > best[^1].Score * (1 + TieTolerance))
                break;
            var split = partitioner.Partition(req.Model, req.Cluster, c.Plan, req.RecomputePolicies, options, (_, r) => worker.Block(c.Plan, r));
            if (split is null)
                continue;
            var dominant = split.Recompute.GroupBy(r => r).OrderByDescending(g => g.Count()).First().Key;
            var plan = c.Plan with { Recompute = dominant, Stages = split };
            if (req.Filter is { } accept && !accept(plan))
                continue;
            var p = Pricer.Price(req.Model, req.Cluster, plan, options);
            priced++;
            if (!p.Fits)
                continue;
            Insert(req, best, p);
        }
        return priced;
    }

    /// <summary>Inserts an exactly priced plan into a top-K list ordered by score, ties to the leaner plan.</summary>
    internal static void Insert(SearchRequest req, List<(double Score, Prediction P)> best, Prediction p)
    {
        double score = Score(req, p.Plan, p.StepTimeSeconds);
        if (best.Any(x => x.P.Plan == p.Plan))
            return;
        // Ties (e.g. ZeRO-1 and ZeRO-2 at the same speed, up to rounding) go to the plan that needs less memory.
        int at = best.FindIndex(x => Tie(x.Score, score) ? x.P.PeakMemoryGib > p.PeakMemoryGib : x.Score > score);
        best.Insert(at < 0 ? best.Count : at, (score, p));
        if (best.Count > req.Top)
            best.RemoveAt(best.Count - 1);
    }

    /// <summary>Every candidate that fits, with its lower-bound score (for tests that compare with brute force).</summary>
    public static IReadOnlyList<(ParallelPlan Plan, double BoundScore)> Fitting(SearchRequest req)
    {
        var worker = new Worker(req, req.Options ?? PricingOptions.Default);
        foreach (var shape in Shapes(req))
            worker.Expand(shape);
        return worker.Fits.Select(c => (c.Plan, c.Bound)).ToList();
    }

    /// <summary>True when at least one candidate fits (stops at the first; for explanations).</summary>
    public static bool AnyFits(SearchRequest req)
    {
        var options = req.Options ?? PricingOptions.Default;
        var worker = new Worker(req, options) { StopAtFirstFit = true };
        foreach (var shape in Shapes(req))
        {
            worker.Expand(shape);
            if (worker.Fits.Count > 0)
                return true;
        }
        return false;
    }

    /// <summary>What the search minimises for a plan with a given step time: seconds (or cost) per token.</summary>
    public static double Score(SearchRequest req, ParallelPlan plan, double stepSeconds)
    {
        double perToken = stepSeconds / ((double)plan.Gbs * plan.Seq);
        return req.Objective == Objective.Cost
            ? perToken * plan.Gpus * req.Cluster.PricePerGpuHour!.Value / 3600
            : perToken;
    }

    /// <summary>A parallel shape: the GPUs used and their split into tp · cp · pp · dp, at one sequence and precision.</summary>
    private readonly record struct Shape(int Tp, int Cp, int Pp, int Dp, int Seq, Precision Precision);

    private static IEnumerable<Shape> Shapes(SearchRequest req)
    {
        var m = req.Model;
        var c = req.Cluster;
        int tpMax = Math.Min(req.TpMax ?? c.GpusPerNode, c.TotalGpus);
        foreach (int gpus in GpuCounts(req))
        foreach (int seq in req.Seqs)
        foreach (var precision in req.Precisions)
        for (int tp = 1; tp <= tpMax; tp++)
        {
            if (gpus % tp != 0 || PlanCheck.TpProblem(m, tp) is not null)
                continue;
            for (int cp = 1; cp <= gpus / tp; cp *= 2)
            {
                // Context parallelism splits each sequence in 2·cp chunks of at least 512 tokens.
                if (cp > 1 && (seq % (2 * cp) != 0 || seq / cp < 1024))
                    break;
                if (gpus % (tp * cp) != 0)
                    break;
                int rest = gpus / (tp * cp);
                for (int pp = 1; pp <= Math.Min(rest, m.Layers); pp++)
                    if (rest % pp == 0)
                        yield return new Shape(tp, cp, pp, rest / pp, seq, precision);
            }
        }
    }

    /// <summary>All GPUs, or with --allow-idle every whole-node count down to half the cluster.</summary>
    private static IEnumerable<int> GpuCounts(SearchRequest req)
    {
        int n = req.Cluster.TotalGpus, step = req.Cluster.GpusPerNode;
        yield return n;
        if (!req.AllowIdle)
            yield break;
        for (int g = n - step; g >= Math.Max(step, (n + 1) / 2); g -= step)
            yield return g;
    }

    /// <summary>Expands shapes into candidates on one thread, with its own cache of block costs.</summary>
    private sealed class Worker(SearchRequest req, PricingOptions options)
    {
        private readonly Dictionary<(int, int, int, int, bool, Precision, Recompute), BlockCosts> _blocks = [];
        public readonly List<Candidate> Fits = [];
        public readonly List<Candidate> NearMisses = [];
        public long Enumerated, Bounded;
        public (ParallelPlan, double)? Smallest;
        public bool StopAtFirstFit;

        public void Expand(Shape s)
        {
            var m = req.Model;
            var c = req.Cluster;
            double capacity = c.Gpu.MemoryBytes;
            int[] zeros = s.Dp > 1 ? [0, 1, 2, 3] : [0];
            foreach (int mbs in MicroBatchSizes(s))
            {
                int gbs = req.GbsIsMaximum ? req.Gbs / (s.Dp * mbs) * (s.Dp * mbs) : req.Gbs;
                if (gbs < s.Dp * mbs || gbs % (s.Dp * mbs) != 0)
                    continue;
                int micro = gbs / (s.Dp * mbs);
                foreach (int vpp in Interleavings(s.Pp, micro))
                foreach (var rc in req.RecomputePolicies)
                foreach (bool sp in s.Tp > 1 ? new[] { true, false } : [false])
                foreach (int zero in zeros)
                {
                    var plan = new ParallelPlan(s.Tp, s.Pp, s.Dp, s.Cp, zero, mbs, gbs, s.Seq, vpp, rc, sp, s.Precision);
                    if (req.Filter is { } accept && !accept(plan))
                        continue;
                    if (PlanCheck.Problem(m, c, plan) is not null)
                        continue;
                    Enumerated++;
                    var costs = PipelineCosts.Compute(m, c, plan, options, (_, r) => Block(plan, r));
                    Bounded++;
                    double peak = costs.PeakMemoryBytes(plan);
                    double bound = costs.MakespanLowerBound(micro) + costs.WorstTail;
                    if (peak > capacity)
                    {
                        if (Smallest is null || peak < Smallest.Value.Item2)
                            Smallest = (plan, peak);
                        // An uneven split may fit where the even one does not: the last stage holds the fewest
                        // micro-batches in flight, so if it fits, moving blocks there (or recomputing early) may help.
                        if (Splittable(plan) && costs.StageMemory(plan.Pp - 1, plan).Total <= capacity)
                            NearMisses.Add(new Candidate(plan, Score(req, plan, bound)));
                        continue;
                    }
                    Fits.Add(new Candidate(plan, Score(req, plan, bound)));
                    if (StopAtFirstFit)
                        return;
                }
            }
        }

        /// <summary>Block costs of a plan under a recompute policy, computed once per key.</summary>
        public BlockCosts Block(ParallelPlan plan, Recompute recompute)
        {
            var key = BlockCosts.Key(plan) with { Recompute = recompute };
            if (!_blocks.TryGetValue(key, out var block))
                _blocks[key] = block = BlockCosts.Compute(req.Model, req.Cluster, plan with { Recompute = recompute }, options);
            return block;
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
