using System.Text.Json.Nodes;
using Planner.CostModel.Comm;
using Planner.CostModel.Plans;
using Planner.Executor.Distributed;

namespace Planner.Cli.Commands;

/// <summary>
/// How unevenly a mixture-of-experts run's router loaded its experts, in the terms of the plan key <c>moe_imbalance</c>
/// (the busiest expert's rows over the mean): what the ranks' lines say under <c>moe_loads</c>.
/// </summary>
public static class RoutingReport
{
    /// <summary>
    /// The busiest expert's load over the mean, per MoE block forward the busiest of the expert-parallel group (its
    /// ranks route together and wait for each other at the all-to-all), averaged over the forwards, the groups and the
    /// steps of <paramref name="timedLines"/>; null for a dense model.
    /// </summary>
    public static double? MoeImbalance(ParallelPlan plan, IEnumerable<JsonObject> timedLines)
    {
        var layout = new ProcessGroupLayout(plan);
        var busiest = new List<double>();
        var groups = timedLines.Where(l => l["moe_loads"] is JsonArray)
            .GroupBy(l => ((int)l["step"]!, layout.GroupOf(Axis.Ep, (int)l["rank"]!).Min()));
        foreach (var group in groups)
        {
            var loads = group.Select(l => l["moe_loads"]!.AsArray().Select(x => (double)x!).ToArray()).ToList();
            int forwards = loads.Min(a => a.Length);
            for (int i = 0; i < forwards; i++)
                busiest.Add(loads.Max(a => a[i]));
        }
        return busiest.Count == 0 ? null : busiest.Average();
    }
}
