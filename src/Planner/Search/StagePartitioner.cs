using Planner.Cli.Milp;
using Planner.CostModel.Memory;
using Planner.CostModel.Pipeline;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;

namespace Planner.Cli.Search;

/// <summary>
/// Splits non-uniform pipelines with a MILP: how many blocks each stage holds and which recompute policy each
/// stage uses, so that the slowest stage is as fast as possible while every stage fits its own memory (stage s of
/// 1F1B holds pp − s micro-batches in flight, the first stage the embedding, the last the head and logits).
/// </summary>
/// <remarks>
/// Variables: y[s,k] blocks on stage s under policy k (integer), x[s,k] stage s uses policy k (binary), T the
/// slowest stage's seconds per micro-batch. Minimise T + ε·Σ stage times subject to Σk x[s,k] = 1,
/// y[s,k] ≤ L·x[s,k], Σk y[s,k] ≥ 1, Σ y = L, time_s = Σk (t_k·y[s,k] + f_{s,k}·x[s,k]) ≤ T and
/// memory_s = Σk (m_{s,k}·y[s,k] + c_{s,k}·x[s,k]) ≤ capacity. Stage time and memory are exactly affine in the
/// block count, so the coefficients come from the cost model itself.
/// </remarks>
public sealed class StagePartitioner(IMilpSolver solver)
{
    /// <summary>Weight of the sum of stage times beside the slowest stage: prefers less recompute off the critical path.</summary>
    private const double Epsilon = 1e-3;

    /// <summary>The linear terms of one stage under one recompute policy.</summary>
    public readonly record struct Terms(double SecondsPerLayer, double FixedSeconds, double BytesPerLayer, double FixedBytes);

    /// <summary>The stage terms of a plan (vpp = 1, ZeRO &lt; 3), per stage and policy; <paramref name="groups"/> gives
    /// each stage's GPU group on a heterogeneous cluster.</summary>
    public static Terms[,] StageTerms(ModelSpec model, ClusterSpec cluster, ParallelPlan plan, IReadOnlyList<Recompute> policies,
        PricingOptions options, Func<int, Recompute, BlockCosts> blocks, IReadOnlyList<int>? groups = null)
    {
        if (options.Activations.OffloadLayers > 0)
            throw new InputException($"stack '{options.Stack}': activation_offload_layers makes a stage's memory no longer affine in its blocks, " +
                                     "which the stage split's MILP needs: uneven splits (a mixed cluster's) cannot be planned with it");
        var terms = new Terms[plan.Pp, policies.Count];
        var ops = blocks(0, plan.Recompute).Ops;
        for (int s = 0; s < plan.Pp; s++)
        {
            int group = groups?[s] ?? 0;
            var memory = new MemoryModel(model, plan, ops, cluster.GroupList[group].Gpu, options);
            int inFlight = ScheduleGenerator.InFlightBound(plan.Pp, 1, plan.MicroBatches, s);
            for (int k = 0; k < policies.Count; k++)
            {
                var (perLayer, fixedSeconds) = PipelineCosts.StageSeconds(blocks(group, policies[k]), s == 0, s == plan.Pp - 1);
                double m0 = memory.Stage(s, 0, inFlight, 1, policies[k]).Total;
                double m1 = memory.Stage(s, 1, inFlight, 1, policies[k]).Total;
                terms[s, k] = new Terms(perLayer, fixedSeconds, m1 - m0, m0);
            }
        }
        return terms;
    }

    /// <summary>
    /// The best split for the plan's shape, or null when no split fits (or the MILP is not applicable:
    /// vpp &gt; 1, ZeRO-3, a single stage).
    /// </summary>
    public StagePlan? Partition(ModelSpec model, ClusterSpec cluster, ParallelPlan plan, IReadOnlyList<Recompute> policies,
        PricingOptions options, Func<int, Recompute, BlockCosts> blocks, IReadOnlyList<int>? groups = null)
    {
        if (plan.Pp < 2 || plan.Vpp != 1 || plan.Zero >= 3 || model.Layers < plan.Pp)
            return null;
        var terms = StageTerms(model, cluster, plan, policies, options, blocks, groups);
        var capacities = Enumerable.Range(0, plan.Pp).Select(s => cluster.GroupList[groups?[s] ?? 0].Gpu.MemoryBytes).ToArray();
        var split = Solve(terms, model.Layers, capacities, policies);
        return split is null || groups is null ? split : split with { Groups = groups.ToArray() };
    }

    /// <summary>Solves the split for given terms and one capacity for all stages; null when infeasible.</summary>
    public StagePlan? Solve(Terms[,] terms, int layers, double capacity, IReadOnlyList<Recompute>? policies = null) =>
        Solve(terms, layers, Enumerable.Repeat(capacity, terms.GetLength(0)).ToArray(), policies);

    /// <summary>Solves the split for given terms and per-stage capacities (bytes); null when infeasible.</summary>
    public StagePlan? Solve(Terms[,] terms, int layers, IReadOnlyList<double> capacities, IReadOnlyList<Recompute>? policies = null)
    {
        int pp = terms.GetLength(0), kinds = terms.GetLength(1);
        double capacity = capacities.Max();
        policies ??= Enumerable.Range(0, kinds).Select(k => (Recompute)k).ToList();
        var p = new MilpProblem();
        double scale = capacity / 1000;
        int t = p.AddVariable("T", 0, double.MaxValue, objective: 1);
        var y = new int[pp, kinds];
        var x = new int[pp, kinds];
        // Each y is bounded by what fits the stage's memory under its policy: a tight big-M for the link rows.
        var most = new int[pp, kinds];
        for (int s = 0; s < pp; s++)
            for (int k = 0; k < kinds; k++)
            {
                most[s, k] = MostLayers(terms[s, k], capacities[s], layers - (pp - 1));
                y[s, k] = p.AddVariable($"y_{s}_{k}", 0, Math.Max(0, most[s, k]), objective: Epsilon * terms[s, k].SecondsPerLayer, integer: true);
                x[s, k] = p.AddBinary($"x_{s}_{k}", objective: Epsilon * terms[s, k].FixedSeconds);
            }
        var all = new List<(int, double)>();
        for (int s = 0; s < pp; s++)
        {
            var one = new List<(int, double)>();
            var some = new List<(int, double)>();
            var time = new List<(int, double)> { (t, -1) };
            var mem = new List<(int, double)>();
            for (int k = 0; k < kinds; k++)
            {
                var term = terms[s, k];
                one.Add((x[s, k], 1));
                some.Add((y[s, k], 1));
                all.Add((y[s, k], 1));
                p.AddRow($"link_{s}_{k}", [(y[s, k], 1), (x[s, k], -Math.Max(0, most[s, k]))], RowSense.LessOrEqual, 0);
                time.Add((y[s, k], term.SecondsPerLayer));
                time.Add((x[s, k], term.FixedSeconds));
                // Scale bytes so that the capacity is 1000: coefficients stay well above the solver's tolerances.
                mem.Add((y[s, k], term.BytesPerLayer / scale));
                mem.Add((x[s, k], term.FixedBytes / scale));
            }
            p.AddRow($"one_{s}", one, RowSense.Equal, 1);
            p.AddRow($"some_{s}", some, RowSense.GreaterOrEqual, 1);
            p.AddRow($"time_{s}", time, RowSense.LessOrEqual, 0);
            p.AddRow($"mem_{s}", mem, RowSense.LessOrEqual, capacities[s] / scale);
        }
        p.AddRow("all", all, RowSense.Equal, layers);
        // Start from the exact min-max split of the balancing algorithm: CBC then only has to close the gap.
        if (Balance(terms, layers, capacities) is { } start)
        {
            var values = new Dictionary<int, double> { [t] = start.Slowest };
            for (int s = 0; s < pp; s++)
                for (int k = 0; k < kinds; k++)
                {
                    values[y[s, k]] = start.Policy[s] == k ? start.Layers[s] : 0;
                    values[x[s, k]] = start.Policy[s] == k ? 1 : 0;
                }
            p.Start = values;
        }
        var result = solver.Solve(p);
        if (result.Status == MilpStatus.Infeasible || result.Values.Count == 0)
            return null;
        var split = new int[pp];
        var chosen = new Recompute[pp];
        for (int s = 0; s < pp; s++)
        {
            int best = 0;
            for (int k = 0; k < kinds; k++)
            {
                split[s] += (int)Math.Round(result.Values[y[s, k]]);
                if (result.Values[x[s, k]] > result.Values[x[s, best]])
                    best = k;
            }
            chosen[s] = policies[best];
        }
        return new StagePlan(split, chosen);
    }

    /// <summary>The most blocks a stage can hold under one policy's memory (capped), or −1 if not even its fixed part fits.</summary>
    private static int MostLayers(Terms term, double capacity, int cap)
    {
        if (term.FixedBytes > capacity)
            return -1;
        if (term.BytesPerLayer <= 0)
            return cap;
        return (int)Math.Min(cap, Math.Floor((capacity - term.FixedBytes) / term.BytesPerLayer));
    }

    /// <summary>
    /// The exact min-max split by bisection over candidate stage times: for a time T each stage can take at most
    /// max_k min(⌊(T − f)/t⌋, memory limit) blocks, and a split exists iff those add up to L (fewer blocks never
    /// cost more time or memory). Returns the slowest stage's time, blocks and policy per stage, or null.
    /// </summary>
    public static (double Slowest, int[] Layers, int[] Policy)? Balance(Terms[,] terms, int layers, IReadOnlyList<double> capacities)
    {
        int pp = terms.GetLength(0), kinds = terms.GetLength(1);
        if (layers < pp)
            return null;
        var times = new List<double>();
        for (int s = 0; s < pp; s++)
            for (int k = 0; k < kinds; k++)
            {
                int most = MostLayers(terms[s, k], capacities[s], layers - (pp - 1));
                for (int l = 1; l <= most; l++)
                    times.Add(terms[s, k].FixedSeconds + terms[s, k].SecondsPerLayer * l);
            }
        if (times.Count == 0)
            return null;
        times.Sort();
        int[]? Fit(double limit, out int[] policy)
        {
            var take = new int[pp];
            policy = new int[pp];
            long sum = 0;
            for (int s = 0; s < pp; s++)
            {
                int bestTake = 0, bestK = -1;
                for (int k = 0; k < kinds; k++)
                {
                    var term = terms[s, k];
                    int byTime = (int)Math.Floor((limit - term.FixedSeconds) / term.SecondsPerLayer * (1 + 1e-12));
                    int n = Math.Min(byTime, MostLayers(term, capacities[s], layers - (pp - 1)));
                    if (n > bestTake)
                    {
                        bestTake = n;
                        bestK = k;
                    }
                }
                if (bestK < 0)
                    return null;
                take[s] = bestTake;
                policy[s] = bestK;
                sum += bestTake;
            }
            return sum >= layers ? take : null;
        }
        int lo = 0, hi = times.Count - 1;
        if (Fit(times[hi], out _) is null)
            return null;
        while (lo < hi)
        {
            int mid = (lo + hi) / 2;
            if (Fit(times[mid], out _) is null)
                lo = mid + 1;
            else
                hi = mid;
        }
        var counts = Fit(times[lo], out var chosen)!;
        // Trim the surplus from the stages with the most blocks; fewer blocks never break a limit.
        int surplus = counts.Sum() - layers;
        while (surplus > 0)
        {
            int s = Array.IndexOf(counts, counts.Max());
            counts[s]--;
            surplus--;
        }
        double slowest = 0;
        for (int s = 0; s < pp; s++)
            slowest = Math.Max(slowest, terms[s, chosen[s]].FixedSeconds + terms[s, chosen[s]].SecondsPerLayer * counts[s]);
        return (slowest, counts, chosen);
    }

    /// <summary>The MILP's objective for a split, evaluated directly (for brute-force checks): the slowest stage's
    /// seconds per micro-batch, or +∞ when a stage does not fit.</summary>
    public static double SlowestStage(Terms[,] terms, IReadOnlyList<int> layers, IReadOnlyList<int> policy, double capacity)
    {
        double worst = 0;
        for (int s = 0; s < layers.Count; s++)
        {
            var term = terms[s, policy[s]];
            if (term.FixedBytes + term.BytesPerLayer * layers[s] > capacity)
                return double.PositiveInfinity;
            worst = Math.Max(worst, term.FixedSeconds + term.SecondsPerLayer * layers[s]);
        }
        return worst;
    }
}
