using Planner.CostModel.Trace;
using ScottPlot;

namespace Planner.Cli.Rendering;

/// <summary>
/// A step's timeline as a PNG drawn in-process with ScottPlot (docs/timelines.md): one band per pipeline stage (or rank),
/// its compute on top (forwards and backwards in two colours) and a thinner row under it for each kind of
/// communication and the optimizer; what is left blank is idle (the pipeline bubble, waits).
/// </summary>
public static class TimelinePlot
{
    /// <summary>Vertical place of each lane inside a stage's band (compute on top) and its height.</summary>
    private static (double Offset, double Height) Row(TraceLane lane) => lane switch
    {
        TraceLane.Compute => (0, 0.4),
        TraceLane.ParallelComm => (0.42, 0.12),
        TraceLane.PipelineTransfer => (0.56, 0.12),
        TraceLane.DataParallelComm => (0.70, 0.12),
        _ => (0.84, 0.12),
    };

    private static Color ColourOf(TraceEvent e) => e.Lane switch
    {
        TraceLane.Compute => e.Name.StartsWith("forward", StringComparison.Ordinal) ? Color.FromHex("#1f77b4") : Color.FromHex("#ff7f0e"),
        TraceLane.ParallelComm => Color.FromHex("#d62728"),
        TraceLane.PipelineTransfer => Color.FromHex("#7f7f7f"),
        TraceLane.DataParallelComm => Color.FromHex("#2ca02c"),
        _ => Color.FromHex("#9467bd"),
    };

    /// <summary>Draws the events into <paramref name="pngPath"/> (through a temporary file, replacing it).</summary>
    /// <param name="rowName">The label of a stage's band ("stage 0", "rank 3").</param>
    public static void Draw(string pngPath, IReadOnlyList<TraceEvent> events, string title, Func<int, string> rowName)
    {
        var plot = new Plot();
        var stages = events.Select(e => e.Stage).Distinct().Order().ToList();
        double span = events.Count == 0 ? 1 : events.Max(e => e.End);
        // Time in milliseconds when the step is short, seconds otherwise.
        var (scale, unit) = span < 1 ? (1e3, "ms") : (1.0, "s");
        var bars = new List<Bar>(events.Count);
        foreach (var e in events)
        {
            var (offset, height) = Row(e.Lane);
            double top = stages.IndexOf(e.Stage) + offset;
            bars.Add(new Bar
            {
                Position = top + height / 2,
                ValueBase = e.Start * scale,
                Value = e.End * scale,
                Size = height,
                FillColor = ColourOf(e),
                LineWidth = 0,
                Orientation = Orientation.Horizontal,
            });
        }
        plot.Add.Bars(bars);
        foreach (var (label, colour) in new[]
                 {
                     ("forward", "#1f77b4"), ("backward", "#ff7f0e"), ("TP/CP/EP comm", "#d62728"), ("pipeline transfer", "#7f7f7f"),
                     ("DP comm", "#2ca02c"), ("optimizer", "#9467bd"),
                 })
            plot.Legend.ManualItems.Add(new LegendItem { LabelText = label, FillColor = Color.FromHex(colour) });
        plot.ShowLegend(Edge.Right);
        plot.Title(title, size: 12);
        plot.XLabel($"time from the step's start ({unit})");
        plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericManual(
            stages.Select((s, i) => new Tick(i + 0.2, rowName(s))).ToArray());
        plot.Axes.InvertY();
        plot.Axes.SetLimits(0, span * scale * 1.01, stages.Count, -0.1);
        OutputFile.Replace(pngPath, temp => plot.SavePng(temp, 1400, Math.Clamp(140 + 70 * stages.Count, 300, 1600)), ".tmp.png");
    }
}
