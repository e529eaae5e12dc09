using System.Text.Json.Nodes;
using Xunit;

namespace Planner.Cli.Tests;

/// <summary>`run` fine-tunes on real text (the repository's README as byte tokens): LoRA, LoRA with Adafactor, Sophia.</summary>
[Collection("executor")]
[Trait("Category", "Slow")] // a rank process: ./test --all
public sealed class LoraRunTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), $"planner-lora-{Guid.NewGuid():N}");

    public LoraRunTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>The README as byte tokens (vocabulary 256), as the flat uint16 file run reads, and a plan of a 2-block GPT
    /// with the given extra keys.</summary>
    private (string Data, string Plan) Inputs(string keys)
    {
        var text = File.ReadAllBytes(RepoFiles.Find("README.md"));
        string data = Path.Combine(_dir, "readme.bin");
        File.WriteAllBytes(data, text.SelectMany(b => new[] { b, (byte)0 }).ToArray());
        string model = Path.Combine(_dir, "gpt.json");
        File.WriteAllText(model, """{"model_type": "gpt2", "n_layer": 2, "n_embd": 64, "n_head": 4, "n_positions": 64, "vocab_size": 256, "n_inner": null, "tie_word_embeddings": true}""");
        string plan = Path.Combine(_dir, "plan.json");
        File.WriteAllText(plan, $$"""
            {"model": "{{model}}", "cluster": "local-cpu", "tp": 1, "pp": 1, "dp": 1, "cp": 1, "zero": 0, "mbs": 4, "gbs": 8, "seq": 64,
             "vpp": 1, "recompute": "none", "sequence_parallel": false, "precision": "fp32"{{keys}}}
            """);
        return (data, plan);
    }

    private double[] Losses(string keys, params string[] extra)
    {
        var (data, plan) = Inputs(keys);
        var (code, output, error) = ExecutorParityTests.Planner(["run", "--plan", plan, "--data", data, "--json",
            "--history", Path.Combine(_dir, "history.csv"), .. extra]);
        Assert.True(code == 0, error);
        return JsonNode.Parse(output)!["measured"]!["loss"]!.AsArray().Select(v => (double)v!).ToArray();
    }

    [Fact]
    public void Lora_with_adafactor_at_the_default_learning_rate_lowers_the_loss()
    {
        // Without the relative step's parameter scale, the zero-initialized B moves at lr (with it, at lr·1e-3).
        var loss = Losses(", \"finetune\": \"lora\", \"lora_rank\": 8, \"optimizer\": \"adafactor\"", "--steps", "20");
        Assert.True(loss[^5..].Average() < loss[0] - 0.1, $"loss {loss[0]:F3} at the first step, {loss[^5..].Average():F3} over the last five");
    }

    [Fact]
    public void Sophia_under_loss_scaling_trains_as_without_it()
    {
        // Its curvature pass's gradients are unscaled as a step's (a power of two: exactly); steps 0 and 10 refresh it.
        var plain = Losses(", \"optimizer\": \"sophia\"", "--steps", "12");
        var scaled = Losses(", \"optimizer\": \"sophia\"", "--steps", "12", "--loss-scale", "1024");
        for (int s = 0; s < plain.Length; s++)
            Assert.True(Math.Abs(plain[s] - scaled[s]) <= 1e-6, $"step {s}: {scaled[s]:R} scaled, {plain[s]:R} not");
        Assert.True(plain[^3..].Average() < plain[0] - 0.1, $"loss {plain[0]:F3} at the first step, {plain[^3..].Average():F3} over the last three");
    }

    [Fact]
    public void Lora_on_a_text_file_lowers_the_loss_and_trains_the_predicted_parameters()
    {
        var (data, plan) = Inputs(", \"finetune\": \"lora\", \"lora_rank\": 8");
        var (code, output, error) = ExecutorParityTests.Planner(["run", "--plan", plan, "--data", data, "--steps", "40", "--lr", "0.01", "--json",
            "--history", Path.Combine(_dir, "history.csv")]);
        Assert.True(code == 0, error);
        var report = JsonNode.Parse(output)!;
        var loss = report["measured"]!["loss"]!.AsArray().Select(v => (double)v!).ToArray();
        // From about ln 256 (a random base) down: the adapters alone learn the text's bytes.
        double first = loss[0], last = loss[^10..].Average();
        Assert.True(last < first - 0.15, $"loss {first:F3} at the first step, {last:F3} over the last ten");
        // Rank 8 on Q, K, V, O, fc1 and fc2 of both blocks: 8·(in + out) each.
        long expected = 2 * 8 * (4 * (64 + 64) + (64 + 256) + (256 + 64));
        Assert.Equal(expected, (long)report["measured"]!["trainable_parameters"]!);
        Assert.Equal(expected, (double)report["predicted"]!["trainable_parameters"]!);
    }
}
