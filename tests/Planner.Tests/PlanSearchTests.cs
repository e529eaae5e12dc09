using Planner.Cli.Search;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;
using Xunit;

namespace Planner.Cli.Tests;

public class PlanSearchTests
{
    private static SearchRequest Small(string model, string cluster, int gbs, int seq, bool allowIdle = false) =>
        new(ModelLoader.Load(model), ClusterLoader.Load(cluster), gbs, false, [seq], [Precision.Bf16], allowIdle, Top: 5);

    public static TheoryData<string, string, int, int> Cases => new()
    {
        { "gpt2-xl", "dgx-a100-80g-1node", 64, 1024 },
        { "llama2-7b", "dgx-a100-80g-1node", 32, 4096 },
        { "llama2-13b", "dgx-h100-1node", 16, 4096 },
    };

    /// <summary>Brute force: every fitting plan priced; the best of each shape (or configuration, with every variant),
    /// the top K of those.</summary>
    private static List<double> BruteForce(SearchRequest req, IReadOnlyList<(ParallelPlan Plan, double BoundScore, double FamilyBound)> fitting) =>
        fitting
            .Select(c => (c.Plan, Score: PlanSearch.Score(req, c.Plan, Pricer.Price(req.Model, req.Cluster, c.Plan).StepTimeSeconds)))
            .GroupBy(c => PlanSearch.KeyOf(req, c.Plan))
            .Select(g => g.Min(c => c.Score))
            .OrderBy(s => s)
            .Take(req.Top)
            .ToList();

    [Theory]
    [MemberData(nameof(Cases))]
    public void Bounded_search_returns_the_brute_force_optimum(string model, string cluster, int gbs, int seq)
    {
        var req = Small(model, cluster, gbs, seq);
        var result = PlanSearch.Run(req);
        var exact = BruteForce(req, PlanSearch.Fitting(req));
        Assert.True(exact.Count >= 2);
        var found = result.Plans.Select(p => PlanSearch.Score(req, p.Plan, p.StepTimeSeconds)).ToList();
        Assert.Equal(exact.Count, found.Count);
        // The even-split plans found are exactly brute force's; uneven splits from the MILP may only do better.
        for (int i = 0; i < exact.Count; i++)
            Assert.True(found[i] <= exact[i] * (1 + 1e-12), $"rank {i + 1}: search {found[i]} worse than brute force {exact[i]}");
        var even = result.Plans.Where(p => p.Plan.Stages is null).Select(p => PlanSearch.Score(req, p.Plan, p.StepTimeSeconds)).ToList();
        for (int i = 0; i < even.Count; i++)
            Assert.Equal(exact[i], even[i], 12);
        Assert.True(result.Priced < PlanSearch.Fitting(req).Count, "the bound should spare most exact pricings");
    }

    [Fact]
    public void Expert_parallel_search_returns_the_brute_force_optimum()
    {
        // Qwen3-30B-A3B on two trays of GB200s (8 GPUs, one NVLink domain): every ep dividing the 128 experts and the
        // stage's ranks, etp 1 or tp, against every fitting plan priced.
        var cluster = ClusterLoader.Load("gb200-nvl72") with { Nodes = 2 };
        var req = new SearchRequest(ModelLoader.Load("qwen3-30b-a3b"), cluster, 16, false, [4096], [Precision.Bf16], Top: 5);
        var result = PlanSearch.Run(req);
        var fitting = PlanSearch.Fitting(req);
        Assert.Contains(fitting, c => c.Plan.Ep == 8);
        Assert.Contains(fitting, c => c.Plan.Etp > 1);
        var exact = BruteForce(req, fitting);
        var found = result.Plans.Select(p => PlanSearch.Score(req, p.Plan, p.StepTimeSeconds)).ToList();
        Assert.Equal(exact.Count, found.Count);
        for (int i = 0; i < exact.Count; i++)
            Assert.Equal(exact[i], found[i], 12);
        Assert.True(result.Plans[0].Plan.Ep > 1, $"best {result.Plans[0].Plan}");
        foreach (var (plan, boundScore, _) in fitting)
            Assert.True(boundScore <= PlanSearch.Score(req, plan, Pricer.Price(req.Model, req.Cluster, plan).StepTimeSeconds) * (1 + 1e-12));
    }

    [Fact]
    public void Search_over_blocks_of_several_kinds_returns_the_brute_force_optimum()
    {
        // A small MoE with a dense first block, windowed and full attention by turns and an MTP module: stages differ in
        // their blocks, so the search's memory filter and bounds must hold on every stage.
        string json = """
            {"num_hidden_layers": 8, "hidden_size": 1024, "num_attention_heads": 16, "num_key_value_heads": 4,
             "intermediate_size": 4096, "moe_intermediate_size": 512, "n_routed_experts": 16, "num_experts_per_tok": 2,
             "first_k_dense_replace": 1, "vocab_size": 32000, "max_position_embeddings": 4096, "num_nextn_predict_layers": 1,
             "sliding_window": 512, "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention",
             "sliding_attention", "full_attention", "sliding_attention", "full_attention"]}
            """;
        var model = ModelLoader.Parse(json, "mixed.json", "mixed");
        Assert.True(model.Kinds.Count >= 3, $"{model.Kinds.Count} kinds");
        // GB200 GPUs with little memory, so that memory decides between the plans.
        var cluster = ClusterLoader.Load("gb200-nvl72") with { Nodes = 2 };
        cluster = cluster with { Gpu = cluster.Gpu with { MemoryGib = 3 } };
        // Pipelines only: their stages hold different blocks.
        var req = new SearchRequest(model, cluster, 32, false, [4096], [Precision.Bf16], Top: 5, Filter: p => p.Pp > 1);
        var fitting = PlanSearch.Fitting(req);
        Assert.Contains(fitting, c => c.Plan.Pp > 1 && c.Plan.Ep > 1);
        var all = PlanSearch.Fitting(req with { Cluster = cluster with { Gpu = cluster.Gpu with { MemoryGib = 1000 } } });
        Assert.True(all.Count > fitting.Count, "memory should rule some plans out");
        var exact = BruteForce(req, fitting);
        var result = PlanSearch.Run(req);
        var found = result.Plans.Select(p => PlanSearch.Score(req, p.Plan, p.StepTimeSeconds)).ToList();
        Assert.Equal(exact.Count, found.Count);
        for (int i = 0; i < exact.Count; i++)
            Assert.Equal(exact[i], found[i], 12);
        foreach (var p in result.Plans)
            Assert.True(p.Fits);
        foreach (var (plan, boundScore, familyBound) in fitting)
        {
            var priced = Pricer.Price(req.Model, req.Cluster, plan);
            double score = PlanSearch.Score(req, plan, priced.StepTimeSeconds);
            Assert.True(boundScore <= score * (1 + 1e-12), $"{plan}: bound {boundScore} above exact {score}");
            Assert.True(familyBound <= score * (1 + 1e-12), $"{plan}: family bound {familyBound} above exact {score}");
        }
        // Plans the filter dropped do not fit when priced (one in five, spread over every shape).
        var kept = fitting.Select(c => c.Plan).ToHashSet();
        var dropped = all.Where(c => !kept.Contains(c.Plan)).ToList();
        Assert.True(dropped.Count > 100, $"{dropped.Count} dropped");
        for (int i = 0; i < dropped.Count; i += 5)
            Assert.False(Pricer.Price(req.Model, req.Cluster, dropped[i].Plan).Fits, $"{dropped[i].Plan} fits but the filter dropped it");
    }

    [Fact]
    public void The_table_keeps_one_plan_per_shape_unless_every_variant_is_asked_for()
    {
        var req = Small("llama2-7b", "dgx-a100-80g-1node", 32, 4096);
        var shapes = PlanSearch.Run(req).Plans;
        var variants = PlanSearch.Run(req with { AllVariants = true }).Plans;
        Assert.Equal(shapes.Count, shapes.Select(p => (p.Plan.Tp, p.Plan.Pp, p.Plan.Dp, p.Plan.Cp)).Distinct().Count());
        Assert.True(variants.Select(p => (p.Plan.Tp, p.Plan.Pp, p.Plan.Dp, p.Plan.Cp)).Distinct().Count() < variants.Count,
            "with every variant, some shape should appear more than once");
        Assert.Equal(variants[0].StepTimeSeconds, shapes[0].StepTimeSeconds, 12);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void The_bound_never_exceeds_the_exact_step_time(string model, string cluster, int gbs, int seq)
    {
        var req = Small(model, cluster, gbs, seq);
        int variants = 0;
        foreach (var (plan, boundScore, familyBound) in PlanSearch.Fitting(req))
        {
            double exact = PlanSearch.Score(req, plan, Pricer.Price(req.Model, req.Cluster, plan).StepTimeSeconds);
            Assert.True(boundScore <= exact * (1 + 1e-12), $"{plan}: bound {boundScore} above exact {exact}");
            Assert.True(familyBound <= exact * (1 + 1e-12), $"{plan}: the bound of a family it came from, {familyBound}, is above its exact {exact}");
            if (plan.RecomputeLayers is not null || plan.OptimizerOffload > 0)
                variants++;
        }
        Assert.True(variants > 0, "the brute force should include partial-recompute and offload variants");
    }

    [Fact]
    public void The_bound_is_exact_for_uniform_pipelines()
    {
        // 48 layers on 4 stages (12 each), embedding and head tiny next to a block: the bound is within 1%.
        var m = ModelLoader.Load("megatron-22b");
        var c = ClusterLoader.Load("dgx-a100-80g");
        var plan = new ParallelPlan(8, 4, 4, 1, 1, 1, 256, 2048, 1, Recompute.Full, true, Precision.Bf16);
        var (bound, _) = Pricer.Bound(m, c, plan);
        double exact = Pricer.Price(m, c, plan).StepTimeSeconds;
        Assert.InRange(bound / exact, 0.99, 1.0 + 1e-12);
    }

    [Fact]
    public void Peak_memory_of_the_bound_equals_the_largest_stage()
    {
        var m = ModelLoader.Load("llama3-70b");
        var c = ClusterLoader.Load("dgx-h100");
        foreach (int pp in new[] { 1, 2, 4, 8, 16 })
            foreach (int vpp in new[] { 1, 2 })
            {
                var plan = new ParallelPlan(8, pp, 128 / (8 * pp), 1, 1, 1, 256, 8192, vpp, Recompute.None, true, Precision.Bf16);
                if (PlanCheck.Problem(m, c, plan) is not null)
                    continue;
                var (_, peak) = Pricer.Bound(m, c, plan);
                Assert.Equal(Pricer.Price(m, c, plan).PeakMemoryGib, peak / Units.GiB, 9);
            }
    }

    [Fact]
    public void Allow_idle_finds_plans_on_fewer_gpus_when_the_count_factorises_badly()
    {
        // 7 nodes of 8: 56 GPUs; a 96-head model with gbs 64 has few shapes on all 56.
        var c = ClusterLoader.Load("dgx-a100-80g") with { Nodes = 7 };
        var req = new SearchRequest(ModelLoader.Load("gpt3-175b"), c, 64, false, [2048], [Precision.Bf16], AllowIdle: true, Top: 3);
        var result = PlanSearch.Run(req);
        Assert.NotEmpty(result.Plans);
        Assert.All(result.Plans, p => Assert.True(p.Plan.Gpus <= 56 && p.Plan.Gpus >= 28));
    }

    [Fact]
    public void Gbs_max_takes_the_largest_multiple_of_dp_times_mbs()
    {
        var req = new SearchRequest(ModelLoader.Load("llama2-7b"), ClusterLoader.Load("dgx-a100-80g-1node"), 100, true, [4096], [Precision.Bf16], Top: 5);
        var result = PlanSearch.Run(req);
        Assert.NotEmpty(result.Plans);
        foreach (var p in result.Plans)
        {
            int unit = p.Plan.Dp * p.Plan.Mbs;
            Assert.Equal(100 / unit * unit, p.Plan.Gbs);
        }
    }

    [Fact]
    public void Cost_objective_needs_a_price()
    {
        var req = Small("gpt2", "dgx-a100-80g-1node", 64, 1024) with { Objective = Objective.Cost };
        var e = Assert.Throws<InputException>(() => PlanSearch.Run(req));
        Assert.Contains("price_per_gpu_hour", e.Message);
    }

    [Fact]
    public void No_fit_is_explained_with_the_state_size_and_the_smallest_change()
    {
        var c = ClusterLoader.Load("dgx-a100-80g-1node");
        var req = new SearchRequest(ModelLoader.Load("gpt3-175b"), c, 64, false, [2048], [Precision.Bf16], Top: 3);
        var result = PlanSearch.Run(req);
        Assert.Empty(result.Plans);
        string why = Infeasibility.Explain(req, result);
        Assert.Contains("optimizer state", why);
        Assert.Contains("smallest change that fits", why);
        Assert.DoesNotContain("\n", why);
    }
}
