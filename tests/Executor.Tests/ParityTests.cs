using System.Diagnostics;
using System.Text.Json;
using Planner.CostModel.Specs;
using Planner.Executor.Model;
using Planner.Executor.Optim;
using Planner.Executor.Torch;
using Xunit;

namespace Planner.Executor.Tests;

/// <summary>
/// The binding against PyTorch: reference/reference.py (Debian's python3-torch) computes outputs and gradients of a
/// GeLU MLP (and one AdamW step), a causal attention block, a SwiGLU block with cross entropy and the executor's own
/// Llama block with heads not hidden / heads wide on deterministic inputs; the C# results must match to 1e-6.
/// </summary>
public sealed class ParityTests : IClassFixture<ParityTests.Reference>
{
    private const double Tolerance = 1e-6;
    private readonly JsonElement _ref;

    public ParityTests(Reference reference) => _ref = reference.Json;

    /// <summary>Runs the Python script once for the class.</summary>
    public sealed class Reference
    {
        public JsonElement Json { get; }

        public Reference()
        {
            string script = Path.Combine(AppContext.BaseDirectory, "reference", "reference.py");
            string output = Path.Combine(Path.GetTempPath(), $"planner-parity-{Guid.NewGuid():N}.json");
            // Debian's interpreter: the one python3-torch installs into (another python3 may come first on PATH).
            var psi = new ProcessStartInfo("/usr/bin/python3", [script, output]) { RedirectStandardError = true, UseShellExecute = false };
            using var p = Process.Start(psi)!;
            string err = p.StandardError.ReadToEnd();
            p.WaitForExit();
            Assert.True(p.ExitCode == 0, $"reference.py failed (is python3-torch installed?): {err}");
            Json = JsonDocument.Parse(File.ReadAllText(output)).RootElement.Clone();
            File.Delete(output);
        }
    }

    /// <summary>value(i) = sin(a·i + b)·c in double, rounded to float32: the script's inputs.</summary>
    internal static Tensor Det(long[] shape, double a, double b, double c = 1.0, bool grad = true)
    {
        long n = shape.Aggregate(1L, (x, y) => x * y);
        var data = new float[n];
        for (int i = 0; i < n; i++)
            data[i] = (float)(Math.Sin(a * i + b) * c);
        var t = Tensor.From(data, shape);
        t.RequiresGrad = grad;
        return t;
    }

    private void Same(string block, string key, Tensor? actual)
    {
        Assert.NotNull(actual);
        var expected = _ref.GetProperty(block).GetProperty(key).EnumerateArray().Select(e => e.GetDouble()).ToArray();
        var got = actual!.ToDoubleArray();
        Assert.Equal(expected.Length, got.Length);
        double worst = 0;
        for (int i = 0; i < got.Length; i++)
            worst = Math.Max(worst, Math.Abs(got[i] - expected[i]));
        Assert.True(worst <= Tolerance, $"{block}.{key}: largest difference {worst:E2} above {Tolerance:E0}");
    }

    private void SameScalar(string block, string key, Tensor actual) =>
        Assert.Equal(_ref.GetProperty(block).GetProperty(key).GetDouble(), actual.Item(), 6);

    [Fact]
    public void Mlp_outputs_gradients_and_an_adamw_step_match_pytorch()
    {
        using var scope = DisposeScope.Begin();
        var x = Det([4, 8], 0.37, 0.1);
        var w1 = Det([16, 8], 0.11, 0.2, 0.5);
        var b1 = Det([16], 0.23, 0.3, 0.1);
        var w2 = Det([8, 16], 0.07, 0.4, 0.5);
        var b2 = Det([8], 0.19, 0.5, 0.1);
        var y = F.Linear(F.Linear(x, w1, b1).Gelu(), w2, b2);
        var loss = (y * y).Mean();
        loss.Backward();
        Same("mlp", "y", y);
        SameScalar("mlp", "loss", loss);
        Same("mlp", "grad_x", x.Grad);
        Same("mlp", "grad_w1", w1.Grad);
        Same("mlp", "grad_b1", b1.Grad);
        Same("mlp", "grad_w2", w2.Grad);
        Same("mlp", "grad_b2", b2.Grad);
        using var opt = Optimizer.AdamW([w1, b1, w2, b2], lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01);
        opt.Step();
        Same("mlp", "w1_after_adamw", w1);
        Same("mlp", "b2_after_adamw", b2);
    }

    [Fact]
    public void Lora_linear_matches_pytorch()
    {
        // The executor's adapted linear (GptModel's Column): the frozen base's output plus the scaled B·(A·x); the base
        // weight has no gradient, A, B and the input do.
        using var scope = DisposeScope.Begin();
        var x = Det([5, 8], 0.21, 0.3);
        var w = Det([6, 8], 0.13, 0.5, 0.5, grad: false);
        var b = Det([6], 0.17, 0.7, 0.1, grad: false);
        var a = Det([3, 8], 0.09, 0.9, 0.3);
        var bb = Det([6, 3], 0.27, 1.1, 0.3);
        var y = F.Linear(x, w, b) + F.Linear(F.Linear(x, a), bb) * 2.0;
        var loss = (y * y).Mean();
        loss.Backward();
        Same("lora", "y", y);
        SameScalar("lora", "loss", loss);
        Same("lora", "grad_x", x.Grad);
        Same("lora", "grad_a", a.Grad);
        Same("lora", "grad_b", bb.Grad);
        Assert.Null(w.Grad);
    }

    [Theory]
    [InlineData("sgd")]
    [InlineData("lion")]
    public void Sgd_and_lion_steps_match_pytorch(string name)
    {
        using var scope = DisposeScope.Begin();
        var w = Det([6, 5], 0.29, 0.6, 0.5);
        using var opt = name == "sgd" ? Optimizer.Sgd([w], lr: 0.1, momentum: 0.9, weightDecay: 0.01) : Optimizer.Lion([w], lr: 0.01, beta2: 0.5, weightDecay: 0.1);
        for (int t = 0; t < 3; t++)
        {
            w.SetGrad(Det([6, 5], 0.41 + 0.1 * t, 0.3 * t, 0.2, grad: false));
            opt.Step();
        }
        Same("optimizers", name, w);
        // One fp32 buffer per parameter: SGD's momentum, Lion's moment.
        Assert.Equal(w.Numel * 4, opt.StateBytes);
    }

    /// <summary>Step t's gradient of the reference's <c>varied</c>: magnitudes spanning e^-2..e^2.</summary>
    private static Tensor Varied(long[] shape, int t) => Det(shape, 0.41 + 0.1 * t, 0.3 * t, 0.2, grad: false) * Det(shape, 0.013, 0.7 * t, 2.0, grad: false).Exp();

    [Theory]
    [InlineData("adafactor_matrix")]
    [InlineData("adafactor_vector")]
    public void Adafactor_steps_match_the_reference_written_in_pytorch(string key)
    {
        using var scope = DisposeScope.Begin();
        var w = key.EndsWith("matrix", StringComparison.Ordinal) ? Det([6, 5], 0.29, 0.6, 0.5) : Det([7], 0.31, 0.2, 0.5);
        using var opt = new Adafactor(HeldWeights.Whole([w]), lr: 0.05, weightDecay: 0.1);
        for (int t = 1; t <= 4; t++)
        {
            w.SetGrad(Varied(w.Shape, t));
            opt.Step();
        }
        Same("optimizers", key, w);
        // A matrix keeps its row and column sums (6 + 5 fp32), a vector its whole second moment (7).
        Assert.Equal(4 * (w.Shape.Length == 2 ? 6 + 5 : 7), opt.StateBytes);
    }

    [Fact]
    public void Sophia_steps_and_curvature_updates_match_the_reference_written_in_pytorch()
    {
        // Curvature refreshed before steps 1 and 3 from another pass's gradients (here: given), B = 64 tokens.
        using var scope = DisposeScope.Begin();
        var w = Det([6, 5], 0.29, 0.6, 0.5);
        using var opt = new Sophia([w], lr: 0.01, tokens: 64, weightDecay: 0.1);
        for (int t = 1; t <= 4; t++)
        {
            if (t % 2 == 1)
            {
                w.SetGrad(Varied(w.Shape, t + 10));
                opt.UpdateCurvature();
            }
            w.SetGrad(Varied(w.Shape, t));
            opt.Step();
        }
        Same("optimizers", "sophia", w);
        // The moment and the curvature, fp32 each.
        Assert.Equal(w.Numel * 8, opt.StateBytes);
    }

    [Fact]
    public void Adafactor_leaves_a_weight_with_a_zero_gradient_unchanged()
    {
        // LoRA's A before B has moved: its sums are ε₁ · rows and ε₁ · cols, whose product underflows fp32.
        using var scope = DisposeScope.Begin();
        var w = Det([6, 5], 0.29, 0.6, 0.5);
        var before = w.ToFloatArray();
        using var opt = new Adafactor(HeldWeights.Whole([w]), lr: 0.05);
        w.SetGrad(Tensor.Zeros([6, 5]));
        opt.Step();
        Assert.Equal(before, w.ToFloatArray());
    }

    [Fact]
    public void Adam8bit_steps_and_codes_match_the_reference_written_in_pytorch()
    {
        // 4400 values: three blocks of 2048, the last partial; four steps, so the moments are read back from their codes.
        using var scope = DisposeScope.Begin();
        var w = Det([40, 110], 0.29, 0.6, 0.5);
        var fp32 = Det([40, 110], 0.29, 0.6, 0.5);
        using var opt = new Adam8bit(HeldWeights.Whole([w]), lr: 0.01, weightDecay: 0.01);
        using var adamw = Optimizer.AdamW([fp32], lr: 0.01, weightDecay: 0.01);
        for (int t = 1; t <= 4; t++)
        {
            w.SetGrad(Varied(w.Shape, t));
            fp32.SetGrad(Varied(w.Shape, t));
            opt.Step();
            adamw.Step();
        }
        Same("optimizers", "adam8bit", w);
        // Two 8-bit codes per value and two fp32 maxima per block.
        Assert.Equal(2 * 4400 + 2 * 3 * 4, opt.StateBytes);
        // The quantized moments change the steps, a little: 8-bit Adam is not AdamW under another name.
        double most = w.ToFloatArray().Zip(fp32.ToFloatArray(), (a, b) => Math.Abs(a - b)).Max();
        Assert.InRange(most, 1e-5, 0.01);
    }

    [Fact]
    public void Causal_attention_block_matches_pytorch()
    {
        const int b = 2, s = 5, h = 16, nh = 4, d = h / nh;
        using var scope = DisposeScope.Begin();
        var x = Det([b, s, h], 0.13, 0.7);
        var lnW = Det([h], 0.31, 0.9, 0.2);
        var lnB = Det([h], 0.17, 1.1, 0.1);
        var wqkv = Det([3 * h, h], 0.05, 1.3, 0.4);
        var bqkv = Det([3 * h], 0.29, 1.5, 0.1);
        var wo = Det([h, h], 0.09, 1.7, 0.4);
        var bo = Det([h], 0.21, 1.9, 0.1);
        var target = Det([b, s, h], 0.41, 2.1, grad: false);
        var n = F.LayerNorm(x, lnW, lnB, 1e-5);
        var qkv = F.Linear(n, wqkv, bqkv).Chunk(3, -1);
        Tensor Heads(Tensor t) => t.Reshape(b, s, nh, d).Transpose(1, 2);
        var att = F.CausalAttention(Heads(qkv[0]), Heads(qkv[1]), Heads(qkv[2])).Transpose(1, 2).Reshape(b, s, h);
        var y = x + F.Linear(att, wo, bo);
        var loss = (y * target).Sum();
        loss.Backward();
        Same("attention", "y", y);
        SameScalar("attention", "loss", loss);
        Same("attention", "grad_x", x.Grad);
        Same("attention", "grad_ln_w", lnW.Grad);
        Same("attention", "grad_ln_b", lnB.Grad);
        Same("attention", "grad_wqkv", wqkv.Grad);
        Same("attention", "grad_bqkv", bqkv.Grad);
        Same("attention", "grad_wo", wo.Grad);
        Same("attention", "grad_bo", bo.Grad);
    }

    [Fact]
    public void Llama_block_with_head_dim_other_than_hidden_over_heads_matches_pytorch()
    {
        // GptModel's block, not a copy of it: hidden 16, 4 query heads and 2 key/value heads of head_dim 6 (not 16 / 4),
        // rotary positions over the 6, its weights overwritten with the reference's values.
        const int b = 2, s = 5, h = 16;
        var spec = new ModelSpec("head-dim", 1, h, 4, 2, 24, 32, 8, MlpKind.SwiGlu, NormKind.RmsNorm, PositionKind.Rotary,
            Biases: false, TiedEmbeddings: false, HeadDimension: 6);
        using var model = new GptModel(spec, [0], embedding: false, head: false, DType.Float32, seed: 1);
        model.Place(Device.Cpu);
        var inputs = new (string Name, double A, double B, double C)[]
        {
            ("ln1.w", 0.31, 0.9, 0.2), ("attn.q.w", 0.05, 1.3, 0.4), ("attn.k.w", 0.07, 1.4, 0.4), ("attn.v.w", 0.11, 1.5, 0.4),
            ("attn.o.w", 0.09, 1.7, 0.4), ("ln2.w", 0.23, 1.8, 0.2), ("mlp.gate.w", 0.15, 2.7, 0.5), ("mlp.up.w", 0.25, 2.9, 0.5),
            ("mlp.down.w", 0.35, 3.1, 0.5),
        };
        using var scope = DisposeScope.Begin();
        foreach (var (name, a, bb, c) in inputs)
        {
            var w = model["layers.0." + name];
            w.CopyFrom(Det(w.Shape, a, bb, c, grad: false).ToFloatArray());
        }
        Assert.Equal([24, 16], model["layers.0.attn.q.w"].Shape);
        Assert.Equal([16, 24], model["layers.0.attn.o.w"].Shape);
        var x = Det([b, s, h], 0.13, 0.7);
        var y = model.Block(0, x);
        var loss = (y * Det([b, s, h], 0.41, 2.1, grad: false)).Sum();
        loss.Backward();
        Same("head_dim_block", "y", y);
        SameScalar("head_dim_block", "loss", loss);
        Same("head_dim_block", "grad_x", x.Grad);
        foreach (var (name, _, _, _) in inputs)
            Same("head_dim_block", "grad_" + name, model["layers.0." + name].Grad);
    }

    [Fact]
    public void Swiglu_rmsnorm_and_cross_entropy_match_pytorch()
    {
        using var scope = DisposeScope.Begin();
        var x = Det([6, 8], 0.33, 2.3);
        var rmsW = Det([8], 0.27, 2.5, 0.3);
        var wg = Det([12, 8], 0.15, 2.7, 0.5);
        var wu = Det([12, 8], 0.25, 2.9, 0.5);
        var wd = Det([10, 12], 0.35, 3.1, 0.5);
        var normed = F.RmsNorm(x, rmsW, 1e-5);
        var hidden = F.Linear(normed, wg).Silu() * F.Linear(normed, wu);
        var logits = F.Linear(hidden, wd);
        var loss = F.CrossEntropy(logits, Tensor.From([0L, 3, 9, 4, 4, 1], 6));
        loss.Backward();
        Same("swiglu", "logits", logits);
        SameScalar("swiglu", "loss", loss);
        Same("swiglu", "grad_x", x.Grad);
        Same("swiglu", "grad_rms_w", rmsW.Grad);
        Same("swiglu", "grad_wg", wg.Grad);
        Same("swiglu", "grad_wu", wu.Grad);
        Same("swiglu", "grad_wd", wd.Grad);
    }
}
