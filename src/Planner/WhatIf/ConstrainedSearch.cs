using Planner.Cli.Search;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;

namespace Planner.Cli.WhatIf;

/// <summary>
/// The best plan among those that match a <see cref="PlanConstraint"/>: the exact bounded search of
/// <see cref="PlanSearch.Run"/>, run over the fitting candidates of <see cref="PlanSearch.Fitting"/> that match.
/// Candidates are priced in order of their lower bound until the next bound cannot beat the best exact price, and
/// ties go to the plan that needs less memory, as in <see cref="PlanSearch.Run"/>. The candidates are the search's
/// even stage splits: the stage-partition MILP that <see cref="PlanSearch.Run"/> adds on top (uneven splits) is
/// private to it, so a point that pins plan values never gets an uneven split. Homogeneous clusters only.
/// </summary>
public static class ConstrainedSearch
{
    /// <summary>The best matching plan, or null when none fits; also how many candidates matched.</summary>
    public static (Prediction? Best, int Matching) Best(SearchRequest req, PlanConstraint constraint)
    {
        var options = req.Options ?? PricingOptions.Default;
        // The search leaves out selective recompute when it equals no recompute (flash attention: the same time and
        // memory); a point that pins it takes the no-recompute candidates and prices them as selective.
        bool selectiveFromNone = constraint.Recompute == Recompute.Selective && !req.RecomputePolicies.Contains(Recompute.Selective);
        var candidates = new List<(ParallelPlan Plan, double Bound)>();
        foreach (var (plan, bound) in PlanSearch.Fitting(req))
        {
            var p = selectiveFromNone && plan.Recompute == Recompute.None ? plan with { Recompute = Recompute.Selective } : plan;
            if (constraint.Matches(p))
                candidates.Add((p, bound));
        }
        candidates.Sort((a, b) => a.Bound.CompareTo(b.Bound));
        Prediction? best = null;
        double bestScore = double.PositiveInfinity;
        foreach (var (plan, bound) in candidates)
        {
            if (best is not null && bound > bestScore)
                break;
            var p = Pricer.Price(req.Model, req.Cluster, plan, options);
            double score = PlanSearch.Score(req, plan, p.StepTimeSeconds);
            if (best is null || score < bestScore || (score == bestScore && p.PeakMemoryGib < best.PeakMemoryGib))
                (best, bestScore) = (p, score);
        }
        return (best, candidates.Count);
    }
}
