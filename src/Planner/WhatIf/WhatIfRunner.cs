using System.Runtime.ExceptionServices;
using Planner.Cli.Milp;
using Planner.Cli.Rendering;
using Planner.Cli.Search;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;
using Planner.CostModel.Training;

namespace Planner.Cli.WhatIf;

/// <summary>The outcome of one grid point.</summary>
/// <param name="Point">The swept values.</param>
/// <param name="Scenario">The model, cluster, batch and pinned plan values of the point.</param>
/// <param name="Plan">The plan priced (the search's best, or the fixed plan even when it is invalid); null when the search found none.</param>
/// <param name="Prediction">The price of <paramref name="Plan"/>; null when there is no plan or the fixed plan is invalid.</param>
/// <param name="Note">Why there is no plan, why it is invalid, that it does not fit, or why its whole run cannot be
/// priced; null otherwise.</param>
/// <param name="Run">The plan's whole run over the token budget (<see cref="WhatIfRunner.WithRuns"/>); null without a
/// budget, a prediction, or when the run cannot be priced (the note says why).</param>
public sealed record WhatIfRow(GridPoint Point, Scenario Scenario, ParallelPlan? Plan, Prediction? Prediction, string? Note, TrainingRun? Run = null)
{
    /// <summary>True when the point has a plan that fits.</summary>
    public bool Fits => Prediction is { Fits: true };

    /// <summary>GPUs of the plan, or of the cluster when there is none.</summary>
    public int Gpus => Plan?.Gpus ?? Scenario.Cluster.TotalGpus;
}

/// <summary>Evaluates what-if grids: each point re-planned by the search (within its pinned plan values) or, with a
/// fixed plan, priced directly.</summary>
public static class WhatIfRunner
{
    /// <summary>
    /// One <see cref="PlanSearch.Run"/> at a time when CBC is installed: the search's stage-partition MILP calls
    /// CBC, whose C interface (CBC 2.10, CbcMain1) keeps global state and breaks when two solves run at once (it
    /// prints its interactive prompt and may read stdin). Each search still uses every core for its candidates, and
    /// points that price a fixed plan or pin plan values (no MILP) run in parallel beside it.
    /// </summary>
    private static readonly object SearchGate = new();

    /// <summary>Evaluates every point on all cores; the rows keep the grid's order. <paramref name="progress"/> is
    /// called once per finished point (from worker threads).</summary>
    public static IReadOnlyList<WhatIfRow> Run(Scenario baseline, IReadOnlyList<GridPoint> grid, Action? progress = null)
    {
        var rows = new WhatIfRow[grid.Count];
        try
        {
            Parallel.For(0, grid.Count, new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount }, i =>
            {
                rows[i] = Evaluate(grid[i], baseline.At(grid[i]));
                progress?.Invoke();
            });
        }
        catch (AggregateException e) when (e.InnerExceptions.Count > 0)
        {
            ExceptionDispatchInfo.Capture(e.InnerExceptions[0]).Throw();
        }
        return rows;
    }

    /// <summary>The rows with each one's whole run over <paramref name="tokens"/> (no schedule: whatif prices none); a
    /// run the cost model cannot price (failures faster than the run recovers) is the row's note, never an error.</summary>
    public static IReadOnlyList<WhatIfRow> WithRuns(IReadOnlyList<WhatIfRow> rows, double? tokens)
    {
        if (tokens is not double t)
            return rows;
        return rows.Select(r =>
        {
            if (r.Prediction is not { } p)
                return r;
            try
            {
                return r with { Run = TrainingEstimate.Unscheduled(p, r.Scenario.Cluster, t) };
            }
            catch (InputException e)
            {
                string why = "no whole run: " + Planner.Cli.Commands.ProblemFlags.Message(e);
                return r with { Note = r.Note is null ? why : $"{r.Note}; {why}" };
            }
        }).ToList();
    }

    /// <summary>Evaluates one point; an infeasible point is a row with a note, never an error.</summary>
    public static WhatIfRow Evaluate(GridPoint point, Scenario s)
    {
        try
        {
            return s.Plan.IsFixed ? PriceFixed(point, s) : Replan(point, s);
        }
        catch (InputException e)
        {
            // Whatever the cost model rejects for this point's inputs (a precision the GPU lacks, ...) is the point's note.
            return new WhatIfRow(point, s, null, null, Planner.Cli.Commands.ProblemFlags.Message(e));
        }
    }

    private static WhatIfRow PriceFixed(GridPoint point, Scenario s)
    {
        var c = s.Cluster;
        var k = s.Plan;
        int tp = k.Tp!.Value, pp = k.Pp!.Value, cp = k.Cp ?? 1;
        long modelParallel = (long)tp * pp * cp;
        int dp;
        if (k.Dp is int d)
            dp = d;
        else if (modelParallel <= c.TotalGpus && c.TotalGpus % modelParallel == 0)
            dp = (int)(c.TotalGpus / modelParallel);
        else
        {
            string why = modelParallel > c.TotalGpus
                ? $"tp·pp·cp = {modelParallel} GPUs, more than the {c.TotalGpus} of the cluster"
                : $"tp·pp·cp = {modelParallel} does not divide the {c.TotalGpus} GPUs of the cluster; give --dp";
            return new WhatIfRow(point, s, null, null, why);
        }
        var plan = new ParallelPlan(tp, pp, dp, cp,
            Zero: k.Zero ?? 0,
            Mbs: k.Mbs!.Value,
            Gbs: s.Gbs,
            Seq: s.SeqOrDefault,
            Vpp: k.Vpp ?? 1,
            Recompute: k.Recompute ?? Recompute.None,
            SequenceParallel: k.SequenceParallel ?? false,
            Precision: k.Precision ?? PlanConstraint.DefaultPrecision(c));
        if (PlanCheck.Problem(s.Model, c, plan) is { } problem)
            return new WhatIfRow(point, s, plan, null, Commands.ProblemFlags.Describe(problem));
        var p = Pricer.Price(s.Model, c, plan, s.Software);
        // A fixed plan is priced as given; one that fits but eats into the headroom says so.
        string? note = !p.Fits ? $"does not fit: needs {p.PeakMemoryGib:F1} GiB per GPU of {p.GpuMemoryGib:F0}"
            : !Tables.WithinHeadroom(p, s.MemoryHeadroom) ? $"fits, but above the {s.MemoryHeadroom:P0} memory headroom ({p.GpuMemoryGib * (1 - s.MemoryHeadroom):F1} GiB usable)"
            : null;
        return new WhatIfRow(point, s, plan, p, note);
    }

    /// <summary>Why the search generated no candidate at all.</summary>
    private static string NoShape(Scenario s)
    {
        var m = s.Model;
        if (m.Positions == PositionKind.Learned && s.SeqOrDefault > m.MaxSeq)
            return $"seq {s.SeqOrDefault} is beyond the {m.MaxSeq} learned positions of '{m.Name}'";
        return $"no parallel shape divides the {s.Cluster.TotalGpus} GPUs with gbs {s.Gbs}";
    }

    private static WhatIfRow Replan(GridPoint point, Scenario s)
    {
        var c = s.Cluster;
        var precision = s.Plan.Precision ?? PlanConstraint.DefaultPrecision(c);
        if (c.GroupList.FirstOrDefault(g => !g.Gpu.Supports(precision)) is { } lacking)
            return new WhatIfRow(point, s, null, null, $"GPU '{lacking.Gpu.Name}' has no {precision.Name()} rate");
        // TP stays inside an NVLink domain unless the point pins a larger degree.
        int? tpMax = s.Plan.Tp is int tp && tp > c.NvlinkDomain ? tp : null;
        // The search sees each GPU's memory less the headroom; the plan it finds is priced on the whole GPU.
        var usable = c.WithMemoryHeadroom(s.MemoryHeadroom);
        var req = new SearchRequest(s.Model, usable, s.Gbs, GbsIsMaximum: false, [s.SeqOrDefault], [precision], TpMax: tpMax, Top: 1, Options: s.Software);
        Prediction OnWholeGpus(Prediction p) => s.MemoryHeadroom > 0 ? Pricer.Price(s.Model, c, p.Plan, s.Software) : p;
        if (!s.Plan.FiltersPlans)
        {
            SearchResult result;
            if (CbcSolver.IsAvailable)
            {
                lock (SearchGate)
                    result = PlanSearch.Run(req);
            }
            else
                result = PlanSearch.Run(req);
            if (result.Plans.Count > 0)
                return new WhatIfRow(point, s, result.Plans[0].Plan, OnWholeGpus(result.Plans[0]), null);
            string note = result.Enumerated == 0
                ? NoShape(s)
                : $"no plan of {result.Enumerated:N0} fits in {usable.GroupList.Min(g => g.Gpu.MemoryGib):F1} GiB per GPU{Headroom(s)}"
                  + (result.Smallest is { } least ? $"; the leanest, {Tables.Describe(least.Plan)}, needs {least.PeakBytes / Units.GiB:F1} GiB" : "");
            return new WhatIfRow(point, s, null, null, note);
        }
        if (c.IsHeterogeneous)
            return new WhatIfRow(point, s, null, null,
                $"pinning {s.Plan.Describe()} needs a cluster of one GPU kind (the search of '{c.Name}' assigns stages to its GPU groups)");
        var (best, _) = ConstrainedSearch.Best(req, s.Plan);
        if (best is not null)
            return new WhatIfRow(point, s, best.Plan, OnWholeGpus(best), null);
        return new WhatIfRow(point, s, null, null,
            $"no valid plan with {s.Plan.Describe()} fits in {usable.Gpu.MemoryGib:F1} GiB per GPU{Headroom(s)}");
    }

    private static string Headroom(Scenario s) => s.MemoryHeadroom > 0 ? $" (after the {s.MemoryHeadroom:P0} memory headroom)" : "";
}
