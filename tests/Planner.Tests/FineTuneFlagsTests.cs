using System.Text.Json;
using CliEntry = global::Planner.Cli.Commands.Cli;
using Xunit;

namespace Planner.Cli.Tests;

/// <summary>Issue 20's <c>predict</c> side: the fine-tuning flags, their JSON, and one line naming a bad flag.</summary>
public sealed class FineTuneFlagsTests
{
    private const string OneGpu = "predict --model llama2-70b --cluster 1x-a6000 --tp 1 --pp 1 --mbs 1 --gbs 16 --seq 512 --recompute full";

    /// <summary>Runs the CLI on space-separated arguments.</summary>
    internal static (int Code, string Stdout, string Stderr) Run(string args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = CliEntry.Run(args.Split(' ', StringSplitOptions.RemoveEmptyEntries), stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }

    private static JsonElement Json(string args)
    {
        var (code, stdout, stderr) = Run(args + " --json");
        Assert.True(code == 0, $"exit {code}: {stderr}");
        using var doc = JsonDocument.Parse(stdout);
        return doc.RootElement.Clone();
    }

    [Fact]
    public void Llama2_70b_qlora_rank_64_fits_one_48_gb_gpu_and_bf16_lora_does_not()
    {
        var qlora = Json(OneGpu + " --finetune qlora --lora-rank 64 --optimizer adam8bit");
        var lora = Json(OneGpu + " --finetune lora --lora-rank 64 --optimizer adam8bit");
        Assert.True(qlora.GetProperty("fits").GetBoolean());
        Assert.False(lora.GetProperty("fits").GetBoolean());
        // 80 blocks of rank 64 on q, k, v, o (8192 → 8192, 1024, 1024; 8192 → 8192) and gate, up, down (8192 ↔ 28672).
        long perBlock = 64L * (2 * (8192 + 8192) + 2 * (8192 + 1024) + 3 * (8192 + 28672));
        Assert.Equal(80 * perBlock, qlora.GetProperty("trainable_parameters").GetInt64());
        Assert.True(qlora.GetProperty("parameters").GetInt64() > 69_000_000_000);
        var adapters = qlora.GetProperty("memory_gib").GetProperty("adapters");
        // The frozen base has no gradients: every gradient is an adapter's (bf16).
        Assert.Equal(qlora.GetProperty("memory_gib").GetProperty("gradients").GetDouble(), adapters.GetProperty("gradients").GetDouble());
        Assert.Equal(80 * perBlock * 2 / (1024.0 * 1024 * 1024), adapters.GetProperty("gradients").GetDouble(), 6);
        var plan = qlora.GetProperty("plan");
        Assert.Equal("qlora", plan.GetProperty("finetune").GetString());
        Assert.Equal(64, plan.GetProperty("lora_rank").GetInt32());
        Assert.Equal("all", plan.GetProperty("lora_targets").GetString());
        Assert.Equal("adam8bit", plan.GetProperty("optimizer").GetString());
    }

    [Fact]
    public void Qlora_steps_its_bf16_adapters_without_a_master_copy_as_its_recipe_does_and_fits_48_gb_with_adamw()
    {
        // QLoRA's recipe: bf16 adapters stepped in place, AdamW's two moments in fp32 (8 bytes per adapter weight);
        // LoRA over a bf16 base keeps an fp32 master as mixed precision does (12 bytes).
        var qlora = Json(OneGpu + " --finetune qlora --lora-rank 64");
        var lora = Json(OneGpu + " --finetune lora --lora-rank 64");
        double trainable = qlora.GetProperty("trainable_parameters").GetInt64();
        double GiB(JsonElement e) => e.GetProperty("memory_gib").GetProperty("optimizer").GetDouble() * 1024 * 1024 * 1024;
        Assert.Equal(8, GiB(qlora) / trainable, 6);
        Assert.Equal(12, GiB(lora) / trainable, 6);
        Assert.True(qlora.GetProperty("fits").GetBoolean(), $"{qlora.GetProperty("peak_memory_gib").GetDouble():F2} GiB on 48");
    }

    [Fact]
    public void Without_the_flags_the_plan_and_memory_keep_their_old_keys()
    {
        var full = Json(OneGpu.Replace("llama2-70b", "llama2-7b"));
        Assert.False(full.GetProperty("plan").TryGetProperty("finetune", out _));
        Assert.False(full.GetProperty("memory_gib").TryGetProperty("adapters", out _));
        Assert.Equal(full.GetProperty("parameters").GetInt64(), full.GetProperty("trainable_parameters").GetInt64());
    }

    [Theory]
    [InlineData("--finetune lora --lora-rank 0", "--lora-rank")]
    [InlineData("--lora-targets q,x", "--lora-targets")]
    [InlineData("--optimizer adamx", "--optimizer")]
    [InlineData("--finetune dora", "--finetune")]
    [InlineData("--finetune qlora --zero 3", "--finetune")]
    public void A_bad_value_exits_2_with_one_line_naming_the_flag(string flags, string flag)
    {
        var (code, _, stderr) = Run(OneGpu.Replace("llama2-70b", "llama2-7b") + " " + flags);
        Assert.Equal(2, code);
        Assert.Contains(flag, stderr);
        Assert.Single(stderr.Trim().Split('\n'));
    }
}

/// <summary>Issue 20, item 2: <c>plan</c> searches the methods and optimizers listed; an empty result names the QLoRA plan
/// that would fit.</summary>
public sealed class FineTuneSearchTests
{
    private const string OneGpu = "plan --model llama2-70b --cluster 1x-a6000 --gbs 16 --seq 512 --memory-headroom 0 --json";

    private static (int Code, string Stdout, string Stderr) Run(string args) => FineTuneFlagsTests.Run(args);

    [Fact]
    public void Plan_searches_every_method_and_optimizer_listed_and_keeps_those_that_fit()
    {
        var (code, stdout, stderr) = Run(OneGpu + " --finetune lora,qlora --lora-rank 64 --optimizer adamw,adam8bit,adafactor");
        Assert.True(code == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        var plans = doc.RootElement.GetProperty("plans").EnumerateArray().ToList();
        // A bf16 70B base cannot fit 48 GiB; QLoRA fits with 8-bit Adam and Adafactor (docs/finetuning.md).
        Assert.NotEmpty(plans);
        Assert.All(plans, p => Assert.Equal("qlora", p.GetProperty("finetune").GetString()));
        Assert.Contains(plans, p => p.GetProperty("optimizer").GetString() == "adafactor");
        Assert.All(plans, p => Assert.True(p.GetProperty("prediction").GetProperty("fits").GetBoolean()));
    }

    [Fact]
    public void When_nothing_fits_the_explanation_names_the_qlora_plan_that_would()
    {
        var (code, _, stderr) = Run(OneGpu + " --finetune lora --lora-rank 64 --optimizer adam8bit");
        Assert.Equal(2, code);
        Assert.Contains("QLoRA (rank 64, adam8bit) fits", stderr);
        Assert.Contains("GiB per GPU", stderr);
    }
}
