using System.Text.Json;
using System.Text.Json.Nodes;

namespace Planner.CostModel.Trace;

/// <summary>
/// Trace events as the Chrome trace-event format that Perfetto (ui.perfetto.dev) and chrome://tracing open: one process
/// per pipeline stage, one thread per <see cref="TraceLane"/>, complete ("X") events in microseconds.
/// </summary>
public static class ChromeTrace
{
    /// <summary>The thread name of a lane.</summary>
    public static string LaneName(TraceLane lane) => lane switch
    {
        TraceLane.Compute => "compute (forward, backward)",
        TraceLane.ParallelComm => "tensor/context/expert-parallel communication",
        TraceLane.PipelineTransfer => "pipeline transfers",
        TraceLane.DataParallelComm => "data-parallel communication",
        _ => "optimizer",
    };

    /// <summary>The trace document; <paramref name="processName"/> names a stage's process ("stage 0 (ranks ...)").</summary>
    public static JsonObject Of(IReadOnlyList<TraceEvent> events, Func<int, string> processName, IReadOnlyDictionary<string, object>? metadata = null)
    {
        var list = new JsonArray();
        foreach (int stage in events.Select(e => e.Stage).Distinct().Order())
        {
            list.Add(Meta("process_name", stage, 0, processName(stage)));
            list.Add(new JsonObject { ["name"] = "process_sort_index", ["ph"] = "M", ["pid"] = stage, ["args"] = new JsonObject { ["sort_index"] = stage } });
            foreach (var lane in events.Where(e => e.Stage == stage).Select(e => e.Lane).Distinct().Order())
                list.Add(Meta("thread_name", stage, (int)lane, LaneName(lane)));
        }
        foreach (var e in events.OrderBy(e => e.Stage).ThenBy(e => e.Start))
        {
            var o = new JsonObject
            {
                ["name"] = e.Name,
                ["cat"] = e.Lane.ToString(),
                ["ph"] = "X",
                ["ts"] = e.Start * 1e6,
                ["dur"] = e.Duration * 1e6,
                ["pid"] = e.Stage,
                ["tid"] = (int)e.Lane,
            };
            if (e.Args is { Count: > 0 } args)
                o["args"] = JsonSerializer.SerializeToNode(args);
            list.Add(o);
        }
        var doc = new JsonObject { ["traceEvents"] = list, ["displayTimeUnit"] = "ms" };
        if (metadata is not null)
            doc["metadata"] = JsonSerializer.SerializeToNode(metadata);
        return doc;
    }

    private static JsonObject Meta(string what, int pid, int tid, string name) =>
        new() { ["name"] = what, ["ph"] = "M", ["pid"] = pid, ["tid"] = tid, ["args"] = new JsonObject { ["name"] = name } };
}
