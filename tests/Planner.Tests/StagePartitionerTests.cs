using Planner.Cli.Milp;
using Planner.Cli.Search;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;
using Xunit;

namespace Planner.Cli.Tests;

public class StagePartitionerTests
{
    private static readonly CbcSolver Cbc = new();

    [Fact]
    public void Cbc_solves_a_small_integer_program()
    {
        // max 5a + 4b s.t. 6a + 4b <= 24, a + 2b <= 6, integers: optimum a=4, b=0 (20); LP relaxation is 21 at (3, 1.5).
        var p = new MilpProblem();
        int a = p.AddVariable("a", 0, 10, objective: -5, integer: true);
        int b = p.AddVariable("b", 0, 10, objective: -4, integer: true);
        p.AddRow("r1", [(a, 6), (b, 4)], RowSense.LessOrEqual, 24);
        p.AddRow("r2", [(a, 1), (b, 2)], RowSense.LessOrEqual, 6);
        var s = Cbc.Solve(p);
        Assert.Equal(MilpStatus.Optimal, s.Status);
        Assert.Equal(-20, s.Objective, 6);
        Assert.Equal(4, s.Values[a], 6);
        Assert.Equal(0, s.Values[b], 6);
    }

    [Fact]
    public void Cbc_reports_infeasibility()
    {
        var p = new MilpProblem();
        int a = p.AddVariable("a", 0, 1, integer: true);
        p.AddRow("r", [(a, 1)], RowSense.GreaterOrEqual, 2);
        Assert.Equal(MilpStatus.Infeasible, Cbc.Solve(p).Status);
    }

    public static TheoryData<int, int, int> RandomInstances()
    {
        var data = new TheoryData<int, int, int>();
        for (int seed = 1; seed <= 24; seed++)
            data.Add(seed, 5 + seed % 6, 2 + seed % 3);
        return data;
    }

    [Theory]
    [MemberData(nameof(RandomInstances))]
    public void Milp_split_equals_brute_force_on_random_instances(int seed, int layers, int pp)
    {
        var rng = new Random(seed);
        const int kinds = 3;
        var terms = new StagePartitioner.Terms[pp, kinds];
        for (int s = 0; s < pp; s++)
            for (int k = 0; k < kinds; k++)
                // More recompute: more seconds, fewer bytes per layer; earlier stages hold more in flight.
                terms[s, k] = new StagePartitioner.Terms(
                    SecondsPerLayer: 1 + 0.3 * k + rng.NextDouble() * 0.1,
                    FixedSeconds: (s == 0 ? 0.5 : 0) + (s == pp - 1 ? 1.5 : 0) + rng.NextDouble() * 0.1,
                    BytesPerLayer: (pp - s) * (3.0 - k) + rng.NextDouble(),
                    FixedBytes: 2 + rng.NextDouble() * 2);
        double capacity = 4 + rng.NextDouble() * 3 * layers;
        var split = new StagePartitioner(Cbc).Solve(terms, layers, capacity);
        var balanced = StagePartitioner.Balance(terms, layers, Enumerable.Repeat(capacity, pp).ToArray());
        double brute = BruteForce(terms, layers, pp, kinds, capacity);
        if (double.IsPositiveInfinity(brute))
        {
            Assert.Null(split);
            Assert.Null(balanced);
            return;
        }
        Assert.NotNull(balanced);
        Assert.Equal(brute, balanced!.Value.Slowest, 9);
        Assert.Equal(brute, StagePartitioner.SlowestStage(terms, balanced.Value.Layers, balanced.Value.Policy, capacity), 9);
        Assert.NotNull(split);
        Assert.Equal(layers, split!.Layers.Sum());
        var policy = split.Recompute.Select(r => (int)r).ToList();
        double milp = StagePartitioner.SlowestStage(terms, split.Layers, policy, capacity);
        Assert.Equal(brute, milp, 9);
    }

    private static double BruteForce(StagePartitioner.Terms[,] terms, int layers, int pp, int kinds, double capacity)
    {
        double best = double.PositiveInfinity;
        foreach (var split in Compositions(layers, pp))
        {
            int policies = (int)Math.Pow(kinds, pp);
            for (int code = 0; code < policies; code++)
            {
                var policy = new int[pp];
                for (int s = 0, c = code; s < pp; s++, c /= kinds)
                    policy[s] = c % kinds;
                best = Math.Min(best, StagePartitioner.SlowestStage(terms, split, policy, capacity));
            }
        }
        return best;
    }

    private static IEnumerable<int[]> Compositions(int total, int parts)
    {
        if (parts == 1)
        {
            yield return [total];
            yield break;
        }
        for (int first = 1; first <= total - (parts - 1); first++)
            foreach (var rest in Compositions(total - first, parts - 1))
                yield return [first, .. rest];
    }

    [Fact]
    public void Stage_terms_agree_with_the_pricer()
    {
        var m = ModelLoader.Load("llama2-13b");
        var c = ClusterLoader.Load("dgx-a100-80g-1node");
        var plan = new ParallelPlan(2, 4, 1, 1, 1, 1, 32, 4096, 1, Recompute.None, true, Precision.Bf16);
        Recompute[] policies = [Recompute.None, Recompute.Full];
        var options = PricingOptions.Default;
        var terms = StagePartitioner.StageTerms(m, c, plan, policies, options,
            (_, r) => BlockCosts.Compute(m, c, plan with { Recompute = r }, options));
        var staged = plan with { Stages = new StagePlan([9, 11, 11, 9], [Recompute.Full, Recompute.None, Recompute.None, Recompute.None]) };
        var costs = PipelineCosts.Compute(m, c, staged, options);
        var priced = Pricer.Price(m, c, staged);
        int[] policyIndex = [1, 0, 0, 0];
        for (int s = 0; s < 4; s++)
        {
            var t = terms[s, policyIndex[s]];
            int l = staged.Stages!.Layers[s];
            Assert.Equal(costs.Forward[s, 0] + costs.Backward[s, 0], t.FixedSeconds + t.SecondsPerLayer * l, 9);
            Assert.Equal(priced.MemoryByStage[s].Total, t.FixedBytes + t.BytesPerLayer * l, 3);
        }
    }

    [Fact]
    public void An_uneven_split_fits_where_the_even_split_does_not()
    {
        // Llama 2 70B on 16 A100 80GB with TP8 PP2 and micro-batches of 2: with no recompute the first stage holds two
        // micro-batches in flight and does not fit evenly; the MILP moves blocks to the last stage or recomputes on the first.
        var m = ModelLoader.Load("llama2-70b");
        var c = ClusterLoader.Load("dgx-a100-80g") with { Nodes = 2 };
        var even = new ParallelPlan(8, 2, 1, 1, 0, 2, 64, 4096, 1, Recompute.None, true, Precision.Bf16);
        Assert.False(Pricer.Price(m, c, even).Fits);
        var options = PricingOptions.Default;
        var split = new StagePartitioner(Cbc).Partition(m, c, even, [Recompute.None, Recompute.Full], options,
            (_, r) => BlockCosts.Compute(m, c, even with { Recompute = r }, options));
        Assert.NotNull(split);
        var priced = Pricer.Price(m, c, even with { Stages = split });
        Assert.True(priced.Fits, $"split {split} peaks at {priced.PeakMemoryGib:F1} GiB");
        var fullEverywhere = Pricer.Price(m, c, even with { Recompute = Recompute.Full });
        Assert.True(priced.StepTimeSeconds <= fullEverywhere.StepTimeSeconds * (1 + 1e-9),
            $"split {split}: {priced.StepTimeSeconds} s against full recompute everywhere {fullEverywhere.StepTimeSeconds} s");
    }

    [Theory]
    [InlineData(2, 1)]
    [InlineData(2, 2)]
    [InlineData(4, 1)]
    public void The_split_bound_is_below_every_split_that_fits(int pp, int mbs)
    {
        // Llama 2 70B on pp nodes of A100 80GB, TP8: the MILP's split and random splits with random recompute per stage, each
        // priced; none that fits may beat the bound the search uses to skip the MILP.
        var m = ModelLoader.Load("llama2-70b");
        var c = ClusterLoader.Load("dgx-a100-80g") with { Nodes = pp };
        var plan = new ParallelPlan(8, pp, 1, 1, 0, mbs, 64, 4096, 1, Recompute.None, true, Precision.Bf16);
        var req = new SearchRequest(m, c, 64, false, [4096], [Precision.Bf16]);
        var policies = req.RecomputePolicies;
        double bound = PlanSearch.SplitBound(req, plan);
        var options = PricingOptions.Default;
        var split = new StagePartitioner(Cbc).Partition(m, c, plan, policies, options,
            (_, r) => BlockCosts.Compute(m, c, plan with { Recompute = r }, options));
        Assert.NotNull(split);
        var splits = new List<StagePlan> { split };
        var rng = new Random(pp * 10 + mbs);
        for (int i = 0; i < 60; i++)
        {
            var layers = Enumerable.Repeat(1, pp).ToArray();
            for (int l = pp; l < m.Layers; l++)
                layers[rng.Next(pp)]++;
            splits.Add(new StagePlan(layers, Enumerable.Range(0, pp).Select(_ => policies[rng.Next(policies.Count)]).ToArray()));
        }
        int fitting = 0;
        foreach (var s in splits)
        {
            var priced = Pricer.Price(m, c, plan with { Stages = s, Recompute = s.Recompute[0] });
            if (!priced.Fits)
                continue;
            fitting++;
            Assert.True(bound <= priced.StepTimeSeconds * (1 + 1e-9), $"split {s}: {priced.StepTimeSeconds} s below the bound {bound} s");
        }
        Assert.True(fitting >= 2, $"{fitting} splits fit");
        Assert.True(bound > 0.5 * Pricer.Price(m, c, plan with { Stages = split }).StepTimeSeconds, "the bound should not be trivially low");
    }
}
