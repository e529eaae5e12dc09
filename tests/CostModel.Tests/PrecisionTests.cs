using Xunit;
using Planner.CostModel.Compute;
using Planner.CostModel.Memory;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;

namespace Planner.CostModel.Tests;

/// <summary>Each precision's pricing: which GEMMs run at the low-precision rate, the cast kernels, the memory they change.</summary>
public class PrecisionTests
{
    private static readonly ModelSpec Llama = ModelLoader.Load("llama3-8b");
    private static readonly GpuSpec Gb300 = ClusterLoader.LoadGpu("gb300");
    private static readonly GpuSpec H100 = ClusterLoader.LoadGpu("h100-sxm");

    private static ParallelPlan Plan(Precision p) => new(1, 1, 8, 1, 1, 2, 128, 8192, 1, Recompute.None, false, p);

    [Fact]
    public void Formats_store_values_scales_and_copies_as_their_recipes_do()
    {
        // Per-tensor FP8 needs a transposed copy on Hopper, none on Blackwell; block-scaled formats keep both usages.
        Assert.Equal(new Quantization(1, 0, false, 2), Quantization.Of(Precision.Fp8, H100));
        Assert.Equal(new Quantization(1, 0, false, 1), Quantization.Of(Precision.Fp8, Gb300));
        Assert.Equal(new Quantization(1, 0, true, 1), Quantization.Of(Precision.Fp8Cs, Gb300));
        Assert.Equal(new Quantization(1, 1.0 / 32, false, 2), Quantization.Of(Precision.Mxfp8, Gb300));
        Assert.Equal(new Quantization(0.5, 1.0 / 16, true, 2), Quantization.Of(Precision.Nvfp4, Gb300));
        Assert.Null(Quantization.Of(Precision.Bf16, Gb300));
        // A cast reads the bf16 values (twice with an amax pass) and writes its copies.
        Assert.Equal(2 + 1, Quantization.Of(Precision.Fp8, Gb300)!.CastBytes(1));
        Assert.Equal(4 + 1, Quantization.Of(Precision.Fp8Cs, Gb300)!.CastBytes(1));
        Assert.Equal(2 + 2 * (1 + 1.0 / 32), Quantization.Of(Precision.Mxfp8, Gb300)!.CastBytes(1), 12);
        Assert.Equal(4 + 2 * (0.5 + 1.0 / 16), Quantization.Of(Precision.Nvfp4, Gb300)!.CastBytes(1), 12);
    }

    [Fact]
    public void Only_the_blocks_linear_layers_run_at_the_low_precision_rate()
    {
        var timer = new KernelTimer(Gb300, Precision.Mxfp8);
        var bf16 = new KernelTimer(Gb300, Precision.Bf16);
        var ops = new TransformerOps(Llama, Plan(Precision.Mxfp8), true, Quantization.Of(Precision.Mxfp8, Gb300));
        var qkv = ops.Block.Single(o => o.Name == "qkv");
        var core = ops.Block.Single(o => o.Name == "flash_attention");
        var head = ops.Head.Single(o => o.Name == "lm_head");
        Assert.True(qkv.Quantized);
        Assert.False(core.Quantized);
        Assert.False(head.Quantized);
        // The attention core and the LM head cost what they cost in bf16; the projection runs at the MXFP8 peak over its
        // fitted efficiency.
        Assert.Equal(bf16.Forward(core), timer.Forward(core), 12);
        Assert.Equal(bf16.Forward(head), timer.Forward(head), 12);
        double expected = bf16.Forward(qkv with { Quantized = false }) * Gb300.PeakFlops(Precision.Bf16) / Gb300.PeakFlops(Precision.Mxfp8) / Gb300.QuantizedEfficiency(Precision.Mxfp8);
        double overhead = Gb300.KernelOverheadUs * 1e-6;
        Assert.Equal(expected - overhead * (Gb300.PeakFlops(Precision.Bf16) / Gb300.PeakFlops(Precision.Mxfp8) / Gb300.QuantizedEfficiency(Precision.Mxfp8) - 1),
            timer.Forward(qkv), 12);
    }

    [Fact]
    public void Each_format_prices_its_casts_and_its_rate()
    {
        var cluster = ClusterLoader.Load("gb300-nvl72") with { Nodes = 2 };
        double Block(Precision p) => BlockCosts.Compute(Llama, cluster, Plan(p), PricingOptions.Default).Block.Forward;
        double Quantize(Precision p) => new TransformerOps(Llama, Plan(p), true, Quantization.Of(p, cluster.Gpu)).Block.Single(o => o.Name == "quantize").Bytes;
        // Current scaling reads every tensor once more than delayed scaling; MXFP8 writes two scaled copies.
        Assert.True(Quantize(Precision.Fp8Cs) > Quantize(Precision.Fp8));
        Assert.True(Quantize(Precision.Mxfp8) > Quantize(Precision.Fp8));
        Assert.DoesNotContain(new TransformerOps(Llama, Plan(Precision.Bf16), true).Block, o => o.Name == "quantize");
        // Lower precision, faster block: the GEMMs dominate a block of Llama 3 8B at 16k tokens.
        Assert.True(Block(Precision.Fp8) < Block(Precision.Bf16));
        Assert.True(Block(Precision.Nvfp4) < Block(Precision.Mxfp8));
        Assert.True(Block(Precision.Fp8Cs) > Block(Precision.Fp8));
    }

    [Fact]
    public void Fp8_parameters_replace_the_bf16_weights_and_inputs_are_saved_quantized()
    {
        var ops = (Precision p) => new TransformerOps(Llama, Plan(p), true, Quantization.Of(p, Gb300));
        MemoryBreakdown Stage(Precision p) => new MemoryModel(Llama, Plan(p), ops(p), Gb300).Stage(0, Llama.Layers, 1, 1);
        var bf16 = Stage(Precision.Bf16);
        var fp8 = Stage(Precision.Fp8);
        var mx = Stage(Precision.Mxfp8);
        var nv = Stage(Precision.Nvfp4);
        double linear = Llama.Layers * (double)Llama.LayerParams;
        // Per-tensor FP8 on Blackwell: one byte per linear weight instead of two; MXFP8: two scaled copies; NVFP4 keeps
        // the bf16 weights beside its copies.
        Assert.Equal(bf16.Weights - linear, fp8.Weights, 0);
        Assert.Equal(bf16.Weights + linear * (2 * (1 + 1.0 / 32) - 2), mx.Weights, 0);
        Assert.Equal(bf16.Weights + linear * 2 * (0.5 + 1.0 / 16), nv.Weights, 0);
        Assert.True(fp8.Activations < bf16.Activations);
        Assert.True(nv.Activations < fp8.Activations);
        Assert.Equal(bf16.Gradients, fp8.Gradients);
    }

    [Fact]
    public void A_gpu_without_a_formats_rate_refuses_it()
    {
        var cluster = ClusterLoader.Load("dgx-h100");
        var problem = PlanCheck.Problem(Llama, cluster, Plan(Precision.Mxfp8))!;
        Assert.Equal(("precision", "mxfp8"), (problem.Field, problem.Value));
        Assert.Contains("has no mxfp8 rate", problem.Reason);
        Assert.Null(PlanCheck.Problem(Llama, cluster, Plan(Precision.Fp8Cs)));
        Assert.Equal(H100.PeakFlops(Precision.Fp8), H100.PeakFlops(Precision.Fp8Cs));
    }
}
