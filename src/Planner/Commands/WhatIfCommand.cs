using System.CommandLine;
using Planner.Cli.Rendering;
using Planner.Cli.WhatIf;
using Planner.CostModel.Plans;
using Planner.CostModel.Specs;
using Spectre.Console;

namespace Planner.Cli.Commands;

/// <summary>
/// <c>whatif</c>: sweeps of cluster, model, batch and plan keys; each grid point re-planned (or, with a fixed plan,
/// priced), one CSV row per point, and optionally a figure.
/// </summary>
public static class WhatIfCommand
{
    /// <summary>Creates the command.</summary>
    public static Command Create(TextWriter stdout)
    {
        var model = new Option<string>("--model") { Description = "Preset name or path to a HuggingFace config.json", Required = true };
        var cluster = new Option<string>("--cluster") { Description = "Preset name or path to a cluster YAML file", Required = true };
        var gbs = new Option<int>("--gbs") { Description = "Global batch size, sequences per step", Required = true };
        var seq = new Option<int?>("--seq") { Description = "Sequence length (default: the model's, at most 8192)" };
        var sweep = new Option<string[]>("--sweep") { Description = Sweep.HelpText, HelpName = "key=v1,v2,...", Required = true, Arity = ArgumentArity.OneOrMore };
        var csv = new Option<string>("--csv") { Description = "Write one row per grid point to this CSV file", Required = true };
        var plot = new Option<string?>("--plot") { Description = "Draw tokens/s, memory and step-time panels into this PNG (needs gnuplot)" };
        var tokens = new Option<double?>("--tokens") { Description = "Token budget: add the time (and cost, with a price) to train it" };
        var force = new Option<bool>("--force") { Description = "Overwrite the --csv and --plot files if they exist" };
        var stack = PlanFlags.StackOption();
        var headroomOption = PlanFlags.MemoryHeadroomOption();
        var flags = new OptionalPlanFlags();
        var cmd = new Command("whatif",
            "Sweep cluster, model, batch or plan keys and re-plan each point (or price a fixed plan given by --tp, --pp and --mbs)")
            { model, cluster, stack, headroomOption, gbs, seq, sweep, csv, plot, tokens, force };
        flags.AddTo(cmd);
        cmd.SetAction(r =>
        {
            var axes = Sweep.Parse(r.GetValue(sweep) ?? []);
            var m = ModelLoader.Load(r.GetValue(model)!);
            var c = ClusterLoader.Load(r.GetValue(cluster)!);
            Sweep.CheckCluster(axes, c);
            int batch = r.GetValue(gbs);
            if (batch is < 1 or > 100_000_000)
                throw new InputException($"--gbs: {batch} must be a whole number from 1 to 100000000");
            int? s = r.GetValue(seq);
            if (s is < 1 or > 10_000_000)
                throw new InputException($"--seq: {s} must be a whole number from 1 to 10000000");
            double? budget = r.GetValue(tokens);
            if (budget is not null && (!double.IsFinite(budget.Value) || budget <= 0))
                throw new InputException($"--tokens: {budget} must be a positive number of tokens");
            string csvPath = r.GetValue(csv)!;
            string? plotPath = r.GetValue(plot);
            bool overwrite = r.GetValue(force);
            CheckOutput(csvPath, "--csv", overwrite);
            string? gnuplot = null;
            if (plotPath is not null)
            {
                if (!plotPath.EndsWith(".png", StringComparison.OrdinalIgnoreCase))
                    throw new InputException($"--plot: '{plotPath}' must be a .png file name");
                CheckOutput(plotPath, "--plot", overwrite);
                gnuplot = WhatIfPlot.FindGnuplot() ?? throw new InputException(WhatIfPlot.NotFound);
            }

            var baseline = new Scenario(m, c, batch, s, flags.Read(r), Planner.CostModel.Pricing.StackLoader.Options(r.GetValue(stack)!),
                PlanFlags.ReadHeadroom(r, headroomOption));
            var grid = Sweep.Grid(axes);
            var rows = WhatIfRunner.WithRuns(RunWithProgress(baseline, grid, r.InvocationConfiguration?.Error), budget);

            using (var writer = new StreamWriter(csvPath, append: false))
                WhatIfCsv.Write(writer, axes.Select(a => a.Key).ToList(), rows, budget);
            // A sweep pins its key at every point, so either every point has a fixed plan or none has.
            string gpus = string.Join(" + ", c.GroupList.Select(g => $"{g.Nodes * c.GpusPerNode} x {g.Gpu.Name}"));
            string title = $"{m.Name} on {c.Name} ({gpus}), gbs {batch}" + (s is int q ? $", seq {q}" : "")
                           + (rows.All(x => x.Scenario.Plan.IsFixed) ? ", fixed plan" : $", re-planned per point within a {baseline.MemoryHeadroom:P0} memory headroom");
            if (gnuplot is not null)
                WhatIfPlot.Draw(gnuplot, plotPath!, title, axes, rows, budget);
            Render(stdout, title, axes, rows, budget);
            stdout.WriteLine($"{rows.Count} points written to {csvPath}" + (plotPath is not null ? $"; figure in {plotPath}" : ""));
            return Cli.Ok;
        });
        return cmd;
    }

    /// <summary>Refuses an existing file unless forced, and a directory that does not exist.</summary>
    internal static void CheckOutput(string path, string flag, bool force)
    {
        if (Directory.Exists(path))
            throw new InputException($"{flag}: '{path}' is a directory");
        if (File.Exists(path) && !force)
            throw new InputException($"{flag}: '{path}' exists; pass --force to overwrite it");
        string? dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir is not null && !Directory.Exists(dir))
            throw new InputException($"{flag}: directory '{dir}' does not exist");
    }

    private static IReadOnlyList<WhatIfRow> RunWithProgress(Scenario baseline, IReadOnlyList<GridPoint> grid, TextWriter? stderr)
    {
        bool terminal = stderr is not null && stderr == System.Console.Error && !System.Console.IsErrorRedirected;
        if (!terminal || grid.Count <= 4)
            return WhatIfRunner.Run(baseline, grid);
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(stderr!),
            Ansi = AnsiSupport.Detect,
            ColorSystem = ColorSystemSupport.Detect,
            Interactive = InteractionSupport.Yes,
        });
        IReadOnlyList<WhatIfRow> rows = [];
        console.Progress()
            .AutoClear(true)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask($"whatif: {grid.Count} points", maxValue: grid.Count);
                rows = WhatIfRunner.Run(baseline, grid, () => task.Increment(1));
            });
        return rows;
    }

    private static void Render(TextWriter stdout, string title, IReadOnlyList<SweepAxis> axes, IReadOnlyList<WhatIfRow> rows, double? tokens)
    {
        const int MaxRows = 100;
        var console = Tables.Console(stdout);
        console.WriteLine(title);
        var t = new Table().Border(TableBorder.Rounded);
        foreach (var a in axes)
            t.AddColumn(new TableColumn(Markup.Escape(a.Key)));
        t.AddColumn("plan").AddColumn(new TableColumn("step s").RightAligned()).AddColumn(new TableColumn("tokens/s").RightAligned())
            .AddColumn(new TableColumn("MFU").RightAligned()).AddColumn(new TableColumn("mem GiB").RightAligned());
        if (tokens is not null)
            t.AddColumn(new TableColumn("days").RightAligned());
        t.AddColumn("fits / note");
        foreach (var row in rows.Take(MaxRows))
        {
            var cells = row.Point.Values.Select(v => Markup.Escape(v.Value.Text)).ToList();
            var p = row.Prediction;
            cells.Add(row.Plan is null ? "-" : Markup.Escape(Tables.Describe(row.Plan)));
            cells.Add(p is null ? "" : $"{p.StepTimeSeconds:F3}");
            cells.Add(p is null ? "" : $"{p.TokensPerSecond:N0}");
            cells.Add(p is null ? "" : $"{p.Mfu:P1}");
            cells.Add(p is null ? "" : $"{p.PeakMemoryGib:F1}");
            if (tokens is not null)
                cells.Add(WhatIfCsv.TrainSeconds(row, tokens) is double sec ? $"{sec / 86400:F1}" : "");
            cells.Add(Markup.Escape(row.Note ?? "fits"));
            t.AddRow(cells.ToArray());
        }
        console.Write(t);
        if (rows.Count > MaxRows)
            console.WriteLine($"... {rows.Count - MaxRows} more points in the CSV");
    }
}

/// <summary>
/// The plan flags of <c>predict</c>, all optional: those given pin the plan's values at every point of a what-if
/// (a sweep on the same key overrides them). With <c>--tp</c>, <c>--pp</c> and <c>--mbs</c> the plan is fixed and
/// the rest take <c>predict</c>'s defaults; otherwise the search chooses the values not given.
/// </summary>
public sealed class OptionalPlanFlags
{
    /// <summary>--tp</summary>
    public Option<int?> Tp { get; } = new("--tp") { Description = "Pin the tensor-parallel degree" };
    /// <summary>--pp</summary>
    public Option<int?> Pp { get; } = new("--pp") { Description = "Pin the pipeline-parallel degree" };
    /// <summary>--dp</summary>
    public Option<int?> Dp { get; } = new("--dp") { Description = "Pin the data-parallel degree (fixed plan default: GPUs / (tp·pp·cp))" };
    /// <summary>--cp</summary>
    public Option<int?> Cp { get; } = new("--cp") { Description = "Pin the context-parallel degree (fixed plan default 1)" };
    /// <summary>--zero</summary>
    public Option<int?> Zero { get; } = new("--zero") { Description = "Pin the ZeRO stage 0-3 (fixed plan default 0)" };
    /// <summary>--mbs</summary>
    public Option<int?> Mbs { get; } = new("--mbs") { Description = "Pin the micro-batch size" };
    /// <summary>--vpp</summary>
    public Option<int?> Vpp { get; } = new("--vpp") { Description = "Pin the model chunks per pipeline stage (fixed plan default 1)" };
    /// <summary>--recompute</summary>
    public Option<string?> Recompute { get; } = new Option<string?>("--recompute") { Description = "Pin activation recomputation (fixed plan default none)" }.AcceptOnlyFromAmong("none", "selective", "full");
    /// <summary>--sequence-parallel</summary>
    public Option<bool> SequenceParallel { get; } = new("--sequence-parallel") { Description = "Pin sequence parallelism on (fixed plan default off)" };
    /// <summary>--precision</summary>
    public Option<string?> Precision { get; } = new Option<string?>("--precision") { Description = "Pin the precision (default bf16, or fp16/fp32 on GPUs without bf16)" }.AcceptOnlyFromAmong(PrecisionInfo.All.Select(p => p.Name).ToArray());

    /// <summary>Adds the flags to a command.</summary>
    public void AddTo(Command c)
    {
        foreach (Option o in new Option[] { Tp, Pp, Dp, Cp, Zero, Mbs, Vpp, Recompute, SequenceParallel, Precision })
            c.Options.Add(o);
    }

    /// <summary>The pinned values; out-of-range values raise <see cref="InputException"/> naming the flag.</summary>
    public PlanConstraint Read(ParseResult r) => new(
        Tp: Positive(r.GetValue(Tp), "--tp"),
        Pp: Positive(r.GetValue(Pp), "--pp"),
        Dp: Positive(r.GetValue(Dp), "--dp"),
        Cp: Positive(r.GetValue(Cp), "--cp"),
        Zero: r.GetValue(Zero) is int z ? (z is >= 0 and <= 3 ? z : throw new InputException($"--zero: {z} is not a ZeRO stage (expected 0, 1, 2 or 3)")) : null,
        Mbs: Positive(r.GetValue(Mbs), "--mbs"),
        Vpp: Positive(r.GetValue(Vpp), "--vpp"),
        Recompute: r.GetValue(Recompute) is string rc ? ParallelPlan.ParseRecompute(rc) : null,
        SequenceParallel: r.GetValue(SequenceParallel) ? true : null,
        Precision: r.GetValue(Precision) is string p ? PrecisionInfo.TryParse(p) : null);

    private static int? Positive(int? v, string flag) =>
        v is null or (>= 1 and <= 10_000_000) ? v : throw new InputException($"{flag}: {v} is out of range; expected a whole number from 1 to 10000000");
}
