using System.Text.Json.Nodes;
using CliEntry = global::Planner.Cli.Commands.Cli;
using Xunit;

namespace Planner.Cli.Tests;

/// <summary>
/// Issue 22 item 4, no silent fallbacks: every plan value <c>run</c> cannot honour on the device it would train on is
/// refused with exit 2 and one line naming the plan file, the plan's own cluster (and its GPU) and the device, before a
/// rank starts (docs/executor.md "Every plan key against the executor" lists the audit). In-process, on the CPU.
/// </summary>
public sealed class ExecutorRefusalTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("planner-refusals-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static readonly JsonObject Gpt2 = new()
    {
        ["n_layer"] = 4,
        ["n_embd"] = 128,
        ["n_head"] = 4,
        ["n_positions"] = 64,
        ["vocab_size"] = 512,
        ["activation_function"] = "gelu_new",
    };

    private static readonly JsonObject Llama = new()
    {
        ["model_type"] = "llama",
        ["num_hidden_layers"] = 4,
        ["hidden_size"] = 128,
        ["num_attention_heads"] = 4,
        ["num_key_value_heads"] = 2,
        ["intermediate_size"] = 256,
        ["vocab_size"] = 512,
        ["max_position_embeddings"] = 64,
        ["hidden_act"] = "silu",
        ["tie_word_embeddings"] = false,
    };

    /// <summary>A model config: <paramref name="basis"/> with <paramref name="changes"/>.</summary>
    private string Model(JsonObject basis, string name, params (string Key, JsonNode? Value)[] changes) => Write(basis, name + "-config.json", changes);

    private string Plan(string name, string model, params (string Key, JsonNode? Value)[] changes) => Write(new JsonObject
    {
        ["model"] = model,
        ["cluster"] = "local-cpu",
        ["tp"] = 1,
        ["pp"] = 1,
        ["dp"] = 1,
        ["cp"] = 1,
        ["zero"] = 0,
        ["mbs"] = 2,
        ["gbs"] = 8,
        ["seq"] = 64,
        ["vpp"] = 1,
        ["recompute"] = "none",
        ["sequence_parallel"] = false,
        ["precision"] = "fp32",
    }, name + ".json", changes);

    /// <summary>Writes <paramref name="basis"/> with <paramref name="changes"/> into the folder; returns the path.</summary>
    private string Write(JsonObject basis, string file, (string Key, JsonNode? Value)[] changes)
    {
        var o = (JsonObject)basis.DeepClone();
        foreach (var (k, v) in changes)
            o[k] = v?.DeepClone();
        string path = Path.Combine(_dir, file);
        File.WriteAllText(path, o.ToJsonString());
        return path;
    }

    /// <summary>The plan file of a case and a phrase its error line must hold (the key or value refused).</summary>
    private (string Plan, string Phrase) Case(string name)
    {
        string gpt2 = Model(Gpt2, "gpt2");
        string llama = Model(Llama, "llama");
        string moe = Model(Llama, "moe", ("num_local_experts", 4), ("num_experts_per_tok", 2));
        return name switch
        {
            "fp8" or "fp8-cs" or "mxfp8" or "nvfp4" => (Plan(name, gpt2, ("precision", name)), $"{name}: the executor has no low-precision GEMMs"),
            "fp8-on-an-h100-plan" => (Plan(name, gpt2, ("precision", "fp8"), ("cluster", "dgx-h100")), "GPU 'h100-sxm'"),
            "fp16-on-cpu" => (Plan(name, gpt2, ("precision", "fp16")), "fp16: the executor trains on CPU"),
            "tf32" => (Plan(name, gpt2, ("precision", "tf32")), "key 'precision' is 'tf32'"),
            "optimizer-offload" => (Plan(name, gpt2, ("optimizer_offload", 0.5)), "key 'optimizer_offload' is 0.5"),
            "moe-capacity" => (Plan(name, moe, ("moe_capacity", 1.25)), "key 'moe_capacity' is 1.25"),
            "tp-not-dividing-vocabulary" => (Plan(name, Model(Gpt2, "odd-vocab", ("vocab_size", 511)), ("tp", 2)), "tp (2) to divide the vocabulary (511)"),
            "tp-not-dividing-kv-heads" => (Plan(name, llama, ("tp", 4), ("gbs", 2), ("mbs", 2)), "tp (4) to divide the 2 key/value heads"),
            "cp-with-moe" => (Plan(name, moe, ("cp", 2)), "context parallelism with mixture-of-experts"),
            "qlora-zero-3" => (Plan(name, llama, ("finetune", "qlora"), ("zero", 3)), "qlora with zero 3"),
            "lora-zero-3" => (Plan(name, llama, ("finetune", "lora"), ("zero", 3), ("dp", 2)), "lora with zero 3"),
            "moe-ep-zero-3" => (Plan(name, moe, ("ep", 2), ("dp", 2), ("zero", 3)), "zero 3 with expert parallelism"),
            "moe-lora" => (Plan(name, moe, ("finetune", "lora")), "lora on mixture-of-experts"),
            "moe-gelu-experts" => (Plan(name, Model(Llama, "moe-gelu", ("num_local_experts", 4), ("num_experts_per_tok", 2), ("hidden_act", "gelu"))), "gated (SwiGLU) experts"),
            "moe-etp-neither-1-nor-tp" => (Plan(name, moe, ("etp", 2), ("dp", 2)), "expert tensor parallelism 2"),
            "moe-etp-tp-without-sequence-parallel" => (Plan(name, moe, ("tp", 2), ("etp", 2)), "experts split over tp need sequence parallelism"),
            "moe-zero-1-over-expert-data-parallel" => (Plan(name, moe, ("ep", 2), ("dp", 4), ("zero", 1)), "zero 1 with expert parallelism over 2 expert-data-parallel ranks"),
            "moe-etp-not-dividing-expert-ffn" => (Plan(name, Model(Llama, "moe-odd", ("num_local_experts", 4), ("num_experts_per_tok", 2), ("moe_intermediate_size", 63)),
                ("tp", 2), ("etp", 2), ("sequence_parallel", true)), "etp (2) to divide the experts' ffn (63)"),
            "cp-seq-not-divisible" => (Plan(name, gpt2, ("cp", 3)), "seq (64) divisible by 2·cp = 6"),
            "mla" => (Plan(name, Model(Llama, "mla", ("kv_lora_rank", 32), ("q_lora_rank", 0), ("qk_nope_head_dim", 16), ("qk_rope_head_dim", 16), ("v_head_dim", 32))), "multi-head latent attention"),
            "mtp" => (Plan(name, Model(Llama, "mtp", ("num_nextn_predict_layers", 1))), "multi-token prediction"),
            "sliding-window" => (Plan(name, Model(Llama, "window", ("sliding_window", 16))), "sliding-window attention"),
            "odd-rotary-heads" => (Plan(name, Model(Llama, "odd-head", ("head_dim", 33))), "heads of an even width"),
            _ => throw new ArgumentException(name),
        };
    }

    [Theory]
    [InlineData("fp8")]
    [InlineData("fp8-cs")]
    [InlineData("mxfp8")]
    [InlineData("nvfp4")]
    [InlineData("fp8-on-an-h100-plan")]
    [InlineData("fp16-on-cpu")]
    [InlineData("tf32")]
    [InlineData("optimizer-offload")]
    [InlineData("moe-capacity")]
    [InlineData("tp-not-dividing-vocabulary")]
    [InlineData("tp-not-dividing-kv-heads")]
    [InlineData("cp-with-moe")]
    [InlineData("qlora-zero-3")]
    [InlineData("lora-zero-3")]
    [InlineData("moe-ep-zero-3")]
    [InlineData("moe-lora")]
    [InlineData("moe-gelu-experts")]
    [InlineData("moe-etp-neither-1-nor-tp")]
    [InlineData("moe-etp-tp-without-sequence-parallel")]
    [InlineData("moe-zero-1-over-expert-data-parallel")]
    [InlineData("moe-etp-not-dividing-expert-ffn")]
    [InlineData("cp-seq-not-divisible")]
    [InlineData("mla")]
    [InlineData("mtp")]
    [InlineData("sliding-window")]
    [InlineData("odd-rotary-heads")]
    public void A_plan_value_the_executor_cannot_honour_is_refused_naming_the_plans_cluster_and_the_device(string name)
    {
        var (plan, phrase) = Case(name);
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = CliEntry.Run(["run", "--plan", plan, "--steps", "2", "--device", "cpu"], stdout, stderr);
        string err = stderr.ToString().TrimEnd();
        Assert.True(code == 2, $"exit {code}: {err}");
        Assert.DoesNotContain('\n', err);
        Assert.Contains(plan, err);
        Assert.Contains(phrase, err);
        string cluster = (string)JsonNode.Parse(File.ReadAllText(plan))!["cluster"]!;
        Assert.Contains($"the plan's cluster '{cluster}'", err);
        Assert.EndsWith("this run trains on the CPU)", err);
        // Never a GPU the plan does not use (issue 22: an fp8 plan on local-cpu was refused with a message about 'a100-80g').
        Assert.DoesNotContain("a100", err);
        Assert.Equal("", stdout.ToString());
    }

    [Theory]
    [InlineData("optimiser", "\"lion\"", "unknown key 'optimiser'")]
    [InlineData("grad_compression", "\"topk\"", "key 'grad_compression' is \"topk\"")]
    [InlineData("local_sgd", "4", "key 'local_sgd' is 4")]
    public void A_plan_key_nothing_reads_is_refused_not_ignored(string key, string value, string phrase)
    {
        string plan = Plan(key, Model(Gpt2, "gpt2"), (key, JsonNode.Parse(value)));
        var stderr = new StringWriter();
        int code = CliEntry.Run(["run", "--plan", plan, "--steps", "2", "--device", "cpu"], new StringWriter(), stderr);
        Assert.Equal(2, code);
        Assert.Single(stderr.ToString().TrimEnd().Split('\n'));
        Assert.Contains($"{plan}: {phrase}", stderr.ToString());
    }

    [Fact]
    public void The_refusals_refuse_nothing_the_executor_trains()
    {
        // Guards the cases above: their baselines (the same models, fp32 and bf16, a MoE plan without moe_capacity) pass.
        var inputs = new (string Model, string Precision)[]
        {
            (Model(Gpt2, "gpt2"), "fp32"), (Model(Llama, "llama"), "bf16"), (Model(Llama, "moe", ("num_local_experts", 4), ("num_experts_per_tok", 2)), "fp32"),
        };
        foreach (var (model, precision) in inputs)
        {
            var spec = CostModel.Specs.ModelLoader.Load(model);
            var plan = CostModel.Plans.PlanFile.Read(Plan("ok-" + precision, model, ("precision", precision))).Plan;
            Assert.Null(Commands.ExecutorRefusals.Reason(spec, plan, Executor.Torch.Device.Cpu));
        }
    }
}
