using System.Collections.Concurrent;
using System.Diagnostics;
using Planner.Cli.Milp;
using Planner.CostModel.Memory;
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
public static partial class PlanSearch
{
    /// <summary>What a queue entry stands for.</summary>
    private enum Kind
    {
        /// <summary>One plan, with the lower bound of its step.</summary>
        Plan,
        /// <summary>The partial-recompute plans of a shape from k = the plan's recompute_layers up, with a bound valid
        /// for all of them.</summary>
        RecomputeFamily,
        /// <summary>The optimizer-offload variants (fractions above 0) of a plan, with a bound valid for all of them.</summary>
        OffloadFamily,
    }

    /// <summary>A queue entry: a plan or a family of variants with a lower bound of its score. A loose bound comes from the
    /// cached block costs alone (the busiest stage's own work); the pipeline's costs are computed, and the tight bound
    /// taken, only when the entry comes up (<see cref="Worker.Tighten"/>).</summary>
    private readonly record struct Candidate(ParallelPlan Plan, double Bound, Kind Kind = Kind.Plan, bool Loose = false);

    /// <summary>Relative difference under which two step times count as equal (rounding of the same sums).</summary>
    public const double TieTolerance = 1e-9;

    /// <summary>True when two scores are equal up to <see cref="TieTolerance"/>.</summary>
    public static bool Tie(double a, double b) => Math.Abs(a - b) <= TieTolerance * Math.Max(Math.Abs(a), Math.Abs(b));

    /// <summary>How many shapes the stage-partition MILP refines per search.</summary>
    public const int MilpRefinements = 16;

    /// <summary>Plans whose stages the MILP may split unevenly (blocks all of one kind: its terms are per block).</summary>
    private static bool Splittable(ParallelPlan p, ModelSpec m) =>
        p.Pp > 1 && p.Vpp == 1 && p.Zero < 3 && p.RecomputeLayers is null && p.OptimizerOffload == 0 && m.Kinds.Count == 1 && m.MtpLayers == 0;

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
        var families = new ConcurrentBag<List<Candidate>>();
        var nearMisses = new ConcurrentBag<List<Candidate>>();
        long enumerated = 0, bounded = 0;
        var smallest = new ConcurrentBag<(ParallelPlan, double)>();
        // Longest first, one shape at a time: the shapes differ in cost by orders of magnitude (stages × chunks).
        shapes.Sort((a, b) => b.Pp.CompareTo(a.Pp));
        Parallel.ForEach(Partitioner.Create(shapes, EnumerablePartitionerOptions.NoBuffering), new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount },
            () => new Worker(req, options),
            (shape, _, worker) => { worker.Expand(shape); return worker; },
            worker =>
            {
                found.Add(worker.Fits);
                families.Add(worker.Families);
                nearMisses.Add(worker.NearMisses);
                Interlocked.Add(ref enumerated, worker.Enumerated);
                Interlocked.Add(ref bounded, worker.Bounded);
                if (worker.Smallest is { } s)
                    smallest.Add(s);
            });

        // Best first: a plan is priced exactly when its bound is the lowest left; a family of variants (partial
        // recompute, optimizer offload) enters with a bound valid for all its members and is unfolded when it comes up.
        var all = found.SelectMany(l => l).ToList();
        var queue = new PriorityQueue<Candidate, double>();
        foreach (var c in all.Concat(families.SelectMany(l => l)))
            queue.Enqueue(c, c.Bound);
        var best = new List<(double Score, Prediction P)>();
        int priced = 0;
        var expander = new Worker(req, options);
        var variants = new Dictionary<ParallelPlan, Prediction>();
        var bestOfKey = new Dictionary<object, double>();
        while (queue.TryDequeue(out var item, out double bound))
        {
            if (best.Count >= req.Top && bound > best[^1].Score * (1 + TieTolerance))
                break; // no remaining candidate can enter the top K (ties included, for the memory tie-break)
            // A plan (or a family: its members share a key) cannot enter the list when a priced plan of its key (in the
            // list or pushed out of it) beats its bound: the list keeps one plan per key.
            var key = KeyOf(req, item.Plan);
            if (bestOfKey.TryGetValue(key, out double known) && bound > known * (1 + TieTolerance))
                continue;
            if (item.Loose)
            {
                var tight = expander.Tighten(item);
                queue.Enqueue(tight, tight.Bound);
                continue;
            }
            if (item.Kind != Kind.Plan)
            {
                foreach (var next in expander.Unfold(item))
                    queue.Enqueue(next, next.Bound);
                continue;
            }
            var p = PriceReached(req, options, expander, variants, item.Plan);
            priced++;
            // The memory filter is exact for the end stages and, for models of several block kinds, every stage; the
            // price has the last word (the hosts of every stage included).
            if (!p!.Fits)
                continue;
            double score = Score(req, p.Plan, p.StepTimeSeconds);
            bestOfKey[key] = bestOfKey.TryGetValue(key, out double before) ? Math.Min(before, score) : score;
            Insert(req, best, p);
        }
        bounded += expander.Bounded;
        int refined = Refine(req, options, all, nearMisses.SelectMany(l => l).ToList(), best);
        (ParallelPlan, double)? least = smallest.IsEmpty ? null : smallest.MinBy(x => x.Item2);
        return new SearchResult(best.Select(x => x.P).ToList(), enumerated, bounded, priced + refined, watch.Elapsed.TotalSeconds, least);
    }

    /// <summary>
    /// The prediction of a plan the best-first loop reached: kept from an earlier simulation of its offload fractions,
    /// else priced now (with every offload fraction at once when the search tries several, the others kept in
    /// <paramref name="variants"/>). Null when that simulation did not return the plan.
    /// </summary>
    private static Prediction? PriceReached(SearchRequest req, PricingOptions options, Worker expander, Dictionary<ParallelPlan, Prediction> variants, ParallelPlan plan)
    {
        if (variants.Remove(plan, out var p))
            return p;
        if (expander.OffloadFractions.Count == 0)
            return Pricer.Price(req.Model, req.Cluster, plan, options);
        // One simulation prices every offload fraction of the plan; keep the others for when they come up.
        var fractions = expander.OffloadFractions.Prepend(0.0).ToList();
        foreach (var v in Pricer.PriceOffloads(req.Model, req.Cluster, plan with { OptimizerOffload = 0 }, fractions, options))
            variants[v.Plan] = v;
        variants.Remove(plan, out p);
        return p;
    }

    /// <summary>
    /// Runs the stage-partition MILP on the most promising splittable shapes (even plans that fit, and near misses
    /// whose even split does not) where a split could enter the top K, and inserts the uneven plans that do. Returns
    /// the plans priced.
    /// </summary>
    private static int Refine(SearchRequest req, PricingOptions options, List<Candidate> fitting, List<Candidate> nearMisses,
        List<(double Score, Prediction P)> best)
    {
        // The MILP needs a stage's memory affine in its block count, which offloading N blocks' activations breaks (no
        // offload below N + 1 blocks): with a stack that offloads, the even splits (priced exactly) are all there is.
        if (!CbcSolver.IsAvailable || options.Activations.OffloadLayers > 0)
            return 0;
        var worker = new Worker(req, options);
        // One configuration per key, the most promising by the even split's bound; then ordered by the bound of any
        // split of theirs (BalancedBound), which is what can say that the MILP cannot help.
        var pool = fitting.Where(c => Splittable(c.Plan, req.Model)).Concat(nearMisses)
            .OrderBy(c => c.Bound)
            .DistinctBy(c => KeyOf(req, c.Plan with { Recompute = Recompute.None }))
            .Take(4 * MilpRefinements)
            .Select(c => c with { Bound = Score(req, c.Plan, worker.BalancedBound(c.Plan)) })
            .OrderBy(c => c.Bound)
            .Take(MilpRefinements)
            .ToList();
        var partitioner = new StagePartitioner(new CbcSolver());
        int priced = 0;
        foreach (var c in pool)
        {
            // No split of this or a later configuration fits, or can enter the list.
            if (double.IsPositiveInfinity(c.Bound) || (best.Count >= req.Top && c.Bound > best[^1].Score * (1 + TieTolerance)))
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

    /// <summary>
    /// The configuration a plan is a variant of: the plan without its partial recompute depth and optimizer offload,
    /// knobs that trade speed for memory on the same configuration. The top list keeps the best variant of each.
    /// </summary>
    public static ParallelPlan VariantOf(ParallelPlan p) => p with { RecomputeLayers = null, OptimizerOffload = 0 };

    /// <summary>
    /// What the top list keeps one plan of: by default a shape (the GPUs' split into tp, cp, pp, dp, ep and etp, at one
    /// batch, sequence, precision and fine-tuning: its best ZeRO stage, micro-batch, interleaving, recompute and offload), with
    /// <see cref="SearchRequest.AllVariants"/> a configuration (<see cref="VariantOf"/>).
    /// </summary>
    public static object KeyOf(SearchRequest req, ParallelPlan p) =>
        req.AllVariants ? VariantOf(p) : (p.Tp, p.Cp, p.Pp, p.Dp, p.Ep, p.Etp, p.Gbs, p.Seq, p.Precision, p.FineTuning);

    /// <summary>Inserts an exactly priced plan into a top-K list ordered by score, ties to the leaner plan, one plan
    /// per key (<see cref="KeyOf"/>).</summary>
    internal static void Insert(SearchRequest req, List<(double Score, Prediction P)> best, Prediction p)
    {
        double score = Score(req, p.Plan, p.StepTimeSeconds);
        // Ties (e.g. ZeRO-1 and ZeRO-2 at the same speed, up to rounding) go to the plan that needs less memory.
        bool Better((double Score, Prediction P) x) => Tie(x.Score, score) ? x.P.PeakMemoryGib > p.PeakMemoryGib : x.Score > score;
        var variant = KeyOf(req, p.Plan);
        int same = best.FindIndex(x => KeyOf(req, x.P.Plan).Equals(variant));
        if (same >= 0)
        {
            if (best[same].P.Plan == p.Plan || !Better(best[same]))
                return;
            best.RemoveAt(same);
        }
        int at = best.FindIndex(Better);
        best.Insert(at < 0 ? best.Count : at, (score, p));
        if (best.Count > req.Top)
            best.RemoveAt(best.Count - 1);
    }

    /// <summary>
    /// Every candidate that fits, with its lower-bound score and the largest bound of the families it was unfolded
    /// from (its own bound for a plain candidate), for tests that compare with brute force and check every bound.
    /// </summary>
    public static IReadOnlyList<(ParallelPlan Plan, double BoundScore, double FamilyBound)> Fitting(SearchRequest req)
    {
        var worker = new Worker(req, req.Options ?? PricingOptions.Default);
        foreach (var shape in Shapes(req))
            worker.Expand(shape);
        var result = worker.Fits.Select(c => (c.Plan, c.Bound, c.Bound)).ToList();
        // A loose candidate's tight bound is the one the search prices by: the exact price is checked against both.
        for (int i = 0; i < worker.Fits.Count; i++)
            if (worker.Fits[i].Loose)
                result[i] = (result[i].Plan, worker.Tighten(worker.Fits[i]).Bound, result[i].Item3);
        var pending = new Stack<(Candidate C, double Above)>(worker.Families.Select(f => (f, f.Bound)));
        while (pending.TryPop(out var family))
            foreach (var c in worker.Unfold(family.C))
            {
                double above = Math.Max(family.Above, c.Bound);
                if (c.Kind == Kind.Plan)
                    result.Add((c.Plan, c.Bound, above));
                else
                    pending.Push((c, above));
            }
        return result;
    }

    /// <summary>
    /// A lower bound of the step time of every split of a plan's blocks over its stages that fits, with any of the
    /// request's recompute policies per stage (what the search asks before running the stage-partition MILP).
    /// </summary>
    public static double SplitBound(SearchRequest req, ParallelPlan plan) =>
        new Worker(req, req.Options ?? PricingOptions.Default).BalancedBound(plan);

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
}
