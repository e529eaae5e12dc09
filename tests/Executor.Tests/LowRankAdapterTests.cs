using Planner.CostModel.Plans;
using Planner.CostModel.Specs;
using Planner.Executor.Model;
using Planner.Executor.Parallelize;
using Planner.Executor.Torch;
using Xunit;

namespace Planner.Executor.Tests;

/// <summary>LoRA and QLoRA on the plain model, in one process: what trains, what stays frozen, and where the adapters start.</summary>
public class LowRankAdapterTests
{
    private static readonly ModelSpec Llama = ModelLoader.Parse(
        """{"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 48, "vocab_size": 64, "max_position_embeddings": 16, "hidden_act": "silu", "tie_word_embeddings": false}""",
        "llama.json", "tiny-llama");

    private static readonly ModelSpec Gpt = ModelLoader.Parse(
        """{"model_type": "gpt2", "n_layer": 2, "n_embd": 32, "n_head": 4, "n_positions": 16, "vocab_size": 64, "n_inner": null, "tie_word_embeddings": true}""",
        "gpt.json", "tiny-gpt");

    private static GptModel Build(ModelSpec m, FineTuning tuning)
    {
        var model = new GptModel(m, [0, 1], embedding: true, head: true, DType.Float32, seed: 5);
        LowRankAdapters.Apply(model, tuning);
        model.Place(Device.Cpu);
        return model;
    }

    private static (long[] Ids, long[] Targets) Batch(ModelSpec m)
    {
        var ids = Enumerable.Range(0, 2 * 8).Select(i => (long)(i * 7 % m.Vocab)).ToArray();
        var targets = Enumerable.Range(0, 2 * 8).Select(i => (long)(i * 11 % m.Vocab)).ToArray();
        return (ids, targets);
    }

    private static float Loss(GptModel model, ModelSpec m)
    {
        using var scope = DisposeScope.Begin();
        var (ids, targets) = Batch(m);
        var x = model.Embed(ids, 2);
        foreach (int layer in model.Layers)
            x = model.Block(layer, x);
        var loss = model.HeadLoss(x, targets);
        loss.Backward();
        return (float)loss.Item();
    }

    [Theory]
    [InlineData("llama", LoraTargets.All, 8)]
    [InlineData("gpt", LoraTargets.All, 4)]
    [InlineData("llama", LoraTargets.Q | LoraTargets.V, 4)]
    [InlineData("gpt", LoraTargets.Mlp, 2)]
    public void Adapters_start_as_the_base_and_only_they_train(string which, LoraTargets targets, int rank)
    {
        var m = which == "llama" ? Llama : Gpt;
        using var full = Build(m, FineTuning.Default);
        using var lora = Build(m, new FineTuning(FineTuneMethod.Lora, rank, targets));
        // B starts at zero: the adapted model computes what its base does.
        Assert.Equal(Loss(full, m), Loss(lora, m));

        // Trainable: exactly the adapters, rank·(in + out) for each targeted linear, counted from the base's shapes.
        long expected = 0;
        foreach (int layer in lora.Layers)
            foreach (var (name, target, _) in GptParameters.Linears(m, layer))
                if (targets.HasFlag(target))
                {
                    var shape = lora.SpecOf(name + ".w").Shape;
                    expected += rank * (shape[0] + shape[1]);
                }
        Assert.Equal(expected, lora.Trainable.Sum(p => p.Numel));
        Assert.All(lora.TrainableSpecs, s => Assert.Contains(".lora_", s.Name));

        // The frozen base gets no gradient; B gets one, A none while B is zero (its gradient passes through B).
        foreach (var spec in lora.Specs)
        {
            var grad = lora[spec.Name].Grad;
            if (spec.Name.EndsWith(".lora_b", StringComparison.Ordinal))
                Assert.True(grad!.Abs().Sum().Item() > 0, spec.Name);
            else if (spec.Name.EndsWith(".lora_a", StringComparison.Ordinal))
                Assert.Equal(0.0, grad!.Abs().Sum().Item());
            else
                Assert.Null(grad);
        }
    }

    [Theory]
    [InlineData("llama")]
    [InlineData("gpt")]
    public void Adapters_compute_what_their_merged_weights_do_forward_and_backward(string which)
    {
        // LoRA's defining identity: x·W + (x·A)·B = x·(W + B·A) (scale 1). With B set away from zero, the adapted model's
        // loss equals the loss of the full model whose weights are merged, and the adapters' gradients follow from the
        // merged weight's gradient G: dB = G·Aᵀ, dA = Bᵀ·G.
        var m = which == "llama" ? Llama : Gpt;
        using var lora = Build(m, new FineTuning(FineTuneMethod.Lora, 4, LoraTargets.All));
        using var merged = Build(m, FineTuning.Default);
        var linears = lora.Layers.SelectMany(l => GptParameters.Linears(m, l)).Select(l => l.Name).ToList();
        using (TorchRuntime.NoGrad())
            for (int i = 0; i < linears.Count; i++)
            {
                var b = lora[linears[i] + ".lora_b"];
                b.CopyFrom(Tensor.Normal(b.Shape, 0, 0.05, seed: (ulong)(100 + i)));
                merged[linears[i] + ".w"].CopyFrom(lora[linears[i] + ".w"] + b.MatMul(lora[linears[i] + ".lora_a"]));
            }
        float adapted = Loss(lora, m), whole = Loss(merged, m);
        Assert.True(Math.Abs(adapted - whole) < 1e-5, $"loss {adapted} with adapters, {whole} merged");
        foreach (var name in linears)
        {
            var g = merged[name + ".w"].Grad!;
            var a = lora[name + ".lora_a"];
            var b = lora[name + ".lora_b"];
            Close(g.MatMul(a.Transpose(0, 1)), lora[name + ".lora_b"].Grad!, name + ".lora_b");
            Close(b.Transpose(0, 1).MatMul(g), lora[name + ".lora_a"].Grad!, name + ".lora_a");
        }
    }

    /// <summary>QLoRA is LoRA over a base whose block linear weights are NF4: with those weights replaced by their
    /// dequantized values, the LoRA model computes the same loss and the same adapter gradients.</summary>
    [Fact]
    public void Qlora_stores_the_block_linears_in_nf4_and_computes_as_lora_over_their_dequantized_weights()
    {
        QloraIsLoraOverItsDequantizedBase(Llama);
        QloraIsLoraOverItsDequantizedBase(Gpt);
    }

    private static void QloraIsLoraOverItsDequantizedBase(ModelSpec m)
    {
        using var qlora = Build(m, new FineTuning(FineTuneMethod.Qlora, 4, LoraTargets.All));
        using var lora = Build(m, new FineTuning(FineTuneMethod.Lora, 4, LoraTargets.All));
        var weights = qlora.Layers.SelectMany(l => GptParameters.Linears(m, l)).Select(l => l.Name + ".w").ToHashSet();
        Assert.All(qlora.Specs, s => Assert.Equal(weights.Contains(s.Name), qlora.IsQuantized(s.Name)));
        Assert.Equal(lora.TrainableSpecs.Select(s => s.Name), qlora.TrainableSpecs.Select(s => s.Name));
        using (TorchRuntime.NoGrad())
            foreach (var name in weights)
            {
                using var whole = Nf4Tensor.Quantize(lora[name]);
                var values = qlora.Values(name);
                Assert.Equal(whole.Dequantize().ToFloatArray(), values);
                lora[name].CopyFrom(values);
            }
        // B away from zero, so that A's gradients are not zero either.
        using (TorchRuntime.NoGrad())
            foreach (var spec in lora.TrainableSpecs.Where(s => s.Name.EndsWith(".lora_b", StringComparison.Ordinal)))
            {
                var b = Tensor.Normal(spec.Shape, 0, 0.05, seed: GptParameters.SeedOf(spec.Name, 9));
                lora[spec.Name].CopyFrom(b);
                qlora[spec.Name].CopyFrom(b);
            }
        float quantized = Loss(qlora, m), dequantized = Loss(lora, m);
        Assert.True(Math.Abs(quantized - dequantized) < 1e-6, $"loss {quantized} over NF4, {dequantized} over its values");
        foreach (var spec in qlora.TrainableSpecs)
            Close(lora[spec.Name].Grad!, qlora[spec.Name].Grad!, spec.Name);
        // Stored: each NF4 weight's codes (half a byte a weight) and one fp32 absmax per 64 weights; the rest fp32.
        long nf4 = weights.Sum(w => qlora.SpecOf(w).Shape.Aggregate(1L, (a, b) => a * b) / 64 * (32 + 4));
        long dense = qlora.Specs.Where(s => !weights.Contains(s.Name)).Sum(s => 4 * s.Shape.Aggregate(1L, (a, b) => a * b));
        Assert.Equal(nf4 + dense, qlora.StorageBytes);
        Assert.Equal(lora.StorageBytes - 4 * weights.Sum(w => lora[w].Numel) + nf4, qlora.StorageBytes);
    }

    private static void Close(Tensor expected, Tensor actual, string name)
    {
        var e = expected.ToFloatArray();
        var x = actual.ToFloatArray();
        Assert.Equal(e.Length, x.Length);
        double scale = Math.Max(1e-6, e.Max(v => Math.Abs(v)));
        double worst = e.Select((v, i) => Math.Abs(v - x[i])).Max();
        Assert.True(worst <= 1e-4 * scale, $"{name}: gradient off by {worst:E2} (largest {scale:E2})");
    }

    [Fact]
    public void Adapters_split_as_their_base_under_tensor_parallelism()
    {
        // Column-parallel Q: B by rows, A whole; row-parallel O: A by columns, B whole.
        var q = GptParameters.Adapters("q", [32, 16], 4, columnParallel: true).ToList();
        var o = GptParameters.Adapters("o", [16, 32], 4, columnParallel: false).ToList();
        Assert.Equal([4L, 16], q[0].Shape);
        Assert.Equal(Shard.Replicated, q[0].Shard);
        Assert.Equal([32L, 4], q[1].Shape);
        Assert.Equal(Shard.Rows, q[1].Shard);
        Assert.Equal([4L, 32], o[0].Shape);
        Assert.Equal(Shard.Columns, o[0].Shard);
        Assert.Equal([16L, 4], o[1].Shape);
        Assert.Equal(Shard.Replicated, o[1].Shard);
    }
}
