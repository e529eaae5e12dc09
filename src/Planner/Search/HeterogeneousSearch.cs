using System.Diagnostics;
using Planner.Cli.Milp;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;
using Units = Planner.CostModel.Specs.Units;

namespace Planner.Cli.Search;

/// <summary>
/// Search on a cluster with several GPU groups: every stage runs on one group, each group hosts a whole number of
/// stages of tp·cp·dp GPUs, and the stage-partition MILP gives each stage its blocks and recompute policy under its
/// own GPU's speed and memory. Group orders along the pipeline are all tried (the first stages hold the most
/// micro-batches in flight, so a larger-memory group may belong first).
/// </summary>
public static class HeterogeneousSearch
{
    /// <summary>Runs the search.</summary>
    public static SearchResult Run(SearchRequest req)
    {
        var watch = Stopwatch.StartNew();
        var m = req.Model;
        var c = req.Cluster;
        var options = req.Options ?? PricingOptions.Default;
        if (!CbcSolver.IsAvailable)
            throw new InvalidOperationException("a heterogeneous cluster needs the MILP solver: install coinor-libcbc-dev");
        if (m.Kinds.Count > 1 || m.MtpLayers > 0)
            throw new InputException($"--cluster: '{c.Name}' has several GPU groups, whose stage split assumes blocks all of one kind; '{m.Name}' has {string.Join(" and ", m.Kinds)} blocks{(m.MtpLayers > 0 ? " and multi-token prediction" : "")}: plan it on one group");
        var partitioner = new StagePartitioner(new CbcSolver());
        var blocks = new GroupBlocks(m, c, options);
        var best = new List<(double Score, Prediction P)>();
        int priced = 0;
        (ParallelPlan, double)? smallest = null;
        var candidates = Candidates(req, options, blocks, out long enumerated);
        // Branch and bound: no split of a candidate beats m times its balanced slowest stage.
        candidates.Sort((a, b) => a.Bound.CompareTo(b.Bound));
        foreach (var (plan, stageGroups, bound) in candidates)
        {
            if (best.Count >= req.Top && bound > best[^1].Score * (1 + PlanSearch.TieTolerance))
                break;
            var split = partitioner.Partition(m, c, plan, req.RecomputePolicies, options, (g, r) => blocks.Of(plan, g, r), stageGroups);
            if (split is null)
                continue;
            var dominant = split.Recompute.GroupBy(r => r).OrderByDescending(x => x.Count()).First().Key;
            var staged = plan with { Recompute = dominant, Stages = split };
            if (PlanCheck.Problem(m, c, staged) is not null || (req.Filter is { } accept && !accept(staged)))
                continue;
            var p = Pricer.Price(m, c, staged, options);
            priced++;
            if (!p.Fits)
            {
                if (smallest is null || p.PeakMemoryGib * Units.GiB < smallest.Value.Item2)
                    smallest = (staged, p.PeakMemoryGib * Units.GiB);
                continue;
            }
            PlanSearch.Insert(req, best, p);
        }
        return new SearchResult(best.Select(x => x.P).ToList(), enumerated, enumerated, priced, watch.Elapsed.TotalSeconds, smallest);
    }

    /// <summary>
    /// Every plan of the cluster's shapes (each stage on one group, the groups in every order along the pipeline) whose
    /// stages the balancing algorithm can fit, with its bound: the exact min-max stage time of that balance, which no
    /// split beats. <paramref name="enumerated"/>: the plans tried.
    /// </summary>
    private static List<(ParallelPlan Plan, int[] Groups, double Bound)> Candidates(SearchRequest req, PricingOptions options, GroupBlocks blocks, out long enumerated)
    {
        var m = req.Model;
        var c = req.Cluster;
        enumerated = 0;
        int groups = c.GroupList.Count;
        var orders = Permutations(Enumerable.Range(0, groups).ToArray()).ToList();
        int tpMax = Math.Min(req.TpMax ?? c.NvlinkDomain, c.NvlinkDomain);
        var candidates = new List<(ParallelPlan Plan, int[] Groups, double Bound)>();
        foreach (int seq in req.Seqs)
            foreach (var precision in req.Precisions)
                for (int tp = 1; tp <= tpMax; tp++)
                {
                    if (PlanCheck.TpProblem(m, tp) is not null)
                        continue;
                    for (int cp = 1; cp == 1 || (seq % (2 * cp) == 0 && seq / cp >= 1024); cp *= 2)
                        for (int dp = 1; ; dp++)
                        {
                            int perStage = tp * cp * dp;
                            if (Enumerable.Range(0, groups).Any(g => c.GroupGpus(g) < perStage))
                                break;
                            if (Enumerable.Range(0, groups).Any(g => c.GroupGpus(g) % perStage != 0))
                                continue;
                            int[] stagesOf = Enumerable.Range(0, groups).Select(g => c.GroupGpus(g) / perStage).ToArray();
                            int pp = stagesOf.Sum();
                            if (pp > m.Layers)
                                continue;
                            foreach (var order in orders)
                            {
                                var stageGroups = order.SelectMany(g => Enumerable.Repeat(g, stagesOf[g])).ToArray();
                                foreach (int mbs in Divisors(req.Gbs % dp == 0 ? req.Gbs / dp : 0).Where(x => x <= 64))
                                    foreach (bool sp in tp > 1 ? m.IsMoe ? [true] : new[] { true, false } : [false])
                                        foreach (int zero in dp > 1 ? new[] { 0, 1, 2 } : [0])
                                        {
                                            var plan = new ParallelPlan(tp, pp, dp, cp, zero, mbs, req.Gbs, seq, 1, Recompute.None, sp, precision);
                                            enumerated++;
                                            // The exact min-max stage time of the balancing algorithm bounds the step from below.
                                            var terms = StagePartitioner.StageTerms(m, c, plan, req.RecomputePolicies, options, (g, r) => blocks.Of(plan, g, r), stageGroups);
                                            var capacities = stageGroups.Select(g => c.GroupList[g].Gpu.MemoryBytes).ToArray();
                                            if (StagePartitioner.Balance(terms, m.Layers, capacities) is not { } balanced)
                                                continue;
                                            candidates.Add((plan, stageGroups, PlanSearch.Score(req, plan, plan.MicroBatches * balanced.Slowest)));
                                        }
                            }
                        }
                }
        return candidates;
    }

    /// <summary>Block costs by GPU group and recompute policy, each computed once.</summary>
    private sealed class GroupBlocks(ModelSpec m, ClusterSpec c, PricingOptions options)
    {
        private readonly Dictionary<(int, BlockKey), BlockCosts> _cache = new();

        public BlockCosts Of(ParallelPlan plan, int g, Recompute r)
        {
            var key = (g, BlockCosts.Key(plan) with { Recompute = r });
            if (!_cache.TryGetValue(key, out var b))
                _cache[key] = b = BlockCosts.Compute(m, c.ForGroup(g), plan with { Recompute = r }, options);
            return b;
        }
    }

    private static IEnumerable<int> Divisors(int n)
    {
        for (int d = 1; d <= n; d++)
            if (n % d == 0)
                yield return d;
    }

    private static IEnumerable<int[]> Permutations(int[] items)
    {
        if (items.Length <= 1)
        {
            yield return items;
            yield break;
        }
        for (int i = 0; i < items.Length; i++)
        {
            var rest = items.Where((_, j) => j != i).ToArray();
            foreach (var tail in Permutations(rest))
                yield return [items[i], .. tail];
        }
    }
}
