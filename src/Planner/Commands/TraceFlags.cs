using System.CommandLine;
using System.Text.Json;
using Planner.Cli.Rendering;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;
using Planner.CostModel.Trace;

namespace Planner.Cli.Commands;

/// <summary><c>--trace FILE</c> and <c>--timeline FILE.png</c> on predict and plan: the predicted step as a Chrome trace
/// and as a picture (docs/timelines.md).</summary>
public sealed class TraceFlags
{
    /// <summary>--trace</summary>
    public Option<string?> Trace { get; } = new("--trace")
    { Description = "Write the predicted step as a Chrome trace-event JSON file (open it in ui.perfetto.dev or chrome://tracing)" };

    /// <summary>--timeline</summary>
    public Option<string?> Timeline { get; } = new("--timeline")
    { Description = "Draw the predicted step as a PNG timeline: a band per pipeline stage, colours per kind of work, bubbles blank" };

    /// <summary>--force-trace: run's own overwrite flag (its --force replaces another run's checkpoints).</summary>
    public Option<bool> ForceTrace { get; } = new("--force-trace") { Description = "Overwrite the --trace and --timeline files if they exist" };

    /// <summary>Adds the flags to a command (with <paramref name="ownForce"/>, --force-trace too: run's --force is its checkpoints').</summary>
    public void AddTo(Command c, bool ownForce = false)
    {
        c.Options.Add(Trace);
        c.Options.Add(Timeline);
        if (ownForce)
            c.Options.Add(ForceTrace);
    }

    /// <summary>The trace and timeline paths given, refused up front when one exists (unless <paramref name="force"/>)
    /// or its directory does not.</summary>
    public (string? Trace, string? Timeline) Read(ParseResult r, bool force)
    {
        string? trace = r.GetValue(Trace), timeline = r.GetValue(Timeline);
        if (trace is not null)
            WhatIfCommand.CheckOutput(trace, "--trace", force);
        if (timeline is not null)
        {
            if (!timeline.EndsWith(".png", StringComparison.OrdinalIgnoreCase))
                throw new InputException($"--timeline: '{timeline}' must end in .png");
            WhatIfCommand.CheckOutput(timeline, "--timeline", force);
        }
        if (trace is not null && timeline is not null && Path.GetFullPath(trace) == Path.GetFullPath(timeline))
            throw new InputException("--timeline: the same file as --trace");
        return (trace, timeline);
    }

    /// <summary>Writes the trace (through a temporary file, so a failure leaves no half file) and draws the timeline
    /// of <paramref name="p"/>'s plan, each where a path is given; the trace's span is the predicted step time.</summary>
    public static void Write((string? Trace, string? Timeline) paths, ModelSpec model, ClusterSpec cluster, Prediction p, PricingOptions software)
    {
        if (paths.Trace is null && paths.Timeline is null)
            return;
        var plan = p.Plan;
        var events = StepTrace.Of(model, cluster, plan, software);
        double span = StepTrace.Span(events);
        if (Math.Abs(span - p.StepTimeSeconds) > 1e-9 * Math.Max(1, p.StepTimeSeconds))
            throw new InvalidOperationException($"the trace spans {span} s where the step is priced at {p.StepTimeSeconds} s");
        int perStage = plan.Gpus / plan.Pp;
        string Stage(int s) => $"stage {s} ({perStage} x {cluster.GroupList[plan.GroupOf(s)].Gpu.Name}: tp {plan.Tp} · cp {plan.Cp} · dp {plan.Dp})";
        string described = Tables.Describe(plan);
        var meta = new Dictionary<string, object>
        {
            ["model"] = model.Name,
            ["cluster"] = cluster.Name,
            ["plan"] = described,
            ["step_time_s"] = p.StepTimeSeconds,
            ["source"] = "planner predict: the simulated pipeline schedule and per-pass costs of the price",
        };
        WriteFiles(paths, events, Stage, st => $"stage {st}", $"{model.Name} on {cluster.Name}: {described}, predicted step {p.StepTimeSeconds:G4} s", meta);
    }

    /// <summary>Writes the events as a Chrome trace (through a temporary file, so a failure leaves no half file) and as a
    /// PNG timeline, each where a path is given; <paramref name="rowName"/> names a stage's or rank's process in the trace,
    /// <paramref name="rowLabel"/> its band in the picture.</summary>
    public static void WriteFiles((string? Trace, string? Timeline) paths, IReadOnlyList<TraceEvent> events, Func<int, string> rowName, Func<int, string> rowLabel,
        string title, IReadOnlyDictionary<string, object> metadata)
    {
        if (paths.Timeline is { } png)
            TimelinePlot.Draw(png, events, title, rowLabel);
        if (paths.Trace is not { } path)
            return;
        string json = ChromeTrace.Of(events, rowName, metadata).ToJsonString(new JsonSerializerOptions { WriteIndented = false });
        OutputFile.Replace(path, temp => File.WriteAllText(temp, json + "\n"));
    }
}
