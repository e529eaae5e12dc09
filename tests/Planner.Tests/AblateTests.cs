using System.Globalization;
using Planner.Cli.WhatIf;
using Planner.CostModel.Plans;
using Planner.CostModel.Specs;
using CliEntry = global::Planner.Cli.Commands.Cli;
using Xunit;

namespace Planner.Cli.Tests;

/// <summary><c>ablate</c>: the technique table, cumulative from plain fp32 data parallelism.</summary>
public sealed class AblateTests : IDisposable
{
    private static readonly string[] Techniques =
    [
        "baseline (fp32, no recompute, plain DP)",
        "+ mixed precision (bf16)",
        "+ activation recompute (full)",
        "+ tensor parallelism",
        "+ pipeline parallelism",
        "+ ZeRO-1",
        "+ ZeRO-2",
        "+ ZeRO-3",
        "+ sequence parallelism",
    ];

    private readonly string _dir = Path.Combine(Path.GetTempPath(), "planner-ablate-tests-" + Guid.NewGuid().ToString("N"));

    public AblateTests() => Directory.CreateDirectory(_dir);

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    private static (int Code, string Stdout, string Stderr) Run(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = CliEntry.Run(args, stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }

    // Llama-2 7B on one DGX A100 80GB node: nothing fits until tensor parallelism.
    private static readonly Lazy<IReadOnlyList<AblationRow>> Llama = new(() =>
        Ablation.Run(ModelLoader.Load("llama2-7b"), ClusterLoader.Load("dgx-a100-80g-1node"), 64, 4096));

    // Llama-2 13B on two DGX A100 40GB nodes: memory is tight through the ZeRO rows.
    private static readonly Lazy<IReadOnlyList<AblationRow>> Tight = new(() =>
        Ablation.Run(ModelLoader.Load("llama2-13b"), ClusterLoader.Load("dgx-a100-40g") with { Nodes = 2 }, 128, 4096));

    [Fact]
    public void RowsComeInTheTechniqueOrder()
    {
        Assert.Equal(Techniques, Llama.Value.Select(r => r.Technique).ToArray());
        Assert.Equal(Techniques, Tight.Value.Select(r => r.Technique).ToArray());
    }

    [Fact]
    public void BaselineIsPlainFp32DataParallelism()
    {
        var p = Llama.Value[0].Plan!;
        Assert.Equal((1, 1, 8, 0, Precision.Fp32, Recompute.None, false), (p.Tp, p.Pp, p.Dp, p.Zero, p.Precision, p.Recompute, p.SequenceParallel));
    }

    [Fact]
    public void EachRowKeepsTheChoicesAboveIt()
    {
        foreach (var rows in new[] { Llama.Value, Tight.Value })
        {
            var plans = rows.Select(r => r.Plan!).ToList();
            Assert.All(plans.Skip(1), p => Assert.Equal(Precision.Bf16, p.Precision));
            Assert.All(plans.Skip(2), p => Assert.Equal(Recompute.Full, p.Recompute));
            Assert.All(plans.Skip(4), p => Assert.Equal(plans[3].Tp, p.Tp));
            Assert.All(plans.Skip(5), p => Assert.Equal((plans[4].Pp, plans[4].Vpp), (p.Pp, p.Vpp)));
            Assert.Equal([1, 2, 3, 3], plans.Skip(5).Select(p => p.Zero).ToArray());
            Assert.All(plans, p => Assert.Equal(plans[0].Mbs, p.Mbs));
            Assert.True(plans[^1].SequenceParallel == plans[^1].Tp > 1);
            Assert.True(plans[3].Tp <= 8, "tensor parallelism must stay within a node");
        }
    }

    [Fact]
    public void EachTechniqueIsNoWorseWhereItShouldHelp()
    {
        foreach (var rows in new[] { Llama.Value, Tight.Value })
        {
            var p = rows.Select(r => r.Prediction!).ToList();
            // Mixed precision: faster and no more memory than fp32.
            Assert.True(p[1].StepTimeSeconds < p[0].StepTimeSeconds, "bf16 is not faster than fp32");
            Assert.True(p[1].PeakMemoryGib <= p[0].PeakMemoryGib);
            // Recompute: less memory.
            Assert.True(p[2].PeakMemoryGib <= p[1].PeakMemoryGib, "full recompute did not lower the memory");
            // TP and PP: the degree 1 is among the choices, so a row fits when the row above did, and is then no slower;
            // when the row above did not fit, it needs no more memory.
            for (int i = 3; i <= 4; i++)
            {
                if (p[i - 1].Fits)
                    Assert.True(p[i].Fits && p[i].StepTimeSeconds <= p[i - 1].StepTimeSeconds, $"{rows[i].Technique} is slower than the row above");
                else
                    Assert.True(p[i].PeakMemoryGib <= p[i - 1].PeakMemoryGib, $"{rows[i].Technique} needs more memory than the row above");
            }
            // ZeRO stages and sequence parallelism: memory never rises.
            for (int i = 5; i <= 8; i++)
                Assert.True(p[i].PeakMemoryGib <= p[i - 1].PeakMemoryGib + 1e-9, $"{rows[i].Technique}: {p[i].PeakMemoryGib} GiB after {p[i - 1].PeakMemoryGib}");
            Assert.True(p[7].PeakMemoryGib <= p[6].PeakMemoryGib, "ZeRO-3 needs more memory than ZeRO-2");
            Assert.True(p[^1].Fits, "the last row does not fit");
        }
    }

    [Fact]
    public void NothingFitsWithoutModelParallelismForA7BModel()
    {
        var rows = Llama.Value;
        Assert.All(rows.Take(3), r => Assert.False(r.Fits));
        Assert.All(rows.Take(3), r => Assert.Contains("needs", r.Note));
        Assert.True(rows[3].Fits);
        Assert.True(rows[3].Plan!.Tp > 1);
    }

    [Fact]
    public void ABatchThatDoesNotSplitOverAllGpusLeavesEarlyRowsWithoutAPlan()
    {
        // gbs 4 cannot split over 8 data-parallel replicas; TP 2 makes 4 replicas.
        var rows = Ablation.Run(ModelLoader.Load("gpt2"), ClusterLoader.Load("dgx-a100-80g-1node"), 4, 1024);
        Assert.Null(rows[0].Plan);
        Assert.Contains("--gbs", rows[0].Note);
        Assert.NotNull(rows[^1].Plan);
        Assert.True(rows[^1].Fits);
    }

    [Fact]
    public void TheCommandPrintsTheTableAndWritesTheCsv()
    {
        string csv = Path.Combine(_dir, "ablate.csv");
        var (code, stdout, stderr) = Run("ablate", "--model", "llama2-7b", "--cluster", "dgx-a100-80g-1node", "--gbs", "64", "--seq", "4096",
            "--tokens", "1e11", "--csv", csv);
        Assert.True(code == 0, stderr);
        Assert.Equal("", stderr);
        int at = 0;
        foreach (var t in Techniques)
        {
            int i = stdout.IndexOf(t, at, StringComparison.Ordinal);
            Assert.True(i >= 0, $"'{t}' missing or out of order in:\n{stdout}");
            at = i + t.Length;
        }
        Assert.Contains("token budget 100B", stdout);

        var (header, rows, _) = WhatIfTests.ReadCsv(csv);
        Assert.Equal(
        [
            "technique", "plan", "tp", "pp", "dp", "cp", "zero", "mbs", "gbs", "seq", "vpp", "recompute", "sequence_parallel", "precision",
            "step_time_s", "tokens_per_s", "time_to_train_days", "cost_to_train", "peak_memory_gib", "gpu_memory_gib", "fits", "note",
            "training_days", "gpu_hours", "energy_mwh", "co2_t", "goodput",
        ], header);
        Assert.Equal(Techniques, rows.Select(r => r["technique"]).ToArray());
        Assert.Equal(("1", "1", "0", "fp32", "none"), (rows[0]["tp"], rows[0]["pp"], rows[0]["zero"], rows[0]["precision"], rows[0]["recompute"]));
        foreach (var r in rows)
        {
            double tps = double.Parse(r["tokens_per_s"], CultureInfo.InvariantCulture);
            Assert.Equal(1e11 / tps / 86400, double.Parse(r["time_to_train_days"], CultureInfo.InvariantCulture), 9);
        }
        // With --tokens the table shows each technique's energy, as the CSV's energy_mwh rounds it.
        Assert.Contains("MWh", stdout);
        foreach (var r in rows.Where(r => r["energy_mwh"] != ""))
        {
            double mwh = double.Parse(r["energy_mwh"], CultureInfo.InvariantCulture);
            Assert.Contains(mwh >= 100 ? $"{mwh:N0}" : $"{mwh:F1}", stdout);
        }
    }

    [Fact]
    public void AnExistingCsvIsNotOverwrittenWithoutForce()
    {
        string csv = Path.Combine(_dir, "exists.csv");
        File.WriteAllText(csv, "keep me\n");
        string[] args = ["ablate", "--model", "gpt2", "--cluster", "dgx-a100-80g-1node", "--gbs", "64", "--csv", csv];
        var (code, _, stderr) = Run(args);
        Assert.Equal(2, code);
        Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("--csv", stderr);
        Assert.Equal("keep me\n", File.ReadAllText(csv));
        var (forced, _, forcedErr) = Run([.. args, "--force"]);
        Assert.True(forced == 0, forcedErr);
        Assert.StartsWith("technique,plan,", File.ReadAllText(csv));
    }

    [Fact]
    public void AClusterOfSeveralGpuKindsIsExitTwo()
    {
        string yaml = Path.Combine(_dir, "mixed.yaml");
        File.WriteAllText(yaml, "name: mixed\ngroups:\n  - {gpu: a100-80g, nodes: 1}\n  - {gpu: h100-sxm, nodes: 1}\ngpus_per_node: 8\n" +
                                "intra_node: {bandwidth_gbs: 300, latency_us: 3}\ninter_node: {bandwidth_gbs: 25, latency_us: 6}\n");
        var (code, _, stderr) = Run("ablate", "--model", "gpt2", "--cluster", yaml, "--gbs", "64");
        Assert.Equal(2, code);
        Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("--cluster", stderr);
    }

    [Theory]
    [InlineData("--gbs", "0")]
    [InlineData("--tokens", "-5")]
    [InlineData("--seq", "0")]
    [InlineData("--model", "no-such-model")]
    public void BadInputIsExitTwoNamingTheFlag(string flag, string value)
    {
        var args = new Dictionary<string, string> { ["--model"] = "gpt2", ["--cluster"] = "dgx-a100-80g-1node", ["--gbs"] = "64", [flag] = value };
        var (code, _, stderr) = Run(["ablate", .. args.SelectMany(kv => new[] { kv.Key, kv.Value })]);
        Assert.Equal(2, code);
        Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains(flag, stderr);
    }
}
