using System.CommandLine;
using System.Globalization;
using CsvHelper;
using CsvHelper.Configuration;
using Planner.Cli.Rendering;
using Planner.Cli.WhatIf;
using Planner.CostModel.Plans;
using Planner.CostModel.Specs;
using Planner.CostModel.Training;
using Spectre.Console;

namespace Planner.Cli.Commands;

/// <summary><c>ablate</c>: what each technique buys, turned on one after another from plain fp32 data parallelism.</summary>
public static class AblateCommand
{
    /// <summary>Tokens per parameter of the default token budget (Hoffmann et al. 2022, "Chinchilla").</summary>
    public const double DefaultTokensPerParameter = 20;

    /// <summary>The CSV columns, in order.</summary>
    public static readonly IReadOnlyList<string> CsvColumns =
    [
        "technique", "plan", "tp", "pp", "dp", "cp", "zero", "mbs", "gbs", "seq", "vpp", "recompute", "sequence_parallel", "precision",
        "step_time_s", "tokens_per_s", "time_to_train_days", "cost_to_train", "peak_memory_gib", "gpu_memory_gib", "fits", "note",
    ];

    /// <summary>Creates the command.</summary>
    public static Command Create(TextWriter stdout)
    {
        var model = new Option<string>("--model") { Description = "Preset name or path to a HuggingFace config.json", Required = true };
        var cluster = new Option<string>("--cluster") { Description = "Preset name or path to a cluster YAML file", Required = true };
        var gbs = new Option<int>("--gbs") { Description = "Global batch size, sequences per step", Required = true };
        var seq = new Option<int?>("--seq") { Description = "Sequence length (default: the model's, at most 8192)" };
        var tokens = new Option<double?>("--tokens") { Description = $"Token budget for the time to train (default: {DefaultTokensPerParameter:F0} per parameter)" };
        var csv = new Option<string?>("--csv") { Description = "Also write the table to this CSV file" };
        var force = new Option<bool>("--force") { Description = "Overwrite the --csv file if it exists" };
        var stack = PlanFlags.StackOption();
        var headroomOption = PlanFlags.MemoryHeadroomOption();
        var cmd = new Command("ablate",
            "Technique table: plain fp32 data parallelism, then mixed precision, recompute, TP, PP, ZeRO-1/2/3 and sequence parallelism, cumulatively")
            { model, cluster, stack, headroomOption, gbs, seq, tokens, csv, force };
        cmd.SetAction(r =>
        {
            var m = ModelLoader.Load(r.GetValue(model)!);
            var c = ClusterLoader.Load(r.GetValue(cluster)!);
            if (c.IsHeterogeneous)
                throw new InputException($"--cluster: '{c.Name}' has several GPU groups; ablate compares techniques on a cluster of one GPU kind");
            int batch = r.GetValue(gbs);
            if (batch is < 1 or > 100_000_000)
                throw new InputException($"--gbs: {batch} must be a whole number from 1 to 100000000");
            int s = r.GetValue(seq) ?? PlanFlags.DefaultSeq(m);
            if (s is < 1 or > 10_000_000)
                throw new InputException($"--seq: {s} must be a whole number from 1 to 10000000");
            double? given = r.GetValue(tokens);
            if (given is not null && (!double.IsFinite(given.Value) || given <= 0))
                throw new InputException($"--tokens: {given} must be a positive number of tokens");
            double budget = given ?? DefaultTokensPerParameter * m.TotalParams;
            string? csvPath = r.GetValue(csv);
            if (csvPath is not null)
                WhatIfCommand.CheckOutput(csvPath, "--csv", r.GetValue(force));

            var software = Planner.CostModel.Pricing.StackLoader.Options(r.GetValue(stack)!);
            double headroom = PlanFlags.ReadHeadroom(r, headroomOption);
            // Each technique's plan is chosen within the headroom (memory shown against the whole GPU).
            var rows = Ablation.Run(m, c.WithMemoryHeadroom(headroom), batch, s, software);
            // With --tokens each technique's whole run (failures, checkpoints, energy), priced once for the table and CSV
            // before the CSV is opened (a run the cost model cannot price is an input error naming its key, as predict's).
            var runs = rows.Select(x => given is null || x.Prediction is null ? null : TrainingEstimate.Unscheduled(x.Prediction, c, budget)).ToList();

            if (csvPath is not null)
            {
                using var writer = new StreamWriter(csvPath, append: false);
                WriteCsv(writer, rows, runs, budget, c, given is not null);
            }
            var console = Tables.Console(stdout);
            console.WriteLine($"{m.Name} ({m.TotalParams / 1e9:F1}B parameters) on {c.Name} ({c.TotalGpus} x {c.Gpu.Name}, {c.Gpu.MemoryGib:F0} GiB), gbs {batch}, seq {s}, " +
                              $"token budget {Tokens(budget)}{(given is null ? $" ({DefaultTokensPerParameter:F0} per parameter; set --tokens)" : "")}, stack {software.Stack}, " +
                              $"memory headroom {headroom:P0} ({c.Gpu.MemoryGib * (1 - headroom):F1} GiB usable: fits and memory notes are against it)");
            console.Write(Table(rows, runs, budget));
            if (csvPath is not null)
                stdout.WriteLine($"table written to {csvPath}");
            return Cli.Ok;
        });
        return cmd;
    }

    /// <summary>The table of techniques: each one's plan, step, throughput, days (the whole run's with --tokens), memory,
    /// and with --tokens its energy.</summary>
    private static Table Table(IReadOnlyList<AblationRow> rows, IReadOnlyList<TrainingRun?> runs, double budget)
    {
        var t = new Table().Border(TableBorder.Rounded).AddColumn("technique").AddColumn("plan")
            .AddColumn(new TableColumn("step s").RightAligned()).AddColumn(new TableColumn("tokens/s").RightAligned())
            .AddColumn(new TableColumn("days").RightAligned()).AddColumn(new TableColumn("mem GiB").RightAligned())
            .AddColumn("fits");
        bool energy = runs.Any(x => x?.EnergyMwh is not null);
        if (energy)
            t.AddColumn(new TableColumn("MWh").RightAligned());
        bool notes = rows.Any(x => x.Note is not null);
        if (notes)
            t.AddColumn("note");
        foreach (var (row, run) in rows.Zip(runs))
        {
            var p = row.Prediction;
            var cells = new List<string>
            {
                Markup.Escape(row.Technique),
                row.Plan is null ? "-" : Markup.Escape(Tables.Describe(row.Plan)),
                p is null ? "" : $"{p.StepTimeSeconds:F3}",
                p is null ? "" : $"{p.TokensPerSecond:N0}",
                p is null ? "" : Days(run?.Days ?? budget / p.TokensPerSecond / 86400),
                p is null ? "" : $"{p.PeakMemoryGib:F1}",
                row.Fits ? "yes" : "no",
            };
            if (energy)
                cells.Add(run?.EnergyMwh is double mwh ? (mwh >= 100 ? $"{mwh:N0}" : $"{mwh:F1}") : "");
            if (notes)
                cells.Add(Markup.Escape(row.Note ?? ""));
            t.AddRow(cells.ToArray());
        }
        return t;
    }

    /// <summary>The whole run's columns, after <see cref="CsvColumns"/>, when --tokens is given (docs/run-level.md).</summary>
    public static readonly IReadOnlyList<string> RunColumns = ["training_days", "gpu_hours", "energy_mwh", "co2_t", "goodput"];

    /// <remarks>Long: one row's cells listed by column, as the CSV's header reads.</remarks>
    private static void WriteCsv(TextWriter writer, IReadOnlyList<AblationRow> rows, IReadOnlyList<TrainingRun?> runs, double budget, ClusterSpec cluster,
        bool runColumns)
    {
        using var csv = new CsvWriter(writer, new CsvConfiguration(CultureInfo.InvariantCulture), leaveOpen: true);
        var columns = runColumns ? CsvColumns.Concat(RunColumns).ToList() : CsvColumns.ToList();
        foreach (var h in columns)
            csv.WriteField(h);
        csv.NextRecord();
        foreach (var (row, run) in rows.Zip(runs))
        {
            var plan = row.Plan;
            var p = row.Prediction;
            double? seconds = p is null ? null : budget / p.TokensPerSecond;
            string I(int? v) => v?.ToString(CultureInfo.InvariantCulture) ?? "";
            string N(double? v) => v?.ToString("R", CultureInfo.InvariantCulture) ?? "";
            var cells = new Dictionary<string, string>
            {
                ["technique"] = row.Technique,
                ["plan"] = plan is null ? "" : Tables.Describe(plan),
                ["tp"] = I(plan?.Tp),
                ["pp"] = I(plan?.Pp),
                ["dp"] = I(plan?.Dp),
                ["cp"] = I(plan?.Cp),
                ["zero"] = I(plan?.Zero),
                ["mbs"] = I(plan?.Mbs),
                ["gbs"] = I(plan?.Gbs),
                ["seq"] = I(plan?.Seq),
                ["vpp"] = I(plan?.Vpp),
                ["recompute"] = plan is null ? "" : ParallelPlan.Name(plan.Recompute),
                ["sequence_parallel"] = plan is null ? "" : plan.SequenceParallel ? "true" : "false",
                ["precision"] = plan?.Precision.Name() ?? "",
                ["step_time_s"] = N(p?.StepTimeSeconds),
                ["tokens_per_s"] = N(p?.TokensPerSecond),
                ["time_to_train_days"] = N(seconds / 86400),
                ["cost_to_train"] = N(seconds / 3600 * plan?.Gpus * cluster.PricePerGpuHour),
                ["peak_memory_gib"] = N(p?.PeakMemoryGib),
                ["gpu_memory_gib"] = N(cluster.Gpu.MemoryGib),
                ["fits"] = row.Fits ? "true" : "false",
                ["note"] = row.Note ?? "",
            };
            if (runColumns)
                AddRun(cells, run, N);
            foreach (var h in columns)
                csv.WriteField(cells[h]);
            csv.NextRecord();
        }
        csv.Flush();
    }

    private static void AddRun(Dictionary<string, string> cells, TrainingRun? run, Func<double?, string> n)
    {
        cells["training_days"] = n(run?.Days);
        cells["gpu_hours"] = n(run?.GpuHours);
        cells["energy_mwh"] = n(run?.EnergyMwh);
        cells["co2_t"] = n(run?.Co2Tonnes);
        cells["goodput"] = n(run?.Goodput);
    }

    private static string Days(double d) => d >= 100 ? $"{d:N0}" : d >= 1 ? $"{d:F1}" : $"{d:F2}";

    private static string Tokens(double t) => t switch
    {
        >= 1e12 => $"{t / 1e12:0.##}T",
        >= 1e9 => $"{t / 1e9:0.##}B",
        >= 1e6 => $"{t / 1e6:0.##}M",
        _ => t.ToString("N0", CultureInfo.InvariantCulture),
    };
}
