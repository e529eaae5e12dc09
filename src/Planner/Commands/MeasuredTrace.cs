using System.Text.Json.Nodes;
using Planner.CostModel.Plans;
using Planner.CostModel.Trace;

namespace Planner.Cli.Commands;

/// <summary>
/// <c>run --trace/--timeline</c> (docs/timelines.md): the events every rank recorded in the traced step (the first timed
/// one, after the warm-up), gathered from the ranks' report lines, as the same Chrome trace and picture as predict's: one
/// process per rank, named by its stage and place, the passes named as predict names them.
/// </summary>
public static class MeasuredTrace
{
    /// <summary>The step a run traces: the first after the warm-up of the steps it trains.</summary>
    public static int Step(int firstStep, int steps, int warmup) => firstStep + Math.Min(warmup, steps - 1);

    /// <summary>The events of <paramref name="step"/> in the ranks' lines (their <c>trace</c> arrays), each rank a process.</summary>
    public static List<TraceEvent> Of(IEnumerable<JsonObject> lines, int step)
    {
        var events = new List<TraceEvent>();
        foreach (var line in lines.Where(l => (int)l["step"]! == step && l["trace"] is JsonArray))
        {
            int rank = (int)line["rank"]!;
            foreach (var e in line["trace"]!.AsArray())
                events.Add(new TraceEvent(rank, Enum.Parse<TraceLane>((string)e!["lane"]!), (string)e["name"]!, (double)e["start_s"]!, (double)e["dur_s"]!));
        }
        return events;
    }

    /// <summary>Writes what <paramref name="paths"/> asks for; a rank's row is named by its stage in <paramref name="plan"/>.</summary>
    public static void Write((string? Trace, string? Timeline) paths, IReadOnlyList<TraceEvent> events, IEnumerable<JsonObject> lines, ParallelPlan plan,
        string title, IReadOnlyDictionary<string, object> metadata)
    {
        var stageOf = lines.GroupBy(l => (int)l["rank"]!).ToDictionary(g => g.Key, g => (int)g.First()["stage"]!);
        string Row(int rank) => $"rank {rank} (stage {stageOf.GetValueOrDefault(rank)} of {plan.Pp})";
        TraceFlags.WriteFiles(paths, events, Row, rank => $"rank {rank}", title, metadata);
    }
}
