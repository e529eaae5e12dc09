using System.Text.Json.Nodes;
using Planner.CostModel.Specs;
using Planner.Executor.Model;
using Xunit;

namespace Planner.Cli.Tests;

/// <summary>`run` trains a mixture-of-experts model on real text (the repository's README as byte tokens) in one process.</summary>
[Collection("executor")]
[Trait("Category", "Slow")] // a rank process: ./test --all
public sealed class MoeRunTests : IDisposable
{
    /// <summary>A Qwen2-MoE-shaped model: 4 blocks of 64, 4 heads over 2 key/value heads, the first block dense (ffn
    /// 128), the others 4 experts of 32 with the top 2 of them and a shared expert of 64.</summary>
    public const string Config = """
        {"model_type": "qwen2_moe", "num_hidden_layers": 4, "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
         "intermediate_size": 128, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
         "shared_expert_intermediate_size": 64, "first_k_dense_replace": 1, "vocab_size": 256, "max_position_embeddings": 64,
         "tie_word_embeddings": false}
        """;

    private readonly string _dir = Path.Combine(Path.GetTempPath(), $"planner-moe-{Guid.NewGuid():N}");

    public MoeRunTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void A_moe_model_learns_the_text_and_trains_the_predicted_parameters()
    {
        var text = File.ReadAllBytes(RepoFiles.Find("README.md"));
        string data = Path.Combine(_dir, "readme.bin");
        File.WriteAllBytes(data, text.SelectMany(b => new[] { b, (byte)0 }).ToArray());
        string model = Path.Combine(_dir, "moe.json");
        File.WriteAllText(model, Config);
        string plan = Path.Combine(_dir, "plan.json");
        File.WriteAllText(plan, $$"""
            {"model": "{{model}}", "cluster": "local-cpu", "tp": 1, "pp": 1, "dp": 1, "cp": 1, "zero": 0, "mbs": 4, "gbs": 8, "seq": 64,
             "vpp": 1, "recompute": "none", "sequence_parallel": false, "precision": "fp32"}
            """);
        var (code, output, error) = ExecutorParityTests.Planner(["run", "--plan", plan, "--data", data, "--steps", "30", "--lr", "0.003", "--json",
            "--history", Path.Combine(_dir, "history.csv")]);
        Assert.True(code == 0, error);
        var measured = JsonNode.Parse(output)!["measured"]!;
        var loss = measured["loss"]!.AsArray().Select(v => (double)v!).ToArray();
        double first = loss[0], last = loss[^5..].Average();
        Assert.True(last < first - 0.5, $"loss {first:F3} at the first step, {last:F3} over the last five");
        var predicted = JsonNode.Parse(output)!["predicted"]!;
        Assert.Equal((double)predicted["trainable_parameters"]!, (long)measured["trainable_parameters"]!);
        // The load-balancing loss of the 3 MoE blocks: each 1 when balanced, at most the number of experts (4).
        var aux = measured["aux_loss"]!.AsArray().Select(v => (double)v!).ToArray();
        Assert.Equal(loss.Length, aux.Length);
        Assert.All(aux, a => Assert.InRange(a, 3 * 0.99, 3 * 4.0));
        // The busiest expert's rows over the mean: at least 1, at most 4 experts / top 2 (an expert takes a token once).
        Assert.InRange((double)measured["moe_imbalance"]!, 1.0, 2.0);
    }

    [Fact]
    public void Recompute_reruns_no_routing_into_the_measured_spread()
    {
        File.WriteAllBytes(Path.Combine(_dir, "readme.bin"), File.ReadAllBytes(RepoFiles.Find("README.md")).SelectMany(b => new[] { b, (byte)0 }).ToArray());
        File.WriteAllText(Path.Combine(_dir, "moe.json"), Config);
        double Spread(string recompute)
        {
            string plan = Path.Combine(_dir, "plan.json");
            File.WriteAllText(plan, $$"""
                {"model": "{{Path.Combine(_dir, "moe.json")}}", "cluster": "local-cpu", "tp": 1, "pp": 1, "dp": 1, "cp": 1, "zero": 0, "mbs": 2,
                 "gbs": 4, "seq": 64, "vpp": 1, "sequence_parallel": false, "precision": "fp32", {{recompute}}}
                """);
            var (code, output, error) = ExecutorParityTests.Planner(["run", "--plan", plan, "--data", Path.Combine(_dir, "readme.bin"), "--steps", "3", "--json"]);
            Assert.True(code == 0, error);
            return (double)JsonNode.Parse(output)!["measured"]!["moe_imbalance"]!;
        }
        // The same routing either way; recomputing only the first block again in the backward must not weigh it twice.
        double plain = Spread("\"recompute\": \"none\"");
        Assert.InRange(plain, 1.0, 2.0);
        Assert.Equal(plain, Spread("\"recompute\": \"full\", \"recompute_layers\": 2"), 12);
    }

    [Fact]
    public void The_parameters_of_a_moe_block_have_the_shapes_of_the_cost_models_linears()
    {
        var m = ModelLoader.Parse(Config, "test", "moe");
        Assert.Equal(new[] { false, true, true, true }, m.Moe!.Pattern);
        for (int layer = 0; layer < m.Layers; layer++)
        {
            var specs = GptParameters.Block(m, layer).Where(s => s.Shape.Length == 2).ToDictionary(s => s.Name, s => s.Shape);
            var linears = BlockLinears.Of(m, m.KindOf(layer));
            Assert.Equal(linears.Sum(l => l.Copies), specs.Count);
            foreach (var l in linears)
                for (int copy = 0; copy < l.Copies; copy++)
                    Assert.Equal(new long[] { (long)l.Out, (long)l.In }, specs[$"layers.{layer}." + Executor(l, copy)]);
        }
    }

    /// <summary>The executor's weight of a cost-model linear.</summary>
    private static string Executor(Linear l, int copy) => l.Name switch
    {
        "q" or "k" or "v" or "o" => $"attn.{l.Name}.w",
        _ when l.Expert => $"mlp.experts.{copy}.{l.Name["expert_".Length..]}.w",
        _ => $"mlp.{l.Name}.w",
    };
}
