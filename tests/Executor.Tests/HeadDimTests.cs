using Planner.CostModel.Plans;
using Planner.CostModel.Specs;
using Planner.Executor.Model;
using Planner.Executor.Torch;
using Xunit;

namespace Planner.Executor.Tests;

/// <summary>
/// Attention heads whose width is not hidden / heads (a config's <c>head_dim</c>, as Qwen3 and Gemma have, or
/// hidden // heads when the heads do not divide the hidden size), in one process: the executor's weights have the shapes
/// the cost model prices and the model trains.
/// </summary>
public class HeadDimTests
{
    /// <summary>Hidden 64, 4 query heads and 2 key/value heads, each 32 wide (not 64 / 4 = 16).</summary>
    private static readonly ModelSpec Llama = ModelLoader.Parse(
        """{"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "intermediate_size": 96, "vocab_size": 64, "max_position_embeddings": 16, "hidden_act": "silu", "tie_word_embeddings": false}""",
        "llama.json", "llama-head-dim");

    /// <summary>GPT-2 at hidden 60 over 8 heads: each 60 // 8 = 7 wide (learned positions: odd is fine), with biases.</summary>
    private static readonly ModelSpec Gpt = ModelLoader.Load("gpt2") with
    {
        Layers = 2,
        Hidden = 60,
        Heads = 8,
        KvHeads = 8,
        Ffn = 240,
        Vocab = 64,
        MaxSeq = 16,
    };

    /// <summary>Hidden 50 over 6 query and 3 key/value heads, each 50 // 6 = 8 wide (no head_dim given; rotary).</summary>
    private static readonly ModelSpec Uneven = Llama with { Hidden = 50, Heads = 6, KvHeads = 3, HeadDimension = null };

    [Fact]
    public void Attention_weights_are_heads_times_head_dim_wide()
    {
        var block = GptParameters.Block(Llama, 0).ToDictionary(p => p.Name, p => p.Shape);
        Assert.Equal([128, 64], block["layers.0.attn.q.w"]);
        Assert.Equal([64, 64], block["layers.0.attn.k.w"]);
        Assert.Equal([64, 64], block["layers.0.attn.v.w"]);
        Assert.Equal([64, 128], block["layers.0.attn.o.w"]);
        var gpt = GptParameters.Block(Gpt, 1).ToDictionary(p => p.Name, p => p.Shape);
        Assert.Equal(7, Gpt.HeadDim);
        Assert.Equal([56, 60], gpt["layers.1.attn.q.w"]);
        Assert.Equal([56], gpt["layers.1.attn.q.b"]);
        Assert.Equal([56], gpt["layers.1.attn.k.b"]);
        Assert.Equal([60, 56], gpt["layers.1.attn.o.w"]);
        Assert.Equal([60], gpt["layers.1.attn.o.b"]);
    }

    [Theory]
    [InlineData("llama", 1)]
    [InlineData("llama", 2)]
    [InlineData("gpt", 2)]
    [InlineData("uneven", 3)]
    public void Block_linears_have_the_shapes_the_cost_model_prices_on_each_tp_rank(string which, int tp)
    {
        // LoRA's adapters are built from these weights and priced from BlockLinears: both must agree, whole and split.
        var m = Model(which);
        var specs = GptParameters.Block(m, 0).ToDictionary(p => p.Name);
        var priced = BlockLinears.Of(m, m.KindOf(0)).ToDictionary(l => l.Name);
        foreach (var (name, _, _) in GptParameters.Linears(m, 0))
        {
            var spec = specs[name + ".w"];
            string key = name.Split('.')[^1] switch { "fc1" => "up", var n => n };
            var linear = priced[key];
            Assert.Equal([(long)linear.Out, (long)linear.In], spec.Shape);
            Assert.Equal([(long)linear.LocalOut(tp, 1), (long)linear.LocalIn(tp, 1)], spec.ShardShape(tp));
        }
        long weights = specs.Values.Where(s => s.Name.EndsWith(".w", StringComparison.Ordinal) && s.Shape.Length == 2).Sum(s => s.Shape[0] * s.Shape[1]);
        Assert.Equal(BlockLinears.Of(m, m.KindOf(0)).Sum(l => l.In * l.Out), weights);
    }

    [Theory]
    [InlineData("llama")]
    [InlineData("gpt")]
    [InlineData("uneven")]
    public void The_model_trains_and_counts_the_parameters_the_cost_model_counts(string which)
    {
        var m = Model(which);
        Assert.Null(Training.RankTrainer.Unsupported(m, new ParallelPlan(1, 1, 1, 1, 0, 2, 2, 8, 1, Recompute.None, false, Precision.Fp32)));
        using var model = new GptModel(m, Enumerable.Range(0, m.Layers), embedding: true, head: true, DType.Float32, seed: 3);
        model.Place(Device.Cpu);
        Assert.Equal(m.TotalParams, model.Specs.Sum(s => s.Shape.Aggregate(1L, (a, b) => a * b)));
        using var adam = Optimizer.AdamW(model.Trainable, lr: 3e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0);
        var ids = Enumerable.Range(0, 2 * 8).Select(i => (long)(i * 7 % m.Vocab)).ToArray();
        var targets = Enumerable.Range(0, 2 * 8).Select(i => (long)(i * 11 % m.Vocab)).ToArray();
        var losses = new List<double>();
        for (int step = 0; step < 20; step++)
        {
            using var scope = DisposeScope.Begin();
            foreach (var p in model.Trainable)
                p.ZeroGrad();
            var x = model.Embed(ids, 2);
            foreach (int layer in model.Layers)
                x = model.Block(layer, x);
            var loss = model.HeadLoss(x, targets);
            loss.Backward();
            losses.Add(loss.Item());
            adam.Step();
        }
        Assert.All(losses, l => Assert.True(double.IsFinite(l)));
        // One batch over and over: the model memorises it.
        Assert.True(losses[^1] < 0.5 * losses[0], $"{which}: loss {losses[0]:F3} -> {losses[^1]:F3}");
    }

    private static ModelSpec Model(string which) => which switch
    {
        "llama" => Llama,
        "gpt" => Gpt,
        _ => Uneven,
    };
}
