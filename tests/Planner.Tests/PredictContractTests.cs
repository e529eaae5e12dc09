using System.Text.Json;
using CliEntry = global::Planner.Cli.Commands.Cli;
using Xunit;

namespace Planner.Cli.Tests;

/// <summary>CONTRACTS.md "predict": the keys of <c>predict --json</c> and the identities between them.</summary>
public sealed class PredictContractTests
{
    private static readonly string[] TopKeys =
        ["step_time_s", "tokens_per_s", "model_tflops_per_gpu", "hardware_tflops_per_gpu", "mfu", "peak_memory_gib", "fits", "breakdown", "plan"];

    private static readonly string[] BreakdownKeys = ["compute", "recompute", "tp_comm", "cp_comm", "ep_comm", "pp_comm", "dp_comm", "bubble", "optimizer"];

    private static readonly string[] PlanKeys =
        ["model", "cluster", "tp", "pp", "dp", "cp", "zero", "mbs", "gbs", "seq", "vpp", "recompute", "sequence_parallel", "precision"];

    /// <summary>Dense bf16 peak of the h100-sxm preset (topologies/gpus/h100-sxm.yaml, NVIDIA datasheet), TFLOP/s.</summary>
    private const double H100Bf16PeakTflops = 989.5;

    /// <summary>Valid plans: llama3-8b on dgx-h100 (128 GPUs) unless the flags say otherwise.</summary>
    public static TheoryData<string> Plans => new()
    {
        "--tp 2 --pp 2 --mbs 1 --gbs 128 --seq 8192 --recompute selective --sequence-parallel",
        "--tp 1 --pp 1 --mbs 1 --gbs 256 --seq 4096 --zero 3 --recompute full",
        "--tp 4 --pp 4 --vpp 2 --mbs 1 --gbs 256 --seq 8192 --recompute none --sequence-parallel --zero 1",
        "--tp 2 --pp 2 --cp 2 --mbs 1 --gbs 128 --seq 8192 --recompute selective --sequence-parallel",
        "--tp 8 --pp 2 --mbs 2 --gbs 256 --seq 2048 --precision fp8 --zero 1",
        "--tp 8 --pp 1 --mbs 1 --gbs 64 --seq 2048 --precision fp16 --recompute full --cluster dgx-a100-80g --model gpt3-175b --pp 8 --dp 2",
    };

    private static string[] Args(string flags, bool json = true)
    {
        // Later flags win, so a case can override the default model and cluster.
        var parts = flags.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        var map = new List<(string Key, string? Value)> { ("--model", "llama3-8b"), ("--cluster", "dgx-h100") };
        for (int i = 0; i < parts.Length; i++)
        {
            string key = parts[i];
            string? value = i + 1 < parts.Length && !parts[i + 1].StartsWith("--", StringComparison.Ordinal) ? parts[++i] : null;
            int at = map.FindIndex(e => e.Key == key);
            if (at >= 0)
                map[at] = (key, value);
            else
                map.Add((key, value));
        }
        var args = new List<string> { "predict" };
        foreach (var (k, v) in map)
        {
            args.Add(k);
            if (v is not null)
                args.Add(v);
        }
        if (json)
            args.Add("--json");
        return args.ToArray();
    }

    private static JsonElement PredictJson(string flags)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = CliEntry.Run(Args(flags), stdout, stderr);
        Assert.True(code == 0, $"predict {flags}: exit code {code}; stderr: {stderr}");
        Assert.Equal("", stderr.ToString());
        // JsonDocument.Parse rejects trailing content: stdout must be exactly one JSON value.
        using var doc = JsonDocument.Parse(stdout.ToString());
        Assert.Equal(JsonValueKind.Object, doc.RootElement.ValueKind);
        return doc.RootElement.Clone();
    }

    private static void AssertRelClose(double expected, double actual, double rel, string what) =>
        Assert.True(Math.Abs(expected - actual) <= rel * Math.Max(Math.Abs(expected), Math.Abs(actual)),
            $"{what}: expected {expected:R}, got {actual:R} (relative tolerance {rel})");

    [Theory]
    [MemberData(nameof(Plans))]
    public void JsonHasEveryContractKeyWithTheRightType(string flags)
    {
        var o = PredictJson(flags);
        foreach (var key in TopKeys)
            Assert.True(o.TryGetProperty(key, out _), $"missing key '{key}'");
        foreach (var key in new[] { "step_time_s", "tokens_per_s", "model_tflops_per_gpu", "hardware_tflops_per_gpu", "mfu", "peak_memory_gib" })
        {
            Assert.Equal(JsonValueKind.Number, o.GetProperty(key).ValueKind);
            double v = o.GetProperty(key).GetDouble();
            Assert.True(double.IsFinite(v) && v > 0, $"'{key}' is {v}; expected a finite positive number");
        }
        Assert.True(o.GetProperty("fits").ValueKind is JsonValueKind.True or JsonValueKind.False, "'fits' must be a boolean");

        var b = o.GetProperty("breakdown");
        Assert.Equal(JsonValueKind.Object, b.ValueKind);
        foreach (var key in BreakdownKeys)
        {
            Assert.True(b.TryGetProperty(key, out var v), $"missing key 'breakdown.{key}'");
            Assert.Equal(JsonValueKind.Number, v.ValueKind);
            Assert.True(double.IsFinite(v.GetDouble()) && v.GetDouble() >= 0, $"'breakdown.{key}' is {v.GetDouble()}; expected finite and not negative");
        }

        var p = o.GetProperty("plan");
        Assert.Equal(JsonValueKind.Object, p.ValueKind);
        foreach (var key in PlanKeys)
            Assert.True(p.TryGetProperty(key, out _), $"missing key 'plan.{key}'");
        foreach (var key in new[] { "tp", "pp", "dp", "cp", "zero", "mbs", "gbs", "seq", "vpp" })
            Assert.True(p.GetProperty(key).TryGetInt32(out _), $"'plan.{key}' must be a whole number");
        foreach (var key in new[] { "model", "cluster", "recompute", "precision" })
            Assert.Equal(JsonValueKind.String, p.GetProperty(key).ValueKind);
        Assert.True(p.GetProperty("sequence_parallel").ValueKind is JsonValueKind.True or JsonValueKind.False);
        Assert.True(p.GetProperty("recompute").GetString() is "none" or "selective" or "full");
        Assert.True(p.GetProperty("precision").GetString() is "bf16" or "fp16" or "fp32" or "fp8" or "tf32");
    }

    [Theory]
    [MemberData(nameof(Plans))]
    public void TokensPerSecondIsGbsTimesSeqOverStepTime(string flags)
    {
        var o = PredictJson(flags);
        var p = o.GetProperty("plan");
        double expected = (double)p.GetProperty("gbs").GetInt32() * p.GetProperty("seq").GetInt32() / o.GetProperty("step_time_s").GetDouble();
        AssertRelClose(expected, o.GetProperty("tokens_per_s").GetDouble(), 1e-9, "tokens_per_s");
    }

    [Theory]
    [MemberData(nameof(Plans))]
    public void BreakdownPartsSumToTheStepTime(string flags)
    {
        var o = PredictJson(flags);
        var b = o.GetProperty("breakdown");
        double sum = BreakdownKeys.Sum(k => b.GetProperty(k).GetDouble());
        AssertRelClose(o.GetProperty("step_time_s").GetDouble(), sum, 1e-6, "sum of breakdown parts");
        Assert.True(b.GetProperty("compute").GetDouble() > 0, "compute time must be positive");
    }

    [Theory]
    [MemberData(nameof(Plans))]
    public void HardwareFlopsCountRecomputeAndNeverFallBelowModelFlops(string flags)
    {
        var o = PredictJson(flags);
        double model = o.GetProperty("model_tflops_per_gpu").GetDouble();
        double hardware = o.GetProperty("hardware_tflops_per_gpu").GetDouble();
        Assert.True(hardware >= model * (1 - 1e-12), $"hardware {hardware} < model {model} TFLOP/s per GPU");
        if (o.GetProperty("plan").GetProperty("recompute").GetString() == "full")
            Assert.True(hardware > model * 1.1, $"full recompute re-runs the forward pass: hardware {hardware} should clearly exceed model {model}");
        // A rate per GPU cannot exceed the GPU's peak.
        Assert.True(o.GetProperty("mfu").GetDouble() < 1, $"mfu {o.GetProperty("mfu").GetDouble()} is not below 1");
    }

    [Theory]
    [MemberData(nameof(Plans))]
    public void PlanEchoesTheFlags(string flags)
    {
        var o = PredictJson(flags);
        var p = o.GetProperty("plan");
        var args = Args(flags, json: false);
        string? Flag(string name)
        {
            int i = Array.IndexOf(args, name);
            return i < 0 ? null : i + 1 < args.Length && !args[i + 1].StartsWith("--", StringComparison.Ordinal) ? args[i + 1] : "";
        }
        Assert.Equal(Flag("--model"), p.GetProperty("model").GetString());
        Assert.Equal(Flag("--cluster"), p.GetProperty("cluster").GetString());
        foreach (var key in new[] { "tp", "pp", "mbs", "gbs", "seq" })
            Assert.Equal(int.Parse(Flag("--" + key)!), p.GetProperty(key).GetInt32());
        Assert.Equal(int.Parse(Flag("--cp") ?? "1"), p.GetProperty("cp").GetInt32());
        Assert.Equal(int.Parse(Flag("--vpp") ?? "1"), p.GetProperty("vpp").GetInt32());
        Assert.Equal(int.Parse(Flag("--zero") ?? "0"), p.GetProperty("zero").GetInt32());
        Assert.Equal(Flag("--recompute") ?? "none", p.GetProperty("recompute").GetString());
        Assert.Equal(Flag("--precision") ?? "bf16", p.GetProperty("precision").GetString());
        Assert.Equal(Flag("--sequence-parallel") is not null, p.GetProperty("sequence_parallel").GetBoolean());
        if (Flag("--dp") is { } dp)
            Assert.Equal(int.Parse(dp), p.GetProperty("dp").GetInt32());
    }

    [Fact]
    public void MfuIsModelFlopsOverThePresetGpuPeak()
    {
        var o = PredictJson("--tp 2 --pp 2 --mbs 1 --gbs 128 --seq 8192 --recompute selective --sequence-parallel");
        double model = o.GetProperty("model_tflops_per_gpu").GetDouble();
        AssertRelClose(model * 1e12 / (H100Bf16PeakTflops * 1e12), o.GetProperty("mfu").GetDouble(), 1e-9, "mfu");
    }

    [Theory]
    [InlineData("bf16", 400.0)]
    [InlineData("fp16", 350.0)]
    [InlineData("fp8", 800.0)]
    public void MfuUsesThePeakOfTheChosenPrecision(string precision, double peak)
    {
        // An inline GPU with distinct peaks per precision: mfu must divide by the one of the plan's precision.
        string path = Path.Combine(Path.GetTempPath(), $"planner-predict-mfu-{Guid.NewGuid():N}.yaml");
        File.WriteAllText(path, """
            name: inline-test
            gpu:
              name: test-gpu
              peak_tflops: {fp32: 50, tf32: 200, fp16: 350, bf16: 400, fp8: 800}
              memory_gib: 80
              memory_bandwidth_gbs: 3000
            nodes: 2
            gpus_per_node: 8
            intra_node:
              bandwidth_gbs: 400
              latency_us: 3
            inter_node:
              bandwidth_gbs: 50
              latency_us: 5
            """);
        try
        {
            var o = PredictJson($"--cluster {path} --tp 4 --pp 2 --mbs 1 --gbs 32 --seq 4096 --sequence-parallel --precision {precision}");
            double model = o.GetProperty("model_tflops_per_gpu").GetDouble();
            AssertRelClose(model * 1e12 / (peak * 1e12), o.GetProperty("mfu").GetDouble(), 1e-9, $"mfu at {precision}");
            Assert.Equal(2, o.GetProperty("plan").GetProperty("dp").GetInt32()); // 16 / (4 · 2)
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Theory]
    [InlineData(1, 1, 1, 128)]
    [InlineData(2, 2, 1, 32)]
    [InlineData(8, 4, 1, 4)]
    [InlineData(2, 2, 2, 16)]
    [InlineData(8, 16, 1, 1)]
    public void DpDefaultsToGpusOverTpPpCp(int tp, int pp, int cp, int expectedDp)
    {
        // dgx-h100: 16 nodes x 8 GPUs = 128.
        Assert.Equal(128 / (tp * pp * cp), expectedDp);
        var o = PredictJson($"--tp {tp} --pp {pp} --cp {cp} --mbs 1 --gbs 256 --seq 8192 --recompute full");
        Assert.Equal(expectedDp, o.GetProperty("plan").GetProperty("dp").GetInt32());
    }

    [Fact]
    public void ExplicitDpOverridesTheDefault()
    {
        var o = PredictJson("--tp 2 --pp 2 --dp 8 --mbs 1 --gbs 128 --seq 8192");
        Assert.Equal(8, o.GetProperty("plan").GetProperty("dp").GetInt32());
    }

    [Fact]
    public void SeqDefaultsToTheModelMaximum()
    {
        // llama3-8b: max_position_embeddings 8192 (also the cap of the default).
        var o = PredictJson("--tp 2 --pp 2 --mbs 1 --gbs 128 --recompute full");
        Assert.Equal(8192, o.GetProperty("plan").GetProperty("seq").GetInt32());
    }

    [Fact]
    public void TableOutputExitsZeroAndShowsStepTime()
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = CliEntry.Run(Args("--tp 2 --pp 2 --mbs 1 --gbs 128 --seq 8192 --recompute selective --sequence-parallel", json: false), stdout, stderr);
        Assert.True(code == 0, $"exit code {code}; stderr: {stderr}");
        Assert.Equal("", stderr.ToString());
        string text = stdout.ToString();
        Assert.Contains("step time", text);
        Assert.Contains("llama3-8b", text);
        Assert.DoesNotContain("\u001b[", text); // no colour codes when writing to a non-terminal
    }

    [Fact]
    public void PredictIsDeterministic()
    {
        const string flags = "--tp 4 --pp 4 --vpp 2 --mbs 1 --gbs 256 --seq 8192 --sequence-parallel --zero 1";
        var a = PredictJson(flags);
        var b = PredictJson(flags);
        Assert.Equal(a.GetRawText(), b.GetRawText());
    }
}
