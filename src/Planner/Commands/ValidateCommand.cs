using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Nodes;
using Planner.Cli.Rendering;
using Planner.Cli.Validation;
using Planner.CostModel.Pricing;
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
        var cmd = new Command("validate", "Compare predicted step times with published measurements") { runs, json };
        cmd.SetAction(r =>
        {
            string path = r.GetValue(runs) ?? RepoFile(DefaultRuns);
            var rows = Validator.Run(Validator.Read(path));
            var all = ErrorSummary.Of(rows);
            var korthikanti = ErrorSummary.Of(rows.Where(x => x.Run.Id.StartsWith("korthikanti", StringComparison.Ordinal)).ToList());
            if (r.GetValue(json))
            {
                var o = new JsonObject
                {
                    ["runs"] = new JsonArray(rows.Select(x => (JsonNode)new JsonObject
                    {
                        ["id"] = x.Run.Id,
                        ["published_step_time_s"] = x.Run.StepTimeS,
                        ["predicted_step_time_s"] = x.Prediction.StepTimeSeconds,
                        ["error_pct"] = x.ErrorPct,
                        ["prediction"] = PredictionJson.Prediction(x.Prediction),
                    }).ToArray()),
                    ["mape_pct"] = all.MapePct,
                    ["max_abs_error_pct"] = all.MaxPct,
                    ["korthikanti_mape_pct"] = korthikanti.MapePct,
                    ["korthikanti_max_abs_error_pct"] = korthikanti.MaxPct,
                };
                stdout.WriteLine(o.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
                return Cli.Ok;
            }
            var console = Tables.Console(stdout);
            var t = new Table().Border(TableBorder.Rounded)
                .AddColumn("run").AddColumn("GPUs").AddColumn("plan")
                .AddColumn(new TableColumn("published s").RightAligned()).AddColumn(new TableColumn("predicted s").RightAligned())
                .AddColumn(new TableColumn("error").RightAligned());
            foreach (var x in rows)
                t.AddRow(x.Run.Id, x.Run.Gpus.ToString(), Tables.Describe(x.Prediction.Plan), $"{x.Run.StepTimeS:F2}", $"{x.Prediction.StepTimeSeconds:F2}", $"{x.ErrorPct:+0.0;-0.0}%");
            console.Write(t);
            stdout.WriteLine($"all {all.Rows} rows: MAPE {all.MapePct:F2}%, max |error| {all.MaxPct:F2}%");
            stdout.WriteLine($"Korthikanti et al. 2022 ({korthikanti.Rows} rows): MAPE {korthikanti.MapePct:F2}%, max |error| {korthikanti.MaxPct:F2}%");
            return Cli.Ok;
        });
        return cmd;
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
