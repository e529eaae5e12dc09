using Planner.Cli.Search;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;
using Planner.CostModel.Training;

namespace Planner.Cli.Commands;

/// <summary>
/// <c>plan</c>'s whole-run figures: each plan's <c>training</c> run, and the run-level objectives (time, energy, carbon)
/// that re-rank the search's fastest plans by their run's days, MWh or tonnes (docs/run-level.md).
/// </summary>
public static class PlanTraining
{
    /// <summary>The objectives <c>--objective</c> accepts.</summary>
    public static readonly string[] Objectives = ["throughput", "time", "cost", "energy", "carbon"];

    /// <summary>True for the objectives ranked by a whole run rather than by the search.</summary>
    public static bool RanksRuns(string objective) => objective is "time" or "energy" or "carbon";

    /// <summary>True when the search must return more plans than shown: a run-level objective re-ranks them, or a
    /// ramp-up drops those whose mbs·dp does not divide its batches (Megatron asserts it).</summary>
    public static bool Widens(string objective, TrainingRequest? request) => RanksRuns(objective) || request?.Rampup is not null || request?.Schedule is not null;

    /// <summary>Plans the search returns when a run-level objective re-ranks them: this many times <c>--top</c> (at least 30).</summary>
    public const int Widening = 3;

    /// <summary>How many plans to ask the search for.</summary>
    public static int SearchTop(string objective, TrainingRequest? request, int top) =>
        Widens(objective, request) ? Math.Min(1000, Math.Max(30, Widening * top)) : top;

    /// <summary>The search's ranking for an objective (the run-level ones search by throughput, then re-rank).</summary>
    public static Objective SearchObjective(string objective) => objective == "cost" ? Objective.Cost : Objective.Throughput;

    /// <summary>Refuses a run-level objective without the inputs it needs.</summary>
    public static void Check(string objective, TrainingRequest? request)
    {
        if (RanksRuns(objective) && request is null)
            throw new InputException($"--objective {objective}: ranks whole runs; give --tokens");
    }

    /// <summary>Each plan's run, the plans re-ranked by a run-level objective and cut to <paramref name="top"/>.</summary>
    public static (List<Prediction> Plans, List<TrainingRun?> Runs) Rank(IReadOnlyList<Prediction> plans, string objective, TrainingRequest? request,
        ClusterSpec cluster, Func<ParallelPlan, Prediction> price, int top)
    {
        if (request is null)
            return (plans.Take(top).ToList(), plans.Take(top).Select(_ => (TrainingRun?)null).ToList());
        var runnable = request.Rampup is not null || request.Schedule is not null ? plans.Where(p => RampRuns(p.Plan, request)).ToList() : plans.ToList();
        if (runnable.Count == 0)
            throw new InputException(request.Schedule is not null
                ? $"--batch-schedule: none of the {plans.Count} fastest plans has an mbs·dp dividing every batch of the schedule"
                : $"--batch-rampup: none of the {plans.Count} fastest plans has an mbs·dp dividing every batch of the ramp (Megatron asserts it)");
        var runs = runnable.Select(p => (Plan: p, Run: TrainingEstimate.Estimate(p, cluster, request, price))).ToList();
        // The search ranked by a step's cost; a whole run's cost also pays its failures and checkpoints, which grow
        // with the nodes: re-ranked by it where the cluster has a price.
        if (RanksRuns(objective) || (objective == "cost" && runs.All(x => x.Run.Cost is not null)))
            runs = runs.OrderBy(x => Figure(x.Run, objective)).ToList();
        var kept = runs.Take(top).ToList();
        return (kept.Select(x => x.Plan).ToList(), kept.Select(x => (TrainingRun?)x.Run).ToList());
    }

    private static bool RampRuns(ParallelPlan p, TrainingRequest request) =>
        RunSchedule.Shapes(p, request with { Warmup = null }).All(x => x.Gbs % (p.Mbs * p.Dp) == 0);

    private static double Figure(TrainingRun run, string objective) => objective switch
    {
        "time" => run.WallSeconds,
        "cost" => run.Cost!.Value,
        "energy" => run.EnergyMwh ?? throw new InputException($"--objective energy: {run.Omitted.First(o => o.StartsWith("energy"))}"),
        "carbon" => run.Co2Tonnes ?? throw new InputException($"--objective carbon: {run.Omitted.First(o => o.StartsWith("co2"))}"),
        _ => throw new InvalidOperationException($"objective '{objective}' ranks no run"),
    };
}
