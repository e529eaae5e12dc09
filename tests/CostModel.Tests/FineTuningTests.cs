using Xunit;
using Planner.CostModel.Compute;
using Planner.CostModel.Memory;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;

namespace Planner.CostModel.Tests;

/// <summary>
/// Fine-tuning (issue 20): optimizer state bytes, LoRA's trainable weights, and the memory claims of the LoRA (Hu et al.
/// 2021) and QLoRA (Dettmers et al. 2023) papers.
/// </summary>
public class FineTuningTests
{
    private static readonly ClusterSpec OneA6000 = ClusterLoader.Load("1x-a6000");

    private static ParallelPlan Plan(FineTuning? t, int tp = 1, int pp = 1, int dp = 1, int zero = 0, int mbs = 1, int gbs = 16, int seq = 512,
        Recompute r = Recompute.Full) =>
        new(tp, pp, dp, 1, zero, mbs, gbs, seq, 1, r, SequenceParallel: false, Precision.Bf16, FineTuning: t);

    private static MemoryBreakdown Stage0(ModelSpec m, ParallelPlan p) =>
        new MemoryModel(m, p, new TransformerOps(m, p, flashAttention: true), ClusterLoader.LoadGpu("a100-80g")).Stage(0, m.Layers, 1, 1);

    /// <summary>LLaMA 65B's published shape (Touvron et al. 2023, Table 2: 80 layers, width 8192, 64 heads; SwiGLU of
    /// 2/3·4d rounded to 22016 in the released config; vocabulary 32000).</summary>
    private static readonly ModelSpec Llama65b = new("llama-65b", 80, 8192, 64, 64, 22016, 32000, 2048, MlpKind.SwiGlu, NormKind.RmsNorm,
        PositionKind.Rotary, Biases: false, TiedEmbeddings: false, Dropout: false);

    [Theory]
    [InlineData(OptimizerKind.AdamW, 8.0)]                // two fp32 moments
    [InlineData(OptimizerKind.Adam8bit, 2 + 8.0 / 2048)]  // two 8-bit moments and an fp32 absmax per 2048-value block
    [InlineData(OptimizerKind.Lion, 4.0)]                 // one fp32 moment
    [InlineData(OptimizerKind.Sgd, 4.0)]                  // one fp32 momentum
    [InlineData(OptimizerKind.Sophia, 8.0)]               // an fp32 moment and an fp32 Hessian diagonal
    public void Optimizer_state_per_trainable_parameter_beside_the_fp32_master(OptimizerKind o, double state)
    {
        var m = ModelLoader.Load("gpt2-medium");
        var mem = Stage0(m, Plan(new FineTuning(Optimizer: o)));
        // One rank holds every weight: mixed precision keeps a 4-byte master beside the state.
        Assert.Equal(m.TotalParams * (4 + state), mem.Optimizer, 1e-6 * mem.Optimizer);
    }

    [Fact]
    public void Adafactor_keeps_only_factored_second_moments()
    {
        var m = ModelLoader.Load("llama2-7b");
        var mem = Stage0(m, Plan(new FineTuning(Optimizer: OptimizerKind.Adafactor)));
        double perParam = mem.Optimizer / m.TotalParams - 4;
        // Row and column sums of a 4096 × 11008 matrix: 4·(4096 + 11008) bytes over 45M weights, about 1e-3 byte each.
        Assert.InRange(perParam, 0, 0.01);
    }

    [Fact]
    public void Full_adamw_keeps_the_old_bytes()
    {
        var m = ModelLoader.Load("gpt2-medium");
        var explicitDefault = Stage0(m, Plan(FineTuning.Default));
        var implicitDefault = Stage0(m, Plan(null));
        Assert.Equal(implicitDefault, explicitDefault);
        Assert.Equal(m.TotalParams * 12.0, implicitDefault.Optimizer, 1e-6 * implicitDefault.Optimizer);
    }

    [Fact]
    public void Lora_trainable_parameters_of_llama2_7b_match_a_count_by_hand()
    {
        // Llama 2 7B: h = 4096, ffn = 11008, 32 layers, MHA. Rank 16 on q, k, v, o, gate, up, down: r·(in + out) each.
        const long h = 4096, f = 11008, r = 16, layers = 32;
        long perLayer = r * (4 * (h + h) + 2 * (h + f) + (f + h));
        long expected = layers * perLayer; // 39,976,960: what PEFT prints for this model and configuration
        var m = ModelLoader.Load("llama2-7b");
        var p = Pricer.Price(m, ClusterLoader.Load("dgx-a100-80g-1node"), Plan(new FineTuning(FineTuneMethod.Lora, 16), gbs: 8, dp: 8));
        Assert.Equal(39_976_960, expected);
        Assert.Equal(expected, p.TrainableParameters);
        Assert.Equal(m.TotalParams + expected, p.Parameters);
    }

    [Fact]
    public void Lora_adapters_split_with_the_base_under_tensor_parallelism()
    {
        var m = ModelLoader.Load("llama2-7b");
        var t = new FineTuning(FineTuneMethod.Lora, 8);
        double h = 4096, f = 11008, r = 8;
        var (one, _) = BlockLinears.Adapters(m, m.KindOf(0), t, 1, 1, 1);
        var (four, _) = BlockLinears.Adapters(m, m.KindOf(0), t, 4, 1, 1);
        // Column-parallel (q, k, v, gate, up): A whole, B split; row-parallel (o, down): A split, B whole.
        double column = r * (h + h / 4) * 3 + r * (h + f / 4) * 2, row = r * (h / 4 + h) + r * (f / 4 + h);
        Assert.Equal(r * (4 * 2 * h + 3 * (h + f)), one);
        Assert.Equal(column + row, four);
    }

    [Fact]
    public void Lora_cuts_gpt3_175b_trainable_parameters_about_ten_thousand_times()
    {
        // Hu et al. 2021, section 4.2 / 7: rank 4 on W_q and W_v cuts GPT-3 175B's trainable parameters by about 10,000×.
        var m = ModelLoader.Load("gpt3-175b");
        double lora = BlockLinears.ModelAdapters(m, new FineTuning(FineTuneMethod.Lora, 4, LoraTargets.Q | LoraTargets.V));
        Assert.Equal(96.0 * 2 * 4 * (12288 + 12288), lora); // 4.7M per unit of rank (their Table 4)
        Assert.InRange(m.TotalParams / lora, 5_000, 20_000);
    }

    [Fact]
    public void Lora_cuts_gpt3_175b_training_memory_about_three_times()
    {
        // Hu et al. 2021, section 4.2: VRAM during training from 1.2 TB to 350 GB (≈3.4×) for GPT-3 175B. Same plan,
        // full training vs LoRA rank 4 on q and v: the weights stay, their gradients and optimizer state go.
        var m = ModelLoader.Load("gpt3-175b");
        var c = ClusterLoader.Load("dgx-a100-80g");
        ParallelPlan P(FineTuning? t) => Plan(t, tp: 8, pp: 8, dp: 1, gbs: 64, seq: 2048);
        double full = Pricer.Price(m, c, P(null)).PeakMemoryGib;
        double lora = Pricer.Price(m, c, P(new FineTuning(FineTuneMethod.Lora, 4, LoraTargets.Q | LoraTargets.V))).PeakMemoryGib;
        Assert.InRange(full / lora, 2, 4.5);
    }

    [Fact]
    public void Qlora_fine_tunes_65b_on_one_48_gb_gpu_and_16_bit_lora_does_not()
    {
        // Dettmers et al. 2023: LLaMA 65B, rank 64 on every linear layer, on one 48 GB GPU (gradient checkpointing, batch 1).
        // The paper steps AdamW over bf16 adapters with no master copy (12 bytes per adapter weight with their gradient).
        var qlora = Pricer.Price(Llama65b, OneA6000, Plan(new FineTuning(FineTuneMethod.Qlora, 64)));
        var lora = Pricer.Price(Llama65b, OneA6000, Plan(new FineTuning(FineTuneMethod.Lora, 64, Optimizer: OptimizerKind.Adam8bit)));
        Assert.True(qlora.Fits, $"QLoRA 65B peaks at {qlora.PeakMemoryGib:F1} GiB");
        Assert.False(lora.Fits);
        // NF4 with double quantization: 4.127 bits per weight of the blocks' linear layers.
        double linears = 80 * (4.0 * 8192 * 8192 + 3.0 * 8192 * 22016);
        double base16 = 2.0 * (Llama65b.TotalParams - linears);
        Assert.Equal(linears * 4.127 / 8, qlora.PeakStage.Weights - base16 - qlora.PeakStage.Adapters!.Weights, 1e-3 * linears);
    }

    [Fact]
    public void Llama2_70b_qlora_rank_64_fits_one_48_gb_gpu_and_bf16_lora_does_not()
    {
        var m = ModelLoader.Load("llama2-70b");
        var qlora = Pricer.Price(m, OneA6000, Plan(new FineTuning(FineTuneMethod.Qlora, 64, Optimizer: OptimizerKind.Adam8bit)));
        var lora = Pricer.Price(m, OneA6000, Plan(new FineTuning(FineTuneMethod.Lora, 64, Optimizer: OptimizerKind.Adam8bit)));
        Assert.True(qlora.Fits, $"QLoRA 70B peaks at {qlora.PeakMemoryGib:F1} GiB");
        Assert.False(lora.Fits);
    }

    [Fact]
    public void A_frozen_gemm_computes_the_input_gradient_only()
    {
        var timer = new KernelTimer(ClusterLoader.LoadGpu("a100-80g"), Precision.Bf16);
        var trained = Op.Matmul("w", 4096, 4096, 4096);
        var frozen = Op.Matmul("w", 4096, 4096, 4096, frozen: true);
        // Square: the input and the weight gradient take as long.
        Assert.Equal(timer.Backward(trained) / 2, timer.Backward(frozen), 1e-9);
    }

    [Fact]
    public void Lora_reduces_only_adapter_gradients_over_data_parallelism()
    {
        var m = ModelLoader.Load("llama2-7b");
        var c = ClusterLoader.Load("dgx-a100-80g-1node");
        // Micro-batches of 8 × 2048 tokens: the adapters' small GEMMs, launch-bound at a few hundred tokens, stay small.
        var full = Pricer.Price(m, c, Plan(null, dp: 8, gbs: 64, mbs: 8, seq: 2048, r: Recompute.None));
        var lora = Pricer.Price(m, c, Plan(new FineTuning(FineTuneMethod.Lora), dp: 8, gbs: 64, mbs: 8, seq: 2048, r: Recompute.None));
        Assert.True(lora.Breakdown.DpComm < full.Breakdown.DpComm / 10, $"{lora.Breakdown.DpComm} vs {full.Breakdown.DpComm}");
        // No weight gradients for the base: the backward is shorter, the forward the same plus the adapters.
        Assert.InRange(lora.Breakdown.Compute / full.Breakdown.Compute, 0.6, 0.9);
        Assert.True(lora.ModelTflopsPerGpu > 0);
    }

    [Fact]
    public void Qlora_dequantizes_every_base_weight_in_each_pass()
    {
        var m = ModelLoader.Load("llama2-7b");
        var p = Plan(new FineTuning(FineTuneMethod.Qlora));
        var ops = new TransformerOps(m, p, flashAttention: true);
        var dequantize = ops.Block.Single(o => o.Name == "dequantize");
        double weights = 4.0 * 4096 * 4096 + 3.0 * 4096 * 11008;
        Assert.Equal(weights * (4.127 / 8 + 2), dequantize.Bytes, 1e-3 * weights);
        Assert.Equal(dequantize.Bytes, dequantize.BackwardBytes);
    }

    [Fact]
    public void Sophia_pays_its_hessian_pass_every_ten_steps()
    {
        var m = ModelLoader.Load("gpt2-medium");
        var c = ClusterLoader.Load("dgx-a100-80g-1node");
        var adamw = Pricer.Price(m, c, Plan(null, dp: 8, gbs: 8, r: Recompute.None));
        var sophia = Pricer.Price(m, c, Plan(new FineTuning(Optimizer: OptimizerKind.Sophia), dp: 8, gbs: 8, r: Recompute.None));
        double passes = adamw.Breakdown.Compute;
        // Same state traffic as AdamW (a moment and a diagonal), plus a tenth of a forward and backward.
        Assert.InRange(sophia.Breakdown.Optimizer - adamw.Breakdown.Optimizer, 0.05 * passes, 0.15 * passes);
    }

    [Fact]
    public void Plan_files_read_and_write_the_fine_tuning_keys()
    {
        var plan = Plan(new FineTuning(FineTuneMethod.Qlora, 64, LoraTargets.Q | LoraTargets.V, OptimizerKind.Lion));
        string json = PredictionJson.Plan(plan, "llama2-7b", "1x-a6000", PricingOptions.DefaultStack).ToJsonString();
        Assert.Contains("\"lora_targets\":\"q,v\"", json);
        Assert.Equal(plan, PlanFile.Parse(json, "p.json").Plan);
        var bad = Assert.Throws<InputException>(() => PlanFile.Parse(json.Replace("\"lion\"", "\"adamx\""), "p.json"));
        Assert.Contains("'optimizer'", bad.Message);
        Assert.Null(PlanFile.Parse(PredictionJson.Plan(Plan(null), "m", "c", "s").ToJsonString(), "p.json").Plan.FineTuning);
    }

    [Fact]
    public void Plan_check_names_a_bad_rank_and_qlora_under_zero_3()
    {
        var m = ModelLoader.Load("llama2-7b");
        var c = ClusterLoader.Load("dgx-a100-80g-1node");
        var rank = PlanCheck.Problems(m, c, Plan(new FineTuning(FineTuneMethod.Lora, 0), dp: 8, gbs: 8));
        Assert.Equal("lora_rank", Assert.Single(rank).Field);
        var zero3 = PlanCheck.Problems(m, c, Plan(new FineTuning(FineTuneMethod.Qlora), dp: 8, gbs: 8, zero: 3));
        Assert.Equal("finetune", Assert.Single(zero3).Field);
    }

    [Fact]
    public void Adapters_pay_their_own_tensor_parallel_collectives()
    {
        // Llama 2 7B on one node at TP 2, no recompute: LoRA on every linear (4 column- and 3 row-parallel layers a block)
        // adds a rank-wide collective per adapted linear and direction its region has; the same adapters at TP 1 pay none.
        var m = ModelLoader.Load("llama2-7b");
        var c = ClusterLoader.Load("dgx-a100-80g-1node");
        var lora = new FineTuning(FineTuneMethod.Lora, 16);
        double Tp(FineTuning? t, int tp, bool sp) =>
            Pricer.Price(m, c, new ParallelPlan(tp, 1, 1, 1, 0, 1, 8, 2048, 1, Recompute.None, sp, Precision.Bf16, FineTuning: t)).Breakdown.TpComm;
        Assert.Equal(0, Tp(lora, 1, false));
        double qOnly = Tp(new FineTuning(FineTuneMethod.Lora, 16, LoraTargets.Q), 2, false);
        Assert.True(Tp(lora, 2, false) > qOnly, "more adapted linears, more collectives");
        // Under sequence parallelism each adapter's region has a collective both ways: more than without.
        Assert.True(Tp(lora, 2, true) > Tp(lora, 2, false));
        // Against full training at TP 2: the difference is the adapters' alone, small beside the hidden-size collectives.
        double full = Tp(null, 2, false), adapted = Tp(lora, 2, false);
        Assert.InRange(adapted - full, 1e-9, 0.5 * full);
    }
}
