using System.Diagnostics;
using Planner.CostModel.Plans;
using Planner.CostModel.Specs;
using Planner.Executor.Model;
using Planner.Executor.Training;
using Xunit;

namespace Planner.Cli.Tests;

/// <summary>
/// Parity of the executor: every parallel layout of a small fp32 GPT, run for real in rank processes (`planner run`),
/// reproduces the single-process run's per-step losses to 1e-5, and after training each rank's parameters are its
/// exact slice of the single-process parameters.
/// </summary>
[Collection("executor")]
[Trait("Category", "Slow")] // rank processes: ./test --all
public sealed partial class ExecutorParityTests : IClassFixture<ExecutorParityTests.Reference>
{
    private const double LossTolerance = 1e-5, ParamTolerance = 1e-5;
    private readonly Reference _ref;

    public ExecutorParityTests(Reference reference) => _ref = reference;

    internal static (int Code, string Output, string Error) Planner(string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "planner.dll"));
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var output = p.StandardOutput.ReadToEndAsync();
        var error = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromMinutes(5)))
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail($"planner {string.Join(' ', args)} did not finish in 5 minutes");
        }
        return (p.ExitCode, output.Result, error.Result);
    }

    public static TheoryData<string, string, int, int, int, int, int, string, bool> Layouts()
    {
        var data = new TheoryData<string, string, int, int, int, int, int, string, bool>();
        foreach (var model in new[] { "gpt", "llama" })
        {
            data.Add(model, "tp2", 2, 1, 1, 0, 1, "none", false);
            data.Add(model, "tp2-sp", 2, 1, 1, 0, 1, "none", true);
            data.Add(model, "pp2-1f1b", 1, 2, 1, 0, 1, "none", false);
            data.Add(model, "pp2-interleaved", 1, 2, 1, 0, 2, "none", false);
            data.Add(model, "dp2", 1, 1, 2, 0, 1, "none", false);
            data.Add(model, "tp2-pp2", 2, 2, 1, 0, 1, "none", false);
        }
        // Heads 32 wide over hidden 64 (head_dim, not hidden / heads): Q's rows and the output's columns split by whole
        // heads, rotary positions over the 32.
        data.Add("llama-hd", "tp2", 2, 1, 1, 0, 1, "none", false);
        data.Add("llama-hd", "pp2-1f1b", 1, 2, 1, 0, 1, "none", false);
        data.Add("llama-hd", "zero1-tp2-sp-dp2", 2, 1, 2, 1, 1, "none", true);
        data.Add("gpt", "zero1-dp2", 1, 1, 2, 1, 1, "none", false);
        data.Add("gpt", "zero2-dp2", 1, 1, 2, 2, 1, "none", false);
        data.Add("gpt", "zero3-dp2", 1, 1, 2, 3, 1, "none", false);
        // ZeRO-2 reduce-scatters chunk by chunk: across interleaved chunks with a tied embedding, and with SP's sums.
        data.Add("gpt", "zero2-pp2-interleaved-dp2", 1, 2, 2, 2, 2, "none", false);
        data.Add("llama", "zero2-tp2-sp-dp2", 2, 1, 2, 2, 1, "none", true);
        // ZeRO-3 gathers and frees each chunk's parameters around its forward, backward and recompute: with full
        // recompute, across interleaved chunks with the embedding tied between the first and the last stage, and with
        // sequence parallelism's TP sums of the norms' gradients.
        data.Add("gpt", "zero3-dp2-full-recompute", 1, 1, 2, 3, 1, "full", false);
        data.Add("gpt", "zero3-pp2-interleaved-dp2", 1, 2, 2, 3, 2, "none", false);
        data.Add("llama", "zero3-tp2-sp-dp2", 2, 1, 2, 3, 1, "selective", true);
        data.Add("gpt", "full-recompute", 1, 1, 1, 0, 1, "full", false);
        data.Add("gpt", "selective-recompute", 1, 1, 1, 0, 1, "selective", false);
        data.Add("gpt", "pp2-full-recompute", 1, 2, 1, 0, 1, "full", false);
        // Partial recompute: the first block of each chunk recomputed, the others kept (with ZeRO-3's gathers, and
        // a pipeline).
        data.Add("gpt", "partial-recompute", 1, 1, 1, 0, 1, "full:1", false);
        data.Add("gpt", "partial-recompute-pp2-zero3-dp2", 1, 2, 2, 3, 1, "full:1", false);
        data.Add("llama", "partial-recompute-tp2-sp", 2, 1, 1, 0, 1, "full:2", true);
        // ZeRO-0's all-reduce starts block by block during the last backward: across a pipeline with the embedding
        // tied between its stages, with sequence parallelism's TP sums first, and with recomputed blocks.
        data.Add("gpt", "dp2-pp2-overlapped-reduce", 1, 2, 2, 0, 1, "none", false);
        // Untied: the last stage holds no token table (the step once looked it up there).
        data.Add("llama", "dp2-pp2-overlapped-reduce", 1, 2, 2, 0, 1, "none", false);
        data.Add("llama", "dp2-tp2-sp-overlapped-reduce", 2, 1, 2, 0, 1, "none", true);
        data.Add("gpt", "dp2-partial-recompute", 1, 1, 2, 0, 1, "full:2", false);
        data.Add("llama", "tp2-selective-recompute", 2, 1, 1, 0, 1, "selective", true);
        return data;
    }

    [Theory]
    [MemberData(nameof(Layouts))]
    public void Layout_reproduces_the_single_process_run(string model, string name, int tp, int pp, int dp, int zero, int vpp, string recompute, bool sp) =>
        CheckParity(model, name, tp, pp, dp, zero, vpp, recompute, sp);

    /// <summary>
    /// ZeRO-1/2 layouts whose reduce-scatters start bucket by bucket during the backward (ZeRO-1 in each chunk's last
    /// backward, ZeRO-2 in every backward), with the number each rank starts per step: one per block, one for the head
    /// (final norm, an untied lm_head) and one for the embedding (wpe, and wte unless it is tied across stages: that
    /// one is reduced after the flush). With gbs 8, mbs 2 and dp 2 each rank runs 2 micro-batches.
    /// </summary>
    public static TheoryData<string, string, int, int, int, int, int, string, bool, int> OverlappedLayouts() => new()
    {
        // Stage 0: 2 blocks and wpe; stage 1: 2 blocks and ln_f (the tied wte on both waits for the flush).
        { "gpt", "zero1-pp2-dp2", 1, 2, 2, 1, 1, "none", false, 3 },
        // Interleaved: stage 0 holds blocks 0 and 2 and wpe; stage 1 blocks 1 and 3 and ln_f.
        { "gpt", "zero1-pp2-interleaved-dp2", 1, 2, 2, 1, 2, "none", false, 3 },
        // 4 blocks, the head (ln_f, lm_head), the embedding (wte), after sequence parallelism's TP sums.
        { "llama", "zero1-tp2-sp-dp2", 2, 1, 2, 1, 1, "none", true, 6 },
        // ZeRO-2: the same 3 buckets per stage, in both micro-batches' backwards.
        { "gpt", "zero2-pp2-dp2", 1, 2, 2, 2, 1, "none", false, 6 },
        // 4 blocks (the first two recomputed in the backward), ln_f, and wte with wpe, in both micro-batches.
        { "gpt", "zero2-dp2-partial-recompute", 1, 1, 2, 2, 1, "full:2", false, 12 },
        // ZeRO-2 with full recompute, interleaved chunks, a tied embedding across stages: 3 buckets, 2 micro-batches.
        { "gpt", "zero2-pp2-interleaved-dp2-full-recompute", 1, 2, 2, 2, 2, "full", false, 6 },
    };

    [Theory]
    [MemberData(nameof(OverlappedLayouts))]
    public void Zero_reduce_scatter_overlapped_with_the_backward_reproduces_the_single_process_run(string model, string name, int tp, int pp, int dp,
        int zero, int vpp, string recompute, bool sp, int reducesPerRank)
    {
        CheckParity(model, name, tp, pp, dp, zero, vpp, recompute, sp);
        foreach (var run in new[] { name, name + "-1" })
        {
            var started = _ref.OverlappedReduces[run + model + 0.001];
            Assert.Equal(tp * pp * dp, started.Length);
            Assert.All(started, n => Assert.Equal(reducesPerRank, n));
        }
    }

    private void CheckParity(string model, string name, int tp, int pp, int dp, int zero, int vpp, string recompute, bool sp)
    {
        var single = _ref.Single(model);
        var (loss, parameters) = _ref.Run(model, name, tp, pp, dp, zero, vpp, recompute, sp, 3);
        Assert.Equal(single.Loss.Length, loss.Length);
        for (int s = 0; s < loss.Length; s++)
            Assert.True(Math.Abs(loss[s] - single.Loss[s]) <= LossTolerance, $"{model} {name} step {s}: loss {loss[s]:R} against {single.Loss[s]:R}");
        // Parameters after one step (Adam's normalised update makes later steps amplify rounding in tiny gradients).
        var one = _ref.Single(model, steps: 1);
        var (_, afterOne) = _ref.Run(model, name + "-1", tp, pp, dp, zero, vpp, recompute, sp, 1);
        CheckSlices(model, name, tp, one.Params, afterOne, _ref.Coordinates[name + "-1" + model + 0.001], ParamTolerance);
    }

    /// <summary>Plan keys of the fine-tuning parity runs: LoRA rank 4 on every linear of the blocks; the optimizers.</summary>
    private static readonly Dictionary<string, string> Tunings = new()
    {
        ["lora"] = ", \"finetune\": \"lora\", \"lora_rank\": 4",
        ["sgd"] = ", \"optimizer\": \"sgd\"",
        ["lion"] = ", \"optimizer\": \"lion\"",
        ["lora-lion"] = ", \"finetune\": \"lora\", \"lora_rank\": 4, \"optimizer\": \"lion\"",
        ["adafactor"] = ", \"optimizer\": \"adafactor\"",
        ["adam8bit"] = ", \"optimizer\": \"adam8bit\"",
        ["lora-adam8bit"] = ", \"finetune\": \"lora\", \"lora_rank\": 4, \"optimizer\": \"adam8bit\"",
        ["sophia"] = ", \"optimizer\": \"sophia\"",
        ["qlora"] = ", \"finetune\": \"qlora\", \"lora_rank\": 4",
    };

    public static TheoryData<string, string, string, int, int, int, int, bool> TuningLayouts() => new()
    {
        { "lora", "gpt", "tp2", 2, 1, 1, 0, false },
        { "lora", "llama", "tp2", 2, 1, 1, 0, false },
        { "lora", "llama", "tp2-sp", 2, 1, 1, 0, true },
        // The embedding tied across the stages is frozen: nothing to sum between them.
        { "lora", "gpt", "pp2", 1, 2, 1, 0, false },
        { "lora", "llama", "pp2", 1, 2, 1, 0, false },
        { "lora", "gpt", "dp2-zero1", 1, 1, 2, 1, false },
        { "lora", "llama", "dp2-zero1", 1, 1, 2, 1, false },
        { "lora", "llama", "tp2-sp-pp2-dp2-zero1", 2, 2, 2, 1, true },
        // ZeRO-0's all-reduce per bucket behind the backward (the head's and the embedding's buckets empty), ZeRO-2's
        // reduce-scatter after every micro-batch.
        { "lora", "llama", "dp2-zero0", 1, 1, 2, 0, false },
        { "lora", "gpt", "dp2-zero2", 1, 1, 2, 2, false },
        // The optimizers step every weight (or the adapters) wherever it lives: TP shards, stages, ZeRO's flat shards.
        { "sgd", "gpt", "tp2", 2, 1, 1, 0, false },
        { "sgd", "llama", "pp2", 1, 2, 1, 0, false },
        { "sgd", "gpt", "dp2-zero1", 1, 1, 2, 1, false },
        { "lion", "llama", "tp2", 2, 1, 1, 0, false },
        { "lion", "gpt", "pp2", 1, 2, 1, 0, false },
        { "lion", "gpt", "dp2-zero1", 1, 1, 2, 1, false },
        { "lora-lion", "llama", "tp2-sp-pp2-dp2-zero1", 2, 2, 2, 1, true },
        // Adafactor's row and column sums and 8-bit Adam's block maxima are of the whole weight: the ranks holding its
        // pieces (TP shards, ZeRO slices) sum or maximise them together.
        { "adafactor", "gpt", "tp2", 2, 1, 1, 0, false },
        { "adafactor", "llama", "pp2", 1, 2, 1, 0, false },
        { "adafactor", "gpt", "dp2-zero1", 1, 1, 2, 1, false },
        { "adafactor", "llama", "tp2-sp-pp2-dp2-zero1", 2, 2, 2, 1, true },
        { "adam8bit", "llama", "tp2", 2, 1, 1, 0, false },
        { "adam8bit", "gpt", "pp2", 1, 2, 1, 0, false },
        { "adam8bit", "llama", "dp2-zero1", 1, 1, 2, 1, false },
        { "adam8bit", "gpt", "tp2-sp-pp2-dp2-zero1", 2, 2, 2, 1, true },
        { "lora-adam8bit", "llama", "tp2-sp-pp2-dp2-zero1", 2, 2, 2, 1, true },
        { "sophia", "llama", "tp2", 2, 1, 1, 0, false },
        { "sophia", "gpt", "pp2", 1, 2, 1, 0, false },
        { "sophia", "llama", "dp2-zero1", 1, 1, 2, 1, false },
        { "sophia", "llama", "tp2-sp-pp2-dp2-zero1", 2, 2, 2, 1, true },
        // QLoRA: the NF4 base quantized whole, then cut. Hidden 64 at TP=2 cuts every block of the output projection's
        // rows in two (each rank keeps both halves' absmax); the MLP's down projection keeps whole blocks.
        { "qlora", "gpt", "tp2", 2, 1, 1, 0, false },
        { "qlora", "llama", "tp2", 2, 1, 1, 0, false },
        { "qlora", "llama", "pp2", 1, 2, 1, 0, false },
        { "qlora", "gpt", "dp2-zero1", 1, 1, 2, 1, false },
        { "qlora", "llama", "tp2-sp-pp2-dp2-zero1", 2, 2, 2, 1, true },
        // The head_dim model: Q's and the output's adapters 128 wide (the output's A split by columns), NF4 cut by heads.
        { "lora", "llama-hd", "tp2", 2, 1, 1, 0, false },
        { "qlora", "llama-hd", "tp2", 2, 1, 1, 0, false },
    };

    /// <summary>
    /// Fine-tuning and the optimizers: each layout reproduces the single-process run of the same keys: the losses, and
    /// every parameter after three steps an exact slice of the single process's (adapters split as their base). Three
    /// steps, not one: LoRA's A gets its first gradient through B = 0, so only from the second step on do A's updates
    /// (whose gradient under tensor parallelism is whole only through the region's collective) show; the adapters'
    /// gradients are far below Adam's epsilon here, so their updates stay smooth in the gradients and rounding does not
    /// grow. Under LoRA the single process's frozen base stays its initial weights and every B moves from zero; under
    /// QLoRA the blocks' linear weights are the NF4 round trip of their initial values (dumped dequantized: each rank's
    /// its exact slice of those), and the parameter bytes measured are the prediction's with fp32 absmax in place of
    /// QLoRA's double-quantized ones.
    /// </summary>
    [Theory]
    [MemberData(nameof(TuningLayouts))]
    public void Fine_tuning_layout_reproduces_the_single_process_run(string tuning, string model, string layout, int tp, int pp, int dp, int zero, bool sp)
    {
        string keys = Tunings[tuning], name = $"{tuning}-{layout}";
        var (singleLoss, single) = _ref.SingleWithKeys(model, tuning, keys);
        var initial = _ref.Single(model, lr: 0).Params;
        bool adapters = tuning.Contains("lora", StringComparison.Ordinal);
        var quantized = tuning == "qlora" ? QuantizedWeights(model) : [];
        if (adapters)
            foreach (var (param, values) in single)
            {
                if (initial.TryGetValue(param, out var before))
                {
                    var expected = quantized.Contains(param) ? Nf4Reference.RoundTrip(before) : before;
                    Assert.False(values.Where((v, i) => v != expected[i]).Any(), $"{param} of the frozen base moved (or is not its NF4 round trip)");
                }
                else if (param.EndsWith(".lora_b", StringComparison.Ordinal))
                    Assert.True(values.Any(v => v != 0), $"{param} did not move from zero");
            }
        var (loss, parameters) = _ref.Run(model, name, tp, pp, dp, zero, 1, "none", sp, 3, keys: keys);
        for (int s = 0; s < loss.Length; s++)
            Assert.True(Math.Abs(loss[s] - singleLoss[s]) <= LossTolerance, $"{model} {name} step {s}: loss {loss[s]:R} against {singleLoss[s]:R}");
        // 8-bit Adam's codes are a step function of the moments: where a gradient summed in another order (TP, ZeRO)
        // puts a moment on the other side of a code boundary, that weight's step differs by one code's gap (about a
        // hundredth of the block's maximum) for that step, a few 1e-5 at lr 1e-3; the losses stay within 1e-5.
        // Sophia steps lr·clip(m / (ρ·B·h + ε), ±1): where a gradient or its curvature is itself rounding noise (GPT's key
        // bias, whose gradient is zero in exact arithmetic; weights of near-zero curvature) the step takes the noise's
        // sign or scale, up to lr either way per step; Adafactor's vectors likewise (G / √(G² + 1e-30) is the sign of a
        // noise gradient at the first step). The losses hold to 1e-5, the other elements to 1e-5; at most half a percent
        // of the elements (GPT's key biases are 0.12 %) may take the other side, within 2·lr a step (8-bit Adam: a fifth
        // of lr; Adafactor: 10·lr over the three steps).
        (double, double)? outliers = tuning switch
        {
            _ when tuning.EndsWith("adam8bit", StringComparison.Ordinal) => (0.005, 0.2 * 0.001),
            "sophia" => (0.005, 3 * 2 * 0.001),
            "adafactor" => (0.005, 10 * 0.001), // an element's clipped update may exceed 1 where its neighbours' are small
            _ => null,
        };
        CheckSlices(model, name, tp, single, parameters, _ref.Coordinates[name + model + 0.001], ParamTolerance,
            loraRank: adapters ? 4 : 0, outliers: outliers);
        // The count is the model's, whatever the layout: the single process's prediction.
        var (measured, _) = _ref.TrainableParameters[name + model + 0.001];
        var (_, predicted) = _ref.TrainableParameters[$"single-{tuning}" + model + 0.001];
        Assert.True(measured > 0 && measured == predicted, $"{name}: {measured} trainable parameters trained, {predicted} predicted");
        // The single process's optimizer state (its parameters are the fp32 masters: no other copy) as predicted.
        var (state, predictedState) = _ref.OptimizerState[$"single-{tuning}" + model + 0.001];
        Assert.True(Math.Abs(state[0] - predictedState) <= 0.1 * predictedState, $"single-{tuning}: optimizer state {state[0]} bytes, {predictedState:F0} predicted");
        if (quantized.Count > 0)
            CheckQuantizedBytes(model, tuning, quantized);
    }

    /// <summary>The weights QLoRA stores in NF4: every block linear's.</summary>
    private static HashSet<string> QuantizedWeights(string model)
    {
        var m = Model(model);
        return Enumerable.Range(0, m.Layers).SelectMany(l => GptParameters.Linears(m, l)).Select(l => l.Name + ".w").ToHashSet();
    }

    /// <summary>
    /// The single QLoRA process's parameter bytes: the NF4 weights' codes (half a byte each) and one fp32 absmax per 64,
    /// the rest 4 bytes a value; the prediction's weights with 4.5 bits per NF4 weight rather than its 4.127.
    /// </summary>
    private void CheckQuantizedBytes(string model, string tuning, HashSet<string> quantized)
    {
        var (measured, predicted) = _ref.ParameterBytes[$"single-{tuning}" + model + 0.001];
        var specs = Specs(model, loraRank: 4);
        long Numel(ParameterSpec s) => s.Shape.Aggregate(1L, (a, b) => a * b);
        long nf4 = specs.Values.Where(s => quantized.Contains(s.Name)).Sum(Numel);
        long dense = specs.Values.Where(s => !quantized.Contains(s.Name)).Sum(Numel);
        Assert.Equal(nf4 / 2 + 4 * nf4 / 64 + 4 * dense, measured[0]);
        double expected = predicted + nf4 * (4.5 / 8 - FineTuning.Nf4BytesPerWeight);
        Assert.True(Math.Abs(measured[0] - expected) <= 1e-3 * expected, $"single-{tuning}: {measured[0]} parameter bytes, {expected:F0} from the prediction");
    }

    [Theory]
    [InlineData("gpt")]
    [InlineData("llama")]
    [InlineData("llama-hd")]
    public void Initial_weights_are_exact_slices_of_the_single_process_weights(string model)
    {
        // With a zero learning rate (and no weight decay) the dumped parameters are the initial ones.
        var single = _ref.Single(model, lr: 0);
        var (_, parameters) = _ref.Run(model, "tp2-pp2-init", 2, 2, 1, 0, 1, "none", false, 1, lr: 0);
        CheckSlices(model, "tp2-pp2-init", 2, single.Params, parameters, _ref.Coordinates["tp2-pp2-init" + model + 0.0], tolerance: 0);
    }

    [Fact]
    public void The_hd_model_trains_the_parameters_the_cost_model_counts()
    {
        // Heads head_dim wide: the run's count of what it trains is the prediction's (and the model's total).
        var (loss, _) = _ref.Single("llama-hd");
        Assert.All(loss, l => Assert.True(double.IsFinite(l)));
        var (measured, predicted) = _ref.TrainableParameters["single" + "llama-hd" + 0.001];
        Assert.Equal(ParityModels.Spec("llama-hd").TotalParams, measured);
        Assert.Equal(predicted, measured);
    }

    /// <summary>Every rank's parameters are exact slices of the single process's, within <paramref name="tolerance"/>; with
    /// <paramref name="outliers"/>, that share of all elements may differ by up to its bound instead (optimizers whose step
    /// is a discontinuous function of its inputs: rounding noise can take the other side).</summary>
    private static void CheckSlices(string model, string name, int tp, Dictionary<string, float[]> full,
        Dictionary<string, float[]>[] ranks, (int Tp, int Pp, int Dp)[] coordinates, double tolerance, int loraRank = 0,
        (double Share, double Bound)? outliers = null, Func<string, bool>? whole = null)
    {
        var specs = Specs(model, loraRank);
        int checkedParams = 0;
        long elements = 0, beyond = 0;
        double bound = outliers?.Bound ?? tolerance;
        for (int r = 0; r < ranks.Length; r++)
        {
            foreach (var (param, values) in ranks[r])
            {
                var s = specs[param];
                bool unsplit = whole?.Invoke(param) ?? false;
                var expected = Slice(full[param], s, unsplit ? 0 : coordinates[r].Tp, unsplit ? 1 : tp);
                Assert.Equal(expected.Length, values.Length);
                var differences = expected.Select((v, i) => Math.Abs(v - values[i])).ToArray();
                double worst = differences.Max();
                Assert.True(worst <= Math.Max(tolerance, bound), $"{model} {name} rank {r}: {param} differs from its slice by {worst:E2}");
                elements += differences.Length;
                beyond += differences.Count(d => d > tolerance);
                checkedParams++;
            }
        }
        Assert.True(checkedParams >= specs.Count, $"{name}: only {checkedParams} parameters dumped");
        double share = outliers?.Share ?? 0;
        Assert.True(beyond <= share * elements, $"{model} {name}: {beyond} of {elements} elements differ from their slices by more than {tolerance:E0}");
    }

    private static ModelSpec Model(string model) => ParityModels.Spec(model);

    private static Dictionary<string, ParameterSpec> Specs(string model, int loraRank = 0)
    {
        var m = Model(model);
        var specs = GptParameters.Embedding(m).Concat(Enumerable.Range(0, m.Layers).SelectMany(l => GptParameters.Block(m, l)))
            .Concat(GptParameters.Head(m)).ToDictionary(s => s.Name);
        if (loraRank > 0)
            foreach (var (linear, _, column) in Enumerable.Range(0, m.Layers).SelectMany(l => GptParameters.Linears(m, l)).ToList())
                foreach (var adapter in GptParameters.Adapters(linear, specs[linear + ".w"].Shape, loraRank, column))
                    specs[adapter.Name] = adapter;
        return specs;
    }

    private static float[] Slice(float[] full, ParameterSpec s, int tpRank, int tp)
    {
        if (tp == 1 || s.Shard == Shard.Replicated)
            return full;
        if (s.Shard == Shard.Rows)
        {
            long rows = s.Shape[0] / tp, width = s.Shape.Length > 1 ? s.Shape[1] : 1;
            return full.Skip((int)(tpRank * rows * width)).Take((int)(rows * width)).ToArray();
        }
        long cols = s.Shape[1] / tp;
        var result = new List<float>();
        for (long row = 0; row < s.Shape[0]; row++)
            result.AddRange(full.Skip((int)(row * s.Shape[1] + tpRank * cols)).Take((int)cols));
        return result.ToArray();
    }
}
