using System.Globalization;
using System.Text.Json;
using CsvHelper;
using Planner.Cli.Search;
using Planner.Cli.WhatIf;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;
using CliEntry = global::Planner.Cli.Commands.Cli;
using Xunit;

namespace Planner.Cli.Tests;

/// <summary>Runs only when gnuplot is on PATH; otherwise the test is skipped with the reason.</summary>
public sealed class GnuplotFactAttribute : FactAttribute
{
    /// <summary>Sets <see cref="FactAttribute.Skip"/> when gnuplot is missing.</summary>
    public GnuplotFactAttribute()
    {
        if (WhatIfPlot.FindGnuplot() is null)
            Skip = "gnuplot not found on PATH (apt-get install gnuplot-nox): the --plot figure cannot be drawn here";
    }
}

/// <summary><c>whatif</c>: grids of sweeps, one CSV row per point, re-planned or priced with a fixed plan.</summary>
public sealed class WhatIfTests : IDisposable
{
    // Small and fast: GPT-2 124M and Llama-2 7B on one DGX A100 80GB node (8 GPUs).
    private const string Node = "dgx-a100-80g-1node";

    private readonly string _dir = Path.Combine(Path.GetTempPath(), "planner-whatif-tests-" + Guid.NewGuid().ToString("N"));

    public WhatIfTests() => Directory.CreateDirectory(_dir);

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    private string File(string name) => Path.Combine(_dir, name);

    private static (int Code, string Stdout, string Stderr) Run(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = CliEntry.Run(args, stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }

    /// <summary>Runs whatif into a fresh CSV and returns its header and rows.</summary>
    private (string[] Header, List<Dictionary<string, string>> Rows, List<string[]> Raw) WhatIf(params string[] args)
    {
        string csv = File($"w{Guid.NewGuid():N}.csv");
        var (code, stdout, stderr) = Run(["whatif", .. args, "--csv", csv]);
        Assert.True(code == 0, $"whatif exit code {code}; stderr: {stderr}");
        Assert.Equal("", stderr);
        Assert.Contains("points written to", stdout);
        return ReadCsv(csv);
    }

    internal static (string[] Header, List<Dictionary<string, string>> Rows, List<string[]> Raw) ReadCsv(string path)
    {
        using var reader = new CsvReader(new StreamReader(path), CultureInfo.InvariantCulture);
        Assert.True(reader.Read(), "empty CSV");
        reader.ReadHeader();
        var header = reader.HeaderRecord!;
        var rows = new List<Dictionary<string, string>>();
        var raw = new List<string[]>();
        while (reader.Read())
        {
            var cells = header.Select((_, i) => reader.GetField(i) ?? "").ToArray();
            raw.Add(cells);
            rows.Add(header.Select((h, i) => (h, cells[i])).ToDictionary(x => x.h, x => x.Item2));
        }
        return (header, rows, raw);
    }

    private static double D(string s) => double.Parse(s, CultureInfo.InvariantCulture);

    private static void AssertOneLineNaming(string stderr, string flag)
    {
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, $"expected one line on stderr, got: {stderr}");
        Assert.Contains(flag, lines[0]);
        Assert.DoesNotContain("   at ", stderr);
    }

    [Fact]
    public void GridHasOneRowPerPointOfTheCartesianProduct()
    {
        var (_, rows, _) = WhatIf("--model", "gpt2", "--cluster", Node, "--gbs", "64",
            "--sweep", "nodes=1,2", "--sweep", "zero=0,1,2", "--sweep", "intra_gbs=150,300");
        Assert.Equal(2 * 3 * 2, rows.Count);
    }

    [Fact]
    public void HeaderIsExactSweptKeysFirstAndStable()
    {
        string[] expected =
        [
            "nodes", "latency",
            "model", "cluster", "gpus", "tp", "pp", "dp", "cp", "ep", "etp", "zero", "mbs", "gbs", "seq", "vpp", "recompute", "optimizer_offload", "sequence_parallel", "precision", "stages",
            "step_time_s", "tokens_per_s", "mfu", "peak_memory_gib", "fits",
            "compute_s", "recompute_s", "tp_comm_s", "cp_comm_s", "ep_comm_s", "pp_comm_s", "dp_comm_s", "bubble_s", "optimizer_s",
            "gpu_memory_gib", "mem_weights_gib", "mem_gradients_gib", "mem_optimizer_gib", "mem_activations_gib", "mem_other_gib", "mem_host_gib",
            "note",
        ];
        var args = new[] { "--model", "gpt2", "--cluster", Node, "--gbs", "64", "--sweep", "nodes=1,2", "--sweep", "latency=3,30" };
        var (first, _, _) = WhatIf(args);
        var (second, _, _) = WhatIf(args);
        Assert.Equal(expected, first);
        Assert.Equal(first, second);
        Assert.Equal(first, WhatIfCsv.Header(["nodes", "latency"], tokens: false, cost: false));
    }

    [Fact]
    public void ASweptPlanKeyMovesToTheFrontInsteadOfRepeating()
    {
        var (header, _, _) = WhatIf("--model", "gpt2", "--cluster", Node, "--gbs", "64", "--sweep", "zero=0,1", "--sweep", "nodes=1");
        Assert.Equal(["zero", "nodes", "model", "cluster", "gpus", "tp", "pp", "dp", "cp", "ep", "etp", "mbs"], header.Take(12).ToArray());
        Assert.Equal(header.Length, header.Distinct().Count());
    }

    [Fact]
    public void TokenBudgetAddsTimeAndCostColumnsBeforeNote()
    {
        string yaml = File("priced.yaml");
        System.IO.File.WriteAllText(yaml, "name: priced\ngpu: a100-80g\nnodes: 1\ngpus_per_node: 8\n" +
                                          "intra_node: {bandwidth_gbs: 300, latency_us: 3}\ninter_node: {bandwidth_gbs: 25, latency_us: 6}\nprice_per_gpu_hour: 2\n");
        var (header, rows, _) = WhatIf("--model", "gpt2", "--cluster", yaml, "--gbs", "64", "--sweep", "nodes=1,2", "--tokens", "1e9");
        Assert.Equal(["time_to_train_days", "cost_to_train", "note"], header[^3..]);
        foreach (var r in rows)
        {
            double days = D(r["time_to_train_days"]);
            Assert.Equal(1e9 / D(r["tokens_per_s"]) / 86400, days, 9);
            Assert.Equal(days * 24 * int.Parse(r["gpus"], CultureInfo.InvariantCulture) * 2, D(r["cost_to_train"]), 6);
        }
        // No price: the time column only.
        var (plain, _, _) = WhatIf("--model", "gpt2", "--cluster", Node, "--gbs", "64", "--sweep", "nodes=1", "--tokens", "1e9");
        Assert.Equal(["time_to_train_days", "note"], plain[^2..]);
    }

    [Fact]
    public void SweptColumnsEchoTheSweepInGridOrder()
    {
        var (_, _, raw) = WhatIf("--model", "gpt2", "--cluster", Node, "--gbs", "64",
            "--sweep", "gpu=a100-80g,h100-sxm", "--sweep", "inter_gbs=12.5,50", "--sweep", "recompute=full,none");
        var expected = new List<string[]>();
        foreach (var g in new[] { "a100-80g", "h100-sxm" })
            foreach (var b in new[] { "12.5", "50" })
                foreach (var rc in new[] { "full", "none" })
                    expected.Add([g, b, rc]);
        Assert.Equal(expected.Count, raw.Count);
        for (int i = 0; i < raw.Count; i++)
            Assert.Equal(expected[i], raw[i][..3]);
    }

    [Fact]
    public void ReplannedPointsPriceWhatTheSweepAsks()
    {
        var (_, rows, _) = WhatIf("--model", "gpt2", "--cluster", Node, "--gbs", "64",
            "--sweep", "nodes=1,2", "--sweep", "gbs=32,128", "--sweep", "seq=512,1024", "--sweep", "precision=bf16,fp32");
        foreach (var r in rows)
        {
            Assert.Equal("true", r["fits"]);
            Assert.Equal(int.Parse(r["nodes"], CultureInfo.InvariantCulture) * 8, int.Parse(r["gpus"], CultureInfo.InvariantCulture));
            double tokens = D(r["gbs"]) * D(r["seq"]) / D(r["step_time_s"]);
            Assert.Equal(tokens, D(r["tokens_per_s"]), tokens * 1e-9);
        }
    }

    [Fact]
    public void MoreNodesNeverLowerTokensPerSecondWhenReplanned()
    {
        var (_, rows, _) = WhatIf("--model", "llama2-7b", "--cluster", Node, "--gbs", "64", "--seq", "4096", "--sweep", "nodes=1,2,4,8");
        var tps = rows.Select(r => D(r["tokens_per_s"])).ToList();
        Assert.All(rows, r => Assert.Equal("true", r["fits"]));
        for (int i = 1; i < tps.Count; i++)
            Assert.True(tps[i] >= tps[i - 1], $"tokens/s fell from {tps[i - 1]} to {tps[i]} going to {rows[i]["nodes"]} nodes");
    }

    [Fact]
    public void AFixedPlanPricesAsPredictDoes()
    {
        var (_, rows, _) = WhatIf("--model", "llama2-7b", "--cluster", Node, "--seq", "4096", "--gbs", "64",
            "--tp", "2", "--pp", "2", "--mbs", "1", "--zero", "1", "--recompute", "full", "--sequence-parallel",
            "--sweep", "gbs=32,64", "--sweep", "vpp=1,2");
        Assert.Equal(4, rows.Count);
        foreach (var r in rows)
        {
            var stdout = new StringWriter();
            var stderr = new StringWriter();
            int code = CliEntry.Run(["predict", "--json", "--model", "llama2-7b", "--cluster", Node, "--seq", "4096", "--gbs", r["gbs"],
                "--tp", "2", "--pp", "2", "--mbs", "1", "--zero", "1", "--recompute", "full", "--sequence-parallel", "--vpp", r["vpp"]], stdout, stderr);
            Assert.True(code == 0, stderr.ToString());
            using var doc = JsonDocument.Parse(stdout.ToString());
            var o = doc.RootElement;
            Assert.Equal(o.GetProperty("step_time_s").GetDouble(), D(r["step_time_s"]));
            Assert.Equal(o.GetProperty("tokens_per_s").GetDouble(), D(r["tokens_per_s"]));
            Assert.Equal(o.GetProperty("peak_memory_gib").GetDouble(), D(r["peak_memory_gib"]));
            Assert.Equal(o.GetProperty("mfu").GetDouble(), D(r["mfu"]));
            Assert.Equal(o.GetProperty("breakdown").GetProperty("bubble").GetDouble(), D(r["bubble_s"]));
            Assert.Equal(o.GetProperty("fits").GetBoolean() ? "true" : "false", r["fits"]);
            var plan = o.GetProperty("plan");
            foreach (var key in new[] { "tp", "pp", "dp", "cp", "zero", "mbs" })
                Assert.Equal(plan.GetProperty(key).GetInt32().ToString(CultureInfo.InvariantCulture), r[key]);
            Assert.Equal("full", r["recompute"]);
            Assert.Equal("true", r["sequence_parallel"]);
        }
    }

    [Fact]
    public void AnInvalidFixedPlanPointIsARowWithANoteNotAnAbort()
    {
        // Llama-2 7B has 32 heads: TP 3 cannot shard them; 8 GPUs do not split into tp·pp = 3.
        var (_, rows, _) = WhatIf("--model", "llama2-7b", "--cluster", Node, "--seq", "4096", "--gbs", "64",
            "--pp", "1", "--mbs", "1", "--dp", "2", "--sweep", "tp=2,3,4");
        Assert.Equal(3, rows.Count);
        Assert.Equal("false", rows[1]["fits"]);
        Assert.Contains("--tp", rows[1]["note"]);
        Assert.Equal("", rows[1]["step_time_s"]);
        Assert.NotEqual("", rows[0]["step_time_s"]);
        Assert.NotEqual("", rows[2]["step_time_s"]);
    }

    [Fact]
    public void APlanThatDoesNotFitIsPricedAndMarked()
    {
        var (_, rows, _) = WhatIf("--model", "llama2-7b", "--cluster", Node, "--seq", "4096", "--gbs", "64",
            "--tp", "1", "--pp", "1", "--mbs", "8", "--sweep", "zero=0,3");
        Assert.Equal("false", rows[0]["fits"]);
        Assert.Contains("does not fit", rows[0]["note"]);
        Assert.True(D(rows[0]["peak_memory_gib"]) > 80);
    }

    [Fact]
    public void AnInfeasibleReplannedPointHasANote()
    {
        // GPT-3 175B on one node: its bf16 weights and gradients alone (4 bytes per parameter) are 88 GB per GPU under
        // ZeRO-3, beyond 40 GB even with the optimizer state offloaded to the host.
        var (_, rows, _) = WhatIf("--model", "gpt3-175b", "--cluster", Node, "--seq", "2048", "--gbs", "16", "--sweep", "gpu=a100-40g,a100-80g");
        Assert.Equal("false", rows[0]["fits"]);
        Assert.Contains("no plan", rows[0]["note"]);
        Assert.Equal("", rows[0]["tp"]);
    }

    [Theory]
    [InlineData("latency", true, true)]
    [InlineData("intra_latency", true, false)]
    [InlineData("inter_latency", false, true)]
    public void ALatencySweepMovesPointToPointTransfersOnAProfiledClusterToo(string key, bool intra, bool inter)
    {
        // A profiled cluster's links carry a point-to-point latency of their own; the swept latency replaces it.
        var cluster = ClusterLoader.Load(Node);
        cluster = cluster with { IntraNode = cluster.IntraNode with { P2pLatencyUs = 30 }, InterNode = cluster.InterNode with { P2pLatencyUs = 30 } };
        var baseline = new Scenario(ModelLoader.Load("llama2-7b"), cluster, 64, 4096, PlanConstraint.None, Planner.CostModel.Pricing.PricingOptions.Default);
        var swept = Sweep.Apply(baseline, key, 250.0).Cluster;
        Assert.Equal(intra ? 250e-6 : 30e-6, swept.IntraNode.P2pLatencySeconds, 12);
        Assert.Equal(inter ? 250e-6 : 30e-6, swept.InterNode.P2pLatencySeconds, 12);
    }

    [Fact]
    public void APlanKeySweepConstrainsTheSearch()
    {
        var model = ModelLoader.Load("llama2-7b");
        var cluster = ClusterLoader.Load(Node);
        var baseline = new Scenario(model, cluster, 64, 4096, PlanConstraint.None, Planner.CostModel.Pricing.PricingOptions.Default);
        var axes = Sweep.Parse(["tp=1,2,4", "zero=0,1,3", "recompute=selective,full"]);
        var rows = WhatIfRunner.Run(baseline, Sweep.Grid(axes));
        Assert.Equal(18, rows.Count);
        foreach (var r in rows)
        {
            Assert.NotNull(r.Plan);
            var want = r.Scenario.Plan;
            Assert.Equal(want.Tp, r.Plan!.Tp);
            Assert.Equal(want.Recompute, r.Plan.Recompute);
            Assert.Equal(want.Zero, r.Plan.Zero);
        }
    }

    [Fact]
    public void TheConstrainedSearchIsExact()
    {
        var model = ModelLoader.Load("llama2-7b");
        var cluster = ClusterLoader.Load(Node);
        var req = new SearchRequest(model, cluster, 64, false, [4096], [Precision.Bf16], Top: 1);

        // No constraint: the same plan as the search, and at least as fast as pricing every fitting even split.
        var (free, all) = ConstrainedSearch.Best(req, PlanConstraint.None);
        var fitting = PlanSearch.Fitting(req);
        Assert.True(all >= fitting.Count);
        Assert.True(free!.StepTimeSeconds <= fitting.Min(c => Pricer.Price(model, cluster, c.Plan).StepTimeSeconds) * (1 + 1e-12));
        Assert.Equal(PlanSearch.Run(req).Plans[0].StepTimeSeconds, free.StepTimeSeconds);

        // A constraint: the best of pricing every matching fitting candidate.
        var constraint = new PlanConstraint(Tp: 2, Zero: 1);
        var (best, matching) = ConstrainedSearch.Best(req, constraint);
        var brute = PlanSearch.Fitting(req).Select(c => c.Plan).Where(constraint.Matches)
            .Select(p => Pricer.Price(model, cluster, p)).ToList();
        Assert.True(matching >= brute.Count);
        Assert.True(best!.StepTimeSeconds <= brute.Min(p => p.StepTimeSeconds) * (1 + 1e-12));
        if (best.Plan.Stages is null)
            Assert.Equal(brute.Min(p => p.StepTimeSeconds), best.StepTimeSeconds, 9);
        Assert.True(constraint.Matches(best.Plan));

        // Selective recompute (left out of the search under flash attention) prices as no recompute.
        var (selective, _) = ConstrainedSearch.Best(req, new PlanConstraint(Recompute: Recompute.Selective));
        var (none, _) = ConstrainedSearch.Best(req, new PlanConstraint(Recompute: Recompute.None));
        Assert.Equal(Recompute.Selective, selective!.Plan.Recompute);
        Assert.Equal(none!.StepTimeSeconds, selective.StepTimeSeconds);
    }

    [Theory]
    [InlineData("colour=1,2")]
    [InlineData("nodes")]
    [InlineData("nodes=")]
    [InlineData("nodes=1,,2")]
    [InlineData("nodes=0")]
    [InlineData("nodes=two")]
    [InlineData("nodes=1,1")]
    [InlineData("zero=4")]
    [InlineData("recompute=some")]
    [InlineData("precision=fp4")]
    [InlineData("latency=-1")]
    [InlineData("gpu=a100-90g")]
    [InlineData("model=no-such-model")]
    [InlineData("sequence_parallel=maybe")]
    public void ABadSweepIsExitTwoNamingSweep(string sweep)
    {
        string csv = File("bad.csv");
        var (code, stdout, stderr) = Run("whatif", "--model", "gpt2", "--cluster", Node, "--gbs", "64", "--sweep", sweep, "--csv", csv);
        Assert.Equal(2, code);
        AssertOneLineNaming(stderr, "--sweep");
        Assert.Equal("", stdout);
        Assert.False(System.IO.File.Exists(csv), "a CSV was written for a bad sweep");
    }

    [Fact]
    public void NodesThatDoNotTileTheNvlinkDomainAreExitTwo()
    {
        // A GB200 NVL72 rack is a domain of 72 GPUs: nodes of 16 cannot make it up.
        string csv = File("domain.csv");
        var (code, stdout, stderr) = Run("whatif", "--model", "qwen3-30b-a3b", "--cluster", "gb200-nvl72", "--gbs", "64",
            "--sweep", "gpus_per_node=4,16", "--csv", csv);
        Assert.Equal(2, code);
        AssertOneLineNaming(stderr, "--sweep");
        Assert.Contains("nvlink_domain", stderr);
        Assert.Equal("", stdout);
        Assert.False(System.IO.File.Exists(csv), "a CSV was written for a bad sweep");
    }

    [Fact]
    public void TheSameKeySweptTwiceIsExitTwo()
    {
        var (code, _, stderr) = Run("whatif", "--model", "gpt2", "--cluster", Node, "--gbs", "64",
            "--sweep", "nodes=1", "--sweep", "nodes=2", "--csv", File("twice.csv"));
        Assert.Equal(2, code);
        AssertOneLineNaming(stderr, "--sweep");
    }

    [Fact]
    public void AnExistingCsvIsNotOverwrittenWithoutForce()
    {
        string csv = File("exists.csv");
        System.IO.File.WriteAllText(csv, "keep me\n");
        string[] args = ["whatif", "--model", "gpt2", "--cluster", Node, "--gbs", "64", "--sweep", "nodes=1", "--csv", csv];
        var (code, _, stderr) = Run(args);
        Assert.Equal(2, code);
        AssertOneLineNaming(stderr, "--csv");
        Assert.Equal("keep me\n", System.IO.File.ReadAllText(csv));

        var (forced, _, forcedErr) = Run([.. args, "--force"]);
        Assert.True(forced == 0, forcedErr);
        Assert.StartsWith("nodes,model,", System.IO.File.ReadAllText(csv));
    }

    [Fact]
    public void AnExistingPlotIsNotOverwrittenWithoutForce()
    {
        string png = File("exists.png");
        System.IO.File.WriteAllText(png, "keep me");
        string csv = File("plot-exists.csv");
        var (code, _, stderr) = Run("whatif", "--model", "gpt2", "--cluster", Node, "--gbs", "64", "--sweep", "nodes=1", "--csv", csv, "--plot", png);
        Assert.Equal(2, code);
        AssertOneLineNaming(stderr, "--plot");
        Assert.Equal("keep me", System.IO.File.ReadAllText(png));
        Assert.False(System.IO.File.Exists(csv), "the CSV was written although the plot was refused");
    }

    private string MixedCluster()
    {
        string yaml = File("mixed.yaml");
        System.IO.File.WriteAllText(yaml, "name: mixed\ngroups:\n  - {gpu: a100-80g, nodes: 1}\n  - {gpu: h100-sxm, nodes: 1}\ngpus_per_node: 8\n" +
                                          "intra_node: {bandwidth_gbs: 300, latency_us: 3}\ninter_node: {bandwidth_gbs: 25, latency_us: 6}\n");
        return yaml;
    }

    [Fact]
    public void OnAClusterOfSeveralGpuKindsNodesCannotBeSweptButTheGpuCan()
    {
        string yaml = MixedCluster();
        var (code, _, stderr) = Run("whatif", "--model", "gpt2", "--cluster", yaml, "--gbs", "64", "--sweep", "nodes=1,2", "--csv", File("mixed-nodes.csv"));
        Assert.Equal(2, code);
        AssertOneLineNaming(stderr, "--sweep");

        // A swept GPU replaces every group's: 16 GPUs of one kind.
        var (_, rows, _) = WhatIf("--model", "gpt2", "--cluster", yaml, "--gbs", "64", "--sweep", "gpu=a100-80g,h100-sxm");
        Assert.All(rows, r => Assert.Equal("16", r["gpus"]));
        Assert.All(rows, r => Assert.Equal("true", r["fits"]));
        Assert.True(D(rows[1]["tokens_per_s"]) > D(rows[0]["tokens_per_s"]));
    }

    [GnuplotFact]
    public void PlotIsAPng()
    {
        string png = File("figure.png");
        string csv = File("figure.csv");
        var (code, stdout, stderr) = Run("whatif", "--model", "llama2-7b", "--cluster", Node, "--seq", "4096", "--gbs", "64",
            "--sweep", "nodes=1,2", "--sweep", "tp=1,2", "--csv", csv, "--plot", png);
        Assert.True(code == 0, stderr);
        Assert.Contains(png, stdout);
        byte[] bytes = System.IO.File.ReadAllBytes(png);
        Assert.True(bytes.Length > 10_000, $"the PNG has only {bytes.Length} bytes");
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A }, bytes[..8]);
        Assert.Empty(Directory.GetFiles(_dir, "*.tmp.png"));
    }

    [Fact]
    public void PlotWithoutGnuplotIsExitTwoWithTheInstallHint()
    {
        string? path = Environment.GetEnvironmentVariable("PATH");
        try
        {
            Environment.SetEnvironmentVariable("PATH", _dir); // a directory without gnuplot
            var (code, _, stderr) = Run("whatif", "--model", "gpt2", "--cluster", Node, "--gbs", "64", "--sweep", "nodes=1",
                "--csv", File("nognuplot.csv"), "--plot", File("nognuplot.png"));
            Assert.Equal(2, code);
            Assert.Equal("planner: --plot: gnuplot not found (apt-get install gnuplot-nox)", stderr.Trim());
        }
        finally
        {
            Environment.SetEnvironmentVariable("PATH", path);
        }
    }
}
