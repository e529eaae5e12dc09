using System.Text.Json.Nodes;
using Xunit;

namespace Planner.Cli.Tests;

/// <summary>`run` trains LoRA on real text: the repository's README as byte tokens.</summary>
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

    [Fact]
    public void Adafactor_at_its_default_learning_rate_lowers_the_loss()
    {
        // Adafactor's steps are relative to each weight's RMS (0.02 at initialization here): at AdamW's 1e-3 they are
        // too small to show in a few steps, so run's default for it is PyTorch's 1e-2.
        var (data, plan) = Inputs(", \"optimizer\": \"adafactor\"");
        var (code, output, error) = ExecutorParityTests.Planner(["run", "--plan", plan, "--data", data, "--steps", "12", "--json",
            "--history", Path.Combine(_dir, "history.csv")]);
        Assert.True(code == 0, error);
        var loss = JsonNode.Parse(output)!["measured"]!["loss"]!.AsArray().Select(v => (double)v!).ToArray();
        Assert.True(loss[^3..].Average() < loss[0] - 0.1, $"loss {loss[0]:F3} at the first step, {loss[^3..].Average():F3} over the last three");
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
