using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Nodes;
using Planner.Cli.Rendering;
using Planner.Cli.Validation;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;
using Spectre.Console;

namespace Planner.Cli.Commands;

/// <summary><c>validate</c>: price published runs and report the error of each and overall.</summary>
public static class ValidateCommand
{
    /// <summary>Where the repository keeps its copy of the published runs, relative to the repository root.</summary>
    public const string DefaultRuns = "validation/published_runs.csv";

    /// <summary>Creates the command.</summary>
    public static Command Create(TextWriter stdout)
    {
        var runs = new Option<string?>("--runs") { Description = $"CSV of measured runs (default: {DefaultRuns} of this repository)" };
        var json = new Option<bool>("--json") { Description = "Print one JSON object" };
        var executed = new Option<string?>("--executed") { Description = "Compare with this machine's executed runs instead (a history CSV; default ~/.cache/planner/history.csv)", Arity = ArgumentArity.ZeroOrOne };
        var fit = new Option<bool>("--fit") { Description = "Fit the physical parameters the rows exercise (each GPU's GEMM efficiency per low-precision format, the experts' grouped-GEMM efficiency and per-expert overhead) and print them with the errors they give" };
        var cmd = new Command("validate", "Compare predicted step times with published measurements (or with executed runs)") { runs, json, executed, fit };
        cmd.SetAction(r =>
        {
            if (r.GetResult(executed) is not null)
                return Executed(stdout, r.GetValue(executed) ?? Profiling.RunHistory.DefaultPath, r.GetValue(json));
            string path = r.GetValue(runs) ?? RepoFile(DefaultRuns);
            if (r.GetValue(fit))
                return Fit(stdout, Validator.Read(path));
            var rows = Validator.Run(Validator.Read(path));
            var all = ErrorSummary.Of(rows);
            var groups = rows.SelectMany(x => x.Case.Groups.Select(g => (Group: g, Row: x)))
                .GroupBy(x => x.Group, x => x.Row)
                .Select(g => (Label: g.Key, Summary: ErrorSummary.Of(g.ToList())))
                .OrderBy(g => g.Label, StringComparer.Ordinal)
                .ToList();
            var korthikanti = ErrorSummary.Of(rows.Where(x => x.Case.Id.StartsWith("korthikanti", StringComparison.Ordinal)).ToList());
            var unfit = rows.Where(x => !x.Prediction.Fits).ToList();
            var memory = rows.Where(x => x.MemoryErrorPct is not null).ToList();
            if (r.GetValue(json))
            {
                var o = new JsonObject
                {
                    ["runs"] = new JsonArray(rows.Select(x => (JsonNode)new JsonObject
                    {
                        ["id"] = x.Case.Id,
                        ["published_step_time_s"] = x.Case.StepTimeS,
                        ["predicted_step_time_s"] = x.Prediction.StepTimeSeconds,
                        ["error_pct"] = x.ErrorPct,
                        ["fits"] = x.Prediction.Fits,
                        ["prediction"] = PredictionJson.Prediction(x.Prediction),
                    }).ToArray()),
                    ["mape_pct"] = all.MapePct,
                    ["max_abs_error_pct"] = all.MaxPct,
                    ["unfit"] = unfit.Count,
                    ["groups"] = new JsonObject(groups.Select(g => KeyValuePair.Create(g.Label, (JsonNode?)new JsonObject
                    {
                        ["rows"] = g.Summary.Rows,
                        ["mape_pct"] = g.Summary.MapePct,
                        ["max_abs_error_pct"] = g.Summary.MaxPct,
                    }))),
                };
                if (korthikanti.Rows > 0)
                {
                    o["korthikanti_mape_pct"] = korthikanti.MapePct;
                    o["korthikanti_max_abs_error_pct"] = korthikanti.MaxPct;
                }
                if (memory.Count > 0)
                    o["peak_memory_mape_pct"] = memory.Average(x => Math.Abs(x.MemoryErrorPct!.Value));
                stdout.WriteLine(o.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
                return Cli.Ok;
            }
            var console = Tables.Console(stdout);
            var t = new Table().Border(TableBorder.Rounded)
                .AddColumn("run").AddColumn("GPUs").AddColumn("plan")
                .AddColumn(new TableColumn("published s").RightAligned()).AddColumn(new TableColumn("predicted s").RightAligned())
                .AddColumn(new TableColumn("error").RightAligned()).AddColumn(new TableColumn("mem GiB").RightAligned());
            foreach (var x in rows)
                t.AddRow(Markup.Escape(x.Case.Id), x.Case.Gpus.ToString(), Tables.Describe(x.Prediction.Plan), $"{x.Case.StepTimeS:F2}", $"{x.Prediction.StepTimeSeconds:F2}",
                    $"{x.ErrorPct:+0.0;-0.0}%", $"{x.Prediction.PeakMemoryGib:F1}{(x.Prediction.Fits ? "" : " (does not fit)")}");
            console.Write(t);
            stdout.WriteLine($"all {all.Rows} rows: MAPE {all.MapePct:F2}%, max |error| {all.MaxPct:F2}%{(unfit.Count > 0 ? $", {unfit.Count} predicted not to fit" : "")}");
            foreach (var (label, summary) in groups.Where(g => g.Summary.Rows < all.Rows || groups.Count == 1))
                stdout.WriteLine($"{label} ({summary.Rows} rows): MAPE {summary.MapePct:F2}%, max |error| {summary.MaxPct:F2}%");
            if (memory.Count > 0)
                stdout.WriteLine($"peak memory ({memory.Count} rows): MAPE {memory.Average(x => Math.Abs(x.MemoryErrorPct!.Value)):F2}%");
            return Cli.Ok;
        });
        return cmd;
    }

    private static int Fit(TextWriter stdout, IReadOnlyList<ValidationCase> cases)
    {
        var before = ErrorSummary.Of(Validator.Run(cases));
        var result = Fitter.FitInStages(cases);
        var after = ErrorSummary.Of(result.Rows);
        var console = Tables.Console(stdout);
        var t = new Table().Border(TableBorder.Rounded).AddColumn("parameter").AddColumn(new TableColumn("fitted").RightAligned());
        foreach (var (p, v) in result.Values)
            t.AddRow(Markup.Escape(p.Key), $"{v:F3}");
        console.Write(t);
        // What the fitted parameters make of each file's keys.
        var keys = new Table().Border(TableBorder.Rounded).AddColumn("file: key").AddColumn(new TableColumn("preset").RightAligned()).AddColumn(new TableColumn("fitted").RightAligned());
        var fittedCases = result.Rows.Select(x => x.Case).ToList();
        foreach (var (preset, fitted) in cases.Zip(fittedCases).DistinctBy(x => x.First.Cluster.Gpu.Name).OrderBy(x => x.First.Cluster.Gpu.Name, StringComparer.Ordinal))
        {
            var (g0, g1) = (preset.Cluster.Gpu, fitted.Cluster.Gpu);
            keys.AddRow($"gpus/{g1.Name}.yaml: gemm_efficiency", $"{g0.GemmEfficiency:F3}", $"{g1.GemmEfficiency:F3}");
            foreach (var f in new[] { Precision.Fp8, Precision.Mxfp8, Precision.Nvfp4 })
                if (g0.QuantizedEfficiency(f) != g1.QuantizedEfficiency(f))
                    keys.AddRow($"gpus/{g1.Name}.yaml: quantized_gemm_efficiency.{f.Name()}", $"{g0.QuantizedEfficiency(f):F3}", $"{g1.QuantizedEfficiency(f):F3}");
            if (g0.GroupedGemmEfficiency != g1.GroupedGemmEfficiency)
                keys.AddRow($"gpus/{g1.Name}.yaml: grouped_gemm_efficiency", $"{g0.GroupedGemmEfficiency:F3}", $"{g1.GroupedGemmEfficiency:F3}");
        }
        console.Write(keys);
        var rows = new Table().Border(TableBorder.Rounded).AddColumn("run").AddColumn(new TableColumn("published s").RightAligned())
            .AddColumn(new TableColumn("fitted s").RightAligned()).AddColumn(new TableColumn("error").RightAligned());
        foreach (var x in result.Rows)
            rows.AddRow(Markup.Escape(x.Case.Id), $"{x.Case.StepTimeS:F2}", $"{x.Prediction.StepTimeSeconds:F2}", $"{x.ErrorPct:+0.0;-0.0}%");
        console.Write(rows);
        stdout.WriteLine($"{cases.Count} rows: MAPE {before.MapePct:F2}% (max {before.MaxPct:F2}%) with the presets, {after.MapePct:F2}% (max {after.MaxPct:F2}%) fitted; {result.Evaluations} evaluations");
        return Cli.Ok;
    }

    private static int Executed(TextWriter stdout, string path, bool json)
    {
        var all = Profiling.RunHistory.Read(path);
        if (all.Count == 0)
            throw new InputException($"--executed: '{path}' has no runs");
        // Repeated runs of one plan (same model, cluster and plan) count once, by their medians: a VM's noise moves a
        // single run by more than the model's error.
        var groups = all.GroupBy(x => (x.Model, x.Cluster, x.Plan)).ToList();
        var rows = groups.Select(g => new Profiling.HistoryRow
        {
            Model = g.Key.Model,
            Cluster = g.Key.Cluster,
            Plan = g.Key.Plan,
            PredictedStepTime = Profiling.Fitting.Median(g.Select(x => x.PredictedStepTime)),
            MeasuredStepTime = Profiling.Fitting.Median(g.Select(x => x.MeasuredStepTime)),
            PredictedMemory = Profiling.Fitting.Median(g.Select(x => x.PredictedMemory)),
            MeasuredMemory = Profiling.Fitting.Median(g.Select(x => x.MeasuredMemory)),
        }).ToList();
        var counts = groups.Select(g => g.Count()).ToList();
        var errors = rows.Select(x => (x.PredictedStepTime - x.MeasuredStepTime) / x.MeasuredStepTime * 100).ToList();
        var memErrors = rows.Select(x => (x.PredictedMemory - x.MeasuredMemory) / x.MeasuredMemory * 100).ToList();
        double tau = Profiling.RunHistory.KendallTau(rows.Select(x => x.PredictedStepTime).ToList(), rows.Select(x => x.MeasuredStepTime).ToList());
        if (json)
        {
            var o = new JsonObject
            {
                ["runs"] = new JsonArray(rows.Select((x, i) => (JsonNode)new JsonObject
                {
                    ["plan"] = x.Plan,
                    ["runs"] = counts[i],
                    ["predicted_step_time_s"] = x.PredictedStepTime,
                    ["measured_step_time_s"] = x.MeasuredStepTime,
                    ["error_pct"] = errors[i],
                    ["peak_memory_error_pct"] = memErrors[i],
                }).ToArray()),
                ["mape_pct"] = errors.Average(Math.Abs),
                ["peak_memory_mape_pct"] = memErrors.Average(Math.Abs),
                ["kendall_tau"] = double.IsNaN(tau) ? null : tau,
            };
            stdout.WriteLine(o.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            return Cli.Ok;
        }
        var console = Tables.Console(stdout);
        var t = new Table().Border(TableBorder.Rounded).AddColumn("plan").AddColumn(new TableColumn("runs").RightAligned()).AddColumn(new TableColumn("measured s").RightAligned())
            .AddColumn(new TableColumn("predicted s").RightAligned()).AddColumn(new TableColumn("error").RightAligned())
            .AddColumn(new TableColumn("memory error").RightAligned());
        for (int i = 0; i < rows.Count; i++)
            t.AddRow(Markup.Escape(rows[i].Plan), $"{counts[i]}", $"{rows[i].MeasuredStepTime:F3}", $"{rows[i].PredictedStepTime:F3}", $"{errors[i]:+0.0;-0.0}%", $"{memErrors[i]:+0.0;-0.0}%");
        console.Write(t);
        stdout.WriteLine($"{rows.Count} plans ({all.Count} runs, repeated plans by their medians): step time MAPE {errors.Average(Math.Abs):F1}%, peak memory MAPE {memErrors.Average(Math.Abs):F1}%, Kendall tau {tau:F2}");
        return Cli.Ok;
    }

    /// <summary>A file of the repository: found by walking up from the executable, then from the working directory.</summary>
    public static string RepoFile(string relative)
    {
        foreach (var start in new[] { AppContext.BaseDirectory, Directory.GetCurrentDirectory() })
        {
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                var candidate = Path.Combine(dir.FullName, relative);
                if (File.Exists(candidate))
                    return candidate;
            }
        }
        return relative;
    }
}
