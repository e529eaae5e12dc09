using System.Text.Json.Nodes;
using Planner.Cli.Commands;
using Planner.CostModel.Plans;
using Planner.CostModel.Specs;
using Planner.Executor.Distributed;
using Xunit;

namespace Planner.Cli.Tests;

/// <summary>run's report: the measured parts of the step are those of the stage the prediction's breakdown describes.</summary>
public sealed class RunReportTests
{
    /// <summary>Two steps' lines of every rank, each rank's compute given by its pipeline stage.</summary>
    private static List<JsonNode> Lines(ParallelPlan plan, Func<int, double> computeOfStage)
    {
        var layout = new ProcessGroupLayout(plan);
        return Enumerable.Range(0, plan.Gpus).SelectMany(rank => Enumerable.Range(0, 2).Select(step => (JsonNode)new JsonObject
        {
            ["rank"] = rank,
            ["step"] = step,
            ["compute_s"] = computeOfStage(layout.Coordinates(rank).Pp) + 0.001 * step,
        })).ToList();
    }

    [Theory]
    [InlineData(2, 2, 1)]
    [InlineData(4, 2, 3)]
    [InlineData(2, 1, 0)]
    public void The_busiest_stage_is_the_one_whose_ranks_compute_the_most(int pp, int tp, int heavy)
    {
        // TP x PP x DP=2: each stage's tp * 2 ranks; the stage `heavy` computes twice as long as the others.
        var plan = new ParallelPlan(tp, pp, 2, 1, 0, 1, 16, 128, 1, Recompute.None, false, Precision.Fp32);
        Assert.Equal(heavy, RunCommand.BusiestStage(plan, Lines(plan, s => s == heavy ? 0.2 : 0.1)));
        // Equal stages: the first; no lines: stage 0.
        Assert.Equal(0, RunCommand.BusiestStage(plan, Lines(plan, _ => 0.1)));
        Assert.Equal(0, RunCommand.BusiestStage(plan, []));
    }
}
