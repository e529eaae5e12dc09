using FsCheck;
using FsCheck.Fluent;
using Planner.Cli.Commands;
using CliEntry = global::Planner.Cli.Commands.Cli;

namespace Planner.Cli.Tests.Fuzz;

/// <summary>
/// One fuzzer per loader: valid files to mutate (and random ones), and the verb that reads them, called in-process.
/// </summary>
public static class FuzzLoaders
{
    private const string Gpt2 = """{"n_layer": 4, "n_embd": 128, "n_head": 4, "n_positions": 64, "vocab_size": 512, "n_inner": null, "activation_function": "gelu_new"}""";

    private const string Llama = """
        {"model_type": "llama", "num_hidden_layers": 4, "hidden_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
         "intermediate_size": 256, "vocab_size": 512, "max_position_embeddings": 64, "hidden_act": "silu", "tie_word_embeddings": false,
         "head_dim": 32, "rope_theta": 10000.0}
        """;

    private const string Moe = """
        {"model_type": "mixtral", "num_hidden_layers": 4, "hidden_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
         "intermediate_size": 256, "vocab_size": 512, "max_position_embeddings": 64, "hidden_act": "silu", "num_local_experts": 4,
         "num_experts_per_tok": 2, "moe_intermediate_size": 64, "n_shared_experts": 1, "first_k_dense_replace": 1, "moe_layer_freq": 1}
        """;

    private const string Cluster = """
        name: fuzz-cluster
        gpu: h100-sxm
        nodes: 2
        gpus_per_node: 8
        nvlink_domain: 8
        intra_node:
          bandwidth_gbs: 450
          latency_us: 3
        inter_node:
          bandwidth_gbs: 50
          latency_us: 5
          efficiency: 0.8
        price_per_gpu_hour: 2.5
        """;

    private const string InlineGpuCluster = """
        name: fuzz-inline
        gpu: {name: x, peak_tflops: {fp32: 67, bf16: 989.5, fp16: 989.5, fp8: 1979}, memory_gib: 80, memory_bandwidth_gbs: 3350, gemm_efficiency: 0.7}
        nodes: 1
        gpus_per_node: 4
        intra_node: {bandwidth_gbs: 450, latency_us: 3}
        inter_node: {bandwidth_gbs: 50, latency_us: 5}
        host: {memory_gib: 2048, pcie_gbs: 25, memory_bandwidth_gbs: 200}
        """;

    /// <summary>A small GPT-2 config in the temporary folder, for the verbs that need a model beside the fuzzed file.</summary>
    private static readonly Lazy<string> TinyModel = new(() =>
    {
        // One folder for every run (the same small file each time), not one left behind per run.
        string path = Path.Combine(Directory.CreateDirectory(Path.Combine(Path.GetTempPath(), "planner-fuzz-model")).FullName, "config.json");
        File.WriteAllText(path, Gpt2);
        return path;
    });

    /// <summary>The loaders fuzzed, by the names <see cref="Run"/> takes.</summary>
    public static readonly string[] Names = ["model", "cluster", "plan", "run-plan", "calibration", "measurements", "validation", "tokens"];

    /// <summary>Runs one loader's fuzzer on <paramref name="cases"/> inputs.</summary>
    public static FuzzCounts Run(string loader, int cases) => loader switch
    {
        "model" => ModelConfig(cases),
        "cluster" => ClusterFile(cases),
        "plan" => PlanFile(cases),
        "run-plan" => RunPlanFile(cases),
        "calibration" => CalibrationFile(cases),
        "measurements" => Measurements(cases),
        "validation" => ValidationRuns(cases),
        "tokens" => TokenFile(cases),
        _ => throw new ArgumentException($"no fuzzer '{loader}'"),
    };

    /// <summary>The flags of <see cref="Predict"/>'s plan: a valid model or cluster file may not suit them, and the line
    /// then names the flag (<c>--seq: 64 is beyond the 3 learned positions</c>).</summary>
    private static readonly string[] PlanFlags = ["--tp", "--pp", "--dp", "--mbs", "--gbs", "--seq", "--precision"];

    private static string[] Predict(string model, string cluster, params string[] more) =>
        ["predict", "--model", model, "--cluster", cluster, "--tp", "1", "--pp", "1", "--dp", "2", "--mbs", "1", "--gbs", "4", "--seq", "64", "--precision", "fp32", .. more];

    private static Func<string, TextWriter, TextWriter, int> Cli(Func<string, string[]> args) => (path, o, e) => CliEntry.Run(args(path), o, e);

    /// <summary>HuggingFace model configs, read by <c>predict --model</c>.</summary>
    public static FuzzCounts ModelConfig(int cases) => Fuzzer.Run("model", Gen.OneOf(JsonMutations.Of(Gpt2), JsonMutations.Of(Llama), JsonMutations.Of(Moe)),
        cases, "config.json", Cli(path => Predict(path, "local-cpu")), ["--model", .. PlanFlags]);

    /// <summary>Cluster YAML, read by <c>predict --cluster</c>.</summary>
    public static FuzzCounts ClusterFile(int cases) => Fuzzer.Run("cluster", Gen.OneOf(LineMutations.Yaml(Cluster), LineMutations.Yaml(InlineGpuCluster)),
        cases, "cluster.yaml", Cli(path => Predict(TinyModel.Value, path)), ["--cluster", .. PlanFlags]);

    /// <summary>Plan files, read by <c>export --plan</c> (<c>run --plan</c> reads them the same way, then trains).</summary>
    public static FuzzCounts PlanFile(int cases) =>
        Fuzzer.Run("plan", PlanInputs(), cases, "plan.json", Cli(path => ["export", "--plan", path, "--to", "megatron"]), "--plan");

    /// <summary>Mutations of two valid plans of the small model: one with most optional keys, one with an uneven split.</summary>
    private static Gen<FuzzInput> PlanInputs()
    {
        string plan = $$"""
            {"model": "{{TinyModel.Value}}", "cluster": "local-cpu", "stack": "megatron-core", "tp": 1, "pp": 2, "dp": 1, "cp": 1, "zero": 1, "mbs": 1,
             "gbs": 4, "seq": 64, "vpp": 1, "recompute": "full", "sequence_parallel": false, "precision": "bf16", "recompute_layers": 1,
             "optimizer_offload": 0, "finetune": "lora", "lora_rank": 8, "lora_targets": "attention", "optimizer": "adamw"}
            """;
        string staged = $$$"""
            {"model": "{{{TinyModel.Value}}}", "cluster": "local-cpu", "tp": 1, "pp": 2, "dp": 1, "cp": 1, "zero": 0, "mbs": 1, "gbs": 4, "seq": 64,
             "vpp": 1, "recompute": "none", "sequence_parallel": false, "precision": "fp32",
             "stages": {"layers": [3, 1], "recompute": ["full", "none"], "groups": [0, 0]}, "prediction": {"step_time_s": 1}}
            """;
        return Gen.OneOf(JsonMutations.Of(plan), JsonMutations.Of(staged));
    }

    /// <summary>
    /// Plan files read by <c>run --plan</c> through every check before a rank starts (the executor's refusals, the plan
    /// against its model, the machine's memory): <c>--warmup 2</c> of <c>--steps 2</c> is the last of them, so a plan
    /// that passes them all is refused there instead of trained, and counted as accepted.
    /// </summary>
    public static FuzzCounts RunPlanFile(int cases) => Fuzzer.Run("run-plan", PlanInputs(), cases, "plan.json", (path, o, e) =>
    {
        int code = CliEntry.Run(["run", "--plan", path, "--device", "cpu", "--steps", "2", "--warmup", "2"], o, e);
        if (code != 2 || !e.ToString()!.StartsWith("planner: --warmup: 2 must be", StringComparison.Ordinal))
            return code;
        ((StringWriter)e).GetStringBuilder().Clear();
        return 0;
    }, "--plan");

    /// <summary>Calibration CSV (profile's output), read by <c>predict --calibration</c>.</summary>
    public static FuzzCounts CalibrationFile(int cases)
    {
        string valid = File.ReadAllText(RepoFiles.Find("tests/Planner.Tests/Fuzz/fixtures/local-cpu-calibration.csv"));
        return Fuzzer.Run("calibration", LineMutations.Csv(valid), cases, "calibration.csv",
            Cli(path => Predict(TinyModel.Value, "local-cpu", "--calibration", path, "--force-calibration")), "--calibration");
    }

    /// <summary>Kept measurements (profile --keep-measurements), read by <c>profile --from-measurements</c>.</summary>
    public static FuzzCounts Measurements(int cases)
    {
        string valid = File.ReadAllText(RepoFiles.Find("tests/Planner.Tests/Fuzz/fixtures/local-cpu-measurements.json"));
        return Fuzzer.Run("measurements", JsonMutations.Of(valid), cases, "measurements.json", (path, o, e) =>
        {
            string outFile = Path.Combine(Path.GetDirectoryName(path)!, "c.csv");
            int code = CliEntry.Run(["profile", "--cluster", "local-cpu", "--from-measurements", path, "--out", outFile], o, e);
            if (code == 0)
            {
                // What a refit accepts must price: the calibration it wrote is read and used as profile's own would be.
                var err = new StringWriter();
                int priced = CliEntry.Run(Predict(TinyModel.Value, "local-cpu", "--calibration", outFile, "--force-calibration"), new StringWriter(), err);
                if (priced != 0)
                    throw new Xunit.Sdk.XunitException($"the refit wrote a calibration that does not price (exit {priced}): {err}");
            }
            return code;
        }, "--from-measurements");
    }

    /// <summary>Validation CSV of measured runs, read by <c>validate --runs</c>.</summary>
    public static FuzzCounts ValidationRuns(int cases)
    {
        var published = File.ReadAllLines(RepoFiles.Find("validation/published_runs.csv")).Where(l => !l.Contains('"')).Take(4);
        string valid = string.Join('\n', published) + "\n";
        return Fuzzer.Run("validation", LineMutations.Csv(valid), cases, "runs.csv", Cli(path => ["validate", "--runs", path]), "--runs");
    }

    /// <summary>Token files (<c>run --data</c>), through the launcher's check and the CLI's error mapping.</summary>
    public static FuzzCounts TokenFile(int cases) => Fuzzer.Run("tokens", TokenMutations.Of(vocab: 512), cases, "tokens.bin", (path, o, e) =>
    {
        // Both widths of a token: the same bytes as uint16 and as uint32 tokens; a rule broken by either fails.
        int wide = CliEntry.Guard(() => { TokenFileCheck.Check(path, 4, 16, 512, 8); return 0; }, e);
        if (wide != 0)
        {
            Fuzzer.Verdict(wide, e.ToString() ?? "", [path, "--data"]);
            ((StringWriter)e).GetStringBuilder().Clear();
        }
        return CliEntry.Guard(() => { TokenFileCheck.Check(path, 2, 16, 512, 8); return 0; }, e);
    }, "--data");
}
