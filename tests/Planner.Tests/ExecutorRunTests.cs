using System.Text.Json.Nodes;
using Xunit;

namespace Planner.Cli.Tests;

/// <summary>`planner run` end to end: training on a real token file, mixed precision, failures and the JSON report.</summary>
[Collection("executor")]
public sealed class ExecutorRunTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), $"planner-run-{Guid.NewGuid():N}");

    public ExecutorRunTests()
    {
        Directory.CreateDirectory(_dir);
        File.WriteAllText(Path.Combine(_dir, "config.json"),
            """{"model_type": "gpt2", "n_layer": 2, "n_embd": 64, "n_head": 4, "n_positions": 64, "vocab_size": 256, "n_inner": null, "tie_word_embeddings": true}""");
    }

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    private string Plan(string name, int tp, int pp, int dp, int zero, string precision, int mbs = 4, int gbs = 16)
    {
        string path = Path.Combine(_dir, name + ".json");
        File.WriteAllText(path, $$"""
            {"model": "{{Path.Combine(_dir, "config.json")}}", "cluster": "local-cpu", "tp": {{tp}}, "pp": {{pp}}, "dp": {{dp}}, "cp": 1,
             "zero": {{zero}}, "mbs": {{mbs}}, "gbs": {{gbs}}, "seq": 32, "vpp": 1, "recompute": "none", "sequence_parallel": false, "precision": "{{precision}}"}
            """);
        return path;
    }

    /// <summary>Bytes of a text the machine has (the GPL, from Debian's base-files) as uint16 tokens.</summary>
    private string TokenFile()
    {
        var text = File.ReadAllBytes("/usr/share/common-licenses/GPL-3");
        var tokens = new byte[text.Length * 2];
        for (int i = 0; i < text.Length; i++)
            tokens[2 * i] = text[i];
        string path = Path.Combine(_dir, "gpl.bin");
        File.WriteAllBytes(path, tokens);
        return path;
    }

    private string History => Path.Combine(_dir, "history.csv");

    private static double[] Losses(string output) =>
        JsonNode.Parse(output)!["measured"]!["loss"]!.AsArray().Select(v => (double)v!).ToArray();

    [Fact]
    public void Loss_falls_on_a_real_token_file()
    {
        var (code, output, error) = ExecutorParityTests.Planner(["run", "--plan", Plan("data", 1, 1, 2, 1, "fp32"), "--steps", "40",
            "--lr", "3e-3", "--data", TokenFile(), "--json", "--history", History]);
        Assert.True(code == 0, error);
        var loss = Losses(output);
        Assert.Equal(40, loss.Length);
        // Byte-level text starts near ln(256) = 5.5; forty steps must learn the byte statistics.
        Assert.InRange(loss[0], 5.0, 6.0);
        Assert.True(loss[^1] < loss[0] - 1.5, $"loss went from {loss[0]:F3} to {loss[^1]:F3}");
    }

    [Fact]
    public void Bf16_training_runs_and_learns()
    {
        var (code, output, error) = ExecutorParityTests.Planner(["run", "--plan", Plan("bf16", 2, 1, 1, 0, "bf16"), "--steps", "20",
            "--lr", "3e-3", "--data", TokenFile(), "--json", "--history", History]);
        Assert.True(code == 0, error);
        var loss = Losses(output);
        Assert.All(loss, l => Assert.True(double.IsFinite(l)));
        Assert.True(loss[^1] < loss[0] - 0.5, $"loss went from {loss[0]:F3} to {loss[^1]:F3}");
    }

    [Fact]
    public void The_report_has_the_contract_keys_and_a_prediction()
    {
        var (code, output, error) = ExecutorParityTests.Planner(["run", "--plan", Plan("report", 1, 2, 1, 0, "fp32"), "--steps", "3", "--json", "--history", History]);
        Assert.True(File.Exists(History), "the run was not appended to the history");
        Assert.True(code == 0, error);
        var o = JsonNode.Parse(output)!;
        foreach (var key in new[] { "step_time_s", "tokens_per_s", "peak_memory_gib", "loss" })
            Assert.NotNull(o["measured"]![key]);
        Assert.NotNull(o["predicted"]!["step_time_s"]);
        Assert.NotNull(o["error_pct"]!["step_time"]);
        Assert.Equal(2, (int)o["plan"]!["pp"]!);
        double step = (double)o["measured"]!["step_time_s"]!;
        Assert.Equal(16.0 * 32 / step, (double)o["measured"]!["tokens_per_s"]!, 6);
    }

    [Fact]
    public void A_failing_rank_is_named_and_ends_the_run()
    {
        // Token 300 is outside the 256-token vocabulary: every rank that reads it fails.
        string bad = Path.Combine(_dir, "bad.bin");
        File.WriteAllBytes(bad, Enumerable.Range(0, 4000).SelectMany(_ => new byte[] { 0x2C, 0x01 }).ToArray());
        var (code, _, error) = ExecutorParityTests.Planner(["run", "--plan", Plan("bad", 1, 1, 2, 0, "fp32"), "--steps", "2", "--data", bad]);
        Assert.Equal(1, code);
        Assert.Matches(@"rank \d failed: .*outside the vocabulary", error);
        Assert.Single(error.Trim().Split('\n'));
    }

    [Fact]
    public void Bad_run_input_is_exit_2()
    {
        var (code, _, error) = ExecutorParityTests.Planner(["run", "--plan", Path.Combine(_dir, "missing.json")]);
        Assert.Equal(2, code);
        Assert.Contains("missing.json", error);
        (code, _, error) = ExecutorParityTests.Planner(["run", "--plan", Plan("steps", 1, 1, 1, 0, "fp32"), "--steps", "0"]);
        Assert.Equal(2, code);
        Assert.Contains("--steps", error);
        // Optimizer offload needs a host link the CPU ranks do not have.
        string offload = Plan("offload", 1, 1, 2, 1, "fp32");
        File.WriteAllText(offload, File.ReadAllText(offload).TrimEnd().TrimEnd('}') + ", \"optimizer_offload\": 0.5}");
        (code, _, error) = ExecutorParityTests.Planner(["run", "--plan", offload, "--steps", "2"]);
        Assert.Equal(2, code);
        Assert.Contains("'optimizer_offload'", error);
        Assert.Single(error.Trim().Split('\n'));
    }
}
