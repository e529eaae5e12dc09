using Planner.Cli.Commands;
using CliEntry = global::Planner.Cli.Commands.Cli;
using Xunit;

namespace Planner.Cli.Tests;

/// <summary>
/// CONTRACTS.md "Exit codes of every verb": bad input is exit 2 with one line on stderr that names the file, key or
/// flag and what was expected, never a stack trace.
/// </summary>
public sealed class BadInputTests
{
    private const string Model = "llama3-8b";
    private const string Cluster = "dgx-h100"; // 16 nodes x 8 H100 = 128 GPUs

    /// <summary>The flags of a valid plan of <see cref="Model"/> on <see cref="Cluster"/>, minus the ones a case replaces.</summary>
    private static string[] Predict(params string[] overrides)
    {
        var flags = new Dictionary<string, string?>
        {
            ["--model"] = Model,
            ["--cluster"] = Cluster,
            ["--tp"] = "1",
            ["--pp"] = "1",
            ["--mbs"] = "1",
            ["--gbs"] = "128",
        };
        for (int i = 0; i < overrides.Length; i++)
        {
            string key = overrides[i];
            bool hasValue = i + 1 < overrides.Length && !overrides[i + 1].StartsWith("--", StringComparison.Ordinal);
            flags[key] = hasValue ? overrides[++i] : null;
        }
        var args = new List<string> { "predict" };
        foreach (var (k, v) in flags)
        {
            args.Add(k);
            if (v is not null)
                args.Add(v);
        }
        return args.ToArray();
    }

    private static string ClusterYaml(string intraKey = "intra_node", string nodes = "16", string extra = "") =>
        "name: test-cluster\n" +
        "gpu: h100-sxm\n" +
        $"nodes: {nodes}\n" +
        "gpus_per_node: 8\n" +
        $"{intraKey}:\n" +
        "  bandwidth_gbs: 450\n" +
        "  latency_us: 3\n" +
        "inter_node:\n" +
        "  bandwidth_gbs: 50\n" +
        "  latency_us: 5\n" +
        extra;

    private const string LlamaConfig = """
        {
          "model_type": "llama",
          "num_hidden_layers": 32,
          "hidden_size": 4096,
          "num_attention_heads": 32,
          "num_key_value_heads": 8,
          "intermediate_size": 14336,
          "vocab_size": 128256,
          "max_position_embeddings": 8192,
          "hidden_act": "silu",
          "tie_word_embeddings": false
        }
        """;

    /// <summary>Builds the arguments of a case (writing its files into <paramref name="dir"/>) and the strings the
    /// error line must contain.</summary>
    private static (string[] Args, string[] Names) Case(string name, string dir)
    {
        string Write(string file, string text)
        {
            string path = Path.Combine(dir, file);
            File.WriteAllText(path, text);
            return path;
        }

        switch (name)
        {
            case "missing-model-file":
                return (Predict("--model", "/nonexistent/config.json"), ["--model", "/nonexistent/config.json"]);
            case "unknown-model-preset":
                return (Predict("--model", "no-such-model-preset"), ["--model", "no-such-model-preset"]);
            case "invalid-json-config":
                {
                    string path = Write("config.json", "{\n  \"num_hidden_layers\": 32,\n  \"hidden_size\": \n");
                    return (Predict("--model", path), [path]);
                }
            case "config-missing-hidden-size":
                {
                    string path = Write("config.json", LlamaConfig.Replace("\"hidden_size\": 4096,", ""));
                    return (Predict("--model", path), ["hidden_size"]);
                }
            case "missing-cluster-file":
                return (Predict("--cluster", "/nonexistent/cluster.yaml"), ["--cluster", "/nonexistent/cluster.yaml"]);
            case "unknown-cluster-preset":
                return (Predict("--cluster", "no-such-cluster-preset"), ["--cluster", "no-such-cluster-preset"]);
            case "invalid-yaml-bad-indent":
                {
                    string path = Write("cluster.yaml", "name: x\n  gpu: h100-sxm\n nodes: 1\n");
                    return (Predict("--cluster", path), [path]);
                }
            case "invalid-yaml-unclosed-flow-sequence":
                {
                    string path = Write("cluster.yaml", "name: x\ngpu: [h100-sxm\nnodes: 1\n");
                    return (Predict("--cluster", path), [path]);
                }
            case "yaml-unknown-key-typo-of-required":
                {
                    string path = Write("cluster.yaml", ClusterYaml(intraKey: "intra_nod"));
                    // The offending key is the typo 'intra_nod' (not merely the file, and not only the missing 'intra_node').
                    return (Predict("--cluster", path), [path, "'intra_nod'"]);
                }
            case "yaml-unknown-key-top-level":
                {
                    string path = Write("cluster.yaml", ClusterYaml(extra: "price_per_gpu_hr: 2\n"));
                    return (Predict("--cluster", path), [path, "price_per_gpu_hr"]);
                }
            case "yaml-unknown-key-nested":
                {
                    string path = Write("cluster.yaml", ClusterYaml().Replace("  latency_us: 5\n", "  latency_us: 5\n  efficency: 0.9\n"));
                    return (Predict("--cluster", path), [path, "efficency"]);
                }
            case "yaml-non-positive-nodes":
                {
                    string path = Write("cluster.yaml", ClusterYaml(nodes: "0"));
                    return (Predict("--cluster", path), [path, "nodes"]);
                }
            case "tp-does-not-divide-heads":
                return (Predict("--tp", "3"), ["--tp"]);
            case "tp-does-not-divide-heads-explicit-dp":
                // 3 · 1 · 32 = 96 GPUs fit the cluster; only the 32 heads rule --tp 3 out.
                return (Predict("--tp", "3", "--dp", "32"), ["--tp"]);
            case "gbs-not-divisible-by-dp-mbs":
                // dp defaults to 128 / 8 = 16; 100 is not a multiple of 16 · 1.
                return (Predict("--tp", "8", "--gbs", "100"), ["--gbs"]);
            case "more-gpus-than-cluster":
                // 8 · 4 · 8 = 256 GPUs on a 128-GPU cluster.
                return (Predict("--tp", "8", "--pp", "4", "--dp", "8"), ["--dp", "128"]);
            case "non-numeric-tp":
                return (Predict("--tp", "abc"), ["--tp"]);
            case "unknown-flag":
                return (Predict("--bogus-flag"), ["--bogus-flag"]);
            case "zero-5":
                return (Predict("--zero", "5"), ["--zero"]);
            case "precision-fp9":
                return (Predict("--precision", "fp9"), ["--precision", "fp9"]);
            case "recompute-partial":
                return (Predict("--recompute", "partial"), ["--recompute", "partial"]);
            case "mbs-0":
                return (Predict("--mbs", "0"), ["--mbs"]);
            case "vpp-2-with-pp-1":
                return (Predict("--vpp", "2", "--pp", "1"), ["--vpp"]);
            case "fp8-on-a100":
                return (Predict("--cluster", "dgx-a100-80g", "--precision", "fp8"), ["--precision", "fp8"]);
            case "ep-on-a-dense-model":
                return (Predict("--ep", "8"), ["--ep", "dense"]);
            case "ep-not-dividing-experts":
                // Mixtral's 8 experts over 3 ranks (tp 1 · dp 48 leaves room for the groups).
                return (Predict("--model", "mixtral-8x7b", "--ep", "3", "--dp", "48", "--gbs", "96"), ["--ep", "3", "8 experts"]);
            case "ep-etp-not-dividing-a-stage":
                return (Predict("--model", "mixtral-8x7b", "--ep", "8", "--dp", "4", "--gbs", "16"), ["--ep", "tp·cp·dp"]);
            case "etp-not-dividing-expert-ffn":
                return (Predict("--model", "mixtral-8x7b", "--ep", "2", "--etp", "3", "--dp", "6", "--gbs", "12"), ["--etp", "3"]);
            case "moe-tp-without-sequence-parallel":
                return (Predict("--model", "mixtral-8x7b", "--tp", "2", "--ep", "2", "--etp", "2"), ["--sequence-parallel"]);
            case "moe-imbalance-below-one":
                return (Predict("--model", "mixtral-8x7b", "--moe-imbalance", "0.5"), ["--moe-imbalance"]);
            case "mxfp8-on-h100":
                return (Predict("--precision", "mxfp8"), ["--precision", "mxfp8"]);
            case "nvlink-domain-with-groups":
                {
                    string yaml = ClusterYaml(extra: "nvlink_domain: 16\n").Replace("gpu: h100-sxm\nnodes: 16\n", "groups:\n  - {gpu: a100-80g, nodes: 2}\n  - {gpu: h100-sxm, nodes: 2}\n");
                    string path = Write("cluster.yaml", yaml);
                    return (Predict("--cluster", path), [path, "nvlink_domain", "groups"]);
                }
            case "nvlink-domain-not-whole-nodes":
                {
                    string path = Write("cluster.yaml", ClusterYaml(extra: "nvlink_domain: 12\n"));
                    return (Predict("--cluster", path), [path, "nvlink_domain"]);
                }
            case "moe-layer-freq-wrong-length":
                {
                    string path = Write("config.json", LlamaConfig.Replace("\"tie_word_embeddings\": false", "\"tie_word_embeddings\": false, \"num_local_experts\": 8, \"num_experts_per_tok\": 2, \"moe_layer_freq\": [1, 0]"));
                    return (Predict("--model", path), [path, "moe_layer_freq"]);
                }
            case "plan-mxfp8-on-h100":
                return (["plan", "--model", Model, "--cluster", Cluster, "--precision", "bf16,mxfp8"], ["--precision", "mxfp8"]);
            case "missing-required-tp":
                return (["predict", "--model", Model, "--cluster", Cluster, "--pp", "1", "--mbs", "1", "--gbs", "128"], ["--tp"]);
            case "validate-missing-runs":
                return (["validate", "--runs", "/nonexistent/runs.csv"], ["--runs", "/nonexistent/runs.csv"]);
            case "validate-malformed-csv":
                {
                    // A header the reader accepts, and a 'gpus' column that is not a whole number.
                    string header = "id,source,gpu,gpus,gpus_per_node,intra_gbs,inter_gbs,layers,hidden,heads,kv_heads,ffn,vocab,seq,act,tied,tp,pp,dp,cp,vpp,mbs,gbs,recompute,seq_parallel,zero,precision,metric,value,step_time_s,notes";
                    string row = "bad-1,test,a100-80g,many,8,300,25,24,2304,24,24,9216,51200,2048,gelu,false,1,1,32,1,1,16,512,full,false,0,fp16,hfu_tflops_per_gpu,137,3.5280,wrong type in gpus";
                    string path = Write("runs.csv", header + "\n" + row + "\n");
                    return (["validate", "--runs", path], [path]);
                }
            case "run-plan-unknown-key":
                {
                    // A misspelt key must not train with the default it meant to change.
                    string path = Write("plan.json", """
                        {"model": "gpt2", "cluster": "local-cpu", "tp": 1, "pp": 1, "dp": 1, "cp": 1, "zero": 0, "mbs": 1, "gbs": 1,
                         "seq": 64, "vpp": 1, "recompute": "none", "sequence_parallel": false, "precision": "fp32", "optimiser": "lion"}
                        """);
                    return (["run", "--plan", path, "--steps", "2"], [path, "optimiser"]);
                }
            case "export-plan-unknown-stages-key":
                {
                    string path = Write("plan.json", """
                        {"model": "gpt2", "cluster": "local-cpu", "tp": 1, "pp": 2, "dp": 1, "cp": 1, "zero": 0, "mbs": 1, "gbs": 1,
                         "seq": 64, "vpp": 1, "recompute": "none", "sequence_parallel": false, "precision": "fp32",
                         "stages": {"layers": [6, 6], "recompute": ["none", "none"], "layer": [6, 6]}}
                        """);
                    return (["export", "--plan", path, "--to", "megatron"], [path, "stages.layer"]);
                }
            case "plan-unknown-model":
                return (["plan", "--model", "no-such-model-preset", "--cluster", Cluster], ["--model", "no-such-model-preset"]);
            case "plan-gbs-0":
                return (["plan", "--model", Model, "--cluster", Cluster, "--gbs", "0"], ["--gbs"]);
            case "profile-one-rank":
                return (["profile", "--ranks", "1", "--out", Path.Combine(dir, "c.csv")], ["--ranks"]);
            case "profile-node-rank-out-of-range":
                return (["profile", "--nnodes", "2", "--node-rank", "2", "--out", Path.Combine(dir, "c.csv")], ["--node-rank", "0 to 1"]);
            case "profile-gpu-cluster":
                // More ranks than any machine has GPUs: auto falls back to the CPU, which a GPU cluster refuses.
                return (["profile", "--cluster", "dgx-h100", "--ranks", "64", "--out", Path.Combine(dir, "c.csv")], ["--cluster dgx-h100", "local-cpu"]);
            case "profile-nnodes-0":
                return (["profile", "--nnodes", "0", "--out", Path.Combine(dir, "c.csv")], ["--nnodes"]);
            case "profile-gpu-cluster-on-cpu":
                return (["profile", "--cluster", "dgx-h100", "--device", "cpu", "--out", Path.Combine(dir, "c.csv")], ["--cluster dgx-h100", "--device cpu"]);
            case "profile-cuda-without-cuda":
                // Without CUDA the shim's refusal; with it (a CUDA build on a GPU node), local-cpu's.
                return (["profile", "--device", "cuda", "--out", Path.Combine(dir, "c.csv")],
                    Planner.Executor.Torch.TorchRuntime.CudaDevices == 0 ? ["--device cuda", "no CUDA device"] : ["--cluster local-cpu", "CPU cores"]);
            case "profile-device-bogus":
                return (["profile", "--device", "tpu", "--out", Path.Combine(dir, "c.csv")], ["--device", "tpu"]);
            case "profile-from-missing-measurements":
                return (["profile", "--from-measurements", Path.Combine(dir, "none.json"), "--out", Path.Combine(dir, "c.csv")], ["--from-measurements", "none.json"]);
            case "profile-from-measurements-lacking-gemm":
                return (["profile", "--from-measurements", Write("m.json", "{\"add_seconds\": 0.01}"), "--out", Path.Combine(dir, "c.csv")], ["--from-measurements", "'gemm'"]);
            case "profile-from-cpu-measurements-for-a-gpu-cluster":
                return (["profile", "--cluster", "dgx-h100", "--from-measurements", Write("m.json", "{\"device\": \"cpu\"}"), "--out", Path.Combine(dir, "c.csv")], ["--from-measurements", "CPU cores", "dgx-h100"]);
            case "profile-from-measurements-not-json":
                return (["profile", "--from-measurements", Write("m.json", "gemm: [1, 2"), "--out", Path.Combine(dir, "c.csv")], ["--from-measurements", "not JSON"]);
            default:
                throw new ArgumentException($"unknown case {name}");
        }
    }

    [Theory]
    [InlineData("missing-model-file")]
    [InlineData("unknown-model-preset")]
    [InlineData("invalid-json-config")]
    [InlineData("config-missing-hidden-size")]
    [InlineData("missing-cluster-file")]
    [InlineData("unknown-cluster-preset")]
    [InlineData("invalid-yaml-bad-indent")]
    [InlineData("invalid-yaml-unclosed-flow-sequence")]
    [InlineData("yaml-unknown-key-typo-of-required")]
    [InlineData("yaml-unknown-key-top-level")]
    [InlineData("yaml-unknown-key-nested")]
    [InlineData("yaml-non-positive-nodes")]
    [InlineData("tp-does-not-divide-heads")]
    [InlineData("tp-does-not-divide-heads-explicit-dp")]
    [InlineData("gbs-not-divisible-by-dp-mbs")]
    [InlineData("more-gpus-than-cluster")]
    [InlineData("non-numeric-tp")]
    [InlineData("unknown-flag")]
    [InlineData("zero-5")]
    [InlineData("precision-fp9")]
    [InlineData("recompute-partial")]
    [InlineData("mbs-0")]
    [InlineData("vpp-2-with-pp-1")]
    [InlineData("fp8-on-a100")]
    [InlineData("ep-on-a-dense-model")]
    [InlineData("ep-not-dividing-experts")]
    [InlineData("ep-etp-not-dividing-a-stage")]
    [InlineData("etp-not-dividing-expert-ffn")]
    [InlineData("moe-tp-without-sequence-parallel")]
    [InlineData("moe-imbalance-below-one")]
    [InlineData("mxfp8-on-h100")]
    [InlineData("nvlink-domain-not-whole-nodes")]
    [InlineData("nvlink-domain-with-groups")]
    [InlineData("moe-layer-freq-wrong-length")]
    [InlineData("plan-mxfp8-on-h100")]
    [InlineData("missing-required-tp")]
    [InlineData("validate-missing-runs")]
    [InlineData("validate-malformed-csv")]
    [InlineData("run-plan-unknown-key")]
    [InlineData("export-plan-unknown-stages-key")]
    [InlineData("plan-unknown-model")]
    [InlineData("plan-gbs-0")]
    [InlineData("profile-one-rank")]
    [InlineData("profile-node-rank-out-of-range")]
    [InlineData("profile-nnodes-0")]
    [InlineData("profile-gpu-cluster")]
    [InlineData("profile-gpu-cluster-on-cpu")]
    [InlineData("profile-cuda-without-cuda")]
    [InlineData("profile-device-bogus")]
    [InlineData("profile-from-missing-measurements")]
    [InlineData("profile-from-measurements-lacking-gemm")]
    [InlineData("profile-from-measurements-not-json")]
    [InlineData("profile-from-cpu-measurements-for-a-gpu-cluster")]
    public void BadInputIsExit2WithOneLineNamingTheCulprit(string name)
    {
        string dir = Path.Combine(Path.GetTempPath(), $"planner-badinput-{name}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            var (args, names) = Case(name, dir);
            var stdout = new StringWriter();
            var stderr = new StringWriter();
            int code = CliEntry.Run(args, stdout, stderr);
            string err = stderr.ToString();

            Assert.True(code == 2, $"exit code {code}, expected 2; stderr: {err}");
            var lines = err.Replace("\r\n", "\n").TrimEnd('\n').Split('\n');
            Assert.True(lines.Length == 1, $"expected exactly one line on stderr, got {lines.Length}:\n{err}");
            Assert.False(string.IsNullOrWhiteSpace(lines[0]), "the error line is empty");
            Assert.DoesNotContain("   at ", err);
            Assert.DoesNotContain("Exception", err);
            foreach (var n in names)
                Assert.True(err.Contains(n, StringComparison.Ordinal), $"stderr does not name '{n}': {err}");
            Assert.True(stdout.ToString().Length == 0, $"nothing should be printed on stdout on bad input, got: {stdout}");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void EveryPlanProblemIsNamedByItsFlagOnOneLine()
    {
        // dp 32 gives a plan to check: --tp 3 fails the 32 heads (and the KV heads and ffn), --gbs 100 is no multiple of 32.
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = CliEntry.Run(Predict("--tp", "3", "--dp", "32", "--gbs", "100"), stdout, stderr);

        Assert.Equal(2, code);
        string err = stderr.ToString().TrimEnd('\n', '\r');
        Assert.DoesNotContain('\n', err);
        Assert.StartsWith("planner: --tp: 3 does not divide the 32 attention heads of 'llama3-8b'; --tp: ", err);
        Assert.EndsWith("; --gbs: 100 is not divisible by dp·mbs = 32·1", err);
        Assert.Equal("", stdout.ToString());
    }

    [Fact]
    public void ProductsOfFieldsAndFieldsWithoutAFlagAreNamedToo()
    {
        Assert.Equal("--tp·--pp·--dp·--cp: 256 GPUs, more than the 128 of cluster 'x'",
            ProblemFlags.Describe(new("tp·pp·dp·cp", "256", "256 GPUs, more than the 128 of cluster 'x'")));
        Assert.Equal("--recompute-layers: 9 must be ...; stages.layers: 8,8 must ...",
            ProblemFlags.Line([new("recompute_layers", "9", "9 must be ..."), new("stages.layers", "8,8", "8,8 must ...")]));
    }

    [Fact]
    public void EveryFieldThePlanCheckNamesHasAFlagButThoseOnlyPlanFilesSet()
    {
        // The fields as the check's source writes them (f.Stop("tp", ...), products joined by '·').
        string source = File.ReadAllText(RepoFiles.Find("src/CostModel/Plans/PlanCheck.cs"));
        var keys = System.Text.RegularExpressions.Regex.Matches(source, "f\\.Stop\\(\"([^\"]+)\"")
            .SelectMany(m => m.Groups[1].Value.Split('·')).Distinct().ToList();
        Assert.True(keys.Count >= 15, $"only {keys.Count} fields found in PlanCheck.cs");
        var unnamed = keys.Where(k => !k.StartsWith("stages", StringComparison.Ordinal) && !ProblemFlags.Flag(k).StartsWith("--", StringComparison.Ordinal)).ToList();
        Assert.True(unnamed.Count == 0, "plan-check fields without a flag in ProblemFlags: " + string.Join(", ", unnamed));
        Assert.Equal("stages.layers", ProblemFlags.Flag("stages.layers"));
    }

    [Fact]
    public void TheBaselinePlanOfTheseCasesIsValid()
    {
        // Guards the cases above: without the bad value, the same flags are accepted.
        var stderr = new StringWriter();
        int code = CliEntry.Run(Predict("--json"), new StringWriter(), stderr);
        Assert.True(code == 0, $"exit code {code}; stderr: {stderr}");
        Assert.Equal("", stderr.ToString());
    }

    [Fact]
    public void AValidConfigFileAndClusterFileAreAccepted()
    {
        // Guards the file cases above: the unbroken versions of the same files load.
        string dir = Path.Combine(Path.GetTempPath(), $"planner-badinput-ok-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            string config = Path.Combine(dir, "config.json");
            string cluster = Path.Combine(dir, "cluster.yaml");
            File.WriteAllText(config, LlamaConfig);
            File.WriteAllText(cluster, ClusterYaml());
            var stderr = new StringWriter();
            int code = CliEntry.Run(Predict("--model", config, "--cluster", cluster, "--json"), new StringWriter(), stderr);
            Assert.True(code == 0, $"exit code {code}; stderr: {stderr}");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
