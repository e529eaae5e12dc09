using System.Text.Json.Nodes;
using CliEntry = global::Planner.Cli.Commands.Cli;
using Xunit;

namespace Planner.Cli.Tests;

/// <summary>The whole-run flags (docs/run-level.md): predict's <c>training</c> object only with --tokens, a ramp-up
/// never shorter, and bad schedules exit 2 with one line naming the flag.</summary>
public sealed class TrainingFlagsTests
{
    private static readonly string[] Plan =
        ["predict", "--model", "llama2-7b", "--cluster", "dgx-a100-80g", "--tp", "2", "--pp", "2", "--dp", "32", "--mbs", "1", "--gbs", "512", "--seq", "4096", "--json"];

    private static (int Code, string Out, string Err) Run(params string[] extra)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = CliEntry.Run([.. Plan, .. extra], stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }

    [Fact]
    public void TrainingObjectOnlyWithTokens()
    {
        var (code, output, _) = Run();
        Assert.Equal(0, code);
        Assert.Null(JsonNode.Parse(output)!["training"]);
        var (code2, output2, err2) = Run("--tokens", "2e11", "--batch-rampup", "64,64,1000000");
        Assert.True(code2 == 0, err2);
        var t = JsonNode.Parse(output2)!["training"]!;
        var (_, plain, _) = Run("--tokens", "2e11");
        var p = JsonNode.Parse(plain)!["training"]!;
        Assert.True((double)t["days"]! >= (double)p["days"]!);
        // A100 presets give their spec-sheet 400 W; no carbon key: CO2 omitted, and said so.
        Assert.Equal(400, (double)p["inputs"]!["gpu_w"]!);
        Assert.Null(p["co2_t"]);
        Assert.Contains("co2_t", p["omitted"]!.ToJsonString());
    }

    [Theory]
    [InlineData("--batch-rampup", "64,64", "--batch-rampup")]
    [InlineData("--batch-rampup", "48,64,1000", "--batch-rampup")]
    [InlineData("--seq-warmup", "8192,100", "--seq-warmup")]
    [InlineData("--seq-warmup", "x,1", "--seq-warmup")]
    public void BadSchedulesAreExit2NamingTheFlag(string flag, string value, string named)
    {
        var (code, output, err) = Run("--tokens", "2e11", flag, value);
        Assert.Equal(2, code);
        Assert.Single(err.TrimEnd('\n').Split('\n'));
        Assert.Contains(named, err);
        Assert.Empty(output);
    }

    [Fact]
    public void BatchScheduleFileIsReadAndBadOnesAreExit2()
    {
        string file = Path.Combine(Path.GetTempPath(), $"planner-schedule-{Guid.NewGuid():N}.csv");
        try
        {
            File.WriteAllText(file, "tokens,gbs\n0,128\n1e9,512\n");
            var (code, output, err) = Run("--tokens", "2e11", "--batch-schedule", file);
            Assert.True(code == 0, err);
            var training = JsonNode.Parse(output)!["training"]!;
            Assert.Equal(file, (string?)training["inputs"]!["batch_schedule"]);
            Assert.Equal(2, training["schedule"]!.AsArray().Count);
            (code, _, err) = Run("--tokens", "2e11", "--batch-schedule", file, "--batch-rampup", "64,64,1000");
            Assert.Equal(2, code);
            Assert.Contains("--batch-schedule", err);
            File.WriteAllText(file, "tokens,gbs\n0,128\n1e9,256\n");
            (code, _, err) = Run("--tokens", "2e11", "--batch-schedule", file);
            Assert.Equal(2, code);
            Assert.StartsWith("planner: --batch-schedule: " + file, err);
            Assert.Single(err.TrimEnd('\n').Split('\n'));
        }
        finally
        {
            File.Delete(file);
        }
        var (missing, _, why) = Run("--tokens", "2e11", "--batch-schedule", file);
        Assert.Equal(2, missing);
        Assert.Contains("not found", why);
    }

    [Fact]
    public void ScheduleWithoutTokensIsExit2()
    {
        var (code, _, err) = Run("--batch-rampup", "64,64,1000");
        Assert.Equal(2, code);
        Assert.Contains("--tokens", err);
    }

    [Fact]
    public void PlanRanksWholeRunsByEnergy()
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = CliEntry.Run(["plan", "--model", "llama2-7b", "--cluster", "dgx-a100-80g", "--gbs", "512", "--seq", "4096", "--tokens", "2e11",
            "--top", "3", "--objective", "energy", "--json"], stdout, stderr);
        Assert.True(code == 0, stderr.ToString());
        var energies = JsonNode.Parse(stdout.ToString())!["plans"]!.AsArray().Select(p => (double)p!["training"]!["energy_mwh"]!).ToList();
        Assert.Equal(energies.Order(), energies);
        var bad = new StringWriter();
        Assert.Equal(2, CliEntry.Run(["plan", "--model", "llama2-7b", "--objective", "carbon"], new StringWriter(), bad));
        Assert.Contains("--objective carbon", bad.ToString());
    }

    [Fact]
    public void WhatIfSweepsCarbonAndMtbf()
    {
        string csv = Path.Combine(Path.GetTempPath(), $"planner-runlevel-{Guid.NewGuid():N}.csv");
        try
        {
            int code = CliEntry.Run(["whatif", "--model", "llama2-7b", "--cluster", "dgx-a100-80g", "--gbs", "512", "--seq", "4096", "--tp", "2", "--pp", "2",
                "--mbs", "1", "--sweep", "carbon=0.1,0.4", "--sweep", "mtbf=100,50000", "--tokens", "2e11", "--csv", csv], new StringWriter(), new StringWriter());
            Assert.Equal(0, code);
            var (_, rows, _) = WhatIfTests.ReadCsv(csv);
            double D(int i, string k) => double.Parse(rows[i][k], System.Globalization.CultureInfo.InvariantCulture);
            // carbon 0.1 then 0.4 (outer), mtbf 100 then 50000 (inner): four times the carbon, four times the tonnes.
            Assert.Equal(4 * D(0, "co2_t"), D(2, "co2_t"), 6);
            Assert.True(D(0, "expected_failures") > D(1, "expected_failures"));
            // The preset gives no checkpoint storage: Llama 3's, per GPU; a node MTBF of 100 h loses more of the run.
            Assert.True(D(0, "goodput") < D(1, "goodput"));
        }
        finally
        {
            File.Delete(csv);
        }
    }

    [Fact]
    public void WhatIfSweepsPowerCap()
    {
        string csv = Path.Combine(Path.GetTempPath(), $"planner-powercap-{Guid.NewGuid():N}.csv");
        try
        {
            int code = CliEntry.Run(["whatif", "--model", "llama2-7b", "--cluster", "dgx-h100", "--gbs", "512", "--seq", "4096", "--tp", "2", "--pp", "2",
                "--mbs", "1", "--sweep", "power_cap=700,500,300", "--tokens", "2e11", "--csv", csv], new StringWriter(), new StringWriter());
            Assert.Equal(0, code);
            var (_, rows, _) = WhatIfTests.ReadCsv(csv);
            double D(int i, string k) => double.Parse(rows[i][k], System.Globalization.CultureInfo.InvariantCulture);
            // Lower caps: slower steps, longer runs, less energy (the dynamic power falls faster than the clock).
            Assert.True(D(0, "step_time_s") < D(1, "step_time_s") && D(1, "step_time_s") < D(2, "step_time_s"));
            Assert.True(D(0, "training_days") < D(2, "training_days"));
            Assert.True(D(0, "energy_mwh") > D(2, "energy_mwh"));
        }
        finally
        {
            File.Delete(csv);
        }
    }

    [Fact]
    public void WhatIfPointWhoseRunCannotBePricedIsANoteNotAnAbortedCsv()
    {
        string csv = Path.Combine(Path.GetTempPath(), $"planner-mtbf-{Guid.NewGuid():N}.csv");
        try
        {
            var stderr = new StringWriter();
            int code = CliEntry.Run(["whatif", "--model", "llama2-7b", "--cluster", "dgx-h100", "--gbs", "512", "--seq", "4096", "--tp", "2", "--pp", "2",
                "--mbs", "1", "--sweep", "mtbf=100000,0.001", "--tokens", "2e11", "--csv", csv], new StringWriter(), stderr);
            Assert.True(code == 0, stderr.ToString());
            var (_, rows, _) = WhatIfTests.ReadCsv(csv);
            Assert.Equal(2, rows.Count);
            Assert.NotEqual("", rows[0]["training_days"]);
            // Failures every fraction of a second: no run can finish; the row says so and its run cells stay empty.
            Assert.Equal("", rows[1]["training_days"]);
            Assert.Contains("mtbf_hours_per_node", rows[1]["note"]);
            Assert.NotEqual("", rows[1]["step_time_s"]);
        }
        finally
        {
            File.Delete(csv);
        }
    }

    [Fact]
    public void PlotShowsEachPointsEnergyWithABudgetOnly()
    {
        var cluster = Planner.CostModel.Specs.ClusterLoader.Load("dgx-h100");
        var baseline = new Planner.Cli.WhatIf.Scenario(Planner.CostModel.Specs.ModelLoader.Load("llama2-7b"), cluster, 512, 4096,
            new Planner.Cli.WhatIf.PlanConstraint(Tp: 2, Pp: 2, Mbs: 1), Planner.CostModel.Pricing.PricingOptions.Default);
        var axes = Planner.Cli.WhatIf.Sweep.Parse(["power_cap=700,400"]);
        var rows = Planner.Cli.WhatIf.WhatIfRunner.WithRuns(Planner.Cli.WhatIf.WhatIfRunner.Run(baseline, Planner.Cli.WhatIf.Sweep.Grid(axes)), 2e11);
        string with = Planner.Cli.WhatIf.WhatIfPlot.Script("out.png", "t", axes, rows, 2e11);
        string without = Planner.Cli.WhatIf.WhatIfPlot.Script("out.png", "t", axes, rows.Select(r => r with { Run = null }).ToList());
        Assert.Contains("axes x1y2", with);
        Assert.DoesNotContain("axes x1y2", without);
        // Each point's data line ends with the energy the CSV reports for it.
        foreach (var r in rows)
        {
            double mwh = r.Run!.EnergyMwh!.Value;
            Assert.Contains(" " + mwh.ToString("R", System.Globalization.CultureInfo.InvariantCulture) + "\n", with);
        }
    }

    [Fact]
    public void PowerCapBelowTheWaitingDrawIsExit2NamingTheKey()
    {
        var stderr = new StringWriter();
        int code = CliEntry.Run(["whatif", "--model", "llama2-7b", "--cluster", "dgx-h100", "--gbs", "512", "--seq", "4096", "--tp", "2", "--pp", "2",
            "--mbs", "1", "--sweep", "power_cap=100", "--csv", Path.Combine(Path.GetTempPath(), $"planner-powercap-{Guid.NewGuid():N}.csv")], new StringWriter(), stderr);
        Assert.Equal(2, code);
        Assert.Contains("power.cap_w", stderr.ToString());
        Assert.Single(stderr.ToString().Trim().Split('\n'));
    }
}
