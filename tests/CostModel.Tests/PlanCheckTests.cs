using Xunit;
using Planner.CostModel.Plans;
using Planner.CostModel.Specs;

namespace Planner.CostModel.Tests;

/// <summary>The plan check reports problems as data: every one, keyed by the plan's field, with no CLI syntax.</summary>
public class PlanCheckTests
{
    private static readonly ModelSpec Llama = ModelLoader.Load("llama3-8b"); // 32 heads, 8 KV heads, ffn 14336, 32 layers
    private static readonly ClusterSpec H100 = ClusterLoader.Load("dgx-h100"); // 128 GPUs

    /// <summary>A valid plan: tp 1, dp 32, mbs 1, gbs 128, seq 8192.</summary>
    private static readonly ParallelPlan Valid = new(1, 1, 32, 1, 1, 1, 128, 8192, 1, Recompute.None, false, Precision.Bf16);

    [Fact]
    public void A_valid_plan_has_no_problem()
    {
        Assert.Empty(PlanCheck.Problems(Llama, H100, Valid));
        Assert.Null(PlanCheck.Problem(Llama, H100, Valid));
    }

    [Fact]
    public void Every_problem_of_a_plan_is_reported_with_its_field_and_value()
    {
        var plan = Valid with { Tp = 3, Zero = 5, Gbs = 100, RecomputeLayers = 2, Precision = Precision.Mxfp8 };

        var problems = PlanCheck.Problems(Llama, H100, plan);

        Assert.Equal(
            [("zero", "5"), ("tp", "3"), ("tp", "3"), ("tp", "3"), ("gbs", "100"), ("recompute_layers", "2"), ("precision", "mxfp8")],
            problems.Select(p => (p.Field, p.Value)));
        Assert.Equal("3 does not divide the 32 attention heads of 'llama3-8b'", problems[1].Reason);
        Assert.Contains("8 key/value heads", problems[2].Reason);
        Assert.Contains("ffn size 14336", problems[3].Reason);
        Assert.Equal("100 is not divisible by dp·mbs = 32·1", problems[4].Reason);
        Assert.All(problems, p => Assert.DoesNotContain("--", p.Reason));
        // The first problem alone, as the search asks for it.
        Assert.Equal(problems[0], PlanCheck.Problem(Llama, H100, plan));
    }

    [Fact]
    public void Checks_that_divide_by_a_count_below_one_are_skipped()
    {
        var plan = Valid with { Tp = 0, Mbs = 0, Zero = -1, OptimizerOffload = 1.5 };

        var problems = PlanCheck.Problems(Llama, H100, plan);

        // No divisibility by tp or dp·mbs is tried; the checks that need no count still run.
        Assert.Equal([("tp", "0"), ("mbs", "0"), ("zero", "-1"), ("optimizer_offload", "1.5")], problems.Select(p => (p.Field, p.Value)));
        Assert.Equal("0 must be at least 1", problems[0].Reason);
        Assert.Equal("1.5 is not a fraction from 0 to 1", problems[3].Reason);
    }

    [Fact]
    public void A_product_of_fields_names_each_key()
    {
        var plan = Valid with { Tp = 8, Pp = 4, Dp = 8 }; // 256 GPUs on 128

        var problem = Assert.Single(PlanCheck.Problems(Llama, H100, plan));

        Assert.Equal(("tp·pp·dp·cp", "256"), (problem.Field, problem.Value));
        Assert.Equal(["tp", "pp", "dp", "cp"], problem.Keys);
        Assert.Equal("tp·pp·dp·cp: 256 GPUs, more than the 128 of cluster 'dgx-h100'", problem.ToString());
        Assert.Equal("keys 'tp'·'pp'·'dp'·'cp': 256 GPUs, more than the 128 of cluster 'dgx-h100'", problem.InPlanFile());
    }

    [Fact]
    public void Tp_and_expert_problems_are_listed_alone_too()
    {
        Assert.Equal(3, PlanCheck.TpProblems(Llama, 3).Count);
        Assert.Equal(PlanCheck.TpProblems(Llama, 3)[0], PlanCheck.TpProblem(Llama, 3));
        Assert.Empty(PlanCheck.TpProblems(Llama, 8));

        var expert = PlanCheck.ExpertProblems(Llama, Valid with { Ep = 2, MoeCapacity = 1.25 });
        Assert.Equal([("ep", "2"), ("moe_capacity", "1.25")], expert.Select(p => (p.Field, p.Value)));
        Assert.All(expert, p => Assert.Equal("applies to mixture-of-experts models; 'llama3-8b' is dense", p.Reason));
    }
}
