using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;
using Spectre.Console;

namespace Planner.Cli.Rendering;

/// <summary>Readable tables (Spectre.Console) written to a given writer.</summary>
public static class Tables
{
    /// <summary>A console that writes to <paramref name="writer"/> without colour codes when it is not a terminal.</summary>
    public static IAnsiConsole Console(TextWriter writer)
    {
        bool terminal = writer == System.Console.Out && !System.Console.IsOutputRedirected;
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(writer),
            Ansi = terminal ? AnsiSupport.Detect : AnsiSupport.No,
            ColorSystem = ColorSystemSupport.Detect,
            Interactive = InteractionSupport.No,
        });
        // A file or pipe has no width: do not wrap tables at 80 columns.
        if (!terminal)
            console.Profile.Width = 200;
        return console;
    }

    /// <summary>True when the plan's peak leaves <paramref name="headroom"/> of every GPU's memory free.</summary>
    public static bool WithinHeadroom(Prediction r, double headroom) => r.PeakMemoryGib <= r.GpuMemoryGib * (1 - headroom);

    /// <summary>Short form of a plan, e.g. "TP8 PP12 DP8 mbs1 vpp1 sel+SP bf16 Z1".</summary>
    public static string Describe(ParallelPlan p)
    {
        var parts = new List<string> { $"TP{p.Tp}", $"PP{p.Pp}", $"DP{p.Dp}" };
        if (p.Cp > 1) parts.Add($"CP{p.Cp}");
        if (p.Ep > 1) parts.Add($"EP{p.Ep}");
        if (p.Etp > 1) parts.Add($"ETP{p.Etp}");
        if (p.Vpp > 1) parts.Add($"VPP{p.Vpp}");
        parts.Add($"mbs{p.Mbs}");
        if (p.Stages is { } st)
            parts.Add($"stages={st}");
        parts.Add(p.Recompute switch { Recompute.Full => p.RecomputeLayers is { } k ? $"rc{k}/chunk" : "full-rc", Recompute.Selective => "sel-rc", _ => "no-rc" } + (p.SequenceParallel ? "+SP" : ""));
        if (p.Zero > 0) parts.Add($"ZeRO-{p.Zero}");
        if (p.OptimizerOffload > 0) parts.Add($"opt-offload{p.OptimizerOffload * 100:0}%");
        parts.Add(p.Precision.Name());
        if (p.FineTuning is { } t)
        {
            if (t.Adapters)
                parts.Add($"{FineTuning.Name(t.Method)}-r{t.Rank}-{FineTuning.Name(t.Targets)}");
            parts.Add(FineTuning.Name(t.Optimizer));
        }
        return string.Join(' ', parts);
    }

    /// <summary>Prints a prediction: headline figures, the step-time breakdown and the memory of the peak rank;
    /// <paramref name="headroom"/> the share of memory a plan should leave free.</summary>
    public static void Prediction(TextWriter writer, Prediction r, double headroom = 0)
    {
        var console = Console(writer);
        var p = r.Plan;
        console.WriteLine($"{r.Model} on {r.Cluster}: {Describe(p)}, gbs {p.Gbs}, seq {p.Seq}, {p.Gpus} GPUs, {p.MicroBatches} micro-batches per step, stack {r.Stack}");
        var head = new Table().Border(TableBorder.Rounded).AddColumn("metric").AddColumn(new TableColumn("value").RightAligned());
        head.AddRow("step time", $"{r.StepTimeSeconds:F3} s");
        head.AddRow("tokens/s", $"{r.TokensPerSecond:N0}");
        head.AddRow("model TFLOP/s per GPU", $"{r.ModelTflopsPerGpu:F1}");
        head.AddRow("hardware TFLOP/s per GPU", $"{r.HardwareTflopsPerGpu:F1}");
        head.AddRow("MFU", $"{r.Mfu:P1}");
        if (r.TrainableParameters != r.Parameters)
            head.AddRow("trainable parameters", $"{r.TrainableParameters:N0} of {r.Parameters:N0} ({r.TrainableParameters / r.Parameters:P2})");
        head.AddRow("peak memory per GPU", $"{r.PeakMemoryGib:F1} / {r.GpuMemoryGib:F0} GiB ({(r.Fits ? "fits" : "DOES NOT FIT")})");
        if (headroom > 0 && r.Fits)
            head.AddRow($"within {headroom:P0} headroom", WithinHeadroom(r, headroom)
                ? $"yes ({r.GpuMemoryGib * (1 - headroom):F1} GiB usable)"
                : $"NO: {r.PeakMemoryGib:F1} above the {r.GpuMemoryGib * (1 - headroom):F1} GiB usable");
        console.Write(head);

        var b = r.Breakdown;
        console.WriteLine("step time breakdown (exposed time):");
        var bt = new Table().Border(TableBorder.Rounded).AddColumn("part").AddColumn(new TableColumn("seconds").RightAligned()).AddColumn(new TableColumn("share").RightAligned());
        foreach (var (name, v) in new[] { ("compute", b.Compute), ("recompute", b.Recompute), ("tp_comm", b.TpComm), ("cp_comm", b.CpComm), ("ep_comm", b.EpComm), ("pp_comm", b.PpComm), ("dp_comm", b.DpComm), ("bubble", b.Bubble), ("optimizer", b.Optimizer) })
            bt.AddRow(name, $"{v:F3}", $"{v / r.StepTimeSeconds:P1}");
        console.Write(bt);

        var m = r.PeakStage;
        console.WriteLine($"memory of the peak rank: stage {m.Stage}, {m.InFlight} micro-batch chunks in flight");
        var mt = new Table().Border(TableBorder.Rounded).AddColumn("part").AddColumn(new TableColumn("GiB").RightAligned());
        foreach (var (name, v) in new[] { ("weights", m.Weights), ("gradients", m.Gradients), ("optimizer", m.Optimizer), ("activations", m.Activations), ("working", m.Working), ("buffers", m.Buffers), ("overhead", m.Overhead) })
            mt.AddRow(name, $"{v / Units.GiB:F2}");
        mt.AddRow("[bold]total[/]", $"[bold]{m.Total / Units.GiB:F2}[/]");
        if (m.Adapters is { } a)
            mt.AddRow("of which LoRA adapters", $"{a.Total / Units.GiB:F2}");
        console.Write(mt);
    }
}
