using Planner.CostModel.Pricing;
using System.Text.Json;
using Planner.Cli.Validation;
using Planner.CostModel.Specs;
using CliEntry = global::Planner.Cli.Commands.Cli;
using Xunit;

namespace Planner.Cli.Tests;

/// <summary>
/// <c>validate</c> on the repository's modern runs (Megatron-Core of 2025: MoE, FP8 and MX formats, Hopper and
/// Blackwell), and <c>validate --fit</c>: it must find parameters it is given back from rows priced with them.
/// </summary>
public sealed class ModernValidateTests
{
    private static string RunsCsv() => RepoFiles.Find("validation/modern_runs.csv");

    private static readonly Lazy<JsonElement> Full = new(() =>
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = CliEntry.Run(["validate", "--json", "--runs", RunsCsv()], stdout, stderr);
        Assert.True(code == 0, $"validate exit code {code}; stderr: {stderr}");
        using var doc = JsonDocument.Parse(stdout.ToString());
        return doc.RootElement.Clone();
    });

    private static readonly Lazy<IReadOnlyList<ValidationCase>> Cases = new(() => Validator.Read(RunsCsv()));

    [Fact]
    public void Every_row_is_priced_and_each_model_and_system_summarises_its_own_rows()
    {
        var o = Full.Value;
        var runs = o.GetProperty("runs").EnumerateArray().ToDictionary(r => r.GetProperty("id").GetString()!);
        int csvRows = File.ReadAllLines(RunsCsv()).Skip(1).Count(l => l.Trim().Length > 0);
        Assert.Equal(csvRows, runs.Count);
        Assert.Equal(Cases.Value.Count, runs.Count);
        foreach (var c in Cases.Value)
        {
            double predicted = runs[c.Id].GetProperty("predicted_step_time_s").GetDouble();
            Assert.True(double.IsFinite(predicted) && predicted > 0, $"{c.Id}: {predicted}");
        }
        var groups = o.GetProperty("groups");
        foreach (var group in Cases.Value.SelectMany(c => c.Groups).Distinct())
        {
            var members = Cases.Value.Where(c => c.Groups.Contains(group)).Select(c => Math.Abs(runs[c.Id].GetProperty("error_pct").GetDouble())).ToList();
            var g = groups.GetProperty(group);
            Assert.Equal(members.Count, g.GetProperty("rows").GetInt32());
            Assert.Equal(members.Average(), g.GetProperty("mape_pct").GetDouble(), 9);
            Assert.Equal(members.Max(), g.GetProperty("max_abs_error_pct").GetDouble(), 9);
        }
        Assert.Equal(runs.Values.Count(r => !r.GetProperty("fits").GetBoolean()), o.GetProperty("unfit").GetInt32());
    }

    [Fact]
    public void Rows_are_read_as_megatron_core_ran_them()
    {
        var cases = Cases.Value;
        Assert.Contains(cases, c => c.Model.IsMoe && c.Plan.Ep > 1);
        Assert.Contains(cases, c => c.Plan.Zero == 3);
        foreach (var c in cases)
        {
            Assert.Equal(c.Plan.Tp > 1, c.Plan.SequenceParallel);
            Assert.True(c.Plan.Zero is 1 or 3, $"{c.Id}: ZeRO {c.Plan.Zero}");
        }
    }

    [Fact]
    public void Predict_with_a_rows_flags_gives_what_validate_gives()
    {
        // The issue's contract: a row priced through predict (--zero, --sequence-parallel, --ep, --etp, --precision and a
        // cluster file with nvlink_domain and the row's links, and the row's stack) costs what validate says.
        var runs = Full.Value.GetProperty("runs").EnumerateArray().ToDictionary(r => r.GetProperty("id").GetString()!);
        string dir = Directory.CreateTempSubdirectory("planner-modern-predict-").FullName;
        try
        {
            var lines = File.ReadAllLines(RunsCsv());
            var header = Csv(lines[0]);
            string modelsDir = Path.Combine(Path.GetDirectoryName(RunsCsv())!, "models");
            int compared = 0;
            foreach (var line in lines.Skip(1).Where(l => l.Trim().Length > 0))
            {
                var f = Csv(line);
                string V(string column) => f[header.IndexOf(column)];
                int gpus = int.Parse(V("gpus")), perNode = int.Parse(V("gpus_per_node"));
                string cluster = Path.Combine(dir, $"{V("id")}.yaml");
                File.WriteAllText(cluster,
                    $"name: {V("id")}\ngpu: {V("gpu")}\nnodes: {(gpus + perNode - 1) / perNode}\ngpus_per_node: {perNode}\n" +
                    (V("nvlink_domain") is { Length: > 0 } domain ? $"nvlink_domain: {domain}\n" : "") +
                    $"intra_node: {{bandwidth_gbs: {V("intra_gbs")}, latency_us: {Validator.IntraLatencyUs}}}\n" +
                    $"inter_node: {{bandwidth_gbs: {V("inter_gbs")}, latency_us: {Validator.InterLatencyUs}}}\n");
                var args = new List<string>
                {
                    "predict", "--json", "--model", Path.Combine(modelsDir, V("model")), "--cluster", cluster,
                    "--tp", V("tp"), "--pp", V("pp"), "--dp", V("dp"), "--cp", V("cp"), "--ep", V("ep"), "--vpp", V("vpp"),
                    "--zero", V("fsdp") == "1" ? "3" : "1", "--mbs", V("mbs"), "--gbs", V("gbs"), "--seq", V("seq"),
                    "--recompute", V("recompute"), "--precision", V("precision"),
                };
                if (V("etp") is { Length: > 0 } etp)
                    args.AddRange(["--etp", etp]);
                if (int.Parse(V("tp")) > 1)
                    args.Add("--sequence-parallel");
                // The row's recipe facts: a stack file named beside the CSV.
                if (header.Contains("stack") && V("stack") is { Length: > 0 } stack)
                    args.AddRange(["--stack", StackLoader.Beside(stack, Path.GetDirectoryName(RunsCsv())!)]);
                var stdout = new StringWriter();
                var stderr = new StringWriter();
                int code = CliEntry.Run([.. args], stdout, stderr);
                Assert.True(code == 0, $"{V("id")}: predict exit {code}: {stderr}");
                using var doc = JsonDocument.Parse(stdout.ToString());
                double predicted = doc.RootElement.GetProperty("step_time_s").GetDouble();
                double validated = runs[V("id")].GetProperty("predicted_step_time_s").GetDouble();
                Assert.True(Math.Abs(predicted - validated) <= 1e-9 * validated, $"{V("id")}: predict {predicted} s, validate {validated} s");
                compared++;
            }
            Assert.Equal(runs.Count, compared);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void Dense_rows_stay_within_eight_percent_on_average()
    {
        // A guard on what the dense rows measure (GEMM efficiency per GPU and format, the fabric): 6.1 % when written.
        var runs = Full.Value.GetProperty("runs").EnumerateArray().ToDictionary(r => r.GetProperty("id").GetString()!);
        var dense = Cases.Value.Where(c => !c.Model.IsMoe).Select(c => Math.Abs(runs[c.Id].GetProperty("error_pct").GetDouble())).ToList();
        Assert.True(dense.Count >= 10, $"{dense.Count} dense rows");
        Assert.True(dense.Average() <= 8, $"dense rows' MAPE {dense.Average():F2}%");
    }

    [Fact]
    public void The_fit_finds_planted_parameters_again()
    {
        // Rows whose 'measured' step time is our own price at chosen parameter values (away from the presets): the fit,
        // started from the presets, must recover every value it fits.
        var cases = Cases.Value;
        var parameters = Fitter.GemmParameters(cases.Where(c => !c.Model.IsMoe).ToList());
        var moe = cases.Where(c => c.Model.IsMoe).ToList();
        var all = parameters.Concat(Fitter.GemmParameters(moe).Where(p => parameters.All(q => q.Key != p.Key))).Concat(Fitter.ExpertParameters(moe)).ToList();
        var planted = all.Select((p, i) => (Parameter: p, Value: Planted(p, i))).ToList();
        var synthetic = Validator.Run(Fitter.Apply(cases, planted))
            .Select(r => r.Case with
            {
                StepTimeS = r.Prediction.StepTimeSeconds,
                Cluster = cases.First(c => c.Id == r.Case.Id).Cluster,
                Software = cases.First(c => c.Id == r.Case.Id).Software,
            })
            .ToList();
        var result = Fitter.FitInStages(synthetic);
        foreach (var (p, v) in result.Values)
        {
            double want = planted.Single(x => x.Parameter.Key == p.Key).Value;
            Assert.True(Math.Abs(v - want) <= 0.03 * want, $"{p.Key}: fitted {v:G4}, planted {want:G4}");
        }
        Assert.Equal(planted.Select(x => x.Parameter.Key).Order(), result.Values.Select(x => x.Parameter.Key).Order());
        Assert.True(result.Rows.Max(r => Math.Abs(r.ErrorPct)) < 1, $"max error after the fit {result.Rows.Max(r => Math.Abs(r.ErrorPct)):F2}%");
    }

    /// <summary>A value away from the preset's: 15 % lower or higher by turns, within the parameter's bound.</summary>
    private static double Planted(FitParameter p, int i) => Math.Min(p.Upper * 0.95, p.Initial * (i % 2 == 0 ? 0.85 : 1.15));

    [Theory]
    [InlineData("ep", "0", "ep 0")]
    [InlineData("fsdp", "2", "fsdp 2")]
    [InlineData("etp", "0", "etp 0")]
    [InlineData("nvlink_domain", "6", "nvlink_domain is 6")]
    [InlineData("model", "no-such-model.json", "no-such-model.json")]
    [InlineData("moe_balance", "aux_loss", "moe_balance 'aux_loss'")]
    public void A_bad_value_in_a_row_is_refused_naming_the_row_and_the_column(string column, string value, string named)
    {
        string dir = Directory.CreateTempSubdirectory("planner-modern-").FullName;
        try
        {
            var lines = File.ReadAllLines(RunsCsv());
            var header = lines[0].Split(',');
            int at = Array.IndexOf(header, column);
            Assert.True(at >= 0, column);
            // The first row of a MoE model with 4 GPUs per node (a domain of 6 then holds a node and a half).
            string row = lines.Skip(1).First(l => l.Contains("qwen3-30b", StringComparison.Ordinal) && l.Contains(",4,72,", StringComparison.Ordinal));
            var fields = Csv(row);
            string id = fields[0];
            fields[at] = value;
            File.WriteAllText(Path.Combine(dir, "runs.csv"), lines[0] + "\n" + Line(fields) + "\n");
            Directory.CreateDirectory(Path.Combine(dir, "models"));
            foreach (var model in Directory.GetFiles(Path.Combine(Path.GetDirectoryName(RunsCsv())!, "models")))
                File.Copy(model, Path.Combine(dir, "models", Path.GetFileName(model)));
            var stdout = new StringWriter();
            var stderr = new StringWriter();
            int code = CliEntry.Run(["validate", "--runs", Path.Combine(dir, "runs.csv")], stdout, stderr);
            Assert.Equal(2, code);
            string error = stderr.ToString().Trim();
            Assert.DoesNotContain('\n', error);
            Assert.Contains($"row {id}", error);
            Assert.Contains(Path.Combine(dir, "runs.csv") + ": row", error);
            Assert.Contains(named, error);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    /// <summary>Splits a CSV line with quoted fields (the sources hold commas).</summary>
    private static List<string> Csv(string line)
    {
        using var parser = new CsvHelper.CsvParser(new StringReader(line), System.Globalization.CultureInfo.InvariantCulture);
        Assert.True(parser.Read());
        return [.. parser.Record!];
    }

    /// <summary>Joins fields into a CSV line, quoting each.</summary>
    private static string Line(IEnumerable<string> fields) => string.Join(",", fields.Select(f => "\"" + f.Replace("\"", "\"\"") + "\""));
}
