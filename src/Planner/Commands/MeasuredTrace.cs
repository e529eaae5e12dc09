using System.Text.Json.Nodes;
using Planner.CostModel.Plans;
using Planner.CostModel.Trace;

namespace Planner.Cli.Commands;

/// <summary>
/// <c>run --trace/--timeline</c> (docs/timelines.md): the events every rank recorded in its timed steps (after the
/// warm-up), gathered from the ranks' report lines; the median step's as the same Chrome trace and picture as predict's:
/// one process per rank, named by its stage, the passes named as predict names them.
/// </summary>
public static class MeasuredTrace
{
    /// <summary>The first step a run traces: the first after the warm-up of the steps it trains (every later one too).</summary>
    public static int FirstTimed(int firstStep, int steps, int warmup) => firstStep + Math.Min(warmup, steps - 1);

    /// <summary>The traced step to show: of the steps from <paramref name="from"/> on, the one whose time (the slowest
    /// rank's, as the report counts it) is the median's (the earlier of two); the trace shows a typical step.</summary>
    public static int MedianStep(IEnumerable<JsonObject> lines, int from)
    {
        var times = lines.Where(l => (int)l["step"]! >= from).GroupBy(l => (int)l["step"]!)
            .Select(g => (Step: g.Key, Seconds: g.Max(l => (double)l["seconds"]!))).OrderBy(x => x.Seconds).ThenBy(x => x.Step).ToList();
        return times.Count == 0 ? from : times[(times.Count - 1) / 2].Step;
    }

    /// <summary>The events of <paramref name="step"/> in the ranks' lines (their <c>trace</c> arrays), each rank a process.
    /// Ranks of one machine share its monotonic clock: their events are placed from the earliest rank's step start. Ranks
    /// of several machines cannot be lined up that way: each rank's events then start at its own step start.</summary>
    public static List<TraceEvent> Of(IEnumerable<JsonObject> lines, int step)
    {
        var traced = lines.Where(l => (int)l["step"]! == step && l["trace"] is JsonArray).ToList();
        bool oneMachine = traced.Select(l => (string?)l["trace_host"]).Distinct().Count() == 1;
        long origin = traced.Count == 0 ? 0 : traced.Min(l => (long?)l["trace_origin_ns"] ?? 0);
        var events = new List<TraceEvent>();
        foreach (var line in traced)
        {
            int rank = (int)line["rank"]!;
            double shift = oneMachine ? (((long?)line["trace_origin_ns"] ?? 0) - origin) / 1e9 : 0;
            foreach (var e in line["trace"]!.AsArray())
                events.Add(new TraceEvent(rank, Enum.Parse<TraceLane>((string)e!["lane"]!), (string)e["name"]!, shift + (double)e["start_s"]!, (double)e["dur_s"]!));
        }
        return events;
    }

    /// <summary>Writes what <paramref name="paths"/> asks for: the median step of those traced from
    /// <paramref name="from"/>; a rank's row is named by its stage in <paramref name="plan"/>.</summary>
    public static void Write((string? Trace, string? Timeline) paths, IReadOnlyList<JsonObject> lines, int from, ParallelPlan plan, string model,
        IReadOnlyDictionary<string, object> metadata)
    {
        int step = MedianStep(lines, from);
        var events = Of(lines, step);
        var stageOf = lines.GroupBy(l => (int)l["rank"]!).ToDictionary(g => g.Key, g => (int)g.First()["stage"]!);
        string Row(int rank) => $"rank {rank} (stage {stageOf.GetValueOrDefault(rank)} of {plan.Pp})";
        var meta = new Dictionary<string, object>(metadata) { ["step"] = step };
        TraceFlags.WriteFiles(paths, events, Row, rank => $"rank {rank}", $"{model}: {Rendering.Tables.Describe(plan)}, measured step {step} (the median of the timed steps)", meta);
    }
}
