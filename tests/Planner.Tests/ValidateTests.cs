using System.Text.Json;
using CliEntry = global::Planner.Cli.Commands.Cli;
using Xunit;

namespace Planner.Cli.Tests;

/// <summary><c>validate</c> on the repository's published runs: the accuracy thresholds of the issue.</summary>
public sealed class ValidateTests
{
    private const int ExpectedRows = 30;
    private const int ExpectedKorthikantiRows = 8;
    private const double MaxMapePct = 8;
    private const double MaxAbsErrorPct = 20;

    /// <summary>validation/published_runs.csv, found by walking up from the test binaries to the repository root.</summary>
    private static string RunsCsv() => RepoFiles.Find("validation/published_runs.csv");

    private static JsonElement Validate(params string[] extra)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = CliEntry.Run(["validate", "--json", .. extra], stdout, stderr);
        Assert.True(code == 0, $"validate exit code {code}; stderr: {stderr}");
        Assert.Equal("", stderr.ToString());
        using var doc = JsonDocument.Parse(stdout.ToString());
        return doc.RootElement.Clone();
    }

    private static readonly Lazy<JsonElement> Full = new(() => Validate("--runs", RunsCsv()));

    private static Dictionary<string, JsonElement> ById(JsonElement o) =>
        o.GetProperty("runs").EnumerateArray().ToDictionary(r => r.GetProperty("id").GetString()!);

    [Fact]
    public void TheCsvHasThirtyRows()
    {
        var lines = File.ReadAllLines(RunsCsv()).Where(l => l.Trim().Length > 0).ToList();
        Assert.Equal(ExpectedRows + 1, lines.Count); // header + rows
        Assert.Equal(ExpectedRows, Full.Value.GetProperty("runs").GetArrayLength());
    }

    [Fact]
    public void MapeAndMaxErrorAreWithinTheThresholds()
    {
        var o = Full.Value;
        double mape = o.GetProperty("mape_pct").GetDouble();
        double max = o.GetProperty("max_abs_error_pct").GetDouble();
        Assert.True(mape <= MaxMapePct, $"MAPE {mape:F2}% is above {MaxMapePct}%");
        Assert.True(max <= MaxAbsErrorPct, $"max |error| {max:F2}% is above {MaxAbsErrorPct}%");
    }

    [Fact]
    public void SummaryAgreesWithThePerRowErrors()
    {
        var o = Full.Value;
        var rows = o.GetProperty("runs").EnumerateArray().ToList();
        var errors = new List<double>();
        foreach (var r in rows)
        {
            double published = r.GetProperty("published_step_time_s").GetDouble();
            double predicted = r.GetProperty("predicted_step_time_s").GetDouble();
            double error = r.GetProperty("error_pct").GetDouble();
            Assert.True(published > 0, $"{r.GetProperty("id")}: published step time {published}");
            Assert.Equal((predicted - published) / published * 100, error, 9);
            errors.Add(Math.Abs(error));
        }
        Assert.Equal(errors.Average(), o.GetProperty("mape_pct").GetDouble(), 9);
        Assert.Equal(errors.Max(), o.GetProperty("max_abs_error_pct").GetDouble(), 9);
    }

    [Fact]
    public void EveryRowHasAPositivePredictedStepTime()
    {
        foreach (var r in Full.Value.GetProperty("runs").EnumerateArray())
        {
            double predicted = r.GetProperty("predicted_step_time_s").GetDouble();
            Assert.True(double.IsFinite(predicted) && predicted > 0, $"{r.GetProperty("id")}: predicted step time {predicted}");
            Assert.Equal(predicted, r.GetProperty("prediction").GetProperty("step_time_s").GetDouble());
        }
    }

    [Fact]
    public void RowIdsAreUniqueAndMatchTheCsv()
    {
        var csvIds = File.ReadAllLines(RunsCsv()).Skip(1).Where(l => l.Trim().Length > 0).Select(l => l.Split(',')[0].Trim()).ToList();
        var jsonIds = Full.Value.GetProperty("runs").EnumerateArray().Select(r => r.GetProperty("id").GetString()!).ToList();
        Assert.Equal(csvIds, jsonIds);
        Assert.Equal(jsonIds.Count, jsonIds.Distinct().Count());
    }

    [Fact]
    public void TheKorthikantiSubsetHasEightRowsAndItsOwnSummary()
    {
        var o = Full.Value;
        var k = o.GetProperty("runs").EnumerateArray()
            .Where(r => r.GetProperty("id").GetString()!.StartsWith("korthikanti", StringComparison.Ordinal))
            .Select(r => Math.Abs(r.GetProperty("error_pct").GetDouble()))
            .ToList();
        Assert.Equal(ExpectedKorthikantiRows, k.Count);
        Assert.Equal(k.Average(), o.GetProperty("korthikanti_mape_pct").GetDouble(), 9);
        Assert.Equal(k.Max(), o.GetProperty("korthikanti_max_abs_error_pct").GetDouble(), 9);
    }

    [Fact]
    public void TheDefaultRunsFileIsTheRepositoryCopy()
    {
        var byDefault = Validate();
        Assert.Equal(Full.Value.GetProperty("runs").GetArrayLength(), byDefault.GetProperty("runs").GetArrayLength());
        Assert.Equal(Full.Value.GetProperty("mape_pct").GetDouble(), byDefault.GetProperty("mape_pct").GetDouble());
    }

    [Fact]
    public void ASingleCopiedRowIsPricedAsInTheFullRun()
    {
        var lines = File.ReadAllLines(RunsCsv()).Where(l => l.Trim().Length > 0).ToList();
        string header = lines[0];
        var full = ById(Full.Value);
        string path = Path.Combine(Path.GetTempPath(), $"planner-validate-one-{Guid.NewGuid():N}.csv");
        try
        {
            foreach (var row in lines.Skip(1))
            {
                File.WriteAllText(path, header + "\n" + row + "\n");
                var one = Validate("--runs", path);
                var runs = one.GetProperty("runs");
                Assert.Equal(1, runs.GetArrayLength());
                var r = runs[0];
                string id = r.GetProperty("id").GetString()!;
                Assert.True(full.ContainsKey(id), $"row {id} is not in the full run");
                Assert.Equal(full[id].GetProperty("predicted_step_time_s").GetDouble(), r.GetProperty("predicted_step_time_s").GetDouble());
                Assert.Equal(full[id].GetRawText(), r.GetRawText());
                Assert.Equal(Math.Abs(r.GetProperty("error_pct").GetDouble()), one.GetProperty("mape_pct").GetDouble(), 12);
            }
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void RowOrderDoesNotChangeAnyPrice()
    {
        var lines = File.ReadAllLines(RunsCsv()).Where(l => l.Trim().Length > 0).ToList();
        var reversed = new[] { lines[0] }.Concat(lines.Skip(1).Reverse());
        string path = Path.Combine(Path.GetTempPath(), $"planner-validate-rev-{Guid.NewGuid():N}.csv");
        try
        {
            File.WriteAllLines(path, reversed);
            var rev = ById(Validate("--runs", path));
            var full = ById(Full.Value);
            Assert.Equal(full.Count, rev.Count);
            foreach (var (id, r) in full)
                Assert.Equal(r.GetRawText(), rev[id].GetRawText());
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void TableOutputEndsWithTheSummaryLines()
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = CliEntry.Run(["validate", "--runs", RunsCsv()], stdout, stderr);
        Assert.True(code == 0, $"exit code {code}; stderr: {stderr}");
        string text = stdout.ToString();
        Assert.Contains($"all {ExpectedRows} rows: MAPE", text);
        Assert.Contains($"({ExpectedKorthikantiRows} rows): MAPE", text);
    }
}
