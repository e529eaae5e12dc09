using Planner.CostModel.Plans;
using Planner.CostModel.Specs;
using Planner.Executor.Training;
using Xunit;

namespace Planner.Executor.Tests;

/// <summary>What the executor cannot train is refused with a reason, never approximated.</summary>
public class UnsupportedTests
{
    private static ParallelPlan Plan(Precision p = Precision.Bf16) => new(1, 1, 1, 1, 0, 1, 1, 64, 1, Recompute.None, false, p);

    [Theory]
    [InlineData(Precision.Fp8, "fp8")]
    [InlineData(Precision.Fp8Cs, "fp8-cs")]
    [InlineData(Precision.Mxfp8, "mxfp8")]
    [InlineData(Precision.Nvfp4, "nvfp4")]
    public void Low_precision_formats_are_refused_not_run_in_bf16(Precision p, string name)
    {
        var why = RankTrainer.Unsupported(ModelLoader.Load("gpt2"), Plan(p));
        Assert.NotNull(why);
        Assert.StartsWith(name + ":", why);
    }

    [Theory]
    [InlineData("deepseek-v3", "latent attention")]
    [InlineData("gpt-oss-120b", "mixture-of-experts blocks: the executor builds gated (SwiGLU) experts without biases")]
    public void Models_the_executor_cannot_build_are_refused(string preset, string named)
    {
        Assert.Contains(named, RankTrainer.Unsupported(ModelLoader.Load(preset), Plan()));
    }

    [Fact]
    public void Mixture_of_experts_runs_with_expert_parallelism_and_refuses_what_it_cannot_lay_out()
    {
        var mixtral = ModelLoader.Load("mixtral-8x7b");
        Assert.Null(RankTrainer.Unsupported(mixtral, Plan()));
        Assert.Null(RankTrainer.Unsupported(mixtral, Plan() with { Tp = 2, SequenceParallel = true, Etp = 2 }));
        // Experts whole on each TP rank (the cost model's default etp 1), with and without expert parallelism.
        Assert.Null(RankTrainer.Unsupported(mixtral, Plan() with { Tp = 2, SequenceParallel = true }));
        Assert.Null(RankTrainer.Unsupported(mixtral, Plan() with { Tp = 2, SequenceParallel = true, Ep = 2 }));
        Assert.Null(RankTrainer.Unsupported(mixtral, Plan() with { Dp = 2, Ep = 2, Zero = 1 }));
        Assert.StartsWith("expert tensor parallelism 2:", RankTrainer.Unsupported(mixtral, Plan() with { Tp = 4, SequenceParallel = true, Etp = 2 }));
        Assert.StartsWith("experts split over tp need sequence parallelism", RankTrainer.Unsupported(mixtral, Plan() with { Tp = 2, Etp = 2 }));
        Assert.Null(RankTrainer.Unsupported(mixtral, Plan() with { Tp = 2, Ep = 2 }));
        Assert.StartsWith("zero 3 with expert parallelism", RankTrainer.Unsupported(mixtral, Plan() with { Dp = 2, Ep = 2, Zero = 3 }));
        // Two ranks holding the same experts would each keep the experts' whole optimizer state: refused under ZeRO.
        Assert.StartsWith("zero 1 with expert parallelism over 2 expert-data-parallel ranks", RankTrainer.Unsupported(mixtral, Plan() with { Dp = 4, Ep = 2, Zero = 1 }));
        Assert.Null(RankTrainer.Unsupported(mixtral, Plan() with { Dp = 4, Ep = 2 }));
        Assert.StartsWith("lora on mixture-of-experts", RankTrainer.Unsupported(mixtral, Plan() with { FineTuning = new FineTuning(FineTuneMethod.Lora) }));
    }

    [Fact]
    public void Context_parallelism_runs_dense_models_and_refuses_moe_and_uneven_chunks_by_name()
    {
        var gpt = ModelLoader.Load("gpt2");
        Assert.Null(RankTrainer.Unsupported(gpt, Plan() with { Cp = 2 }));
        Assert.Null(RankTrainer.Unsupported(ModelLoader.Load("llama3-8b"), Plan() with { Cp = 4, Tp = 2, SequenceParallel = true, Pp = 2, Zero = 2 }));
        Assert.Equal("context parallelism with mixture-of-experts blocks: not yet in the executor (cp must be 1)",
            RankTrainer.Unsupported(ModelLoader.Load("mixtral-8x7b"), Plan() with { Cp = 2 }));
        // Each sequence is cut in 2·cp chunks; under sequence parallelism each CP rank's tokens split over TP.
        Assert.StartsWith("context parallelism needs seq (66) divisible by 2·cp = 4", RankTrainer.Unsupported(gpt, Plan() with { Cp = 2, Seq = 66 }));
        Assert.StartsWith("sequence parallelism needs the 16 tokens per CP rank divisible by tp (3)",
            RankTrainer.Unsupported(gpt with { Vocab = 50259 }, Plan() with { Cp = 4, Tp = 3, SequenceParallel = true }));
    }

    [Fact]
    public void Dense_models_with_mla_mtp_or_windows_are_refused_by_name()
    {
        var llama = ModelLoader.Load("llama3-8b");
        Assert.Contains("latent attention", RankTrainer.Unsupported(llama with { Mla = new MlaSpec(0, 64, 32, 16, 32) }, Plan()));
        Assert.Contains("multi-token", RankTrainer.Unsupported(llama with { MtpLayers = 1 }, Plan()));
        Assert.Contains("sliding_window", RankTrainer.Unsupported(llama with { Window = new SlidingWindow(128, Enumerable.Repeat(true, 32).ToList()) }, Plan()));
        Assert.Null(RankTrainer.Unsupported(llama, Plan()));
    }

    [Fact]
    public void Heads_of_any_even_width_run_and_kv_heads_must_still_divide_by_tp()
    {
        var llama = ModelLoader.Load("llama3-8b");
        // head_dim other than hidden / heads (Qwen3's 32 × 128 over hidden 2048), and heads that do not divide the hidden
        // size (30 heads of hidden // heads = 136), at TP=8 as well.
        foreach (var m in new[] { llama with { HeadDimension = 64 }, llama with { Hidden = 2048, HeadDimension = 128 }, llama with { Heads = 40, KvHeads = 8, HeadDimension = null, Hidden = 4100 } })
        {
            Assert.Null(RankTrainer.Unsupported(m, Plan()));
            Assert.Null(RankTrainer.Unsupported(m, Plan() with { Tp = 8 }));
        }
        Assert.Null(RankTrainer.Unsupported(llama with { Heads = 30, KvHeads = 30 }, Plan()));
        // Rotary positions rotate a head's two halves: an odd width is refused (learned positions take it).
        Assert.Contains("even width", RankTrainer.Unsupported(llama with { HeadDimension = 63 }, Plan()));
        Assert.Contains("even width", RankTrainer.Unsupported(llama with { Heads = 32, Hidden = 4000 }, Plan()));
        Assert.Null(RankTrainer.Unsupported(ModelLoader.Load("gpt2") with { HeadDimension = 63 }, Plan()));
        // Whole key/value heads per TP rank, whatever their width.
        Assert.Contains("key/value heads", RankTrainer.Unsupported(llama with { HeadDimension = 64 }, Plan() with { Tp = 16 }));
        Assert.Contains("key/value heads", RankTrainer.Unsupported(llama with { KvHeads = 4, Heads = 32, HeadDimension = 96 }, Plan() with { Tp = 8 }));
    }

    [Fact]
    public void Qlora_and_lora_under_zero3_are_refused_by_name_and_every_optimizer_runs()
    {
        var gpt = ModelLoader.Load("gpt2");
        var plan = new ParallelPlan(1, 1, 2, 1, 3, 1, 2, 64, 1, Recompute.None, false, Precision.Bf16);
        // QLoRA trains under ZeRO 0 to 2; under ZeRO-3 it is refused (the cost model refuses it too), even on one rank.
        foreach (int zero in new[] { 0, 1, 2 })
            Assert.Null(RankTrainer.Unsupported(gpt, plan with { Zero = zero, FineTuning = new FineTuning(FineTuneMethod.Qlora) }));
        Assert.StartsWith("qlora with zero 3:", RankTrainer.Unsupported(gpt, plan with { FineTuning = new FineTuning(FineTuneMethod.Qlora) }));
        Assert.StartsWith("qlora with zero 3:", RankTrainer.Unsupported(gpt, plan with { Dp = 1, FineTuning = new FineTuning(FineTuneMethod.Qlora) }));
        Assert.StartsWith("lora with zero 3:", RankTrainer.Unsupported(gpt, plan with { FineTuning = new FineTuning(FineTuneMethod.Lora) }));
        Assert.Null(RankTrainer.Unsupported(gpt, plan with { Zero = 2, FineTuning = new FineTuning(FineTuneMethod.Lora) }));
        foreach (var o in Enum.GetValues<OptimizerKind>())
            Assert.Null(RankTrainer.Unsupported(gpt, plan with { FineTuning = new FineTuning(Optimizer: o) }));
    }
}
