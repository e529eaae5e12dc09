using Planner.Cli.Search;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;

namespace Planner.Cli.WhatIf;

/// <summary>
/// The best plan among those that match a <see cref="PlanConstraint"/>: <see cref="PlanSearch.Run"/> with the
/// constraint as its filter, so pinned points get the same bounded search, stage MILP and tie-break as <c>plan</c>.
/// </summary>
public static class ConstrainedSearch
{
    /// <summary>The best matching plan, or null when none fits; also how many candidates matched.</summary>
    public static (Prediction? Best, long Matching) Best(SearchRequest req, PlanConstraint constraint)
    {
        var options = req.Options ?? PricingOptions.Default;
        // The search leaves out selective recompute when it equals no recompute (flash attention: the same time and
        // memory); a point that pins it takes the no-recompute candidates and prices them as selective.
        bool selectiveFromNone = constraint.Recompute == Recompute.Selective && !req.RecomputePolicies.Contains(Recompute.Selective);
        ParallelPlan Relabel(ParallelPlan plan) =>
            selectiveFromNone && plan.Recompute == Recompute.None ? plan with { Recompute = Recompute.Selective, Stages = null } : plan;
        var result = PlanSearch.Run(req with { Top = 1, Filter = plan => constraint.Matches(Relabel(plan)) });
        if (result.Plans.Count == 0)
            return (null, result.Enumerated);
        var best = result.Plans[0];
        var relabelled = Relabel(best.Plan);
        return (relabelled == best.Plan ? best : Pricer.Price(req.Model, req.Cluster, relabelled, options), result.Enumerated);
    }
}
