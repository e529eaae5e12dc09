using System.Text.Json.Nodes;
using Planner.Cli.Commands;
using Planner.CostModel.Plans;
using Planner.CostModel.Specs;
using Xunit;

namespace Planner.Cli.Tests;

/// <summary>The measured <c>moe_imbalance</c> of a run from its ranks' per-forward loads.</summary>
public sealed class RoutingReportTests
{
    private static JsonObject Line(int rank, int step, params double[] loads) => new()
    {
        ["rank"] = rank,
        ["step"] = step,
        ["stage"] = 0,
        ["moe_loads"] = loads.Length == 0 ? null : new JsonArray(loads.Select(v => (JsonNode)v).ToArray()),
    };

    private static ParallelPlan Plan(int ep) => new(1, 1, 2, 1, 0, 1, 8, 64, 1, Recompute.None, false, Precision.Fp32, Ep: ep);

    [Fact]
    public void The_ranks_of_an_expert_parallel_group_count_as_one_router_per_forward()
    {
        // EP 2: ranks 0 and 1 route together; each forward's busiest expert is the busier rank's.
        var lines = new[] { Line(0, 0, 1.5, 1.0), Line(1, 0, 1.1, 1.4), Line(0, 1, 1.2, 1.2), Line(1, 1, 1.0, 1.6) };
        Assert.Equal((1.5 + 1.4 + 1.2 + 1.6) / 4, RoutingReport.MoeImbalance(Plan(2), lines)!.Value, 12);
        // EP 1: every rank routes alone; its own loads are averaged with the others'.
        Assert.Equal((1.5 + 1.0 + 1.1 + 1.4 + 1.2 + 1.2 + 1.0 + 1.6) / 8, RoutingReport.MoeImbalance(Plan(1), lines)!.Value, 12);
    }

    [Fact]
    public void A_dense_run_has_none() => Assert.Null(RoutingReport.MoeImbalance(Plan(1), [Line(0, 0), Line(1, 0)]));
}
