using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;
using CliEntry = global::Planner.Cli.Commands.Cli;
using Xunit;

namespace Planner.Cli.Tests;

/// <summary>
/// <c>export --plan plan.json --to megatron|deepspeed|torchtitan [--out FILE] [--force]</c>: each target carries the
/// plan's values under the framework's documented names, bad plan files are exit 2 with one line naming the file and
/// key, and <c>--out</c> never overwrites a file without <c>--force</c>.
/// </summary>
public sealed class ExportTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), $"planner-export-{Guid.NewGuid():N}");

    public ExportTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    // Llama-3 8B (32 layers, 32 heads, 8 kv heads, SwiGLU, RMSNorm, rotary, untied, no biases) on 128 GPUs.
    private static readonly ParallelPlan Llama = new(Tp: 4, Pp: 4, Dp: 8, Cp: 1, Zero: 1, Mbs: 1, Gbs: 256, Seq: 8192, Vpp: 2,
        Recompute.Selective, SequenceParallel: true, Precision.Bf16);

    // GPT-2 small (12 layers, 12 heads, GeLU, LayerNorm, learned positions, tied, biases): data parallel only.
    private static readonly ParallelPlan Gpt2 = new(Tp: 1, Pp: 1, Dp: 8, Cp: 1, Zero: 0, Mbs: 4, Gbs: 128, Seq: 1024, Vpp: 1,
        Recompute.None, SequenceParallel: false, Precision.Fp16);

    private string WritePlan(ParallelPlan plan, string model, string cluster = "dgx-h100", string name = "plan.json")
    {
        // The shape plan --out writes: the plan object with its prediction.
        var o = PredictionJson.Plan(plan, model, cluster, PricingOptions.DefaultStack);
        o["prediction"] = new JsonObject { ["step_time_s"] = 1.25, ["fits"] = true };
        string path = Path.Combine(_dir, name);
        File.WriteAllText(path, o.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        return path;
    }

    private static (int Code, string Stdout, string Stderr) Run(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = CliEntry.Run(args, stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }

    private static string Export(string planPath, string to)
    {
        var (code, stdout, stderr) = Run("export", "--plan", planPath, "--to", to);
        Assert.True(code == 0, $"export --to {to} exit code {code}; stderr: {stderr}");
        Assert.Equal("", stderr);
        return stdout;
    }

    private static void AssertBadInput((int Code, string Stdout, string Stderr) r, params string[] names)
    {
        Assert.True(r.Code == 2, $"exit code {r.Code}, expected 2; stderr: {r.Stderr}");
        var lines = r.Stderr.Replace("\r\n", "\n").TrimEnd('\n').Split('\n');
        Assert.True(lines.Length == 1, $"expected exactly one line on stderr, got {lines.Length}:\n{r.Stderr}");
        Assert.DoesNotContain("   at ", r.Stderr);
        Assert.DoesNotContain("Exception", r.Stderr);
        foreach (var n in names)
            Assert.True(r.Stderr.Contains(n, StringComparison.Ordinal), $"stderr does not name '{n}': {r.Stderr}");
        Assert.Equal("", r.Stdout);
    }

    // ---- Megatron ----

    /// <summary>The comment lines, and the flags (in order) with their value or null for a switch.</summary>
    private static (List<string> Comments, List<(string Flag, string? Value)> Args) ParseMegatron(string text)
    {
        var lines = text.Replace("\r\n", "\n").TrimEnd('\n').Split('\n');
        var comments = new List<string>();
        var args = new List<(string, string?)>();
        for (int i = 0; i < lines.Length; i++)
        {
            string line = lines[i];
            if (line.StartsWith('#'))
            {
                Assert.True(args.Count == 0, $"comment after the arguments would end the shell command: {line}");
                comments.Add(line);
                continue;
            }
            bool last = i == lines.Length - 1;
            if (last)
                Assert.False(line.EndsWith('\\'), "the last argument line must not continue");
            else
                Assert.True(line.EndsWith(" \\", StringComparison.Ordinal), $"argument line without ' \\': '{line}'");
            var parts = line.TrimEnd('\\').Trim().Split(' ');
            Assert.True(parts.Length is 1 or 2, $"one flag and at most one value per line: '{line}'");
            Assert.StartsWith("--", parts[0]);
            args.Add((parts[0], parts.Length == 2 ? parts[1] : null));
        }
        Assert.NotEmpty(args);
        Assert.Equal(args.Count, args.Select(a => a.Item1).Distinct().Count());
        return (comments, args);
    }

    private static string? Value(List<(string Flag, string? Value)> args, string flag)
    {
        var hit = args.Where(a => a.Flag == flag).ToList();
        Assert.True(hit.Count == 1, $"expected {flag} once, found {hit.Count}");
        return hit[0].Value;
    }

    private static bool Has(List<(string Flag, string? Value)> args, string flag) => args.Any(a => a.Flag == flag);

    [Fact]
    public void Megatron_CarriesTheParallelismBatchAndModelShape()
    {
        var (comments, args) = ParseMegatron(Export(WritePlan(Llama, "llama3-8b"), "megatron"));

        Assert.Equal("4", Value(args, "--tensor-model-parallel-size"));
        Assert.Equal("4", Value(args, "--pipeline-model-parallel-size"));
        Assert.Equal("4", Value(args, "--num-layers-per-virtual-pipeline-stage")); // 32 layers / (pp 4 · vpp 2)
        Assert.False(Has(args, "--context-parallel-size"), "cp 1 needs no flag");
        Assert.Equal("1", Value(args, "--micro-batch-size"));
        Assert.Equal("256", Value(args, "--global-batch-size"));
        Assert.Equal("8192", Value(args, "--seq-length"));
        Assert.Equal("8192", Value(args, "--max-position-embeddings"));
        Assert.Null(Value(args, "--sequence-parallel"));
        Assert.Equal("selective", Value(args, "--recompute-granularity"));
        Assert.False(Has(args, "--recompute-method"));
        Assert.Null(Value(args, "--use-distributed-optimizer"));
        Assert.Contains(comments, c => c.Contains("ZeRO-1", StringComparison.Ordinal));
        Assert.Null(Value(args, "--bf16"));
        Assert.False(Has(args, "--fp16"));

        Assert.Equal("32", Value(args, "--num-layers"));
        Assert.Equal("4096", Value(args, "--hidden-size"));
        Assert.Equal("32", Value(args, "--num-attention-heads"));
        Assert.Equal("14336", Value(args, "--ffn-hidden-size"));
        Assert.Null(Value(args, "--group-query-attention"));
        Assert.Equal("8", Value(args, "--num-query-groups"));
        Assert.Null(Value(args, "--swiglu"));
        Assert.Equal("RMSNorm", Value(args, "--normalization"));
        Assert.Equal("rope", Value(args, "--position-embedding-type"));
        Assert.Null(Value(args, "--untie-embeddings-and-output-weights"));
        Assert.Null(Value(args, "--disable-bias-linear"));
        Assert.DoesNotContain(comments, c => c.Contains("could not be resolved", StringComparison.Ordinal));
    }

    [Fact]
    public void Megatron_Gpt2UsesTheDefaultsAndAddsNoLlamaFlags()
    {
        var (comments, args) = ParseMegatron(Export(WritePlan(Gpt2, "gpt2"), "megatron"));

        Assert.Equal("1", Value(args, "--tensor-model-parallel-size"));
        Assert.Equal("1", Value(args, "--pipeline-model-parallel-size"));
        Assert.Equal("4", Value(args, "--micro-batch-size"));
        Assert.Equal("128", Value(args, "--global-batch-size"));
        Assert.Equal("1024", Value(args, "--seq-length"));
        Assert.Equal("1024", Value(args, "--max-position-embeddings"));
        Assert.Null(Value(args, "--fp16"));
        Assert.Equal("12", Value(args, "--num-layers"));
        Assert.Equal("768", Value(args, "--hidden-size"));
        Assert.Equal("12", Value(args, "--num-attention-heads"));
        Assert.Equal("3072", Value(args, "--ffn-hidden-size"));
        foreach (var absent in new[]
                 {
                     "--num-layers-per-virtual-pipeline-stage", "--num-virtual-stages-per-pipeline-rank", "--context-parallel-size",
                     "--sequence-parallel", "--recompute-granularity", "--use-distributed-optimizer", "--bf16", "--fp8-format",
                     "--group-query-attention", "--num-query-groups", "--swiglu", "--normalization", "--position-embedding-type",
                     "--untie-embeddings-and-output-weights", "--disable-bias-linear", "--num-experts",
                 })
            Assert.False(Has(args, absent), $"{absent} does not belong to this plan or model");
        Assert.DoesNotContain(comments.Skip(1), c => c.Contains("ZeRO", StringComparison.Ordinal)); // the first line summarises the plan
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public void Megatron_ZeroAboveOneKeepsTheDistributedOptimizerAndWarns(int zero)
    {
        var plan = Llama with { Zero = zero, Recompute = Recompute.Full, Precision = Precision.Fp8, Cp = 2, Dp = 4 };
        var (comments, args) = ParseMegatron(Export(WritePlan(plan, "llama3-8b"), "megatron"));

        Assert.Null(Value(args, "--use-distributed-optimizer"));
        Assert.Contains(comments, c => c.Contains("ZeRO-1", StringComparison.Ordinal));
        Assert.Contains(comments, c => c.Contains($"ZeRO-{zero}", StringComparison.Ordinal) && c.Contains("no Megatron equivalent", StringComparison.Ordinal));
        Assert.Equal("full", Value(args, "--recompute-granularity"));
        Assert.Equal("uniform", Value(args, "--recompute-method"));
        Assert.Equal("1", Value(args, "--recompute-num-layers"));
        Assert.Null(Value(args, "--bf16"));
        Assert.Equal("hybrid", Value(args, "--fp8-format"));
        Assert.Equal("2", Value(args, "--context-parallel-size"));
    }

    [Fact]
    public void Megatron_MixtureOfExpertsNamesExpertsAndTopK()
    {
        var plan = new ParallelPlan(2, 2, 2, 1, 1, 1, 64, 4096, 1, Recompute.Full, true, Precision.Bf16);
        var (_, args) = ParseMegatron(Export(WritePlan(plan, "mixtral-8x7b"), "megatron"));
        var m = ModelLoader.Load("mixtral-8x7b");
        Assert.Equal(m.Experts.ToString(CultureInfo.InvariantCulture), Value(args, "--num-experts"));
        Assert.Equal(m.ExpertsPerToken.ToString(CultureInfo.InvariantCulture), Value(args, "--moe-router-topk"));
    }

    [Fact]
    public void Megatron_VirtualStagesThatDoNotDivideTheLayersAreBadInput()
    {
        string path = WritePlan(Llama with { Vpp = 3 }, "llama3-8b"); // 32 layers over 4 · 3 = 12 chunks
        AssertBadInput(Run("export", "--plan", path, "--to", "megatron"), path, "'vpp'");
    }

    [Fact]
    public void Megatron_AnUnresolvableModelGivesOnlyParallelismAndBatchAndSaysSo()
    {
        var (comments, args) = ParseMegatron(Export(WritePlan(Llama, "no-such-model-anywhere"), "megatron"));

        Assert.Contains(comments, c => c.Contains("'no-such-model-anywhere' could not be resolved", StringComparison.Ordinal));
        Assert.Equal("4", Value(args, "--tensor-model-parallel-size"));
        Assert.Equal("2", Value(args, "--num-virtual-stages-per-pipeline-rank"));
        Assert.Equal("256", Value(args, "--global-batch-size"));
        Assert.Equal("8192", Value(args, "--max-position-embeddings"));
        foreach (var shape in new[] { "--num-layers", "--hidden-size", "--num-attention-heads", "--ffn-hidden-size", "--swiglu", "--num-layers-per-virtual-pipeline-stage" })
            Assert.False(Has(args, shape), $"{shape} needs the model");
    }

    [Fact]
    public void AModelGivenAsAPathToAConfigIsResolved()
    {
        string config = Path.Combine(_dir, "config.json");
        File.WriteAllText(config, """
            { "num_hidden_layers": 24, "hidden_size": 2048, "num_attention_heads": 16, "num_key_value_heads": 16,
              "intermediate_size": 5632, "vocab_size": 32000, "max_position_embeddings": 4096, "hidden_act": "silu" }
            """);
        var plan = new ParallelPlan(2, 2, 2, 1, 1, 2, 64, 2048, 3, Recompute.None, false, Precision.Bf16);
        var (_, args) = ParseMegatron(Export(WritePlan(plan, config), "megatron"));
        Assert.Equal("24", Value(args, "--num-layers"));
        Assert.Equal("4", Value(args, "--num-layers-per-virtual-pipeline-stage")); // 24 / (2 · 3)
        Assert.Equal("4096", Value(args, "--max-position-embeddings"));
        Assert.False(Has(args, "--group-query-attention"), "16 kv heads of 16 is not GQA");
    }

    // ---- Uneven pipeline stages (the planner's MILP split) ----

    private static ParallelPlan Staged(int[] layers, Recompute[] recompute) =>
        new(Tp: 4, Pp: layers.Length, Dp: 4, Cp: 1, Zero: 1, Mbs: 1, Gbs: 64, Seq: 8192, Vpp: 1, Recompute.None, true, Precision.Bf16,
            new StagePlan(layers, recompute));

    private static readonly Recompute[] NoRecompute4 = [Recompute.None, Recompute.None, Recompute.None, Recompute.None];

    [Fact]
    public void Megatron_UnevenEndsUseFirstAndLastStageCounts()
    {
        var (_, args) = ParseMegatron(Export(WritePlan(Staged([7, 9, 9, 7], NoRecompute4), "llama3-8b"), "megatron"));
        Assert.Equal("7", Value(args, "--decoder-first-pipeline-num-layers"));
        Assert.Equal("7", Value(args, "--decoder-last-pipeline-num-layers"));
        Assert.False(Has(args, "--pipeline-model-parallel-layout"));
        Assert.False(Has(args, "--recompute-granularity"));
    }

    [Fact]
    public void Megatron_TwoUnevenStagesNeedOnlyTheFirstCount()
    {
        var (_, args) = ParseMegatron(Export(WritePlan(Staged([15, 17], [Recompute.None, Recompute.None]), "llama3-8b"), "megatron"));
        Assert.Equal("15", Value(args, "--decoder-first-pipeline-num-layers"));
        Assert.False(Has(args, "--decoder-last-pipeline-num-layers"));
    }

    [Fact]
    public void Megatron_AnArbitrarySplitUsesTheLayoutAndTheStrongestRecompute()
    {
        var plan = Staged([6, 9, 8, 9], [Recompute.Full, Recompute.Selective, Recompute.None, Recompute.None]);
        var (comments, args) = ParseMegatron(Export(WritePlan(plan, "llama3-8b"), "megatron"));
        Assert.Equal("\"E,t*6|t*9|t*8|t*9,L\"", Value(args, "--pipeline-model-parallel-layout"));
        Assert.False(Has(args, "--decoder-first-pipeline-num-layers"));
        Assert.Equal("full", Value(args, "--recompute-granularity"));
        Assert.Contains(comments, c => c.Contains("full/selective/none/none", StringComparison.Ordinal) && c.Contains("warning", StringComparison.Ordinal));
    }

    [Fact]
    public void Megatron_TheEvenSplitWithARemainderIsSpelledOut()
    {
        // gpt2-medium: 24 layers over 5 stages is 5/5/5/5/4 in the planner's layout (remainder on the first stages).
        var plan = new ParallelPlan(1, 5, 2, 1, 0, 1, 16, 1024, 1, Recompute.None, false, Precision.Bf16);
        var (_, args) = ParseMegatron(Export(WritePlan(plan, "gpt2-medium"), "megatron"));
        Assert.False(Has(args, "--decoder-first-pipeline-num-layers"));
        Assert.Equal("4", Value(args, "--decoder-last-pipeline-num-layers"));
    }

    // Llama-3 8B on 4 stages, 8 blocks each: full recompute of the first 3 blocks of each stage, half the optimizer
    // state offloaded to the host.
    private static readonly ParallelPlan Partial = new(Tp: 2, Pp: 4, Dp: 4, Cp: 1, Zero: 3, Mbs: 1, Gbs: 64, Seq: 4096, Vpp: 1,
        Recompute.Full, SequenceParallel: true, Precision.Bf16, RecomputeLayers: 3, OptimizerOffload: 0.5);

    [Fact]
    public void Megatron_PartialRecomputeIsBlockMethodAndOffloadIsTheHybridOptimizer()
    {
        var (_, args) = ParseMegatron(Export(WritePlan(Partial, "llama3-8b"), "megatron"));
        Assert.Equal("full", Value(args, "--recompute-granularity"));
        Assert.Equal("block", Value(args, "--recompute-method"));
        Assert.Equal("3", Value(args, "--recompute-num-layers"));
        Assert.Null(Value(args, "--optimizer-cpu-offload"));
        Assert.Equal("0.5", Value(args, "--optimizer-offload-fraction"));
        Assert.Null(Value(args, "--overlap-cpu-optimizer-d2h-h2d"));
        Assert.Null(Value(args, "--use-precision-aware-optimizer"));

        var (_, plain) = ParseMegatron(Export(WritePlan(Llama, "llama3-8b", name: "plain.json"), "megatron"));
        Assert.False(Has(plain, "--optimizer-cpu-offload"), "no offload in a plan without it");
    }

    [Fact]
    public void DeepSpeed_OffloadIsOffloadOptimizerWithItsRatioUnderZero3()
    {
        var ds = DeepSpeed(Export(WritePlan(Partial, "llama3-8b"), "deepspeed"));
        var offload = ds.GetProperty("zero_optimization").GetProperty("offload_optimizer");
        Assert.Equal("cpu", offload.GetProperty("device").GetString());
        Assert.Equal(0.5, offload.GetProperty("ratio").GetDouble());
        Assert.Equal(3, ds.GetProperty("activation_checkpointing").GetProperty("number_checkpoints").GetInt32());

        // Under ZeRO-1 DeepSpeed cannot offload a part: all of it, with a warning.
        var z1 = DeepSpeed(Export(WritePlan(Partial with { Zero = 1 }, "llama3-8b", name: "z1.json"), "deepspeed"));
        Assert.False(z1.GetProperty("zero_optimization").GetProperty("offload_optimizer").TryGetProperty("ratio", out _));
        Assert.Contains(z1.GetProperty("_comment").EnumerateArray(), c => c.GetString()!.Contains("needs ZeRO-3", StringComparison.Ordinal));
    }

    [Fact]
    public void Torchtitan_PartialRecomputeIsEveryNthBlockAndOffloadIsAWarning()
    {
        string text = Export(WritePlan(Partial with { RecomputeLayers = 4 }, "llama3-8b"), "torchtitan");
        var toml = ParseToml(text);
        // 8 blocks per stage, 4 recomputed: every 2nd block, as many as the plan.
        Assert.Equal("selective", toml["activation_checkpoint.mode"]);
        Assert.Equal("2", toml["activation_checkpoint.selective_ac_option"]);
        Assert.Contains("no optimizer-only offload", text, StringComparison.Ordinal);
        // 3 of 8 has no every-Nth equivalent: every 2nd block (4), said so.
        Assert.Contains("recomputes 4, more than the planner priced", Export(WritePlan(Partial, "llama3-8b", name: "p3.json"), "torchtitan"), StringComparison.Ordinal);
    }

    [Fact]
    public void Torchtitan_UnevenStagesBecomeSplitPointsAndTheStrongestRecompute()
    {
        var plan = Staged([7, 9, 9, 7], [Recompute.None, Recompute.Selective, Recompute.None, Recompute.None]);
        var toml = ParseToml(Export(WritePlan(plan, "llama3-8b"), "torchtitan"));
        Assert.Equal("[\"layers.7\", \"layers.16\", \"layers.25\"]", toml["parallelism.pipeline_parallel_split_points"]);
        Assert.Equal("1F1B", toml["parallelism.pipeline_parallel_schedule"]);
        Assert.Equal("selective", toml["activation_checkpoint.mode"]);
    }

    [Fact]
    public void DeepSpeed_AFullRecomputeStageTurnsOnActivationCheckpointing()
    {
        var plan = Staged([7, 9, 9, 7], [Recompute.Full, Recompute.None, Recompute.None, Recompute.None]);
        var ds = DeepSpeed(Export(WritePlan(plan, "llama3-8b"), "deepspeed"));
        Assert.Equal(9, ds.GetProperty("activation_checkpointing").GetProperty("number_checkpoints").GetInt32());
        Assert.Contains(Comments(ds), c => c.Contains("7/9/9/7", StringComparison.Ordinal));
    }

    [Fact]
    public void StagesThatDoNotAddUpToTheModelAreBadInput()
    {
        string path = WritePlan(Staged([7, 9, 9, 8], NoRecompute4), "llama3-8b"); // 33 of 32 layers
        foreach (var to in new[] { "megatron", "deepspeed", "torchtitan" })
            AssertBadInput(Run("export", "--plan", path, "--to", to), path, "'stages.layers'");
    }

    // ---- DeepSpeed ----

    private static JsonElement DeepSpeed(string text)
    {
        using var doc = JsonDocument.Parse(text);
        return doc.RootElement.Clone();
    }

    private static IEnumerable<string> Comments(JsonElement ds) =>
        ds.TryGetProperty("_comment", out var c) ? c.EnumerateArray().Select(e => e.GetString()!) : [];

    [Fact]
    public void DeepSpeed_CarriesTheBatchArithmeticZeroAndPrecision()
    {
        string text = Export(WritePlan(Llama, "llama3-8b"), "deepspeed");
        var ds = DeepSpeed(text);

        int micro = ds.GetProperty("train_micro_batch_size_per_gpu").GetInt32();
        int accumulation = ds.GetProperty("gradient_accumulation_steps").GetInt32();
        int batch = ds.GetProperty("train_batch_size").GetInt32();
        Assert.Equal(Llama.Gbs, batch);
        Assert.Equal(Llama.Mbs, micro);
        Assert.Equal(Llama.Gbs / (Llama.Dp * Llama.Mbs), accumulation); // 256 / (8 · 1) = 32
        Assert.Equal(32, accumulation);
        Assert.Equal(batch, micro * accumulation * Llama.Dp); // DeepSpeed's own consistency rule
        Assert.Equal(1, ds.GetProperty("zero_optimization").GetProperty("stage").GetInt32());
        Assert.True(ds.GetProperty("bf16").GetProperty("enabled").GetBoolean());
        Assert.False(ds.TryGetProperty("fp16", out _));
        Assert.Equal(1.0, ds.GetProperty("gradient_clipping").GetDouble());
        Assert.Contains("\"gradient_clipping\": 1.0", text);
        Assert.False(ds.TryGetProperty("activation_checkpointing", out _), "selective recompute has no DeepSpeed key");
        Assert.Contains(Comments(ds), c => c.Contains("TP/PP", StringComparison.Ordinal) && c.Contains("--tensor-model-parallel-size 4", StringComparison.Ordinal)
                                           && c.Contains("--pipeline-model-parallel-size 4", StringComparison.Ordinal));
    }

    [Fact]
    public void DeepSpeed_Fp16IsDynamicLossScalingAndPureDataParallelHasNoLauncherNote()
    {
        var ds = DeepSpeed(Export(WritePlan(Gpt2, "gpt2"), "deepspeed"));

        Assert.Equal(128, ds.GetProperty("train_batch_size").GetInt32());
        Assert.Equal(4, ds.GetProperty("train_micro_batch_size_per_gpu").GetInt32());
        Assert.Equal(4, ds.GetProperty("gradient_accumulation_steps").GetInt32()); // 128 / (8 · 4)
        Assert.Equal(0, ds.GetProperty("zero_optimization").GetProperty("stage").GetInt32());
        var fp16 = ds.GetProperty("fp16");
        Assert.True(fp16.GetProperty("enabled").GetBoolean());
        Assert.Equal(0, fp16.GetProperty("loss_scale").GetDouble());
        Assert.False(ds.TryGetProperty("bf16", out _));
        Assert.DoesNotContain(Comments(ds), c => c.Contains("TP/PP", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData(1, 3)]
    [InlineData(4, 2)]
    public void DeepSpeed_FullRecomputeConfiguresActivationCheckpointing(int tp, int zero)
    {
        var plan = new ParallelPlan(tp, 1, 16, 1, zero, 2, 256, 4096, 1, Recompute.Full, false, Precision.Bf16);
        var ds = DeepSpeed(Export(WritePlan(plan, "llama2-7b"), "deepspeed"));

        var ckpt = ds.GetProperty("activation_checkpointing");
        Assert.Equal(tp > 1, ckpt.GetProperty("partition_activations").GetBoolean());
        Assert.False(ckpt.GetProperty("cpu_checkpointing").GetBoolean());
        Assert.False(ckpt.GetProperty("contiguous_memory_optimization").GetBoolean());
        Assert.Equal(zero, ds.GetProperty("zero_optimization").GetProperty("stage").GetInt32());
        Assert.Equal(8, ds.GetProperty("gradient_accumulation_steps").GetInt32()); // 256 / (16 · 2)
        Assert.Equal(tp > 1, Comments(ds).Any(c => c.Contains("TP/PP", StringComparison.Ordinal)));
    }

    [Fact]
    public void DeepSpeed_PipelineWithZeroTwoWarns()
    {
        var plan = Llama with { Zero = 2, Vpp = 1 };
        var ds = DeepSpeed(Export(WritePlan(plan, "llama3-8b"), "deepspeed"));
        Assert.Equal(2, ds.GetProperty("zero_optimization").GetProperty("stage").GetInt32());
        Assert.Contains(Comments(ds), c => c.StartsWith("warning:", StringComparison.Ordinal) && c.Contains("pipeline", StringComparison.Ordinal));
    }

    [Fact]
    public void DeepSpeed_AnUnresolvableModelSaysSo()
    {
        var ds = DeepSpeed(Export(WritePlan(Gpt2, "/nonexistent/config.json"), "deepspeed"));
        Assert.Contains(Comments(ds), c => c.Contains("could not be resolved", StringComparison.Ordinal));
        Assert.Equal(128, ds.GetProperty("train_batch_size").GetInt32());
    }

    // ---- torchtitan ----

    /// <summary>Every <c>table.key</c> with its value (strings unquoted), from a TOML file of comment lines, tables and
    /// <c>key = value</c> lines.</summary>
    private static Dictionary<string, string> ParseToml(string text)
    {
        var values = new Dictionary<string, string>();
        string table = "";
        foreach (var raw in text.Replace("\r\n", "\n").Split('\n'))
        {
            string line = raw.Trim();
            if (line.Length == 0 || line.StartsWith('#'))
                continue;
            if (line.StartsWith('['))
            {
                Assert.EndsWith("]", line);
                table = line[1..^1];
                continue;
            }
            int eq = line.IndexOf(" = ", StringComparison.Ordinal);
            Assert.True(eq > 0, $"not a key = value line: '{line}'");
            Assert.NotEqual("", table);
            string key = $"{table}.{line[..eq]}";
            string value = line[(eq + 3)..];
            if (value.StartsWith('"'))
            {
                Assert.EndsWith("\"", value);
                value = value[1..^1];
            }
            Assert.True(values.TryAdd(key, value), $"duplicate key {key}");
        }
        return values;
    }

    private static int Int(Dictionary<string, string> toml, string key)
    {
        Assert.True(toml.ContainsKey(key), $"missing {key}");
        return int.Parse(toml[key], CultureInfo.InvariantCulture);
    }

    [Fact]
    public void Torchtitan_FsdpPipelineAndBatchArithmetic()
    {
        var toml = ParseToml(Export(WritePlan(Llama, "llama3-8b"), "torchtitan"));

        Assert.Equal(8, Int(toml, "parallelism.data_parallel_shard_degree")); // ZeRO-1 is FSDP over dp
        Assert.Equal(1, Int(toml, "parallelism.data_parallel_replicate_degree"));
        Assert.Equal("never", toml["parallelism.fsdp_reshard_after_forward"]);
        Assert.Equal(4, Int(toml, "parallelism.tensor_parallel_degree"));
        Assert.Equal(4, Int(toml, "parallelism.pipeline_parallel_degree"));
        Assert.Equal(1, Int(toml, "parallelism.context_parallel_degree"));
        Assert.Equal("Interleaved1F1B", toml["parallelism.pipeline_parallel_schedule"]);
        Assert.Equal(1, Int(toml, "parallelism.pipeline_parallel_microbatch_size"));
        // 8 stages of 4 layers: 7 split points, each starting a stage.
        Assert.Equal("[\"layers.4\", \"layers.8\", \"layers.12\", \"layers.16\", \"layers.20\", \"layers.24\", \"layers.28\"]",
            toml["parallelism.pipeline_parallel_split_points"]);

        int local = Int(toml, "training.local_batch_size"), global = Int(toml, "training.global_batch_size");
        Assert.Equal(256, global);
        Assert.Equal(global, local * Llama.Dp); // one pipeline flush per step: no gradient accumulation
        Assert.Equal(Llama.MicroBatches, local / Int(toml, "parallelism.pipeline_parallel_microbatch_size"));
        Assert.Equal(8192, Int(toml, "training.seq_len"));
        Assert.Equal("bfloat16", toml["training.mixed_precision_param"]);
        Assert.Equal("selective", toml["activation_checkpoint.mode"]);
        Assert.Equal("op", toml["activation_checkpoint.selective_ac_option"]);
        Assert.False(toml.ContainsKey("training.batch_size"), "batch_size is the old name of local_batch_size");
    }

    [Fact]
    public void Torchtitan_ZeroZeroIsReplicationAndGradientAccumulationWithoutPipeline()
    {
        var plan = Gpt2 with { Precision = Precision.Fp32, Recompute = Recompute.Full };
        var toml = ParseToml(Export(WritePlan(plan, "gpt2"), "torchtitan"));

        Assert.Equal(8, Int(toml, "parallelism.data_parallel_replicate_degree"));
        Assert.Equal(1, Int(toml, "parallelism.data_parallel_shard_degree"));
        Assert.False(toml.ContainsKey("parallelism.fsdp_reshard_after_forward"));
        Assert.Equal(1, Int(toml, "parallelism.pipeline_parallel_degree"));
        Assert.Equal("1F1B", toml["parallelism.pipeline_parallel_schedule"]);
        Assert.False(toml.ContainsKey("parallelism.pipeline_parallel_split_points"));
        int local = Int(toml, "training.local_batch_size"), global = Int(toml, "training.global_batch_size");
        Assert.Equal(4, local);
        Assert.Equal(128, global);
        Assert.Equal(plan.MicroBatches, global / (local * plan.Dp)); // torchtitan's accumulation steps: 128 / (4 · 8) = 4
        Assert.Equal("float32", toml["training.mixed_precision_param"]);
        Assert.Equal("full", toml["activation_checkpoint.mode"]);
        Assert.False(toml.ContainsKey("activation_checkpoint.selective_ac_option"));
    }

    [Fact]
    public void Torchtitan_Zero3Fp8ContextParallelAndNoRecompute()
    {
        var plan = new ParallelPlan(2, 1, 8, 2, 3, 1, 64, 8192, 1, Recompute.None, true, Precision.Fp8);
        var toml = ParseToml(Export(WritePlan(plan, "llama3-8b"), "torchtitan"));

        Assert.Equal(8, Int(toml, "parallelism.data_parallel_shard_degree"));
        Assert.False(toml.ContainsKey("parallelism.fsdp_reshard_after_forward"), "ZeRO-3 keeps FSDP's default resharding");
        Assert.Equal(2, Int(toml, "parallelism.context_parallel_degree"));
        Assert.Equal("none", toml["activation_checkpoint.mode"]);
        Assert.Equal("bfloat16", toml["training.mixed_precision_param"]);
        Assert.Equal("[\"float8\"]", toml["model.converters"]);
    }

    [Fact]
    public void Torchtitan_Fp16IsBadInputNamingPrecision()
    {
        string path = WritePlan(Gpt2, "gpt2"); // fp16
        AssertBadInput(Run("export", "--plan", path, "--to", "torchtitan"), path, "'precision'", "fp16");
    }

    // ---- Mixture of experts, latent attention, multi-token prediction, sliding windows, quantized precisions ----

    // DeepSeek-V3 (61 blocks, the first 3 dense; 256 experts top-8 of ffn 2048 and a shared expert; MLA; 1 MTP module)
    // on 64 GPUs: experts over ep 32, not split within an expert, MXFP8.
    private static readonly ParallelPlan DeepSeek = new(Tp: 2, Pp: 1, Dp: 32, Cp: 1, Zero: 1, Mbs: 1, Gbs: 256, Seq: 4096, Vpp: 1,
        Recompute.Selective, SequenceParallel: true, Precision.Mxfp8, Ep: 32, Etp: 1);

    // Qwen3-30B-A3B (48 MoE blocks, 128 experts top-8 of ffn 768, head_dim 128 ≠ 2048 / 32, GQA 32/4): ep 8, etp 2.
    private static readonly ParallelPlan Qwen3 = new(Tp: 2, Pp: 2, Dp: 8, Cp: 1, Zero: 1, Mbs: 1, Gbs: 128, Seq: 4096, Vpp: 1,
        Recompute.Full, SequenceParallel: true, Precision.Bf16, Ep: 8, Etp: 2);

    // Mixtral-8x7B (8 experts top-2, experts as wide as the dense ffn): ep 8 and token dropping at 1.25x the mean load.
    private static readonly ParallelPlan Mixtral = new(Tp: 2, Pp: 2, Dp: 4, Cp: 1, Zero: 1, Mbs: 1, Gbs: 64, Seq: 4096, Vpp: 1,
        Recompute.Full, SequenceParallel: true, Precision.Fp8Cs, Ep: 8, Etp: 1, MoeImbalance: 1.5, MoeCapacity: 1.25);

    // GPT-OSS-120B (36 MoE blocks alternating a 128-key window and full attention, head_dim 64): nvfp4.
    private static readonly ParallelPlan GptOss = new(Tp: 2, Pp: 1, Dp: 8, Cp: 1, Zero: 1, Mbs: 1, Gbs: 64, Seq: 4096, Vpp: 1,
        Recompute.None, SequenceParallel: true, Precision.Nvfp4, Ep: 8, Etp: 2);

    private static readonly string[] MoeFlags =
    [
        "--num-experts", "--moe-router-topk", "--expert-model-parallel-size", "--expert-tensor-parallel-size", "--moe-ffn-hidden-size",
        "--moe-shared-expert-intermediate-size", "--moe-layer-freq", "--moe-grouped-gemm", "--moe-token-dispatcher-type",
        "--moe-router-load-balancing-type", "--moe-aux-loss-coeff", "--moe-expert-capacity-factor", "--moe-token-drop-policy",
        "--moe-pad-expert-input-to-capacity",
    ];

    private static readonly string[] ArchitectureFlags =
    [
        "--multi-latent-attention", "--q-lora-rank", "--kv-lora-rank", "--qk-head-dim", "--qk-pos-emb-head-dim", "--v-head-dim",
        "--mtp-num-layers", "--window-size", "--window-attn-skip-freq", "--kv-channels",
    ];

    /// <summary>
    /// Evaluates the Python list expressions Megatron accepts for --moe-layer-freq and --window-attn-skip-freq
    /// (moe_freq_type: only digits, commas, brackets, parentheses, "+" and "*"; "*" binds tighter than "+"), 1 as true.
    /// </summary>
    private static List<bool> EvalPattern(string quoted)
    {
        Assert.True(quoted.Length > 2 && quoted[0] == '"' && quoted[^1] == '"', $"the pattern must be double-quoted for the shell: {quoted}");
        string s = quoted[1..^1];
        Assert.DoesNotMatch(@"[^,\d\[\]\(\)\+\*]", s);
        int i = 0;
        int Int()
        {
            int start = i;
            while (i < s.Length && char.IsAsciiDigit(s[i]))
                i++;
            Assert.True(i > start, $"a number at {start} of {s}");
            return int.Parse(s[start..i], CultureInfo.InvariantCulture);
        }
        List<int> Atom()
        {
            if (s[i] == '(')
            {
                i++;
                var inner = Expr();
                Assert.Equal(')', s[i++]);
                return inner;
            }
            Assert.Equal('[', s[i++]);
            var list = new List<int>();
            while (s[i] != ']')
            {
                list.Add(Int());
                if (s[i] == ',')
                    i++;
            }
            i++;
            return list;
        }
        List<int> Term()
        {
            var atom = Atom();
            if (i >= s.Length || s[i] != '*')
                return atom;
            i++;
            int n = Int();
            return Enumerable.Range(0, n).SelectMany(_ => atom).ToList();
        }
        List<int> Expr()
        {
            var r = Term();
            while (i < s.Length && s[i] == '+')
            {
                i++;
                r.AddRange(Term());
            }
            return r;
        }
        var values = Expr();
        Assert.Equal(s.Length, i);
        Assert.All(values, v => Assert.True(v is 0 or 1));
        return values.Select(v => v == 1).ToList();
    }

    [Theory]
    [InlineData("111")]
    [InlineData("0001111111")]
    [InlineData("10101010")]
    [InlineData("1101101101")]
    [InlineData("1")]
    [InlineData("0110")]
    public void LayerPattern_IsAPythonListExpressionOfThePattern(string bits)
    {
        var pattern = bits.Select(c => c == '1').ToList();
        Assert.Equal(pattern, EvalPattern("\"" + global::Planner.Cli.Export.LayerPattern.Expression(pattern) + "\""));
    }

    [Fact]
    public void LayerPattern_UsesTheShortestPeriod()
    {
        Assert.Equal("([0]*3+[1]*58)", global::Planner.Cli.Export.LayerPattern.Expression([.. Enumerable.Range(0, 61).Select(l => l >= 3)]));
        Assert.Equal("([1]+[0])*18", global::Planner.Cli.Export.LayerPattern.Expression([.. Enumerable.Range(0, 36).Select(l => l % 2 == 0)]));
    }

    [Fact]
    public void Megatron_DeepSeekV3CarriesExpertsExpertParallelismLatentAttentionAndMtp()
    {
        var (comments, args) = ParseMegatron(Export(WritePlan(DeepSeek, "deepseek-v3", "dgx-b200"), "megatron"));
        var m = ModelLoader.Load("deepseek-v3");

        Assert.Equal("32", Value(args, "--expert-model-parallel-size"));
        Assert.Equal("1", Value(args, "--expert-tensor-parallel-size"));
        Assert.Equal("256", Value(args, "--num-experts"));
        Assert.Equal("8", Value(args, "--moe-router-topk"));
        Assert.Equal("18432", Value(args, "--ffn-hidden-size")); // the 3 dense blocks
        Assert.Equal("2048", Value(args, "--moe-ffn-hidden-size"));
        Assert.Equal("2048", Value(args, "--moe-shared-expert-intermediate-size")); // 1 shared expert of 2048
        Assert.Equal("\"([0]*3+[1]*58)\"", Value(args, "--moe-layer-freq"));
        Assert.Equal(m.Moe!.Pattern, EvalPattern(Value(args, "--moe-layer-freq")!));
        Assert.Null(Value(args, "--moe-grouped-gemm"));
        Assert.Equal("flex", Value(args, "--moe-token-dispatcher-type"));
        Assert.Equal("deepep", Value(args, "--moe-flex-dispatcher-backend"));
        Assert.Equal("aux_loss", Value(args, "--moe-router-load-balancing-type"));
        Assert.Equal(0.01, double.Parse(Value(args, "--moe-aux-loss-coeff")!, CultureInfo.InvariantCulture));
        Assert.False(Has(args, "--moe-expert-capacity-factor"), "the plan is dropless");
        Assert.False(Has(args, "--moe-pad-expert-input-to-capacity"));
        Assert.Contains(comments, c => c.Contains("dropless", StringComparison.Ordinal));
        Assert.Null(Value(args, "--sequence-parallel")); // MoE with tp 2 needs it

        Assert.Null(Value(args, "--multi-latent-attention"));
        Assert.Equal("1536", Value(args, "--q-lora-rank"));
        Assert.Equal("512", Value(args, "--kv-lora-rank"));
        Assert.Equal("128", Value(args, "--qk-head-dim")); // qk_nope_head_dim
        Assert.Equal("64", Value(args, "--qk-pos-emb-head-dim"));
        Assert.Equal("128", Value(args, "--v-head-dim"));
        Assert.False(Has(args, "--group-query-attention"), "MLA has no query groups");
        Assert.False(Has(args, "--kv-channels"));
        Assert.Equal("1", Value(args, "--mtp-num-layers"));
        Assert.Equal("0.0", Value(args, "--attention-dropout"));
        Assert.Equal("0.0", Value(args, "--hidden-dropout"));

        Assert.Null(Value(args, "--bf16"));
        Assert.Equal("e4m3", Value(args, "--fp8-format"));
        Assert.Equal("mxfp8", Value(args, "--fp8-recipe"));
        Assert.False(Has(args, "--fp4-format"));
    }

    [Fact]
    public void Megatron_Qwen3SetsTheExpertTensorParallelSizeAndHeadWidthButNoLayerPattern()
    {
        var (_, args) = ParseMegatron(Export(WritePlan(Qwen3, "qwen3-30b-a3b"), "megatron"));

        Assert.Equal("8", Value(args, "--expert-model-parallel-size"));
        Assert.Equal("2", Value(args, "--expert-tensor-parallel-size"));
        Assert.Equal("128", Value(args, "--num-experts"));
        Assert.Equal("8", Value(args, "--moe-router-topk"));
        Assert.Equal("768", Value(args, "--moe-ffn-hidden-size"));
        Assert.Equal("128", Value(args, "--kv-channels")); // head_dim 128, not 2048 / 32 = 64
        Assert.Null(Value(args, "--group-query-attention"));
        Assert.Equal("4", Value(args, "--num-query-groups"));
        Assert.Null(Value(args, "--moe-grouped-gemm"));
        Assert.Null(Value(args, "--bf16"));
        foreach (var absent in new[] { "--moe-layer-freq", "--moe-shared-expert-intermediate-size", "--multi-latent-attention", "--mtp-num-layers", "--window-size", "--fp8-format" })
            Assert.False(Has(args, absent), $"{absent} does not belong to Qwen3-30B-A3B in bf16");
    }

    [Fact]
    public void Megatron_ADroplessPlanWhoseTokensStayOnTheRankTakesTheAllToAllDispatcher()
    {
        // tp 1, ep 1: no token leaves its rank; Megatron's flex dispatcher refuses tp·ep = 1, and the pricing sends no copy.
        var local = Qwen3 with { Tp = 1, Dp = 16, Ep = 1, Etp = 1, SequenceParallel = false };
        var (_, args) = ParseMegatron(Export(WritePlan(local, "qwen3-30b-a3b"), "megatron"));
        Assert.Equal("alltoall", Value(args, "--moe-token-dispatcher-type"));
        Assert.False(Has(args, "--moe-flex-dispatcher-backend"));
        Assert.False(local.DeduplicatesDispatch(ExpertDispatcher.Flex));
        Assert.True(Qwen3.DeduplicatesDispatch(ExpertDispatcher.Flex));
        Assert.False((Qwen3 with { MoeCapacity = 1.25 }).DeduplicatesDispatch(ExpertDispatcher.Flex));
    }

    [Fact]
    public void Megatron_MixtralWithACapacityDropsTokensWithoutPadding()
    {
        var (comments, args) = ParseMegatron(Export(WritePlan(Mixtral, "mixtral-8x7b"), "megatron"));

        Assert.Equal("8", Value(args, "--expert-model-parallel-size"));
        Assert.Equal("1", Value(args, "--expert-tensor-parallel-size"));
        Assert.Equal("8", Value(args, "--num-experts"));
        Assert.Equal("2", Value(args, "--moe-router-topk"));
        Assert.False(Has(args, "--moe-ffn-hidden-size"), "Mixtral's experts are as wide as its ffn, Megatron's default");
        Assert.Equal("1.25", Value(args, "--moe-expert-capacity-factor"));
        Assert.Equal("probs", Value(args, "--moe-token-drop-policy"));
        Assert.Equal("alltoall", Value(args, "--moe-token-dispatcher-type")); // the capacity factor needs it
        Assert.Equal("aux_loss", Value(args, "--moe-router-load-balancing-type")); // and a loss-based balancing
        Assert.False(Has(args, "--moe-pad-expert-input-to-capacity"));
        Assert.Contains(comments, c => c.Contains("1.5 times the mean load", StringComparison.Ordinal));
        Assert.Equal("hybrid", Value(args, "--fp8-format"));
        Assert.Equal("tensorwise", Value(args, "--fp8-recipe"));
        Assert.Contains("ep 8 x etp 1, moe capacity 1.25", comments[0], StringComparison.Ordinal);
    }

    [Fact]
    public void Megatron_GptOssSlidingWindowsAlternateWithFullAttention()
    {
        var (_, args) = ParseMegatron(Export(WritePlan(GptOss, "gpt-oss-120b", "dgx-b200"), "megatron"));
        var m = ModelLoader.Load("gpt-oss-120b");

        Assert.Equal("128,0", Value(args, "--window-size"));
        Assert.Equal("\"([1]+[0])*18\"", Value(args, "--window-attn-skip-freq"));
        Assert.Equal(m.Window!.Layers, EvalPattern(Value(args, "--window-attn-skip-freq")!));
        Assert.Equal("64", Value(args, "--kv-channels")); // 2880 / 64 heads is not a whole head width
        Assert.False(Has(args, "--moe-layer-freq"), "every block is a MoE block");
        Assert.False(Has(args, "--disable-bias-linear"), "GPT-OSS has biases");
        Assert.Equal("e2m1", Value(args, "--fp4-format"));
        Assert.Equal("nvfp4", Value(args, "--fp4-recipe"));
        Assert.False(Has(args, "--fp8-format"), "Megatron refuses fp4 and fp8 together");
        Assert.Null(Value(args, "--bf16"));
    }

    [Fact]
    public void Megatron_AnUnevenLayoutPutsTheMtpModuleBeforeTheLoss()
    {
        var plan = Staged([14, 16, 15, 16], NoRecompute4); // no single middle count: the explicit layout
        var (_, args) = ParseMegatron(Export(WritePlan(plan, "deepseek-v3"), "megatron"));
        Assert.Equal("\"E,t*14|t*16|t*15|t*16,m,L\"", Value(args, "--pipeline-model-parallel-layout"));
        Assert.Equal("1", Value(args, "--mtp-num-layers"));
        Assert.Equal("1", Value(args, "--expert-model-parallel-size")); // a MoE model always says both degrees
        Assert.Equal("1", Value(args, "--expert-tensor-parallel-size")); // Megatron's default would be tp = 4
    }

    [Fact]
    public void Megatron_ADenseModelGetsNoMoeOrArchitectureFlags()
    {
        var (comments, args) = ParseMegatron(Export(WritePlan(Llama, "llama3-8b"), "megatron"));
        foreach (var flag in MoeFlags.Concat(ArchitectureFlags))
            Assert.False(Has(args, flag), $"{flag} does not belong to a dense Llama plan");
        Assert.DoesNotContain(comments, c => c.Contains("expert", StringComparison.OrdinalIgnoreCase));
        Assert.Equal("0.0", Value(args, "--hidden-dropout")); // Llama trains without dropout, Megatron's default is 0.1

        var (_, gpt2) = ParseMegatron(Export(WritePlan(Gpt2, "gpt2", name: "gpt2.json"), "megatron"));
        Assert.False(Has(gpt2, "--hidden-dropout"), "GPT-2 trains with dropout, Megatron's default");
    }

    [Theory]
    [InlineData("bf16", "--bf16", null, null, null, null)]
    [InlineData("fp16", "--fp16", null, null, null, null)]
    [InlineData("fp8", "--bf16", "hybrid", "delayed", null, null)]
    [InlineData("fp8-cs", "--bf16", "hybrid", "tensorwise", null, null)]
    [InlineData("mxfp8", "--bf16", "e4m3", "mxfp8", null, null)]
    [InlineData("nvfp4", "--bf16", null, null, "e2m1", "nvfp4")]
    [InlineData("fp32", null, null, null, null, null)]
    [InlineData("tf32", null, null, null, null, null)]
    public void Megatron_EveryPrecisionMapsToItsRecipe(string precision, string? dtype, string? fp8Format, string? fp8Recipe, string? fp4Format, string? fp4Recipe)
    {
        var plan = Llama with { Precision = PrecisionInfo.TryParse(precision)!.Value };
        var (_, args) = ParseMegatron(Export(WritePlan(plan, "llama3-8b"), "megatron"));
        foreach (var flag in new[] { "--bf16", "--fp16" })
            Assert.Equal(flag == dtype, Has(args, flag));
        void Is(string flag, string? expected)
        {
            if (expected is null)
                Assert.False(Has(args, flag), $"{precision} sets no {flag}");
            else
                Assert.Equal(expected, Value(args, flag));
        }
        Is("--fp8-format", fp8Format);
        Is("--fp8-recipe", fp8Recipe);
        Is("--fp4-format", fp4Format);
        Is("--fp4-recipe", fp4Recipe);
    }

    [Theory]
    [InlineData("fp16")]
    [InlineData("fp32")]
    public void Megatron_GroupedGemmNeedsBf16(string precision)
    {
        var plan = Mixtral with { Precision = PrecisionInfo.TryParse(precision)!.Value, MoeCapacity = null };
        var (comments, args) = ParseMegatron(Export(WritePlan(plan, "mixtral-8x7b"), "megatron"));
        Assert.False(Has(args, "--moe-grouped-gemm"));
        Assert.Contains(comments, c => c.StartsWith("# warning:", StringComparison.Ordinal) && c.Contains("--moe-grouped-gemm needs --bf16", StringComparison.Ordinal));
        Assert.Equal(precision == "fp16", comments.Any(c => c.Contains("Expert parallelism is not supported with fp16", StringComparison.Ordinal)));
    }

    /// <summary>Every property name in a JSON document, nested ones as "a.b".</summary>
    private static IEnumerable<string> Keys(JsonElement e, string prefix = "")
    {
        if (e.ValueKind != JsonValueKind.Object)
            yield break;
        foreach (var p in e.EnumerateObject())
        {
            yield return prefix + p.Name;
            foreach (var k in Keys(p.Value, prefix + p.Name + "."))
                yield return k;
        }
    }

    [Fact]
    public void DeepSpeed_ExpertsAreAModelCodeNoteAndTheJsonInventsNoKeys()
    {
        var ds = DeepSpeed(Export(WritePlan(DeepSeek, "deepseek-v3", "dgx-b200"), "deepspeed"));

        Assert.DoesNotContain(Keys(ds), k => k.Contains("moe", StringComparison.OrdinalIgnoreCase) || k.Contains("expert", StringComparison.OrdinalIgnoreCase)
                                            || k.Contains("fp8", StringComparison.OrdinalIgnoreCase) || k.Contains("fp4", StringComparison.OrdinalIgnoreCase));
        Assert.True(ds.GetProperty("bf16").GetProperty("enabled").GetBoolean());
        Assert.Equal(1, ds.GetProperty("zero_optimization").GetProperty("stage").GetInt32());
        var moe = Assert.Single(Comments(ds), c => c.Contains("deepspeed.moe.layer.MoE(", StringComparison.Ordinal));
        foreach (var arg in new[] { "hidden_size=7168", "num_experts=256", "ep_size=32", "k=8", "drop_tokens=False", "enable_expert_tensor_parallelism=False", "ffn 2048", "([0]*3+[1]*58)" })
            Assert.Contains(arg, moe, StringComparison.Ordinal);
        Assert.Contains(Comments(ds), c => c.Contains("split_params_into_different_moe_groups_for_optimizer", StringComparison.Ordinal));
        Assert.Contains(Comments(ds), c => c.Contains("shared experts (ffn 2048)", StringComparison.Ordinal));
        Assert.Contains(Comments(ds), c => c.Contains("MXFP8BlockScaling", StringComparison.Ordinal) && c.Contains("no fp8 or fp4 training key", StringComparison.Ordinal));
        Assert.Contains(Comments(ds), c => c.Contains("multi-head latent attention", StringComparison.Ordinal));
    }

    [Fact]
    public void DeepSpeed_ACapacityDropsTokensAndZero3WithExpertsWarns()
    {
        var ds = DeepSpeed(Export(WritePlan(Mixtral, "mixtral-8x7b"), "deepspeed"));
        var moe = Assert.Single(Comments(ds), c => c.Contains("deepspeed.moe.layer.MoE(", StringComparison.Ordinal));
        foreach (var arg in new[] { "num_experts=8", "ep_size=8", "k=2", "capacity_factor=1.25", "eval_capacity_factor=1.25", "drop_tokens=True" })
            Assert.Contains(arg, moe, StringComparison.Ordinal);
        Assert.DoesNotContain(Comments(ds), c => c.Contains("Stage 3", StringComparison.Ordinal));

        var z3 = DeepSpeed(Export(WritePlan(Mixtral with { Zero = 3 }, "mixtral-8x7b", name: "z3.json"), "deepspeed"));
        Assert.Equal(3, z3.GetProperty("zero_optimization").GetProperty("stage").GetInt32());
        Assert.Contains(Comments(z3), c => c.StartsWith("warning:", StringComparison.Ordinal) && c.Contains("MoE not supported with Stage 3", StringComparison.Ordinal));

        var etp = DeepSpeed(Export(WritePlan(Qwen3, "qwen3-30b-a3b", name: "etp.json"), "deepspeed"));
        Assert.Contains(Comments(etp), c => c.Contains("enable_expert_tensor_parallelism=True", StringComparison.Ordinal)); // etp = tp = 2
    }

    [Theory]
    [InlineData("fp8", "DelayedScaling()")]
    [InlineData("fp8-cs", "Float8CurrentScaling()")]
    [InlineData("mxfp8", "MXFP8BlockScaling()")]
    [InlineData("nvfp4", "NVFP4BlockScaling()")]
    public void DeepSpeed_QuantizedPrecisionsAreBf16WithTheirTransformerEngineRecipe(string precision, string recipe)
    {
        var plan = Llama with { Precision = PrecisionInfo.TryParse(precision)!.Value };
        var ds = DeepSpeed(Export(WritePlan(plan, "llama3-8b"), "deepspeed"));
        Assert.True(ds.GetProperty("bf16").GetProperty("enabled").GetBoolean());
        Assert.False(ds.TryGetProperty("fp16", out _));
        Assert.Contains(Comments(ds), c => c.Contains($"transformer_engine.common.recipe.{recipe}", StringComparison.Ordinal));
        Assert.DoesNotContain(Comments(ds), c => c.Contains("deepspeed.moe", StringComparison.Ordinal)); // dense
    }

    [Fact]
    public void Torchtitan_ExpertParallelDegreesAndMxfp8()
    {
        string text = Export(WritePlan(DeepSeek, "deepseek-v3", "dgx-b200"), "torchtitan");
        var toml = ParseToml(text);

        Assert.Equal(32, Int(toml, "parallelism.expert_parallel_degree"));
        Assert.Equal(1, Int(toml, "parallelism.expert_tensor_parallel_degree"));
        Assert.Equal(32, Int(toml, "parallelism.data_parallel_shard_degree"));
        Assert.Equal("[\"mx\"]", toml["model.converters"]);
        Assert.Equal("bfloat16", toml["training.mixed_precision_param"]);
        Assert.DoesNotContain(toml.Keys, k => k.StartsWith("float8.", StringComparison.Ordinal));
        Assert.Contains("MLA q_lora_rank 1536", text, StringComparison.Ordinal);
        Assert.Contains("moe_fqns_prototype", text, StringComparison.Ordinal); // the experts' MXFP8 grouped GEMMs, said in a comment
        Assert.DoesNotContain("torchtitan will refuse", text, StringComparison.Ordinal); // ep 32 of dp_shard 32 x cp 1 x tp 2 with etp 1
    }

    [Fact]
    public void Torchtitan_Float8ForExpertsAndADroplessWarningForACapacity()
    {
        string text = Export(WritePlan(Mixtral, "mixtral-8x7b"), "torchtitan");
        var toml = ParseToml(text);

        Assert.Equal(8, Int(toml, "parallelism.expert_parallel_degree"));
        Assert.Equal(1, Int(toml, "parallelism.expert_tensor_parallel_degree"));
        Assert.Equal("[\"float8\"]", toml["model.converters"]);
        Assert.Equal("tensorwise", toml["float8.recipe_name"]);
        Assert.Equal("[\"output\", \"router.gate\"]", toml["float8.filter_fqns"]);
        Assert.Equal("[\"experts\"]", toml["float8.moe_fqns_prototype"]);
        Assert.Contains("torchtitan's MoE is dropless", text, StringComparison.Ordinal);
    }

    [Fact]
    public void Torchtitan_AnExpertGroupItCannotCarveWarns()
    {
        // etp 1 with tp 2 makes torchtitan take ep from dp_shard x cp x tp, in multiples of cp x tp = 2: ep 2 fits;
        // with ZeRO-0 (DDP, dp_shard 1) ep 4 does not.
        var fits = Qwen3 with { Ep = 2, Etp = 1 };
        Assert.DoesNotContain("torchtitan will refuse", Export(WritePlan(fits, "qwen3-30b-a3b"), "torchtitan"), StringComparison.Ordinal);
        var ddp = Qwen3 with { Ep = 4, Etp = 1, Zero = 0 };
        Assert.Contains("torchtitan will refuse", Export(WritePlan(ddp, "qwen3-30b-a3b", name: "ddp.json"), "torchtitan"), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("bf16", null, null, "bfloat16")]
    [InlineData("fp8", "[\"float8\"]", "tensorwise", "bfloat16")]
    [InlineData("fp8-cs", "[\"float8\"]", "tensorwise", "bfloat16")]
    [InlineData("mxfp8", "[\"mx\"]", null, "bfloat16")]
    [InlineData("nvfp4", null, null, "bfloat16")]
    [InlineData("fp32", null, null, "float32")]
    [InlineData("tf32", null, null, "float32")]
    public void Torchtitan_EveryPrecisionMapsToItsConverter(string precision, string? converters, string? float8Recipe, string param)
    {
        var plan = Llama with { Precision = PrecisionInfo.TryParse(precision)!.Value };
        string text = Export(WritePlan(plan, "llama3-8b"), "torchtitan");
        var toml = ParseToml(text);
        Assert.Equal(converters, toml.GetValueOrDefault("model.converters"));
        Assert.Equal(float8Recipe, toml.GetValueOrDefault("float8.recipe_name"));
        Assert.Equal(param, toml["training.mixed_precision_param"]);
        Assert.False(toml.ContainsKey("parallelism.expert_parallel_degree"), "a dense model has no expert keys");
        Assert.Equal(precision == "nvfp4", text.Contains("warning: nvfp4 has no key", StringComparison.Ordinal));
        Assert.Equal(precision == "fp8", text.Contains("no delayed-scaling recipe", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("mixtral-8x7b", 3, 1, "'ep'")]
    [InlineData("qwen3-30b-a3b", 8, 3, "'etp'")]
    [InlineData("llama3-8b", 2, 1, "dense")]
    public void ExpertDegreesTheModelCannotTakeAreBadInput(string model, int ep, int etp, string name)
    {
        string path = WritePlan(Mixtral with { Ep = ep, Etp = etp, MoeCapacity = null, MoeImbalance = 1 }, model);
        foreach (var to in new[] { "megatron", "deepspeed", "torchtitan" })
            AssertBadInput(Run("export", "--plan", path, "--to", to), path, name);
    }

    [Fact]
    public void AMoePlanWithTensorParallelismButNoSequenceParallelismIsBadInput()
    {
        string path = WritePlan(Mixtral with { SequenceParallel = false }, "mixtral-8x7b");
        AssertBadInput(Run("export", "--plan", path, "--to", "megatron"), path, "'sequence_parallel'");
    }

    // ---- Bad plan files ----

    [Theory]
    [InlineData("missing-key", "'gbs'")]
    [InlineData("wrong-type", "'tp'")]
    [InlineData("bad-recompute", "'recompute'")]
    [InlineData("bad-precision", "'precision'")]
    [InlineData("non-positive", "'mbs'")]
    [InlineData("zero-out-of-range", "'zero'")]
    [InlineData("invalid-json", "invalid JSON")]
    [InlineData("not-an-object", "JSON object")]
    [InlineData("gbs-not-divisible", "'gbs'")]
    [InlineData("tp-does-not-divide-heads", "'tp'")]
    public void ABadPlanFileIsExit2WithOneLineNamingTheFileAndKey(string kind, string name)
    {
        var o = PredictionJson.Plan(Llama, "llama3-8b", "dgx-h100", PricingOptions.DefaultStack);
        string text = kind switch
        {
            "missing-key" => Without(o, "gbs"),
            "wrong-type" => Set(o, "tp", "\"4\""),
            "bad-recompute" => Set(o, "recompute", "\"partial\""),
            "bad-precision" => Set(o, "precision", "\"fp9\""),
            "non-positive" => Set(o, "mbs", "0"),
            "zero-out-of-range" => Set(o, "zero", "5"),
            "invalid-json" => "{\n  \"model\": \"llama3-8b\",\n  \"tp\": \n",
            "not-an-object" => "[1, 2, 3]",
            "gbs-not-divisible" => Set(o, "gbs", "100"),
            "tp-does-not-divide-heads" => Set(Set(o, "tp", "3"), "sequence_parallel", "false"),
            _ => throw new ArgumentException(kind),
        };
        string path = Path.Combine(_dir, $"{kind}.json");
        File.WriteAllText(path, text);
        foreach (var to in new[] { "megatron", "deepspeed", "torchtitan" })
            AssertBadInput(Run("export", "--plan", path, "--to", to), path, name);
    }

    private static string Without(JsonObject o, string key)
    {
        var copy = JsonNode.Parse(o.ToJsonString())!.AsObject();
        copy.Remove(key);
        return copy.ToJsonString();
    }

    private static string Set(JsonObject o, string key, string raw) => Set(o.ToJsonString(), key, raw);

    private static string Set(string json, string key, string raw)
    {
        var copy = JsonNode.Parse(json)!.AsObject();
        copy[key] = JsonNode.Parse(raw);
        return copy.ToJsonString();
    }

    [Fact]
    public void AMissingPlanFileIsExit2NamingIt()
    {
        string path = Path.Combine(_dir, "no-such-plan.json");
        AssertBadInput(Run("export", "--plan", path, "--to", "megatron"), "--plan", path);
    }

    [Fact]
    public void AnUnknownTargetIsExit2NamingTo()
    {
        AssertBadInput(Run("export", "--plan", WritePlan(Llama, "llama3-8b"), "--to", "jax"), "--to", "jax");
    }

    [Fact]
    public void AMissingTargetIsExit2NamingTo()
    {
        AssertBadInput(Run("export", "--plan", WritePlan(Llama, "llama3-8b")), "--to");
    }

    // ---- --out ----

    [Theory]
    [InlineData("megatron")]
    [InlineData("deepspeed")]
    [InlineData("torchtitan")]
    public void Out_WritesWhatStdoutWouldShowAndRefusesToOverwriteWithoutForce(string to)
    {
        string plan = WritePlan(Llama, "llama3-8b");
        string expected = Export(plan, to);
        string outPath = Path.Combine(_dir, $"config-{to}.txt");

        var first = Run("export", "--plan", plan, "--to", to, "--out", outPath);
        Assert.True(first.Code == 0, $"exit code {first.Code}; stderr: {first.Stderr}");
        Assert.Equal("", first.Stderr);
        Assert.Contains(outPath, first.Stdout);
        Assert.Equal(expected, File.ReadAllText(outPath));

        const string keep = "hand-edited config: keep me\n";
        File.WriteAllText(outPath, keep);
        AssertBadInput(Run("export", "--plan", plan, "--to", to, "--out", outPath), "--out", outPath, "--force");
        Assert.Equal(keep, File.ReadAllText(outPath));

        var forced = Run("export", "--plan", plan, "--to", to, "--out", outPath, "--force");
        Assert.True(forced.Code == 0, $"exit code {forced.Code}; stderr: {forced.Stderr}");
        Assert.Equal(expected, File.ReadAllText(outPath));
    }

    [Fact]
    public void Out_NeverOverwritesThePlanItself()
    {
        string plan = WritePlan(Llama, "llama3-8b");
        string before = File.ReadAllText(plan);
        AssertBadInput(Run("export", "--plan", plan, "--to", "megatron", "--out", plan, "--force"), "--out");
        Assert.Equal(before, File.ReadAllText(plan));
    }

    [Fact]
    public void Out_IntoAMissingDirectoryIsExit2()
    {
        string outPath = Path.Combine(_dir, "no", "such", "dir", "args.sh");
        AssertBadInput(Run("export", "--plan", WritePlan(Llama, "llama3-8b"), "--to", "megatron", "--out", outPath), "--out", outPath);
    }

    [Fact]
    public void Out_WithABadPlanWritesNothing()
    {
        string plan = Path.Combine(_dir, "bad.json");
        File.WriteAllText(plan, "{}");
        string outPath = Path.Combine(_dir, "args.sh");
        AssertBadInput(Run("export", "--plan", plan, "--to", "megatron", "--out", outPath), plan, "'model'");
        Assert.False(File.Exists(outPath));
    }

    // ---- End to end ----

    [Fact]
    public void APlanWrittenByPlanOutExportsToEveryTarget()
    {
        string plan = Path.Combine(_dir, "best.json");
        var planned = Run("plan", "--model", "llama2-7b", "--cluster", "dgx-a100-80g-1node", "--gbs", "64", "--seq", "4096", "--out", plan);
        Assert.True(planned.Code == 0, $"plan exit code {planned.Code}; stderr: {planned.Stderr}");
        var (p, _, _) = PlanFile.Read(plan);

        var (_, args) = ParseMegatron(Export(plan, "megatron"));
        Assert.Equal(p.Tp.ToString(CultureInfo.InvariantCulture), Value(args, "--tensor-model-parallel-size"));
        Assert.Equal("32", Value(args, "--num-layers"));

        var ds = DeepSpeed(Export(plan, "deepspeed"));
        Assert.Equal(64, ds.GetProperty("train_batch_size").GetInt32());
        Assert.Equal(p.MicroBatches, ds.GetProperty("gradient_accumulation_steps").GetInt32());

        var toml = ParseToml(Export(plan, "torchtitan"));
        Assert.Equal(p.Tp, Int(toml, "parallelism.tensor_parallel_degree"));
        Assert.Equal(4096, Int(toml, "training.seq_len"));
    }

    // ---- Fine-tuning and the optimizer ----

    // Llama-3 8B on one node, data parallel with ZeRO-1: the base for each fine-tuning plan below.
    private static readonly ParallelPlan Tune = new(Tp: 1, Pp: 1, Dp: 8, Cp: 1, Zero: 1, Mbs: 1, Gbs: 64, Seq: 4096, Vpp: 1,
        Recompute.Full, SequenceParallel: false, Precision.Bf16);

    private static readonly ParallelPlan LoraLion = Tune with { FineTuning = new FineTuning(FineTuneMethod.Lora, 32, LoraTargets.Q | LoraTargets.V, OptimizerKind.Lion) };
    private static readonly ParallelPlan QloraAdam8bit = Tune with { FineTuning = new FineTuning(FineTuneMethod.Qlora, 64, LoraTargets.All, OptimizerKind.Adam8bit) };
    private static readonly ParallelPlan Sgd = Tune with { FineTuning = new FineTuning(Optimizer: OptimizerKind.Sgd) };

    [Fact]
    public void FullTrainingWithAdamWExportsAsBeforeFineTuningExisted()
    {
        // An explicit default record writes what a plan without fine-tuning keys writes.
        foreach (var to in new[] { "megatron", "deepspeed", "torchtitan" })
            Assert.Equal(Export(WritePlan(Tune, "llama3-8b", name: "plain.json"), to).Replace("plain.json", "x"),
                         Export(WritePlan(Tune with { FineTuning = FineTuning.Default }, "llama3-8b", name: "deflt.json"), to).Replace("deflt.json", "x"));
        var (_, args) = ParseMegatron(Export(WritePlan(Tune, "llama3-8b"), "megatron"));
        Assert.False(Has(args, "--optimizer"));
        Assert.False(DeepSpeed(Export(WritePlan(Tune, "llama3-8b", name: "d.json"), "deepspeed")).TryGetProperty("optimizer", out _));
        Assert.DoesNotContain("[optimizer]", Export(WritePlan(Tune, "llama3-8b", name: "t.json"), "torchtitan"), StringComparison.Ordinal);
    }

    [Fact]
    public void Megatron_SgdIsItsOptimizerFlagAndLoraLionAreWarningsNamingNemo()
    {
        var (_, sgd) = ParseMegatron(Export(WritePlan(Sgd, "llama3-8b"), "megatron"));
        Assert.Equal("sgd", Value(sgd, "--optimizer"));
        Assert.Equal("0.9", Value(sgd, "--sgd-momentum"));

        var (comments, args) = ParseMegatron(Export(WritePlan(LoraLion, "llama3-8b", name: "ll.json"), "megatron"));
        Assert.False(Has(args, "--optimizer"), "Megatron has no Lion: no flag is made up");
        Assert.DoesNotContain(args, a => a.Flag.Contains("lora", StringComparison.OrdinalIgnoreCase));
        Assert.Contains(comments, c => c.Contains("warning: the plan steps with lion", StringComparison.Ordinal) && c.Contains("adam or sgd only", StringComparison.Ordinal));
        Assert.Contains(comments, c => c.Contains("no LoRA flag", StringComparison.Ordinal) && c.Contains("nemo.collections.llm.peft.LoRA(dim=32, target_modules=['linear_qkv'])", StringComparison.Ordinal));

        var (qComments, _) = ParseMegatron(Export(WritePlan(QloraAdam8bit, "llama3-8b", name: "q.json"), "megatron"));
        Assert.Contains(qComments, c => c.Contains("adam8bit", StringComparison.Ordinal) && c.Contains("bitsandbytes.optim.Adam8bit", StringComparison.Ordinal));
        Assert.Contains(qComments, c => c.Contains("4-bit NF4", StringComparison.Ordinal) && c.Contains("'linear_qkv', 'linear_proj', 'linear_fc1', 'linear_fc2'", StringComparison.Ordinal));
        Assert.Contains(qComments, c => c.Contains("finetune qlora rank 64 on all, optimizer adam8bit", StringComparison.Ordinal));
    }

    [Fact]
    public void DeepSpeed_LionAndSgdAreOptimizerTypesAndAdaptersAreAPeftRecipe()
    {
        var lion = DeepSpeed(Export(WritePlan(LoraLion, "llama3-8b"), "deepspeed"));
        Assert.Equal("Lion", lion.GetProperty("optimizer").GetProperty("type").GetString());
        Assert.False(lion.TryGetProperty("zero_allow_untested_optimizer", out _), "Lion is among ZeRO's tested optimizers");
        Assert.Contains(Comments(lion), c => c.Contains("peft.LoraConfig(r=32, target_modules=[\"q_proj\", \"v_proj\"]", StringComparison.Ordinal) && c.Contains("before deepspeed.initialize", StringComparison.Ordinal));
        Assert.DoesNotContain(Comments(lion), c => c.Contains("BitsAndBytesConfig", StringComparison.Ordinal));

        var sgd = DeepSpeed(Export(WritePlan(Sgd, "llama3-8b", name: "s.json"), "deepspeed"));
        Assert.Equal("SGD", sgd.GetProperty("optimizer").GetProperty("type").GetString());
        Assert.Equal(0.9, sgd.GetProperty("optimizer").GetProperty("params").GetProperty("momentum").GetDouble());
        Assert.True(sgd.GetProperty("zero_allow_untested_optimizer").GetBoolean());

        var q = DeepSpeed(Export(WritePlan(QloraAdam8bit, "llama3-8b", name: "q.json"), "deepspeed"));
        Assert.False(q.TryGetProperty("optimizer", out _), "8-bit Adam is a client optimizer, not an optimizer.type");
        Assert.True(q.GetProperty("zero_allow_untested_optimizer").GetBoolean());
        var notes = Comments(q);
        Assert.Contains(notes, c => c.Contains("bitsandbytes.optim.Adam8bit", StringComparison.Ordinal) && c.Contains("deepspeed.initialize(model=model, optimizer=optimizer", StringComparison.Ordinal));
        Assert.Contains(notes, c => c.Contains("BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=\"nf4\", bnb_4bit_use_double_quant=True", StringComparison.Ordinal)
                                    && c.Contains("r=64, target_modules=[\"q_proj\", \"k_proj\", \"v_proj\", \"o_proj\", \"gate_proj\", \"up_proj\", \"down_proj\"]", StringComparison.Ordinal));
        Assert.Contains(notes, c => c.Contains("ZeRO-3", StringComparison.Ordinal) && c.Contains("refuses", StringComparison.Ordinal));
    }

    [Fact]
    public void DeepSpeed_Gpt2AdaptersUseItsFusedAttentionNames()
    {
        var plan = Gpt2 with { FineTuning = new FineTuning(FineTuneMethod.Lora, 8, LoraTargets.Q | LoraTargets.V | LoraTargets.Up) };
        var notes = Comments(DeepSpeed(Export(WritePlan(plan, "gpt2"), "deepspeed")));
        Assert.Contains(notes, c => c.Contains("target_modules=[\"attn.c_attn\", \"mlp.c_fc\"]", StringComparison.Ordinal) && c.Contains("Q, K and V in one matrix", StringComparison.Ordinal));
    }

    [Fact]
    public void Torchtitan_OtherOptimizersAndAdaptersAreWarningsOverAdamW()
    {
        foreach (var (plan, name) in new[] { (LoraLion, "lion"), (QloraAdam8bit, "adam8bit"), (Sgd, "sgd") })
        {
            string text = Export(WritePlan(plan, "llama3-8b", name: $"{name}.json"), "torchtitan");
            var toml = ParseToml(text);
            Assert.Equal("AdamW", toml["optimizer.name"]);
            Assert.Contains($"warning: the plan steps with {name}; torchtitan's [optimizer] name builds Adam or AdamW only", text, StringComparison.Ordinal);
            Assert.Equal(plan.Tuning.Adapters, text.Contains("no LoRA key", StringComparison.Ordinal));
        }
        string q = Export(WritePlan(QloraAdam8bit, "llama3-8b", name: "q.json"), "torchtitan");
        Assert.Contains("no 4-bit NF4 base", q, StringComparison.Ordinal);
    }

    [Fact]
    public void QloraWithZero3IsExit2NamingTheKey()
    {
        string path = WritePlan(QloraAdam8bit with { Zero = 3 }, "llama3-8b");
        foreach (var to in new[] { "megatron", "deepspeed", "torchtitan" })
            AssertBadInput(Run("export", "--plan", path, "--to", to), path, "'finetune'");
    }
}
