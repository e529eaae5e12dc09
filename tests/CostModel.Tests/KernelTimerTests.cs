using Planner.CostModel.Compute;
using Planner.CostModel.Specs;
using Xunit;

namespace Planner.CostModel.Tests;

/// <summary>Memory-bound ops are priced by bytes, or by the element rate of their transcendental function when a
/// device (a CPU) evaluates it slower than it moves the bytes.</summary>
public class KernelTimerTests
{
    [Fact]
    public void A_transcendental_op_costs_the_slower_of_its_bytes_and_its_elements()
    {
        var gpu = ClusterLoader.LoadGpu("a100-80g");
        Assert.Equal(0, gpu.ElementRateG); // GPUs: memory-bound
        var gelu = Op.Memory("gelu", bytes: 8e6, elements: 1e6);
        var onGpu = new KernelTimer(gpu, Precision.Bf16);
        Assert.Equal(onGpu.Memory(8e6), onGpu.Forward(gelu));

        // 0.25 G elements/s: 1e6 elements take 4 ms, far above 8 MB at 10 GB/s·0.5 (1.6 ms).
        var cpu = ClusterLoader.LoadGpu("local-cpu");
        Assert.Equal(0.25, cpu.ElementRateG);
        var timer = new KernelTimer(cpu, Precision.Fp32);
        double overhead = cpu.KernelOverheadUs * 1e-6;
        Assert.Equal(1e6 / 0.25e9 + overhead, timer.Forward(gelu), 12);
        Assert.Equal(1e6 / 0.25e9 + overhead, timer.Backward(gelu), 12);
        // An op without a transcendental function stays memory-bound.
        var add = Op.Memory("add", bytes: 8e6);
        Assert.Equal(8e6 / (cpu.MemoryBandwidthGbs * 1e9 * cpu.MemoryEfficiency) + overhead, timer.Forward(add), 12);
    }

    [Fact]
    public void A_profiled_gemm_corrects_the_curve_near_it_and_only_there()
    {
        var plain = ClusterLoader.LoadGpu("local-cpu");
        // Measured 1.5x the curve at 128 x 8192 x 256 (an LM head), 0.8x at 512 x 768 x 256.
        var gpu = plain with { GemmResiduals = [GemmResidual.Of(128, 8192, 256, 1.5), GemmResidual.Of(512, 768, 256, 0.8)] };
        var curve = new KernelTimer(plain, Precision.Fp32);
        var corrected = new KernelTimer(gpu, Precision.Fp32);
        double overhead = plain.KernelOverheadUs * 1e-6;
        double Kernel(KernelTimer t, GemmShape g) => t.Gemm(g) - overhead;
        // The same shape in another order (a backward GEMM), and a shape within 2x in every dimension.
        foreach (var g in new[] { new GemmShape(128, 8192, 256), new GemmShape(128, 256, 8192), new GemmShape(200, 6000, 300) })
            Assert.Equal(1.5 * Kernel(curve, g), Kernel(corrected, g), 9);
        Assert.Equal(0.8 * Kernel(curve, new GemmShape(512, 1024, 256)), Kernel(corrected, new GemmShape(512, 1024, 256)), 9);
        // Beyond 2x in a dimension: the curve alone.
        var far = new GemmShape(2048, 2048, 2048);
        Assert.Equal(Kernel(curve, far), Kernel(corrected, far), 12);
    }

    [Fact]
    public void A_profiled_op_rate_replaces_the_estimate_for_that_op_name_only()
    {
        var plain = ClusterLoader.LoadGpu("local-cpu");
        var gpu = plain with { Profiled = new(OpRates: new Dictionary<string, OpRate> { ["cross_entropy"] = new(2.0, 3.0) }) };
        var timer = new KernelTimer(gpu, Precision.Fp32);
        var estimate = new KernelTimer(plain, Precision.Fp32);
        double overhead = plain.KernelOverheadUs * 1e-6;
        var loss = Op.Memory("cross_entropy", bytes: 12 * 4e6, elements: 4e6);
        Assert.Equal(4e6 * 2e-9 + overhead, timer.Forward(loss), 12);
        Assert.Equal(4e6 * 3e-9 + overhead, timer.Backward(loss), 12);
        // Another name keeps the bandwidth and element-rate estimate.
        var parallelLoss = loss with { Name = "vocab_parallel_cross_entropy" };
        Assert.Equal(estimate.Forward(parallelLoss), timer.Forward(parallelLoss), 12);
    }

    [Fact]
    public void Linear_factors_scale_the_passes_and_the_optimizer_uses_its_measured_rate()
    {
        var plain = ClusterLoader.LoadGpu("local-cpu");
        var gpu = plain with { Profiled = new(LinearForward: 1.1, LinearBackward: 1.2, OptimizerNsPerParam: 2) };
        var timer = new KernelTimer(gpu, Precision.Fp32);
        var curve = new KernelTimer(plain, Precision.Fp32);
        var mlp = Op.Matmul("mlp_up", 512, 1024, 256);
        Assert.Equal(1.1 * curve.Forward(mlp), timer.Forward(mlp), 12);
        Assert.Equal(1.2 * curve.Backward(mlp), timer.Backward(mlp), 12);
        Assert.Equal(1e6 * 2e-9, timer.Optimizer(1e6, 16e6), 12);
        Assert.Equal(curve.Stream(16e6), curve.Optimizer(1e6, 16e6), 12);
    }

    [Fact]
    public void Whole_block_and_head_factors_scale_their_passes()
    {
        var plain = ClusterLoader.LoadGpu("local-cpu");
        var gpu = plain with { Profiled = new(BlockForward: 1.1, BlockBackward: 1.2, HeadForward: 1.3, HeadBackward: 1.4) };
        var model = ModelLoader.Load("gpt2");
        var plan = new Planner.CostModel.Plans.ParallelPlan(1, 1, 1, 1, 0, 4, 4, 128, 1, Planner.CostModel.Plans.Recompute.None, false, Precision.Fp32);
        var ops = new TransformerOps(model, plan, flashAttention: false);
        var timer = new KernelTimer(gpu, Precision.Fp32);
        var bare = new KernelTimer(plain, Precision.Fp32);
        Assert.Equal(1.1 * bare.Forward(ops.Block), timer.BlockForward(ops.Block), 12);
        Assert.Equal(1.2 * bare.Backward(ops.Block), timer.BlockBackward(ops.Block), 12);
        Assert.Equal(1.3 * bare.Forward(ops.Head), timer.HeadForward(ops.Head), 12);
        Assert.Equal(1.4 * bare.Backward(ops.Head), timer.HeadBackward(ops.Head), 12);
        Assert.Equal(bare.BlockForward(ops.Block), bare.Forward(ops.Block), 12); // not measured: no correction
    }

    [Fact]
    public void A_block_split_by_tensor_parallelism_takes_its_own_factor_else_the_whole_blocks()
    {
        var plain = ClusterLoader.LoadGpu("local-cpu");
        var model = ModelLoader.Load("gpt2");
        var plan = new Planner.CostModel.Plans.ParallelPlan(2, 1, 1, 1, 0, 4, 4, 128, 1, Planner.CostModel.Plans.Recompute.None, false, Precision.Fp32);
        var ops = new TransformerOps(model, plan, flashAttention: false);
        var bare = new KernelTimer(plain, Precision.Fp32);
        var both = new KernelTimer(plain with { Profiled = new(BlockForward: 1.1, BlockBackward: 1.2, TpBlockForward: 1.5, TpBlockBackward: 1.6) }, Precision.Fp32);
        Assert.Equal(1.5 * bare.Forward(ops.Block), both.BlockForward(ops.Block, tp: 2), 12);
        Assert.Equal(1.6 * bare.Backward(ops.Block), both.BlockBackward(ops.Block, tp: 2), 12);
        Assert.Equal(1.1 * bare.Forward(ops.Block), both.BlockForward(ops.Block, tp: 1), 12);
        var wholeOnly = new KernelTimer(plain with { Profiled = new(BlockForward: 1.1, BlockBackward: 1.2) }, Precision.Fp32);
        Assert.Equal(1.2 * bare.Backward(ops.Block), wholeOnly.BlockBackward(ops.Block, tp: 2), 12);
        // The pricer hands the plan's tp: a TP=2 plan's block forward carries the TP factor.
        var cluster = ClusterLoader.Load("local-cpu");
        var tpCluster = cluster with { Gpu = cluster.Gpu with { Profiled = new(BlockForward: 1.1, TpBlockForward: 1.5) } };
        var plain2 = Planner.CostModel.Pricing.BlockCosts.Compute(model, cluster, plan, new Planner.CostModel.Pricing.PricingOptions());
        var tp2 = Planner.CostModel.Pricing.BlockCosts.Compute(model, tpCluster, plan, new Planner.CostModel.Pricing.PricingOptions());
        Assert.Equal(1.5 * plain2.Block.Forward, tp2.Block.Forward, 9);
    }

    [Fact]
    public void The_step_factor_scales_every_pass_and_the_tp_comm_factor_every_tp_collective()
    {
        var model = ModelLoader.Load("gpt2");
        var plan = new Planner.CostModel.Plans.ParallelPlan(2, 1, 1, 1, 0, 4, 4, 128, 1, Planner.CostModel.Plans.Recompute.Full, false, Precision.Fp32);
        var cluster = ClusterLoader.Load("local-cpu");
        var scaled = cluster with { Gpu = cluster.Gpu with { Profiled = new(StepCompute: 1.25, TpComm: 1.5) } };
        var options = new Planner.CostModel.Pricing.PricingOptions { Kernels = new(Attention: Planner.CostModel.Pricing.AttentionKernel.Materialized) };
        var a = Planner.CostModel.Pricing.BlockCosts.Compute(model, cluster, plan, options);
        var b = Planner.CostModel.Pricing.BlockCosts.Compute(model, scaled, plan, options);
        Assert.True(a.Block.Forward > 0 && a.Block.TpForward > 0 && a.Block.Recompute > 0 && a.HeadBackward > 0);
        foreach (var (x, y) in new[] { (a.Block.Forward, b.Block.Forward), (a.Block.Backward, b.Block.Backward), (a.Block.Recompute, b.Block.Recompute), (a.EmbeddingForward, b.EmbeddingForward),
                     (a.EmbeddingBackward, b.EmbeddingBackward), (a.HeadForward, b.HeadForward), (a.HeadBackward, b.HeadBackward) })
            Assert.Equal(1.25 * x, y, 9);
        foreach (var (x, y) in new[] { (a.Block.TpForward, b.Block.TpForward), (a.Block.TpBackward, b.Block.TpBackward), (a.Block.TpRecompute, b.Block.TpRecompute), (a.TpEmbedding, b.TpEmbedding) })
            Assert.Equal(1.5 * x, y, 9);
        // The step prices through them: compute and TP communication grow, the rest stays.
        var pa = Planner.CostModel.Pricing.Pricer.Price(model, cluster, plan, options);
        var pb = Planner.CostModel.Pricing.Pricer.Price(model, scaled, plan, options);
        Assert.Equal(1.25 * (pa.Breakdown.Compute + pa.Breakdown.Recompute), pb.Breakdown.Compute + pb.Breakdown.Recompute, 6);
        Assert.Equal(1.5 * pa.Breakdown.TpComm, pb.Breakdown.TpComm, 6);
        Assert.Equal(pa.Breakdown.Optimizer, pb.Breakdown.Optimizer, 9);
    }

    [Fact]
    public void The_ep_and_cp_factors_scale_their_exchanges_and_the_profiled_moe_overhead_and_cp_block_factors_their_passes()
    {
        var cluster = ClusterLoader.Load("local-cpu");
        var options = Planner.CostModel.Pricing.StackLoader.Options("planner");
        var moe = ModelLoader.Parse("""{"num_hidden_layers": 1, "hidden_size": 128, "num_attention_heads": 4, "intermediate_size": 256, "vocab_size": 512, "max_position_embeddings": 64, "hidden_act": "silu", "num_local_experts": 4, "num_experts_per_tok": 2}""", "test", "moe");
        var ep = new Planner.CostModel.Plans.ParallelPlan(1, 1, 2, 1, 0, 2, 4, 64, 1, Planner.CostModel.Plans.Recompute.None, false, Precision.Fp32, Ep: 2);
        var profiled = cluster with { Gpu = cluster.Gpu with { Profiled = new(EpComm: 0.5, MoeExpertOverheadUs: 700) } };
        var a = Planner.CostModel.Pricing.BlockCosts.Compute(moe, cluster, ep, options).Block;
        var b = Planner.CostModel.Pricing.BlockCosts.Compute(moe, profiled, ep, options).Block;
        Assert.True(a.EpForward > 0 && a.EpBackward > 0);
        Assert.Equal(0.5 * a.EpForward, b.EpForward, 12);
        Assert.Equal(0.5 * a.EpBackward, b.EpBackward, 12);
        // Two local experts: the measured overhead replaces the stack's per expert and pass.
        Assert.Equal(2 * (700e-6 - options.Moe.ExpertOverheadSeconds), b.Forward - a.Forward, 12);
        Assert.Equal(2 * (700e-6 - options.Moe.ExpertOverheadSeconds), b.Backward - a.Backward, 12);

        var gpt = ModelLoader.Load("gpt2");
        var cp = new Planner.CostModel.Plans.ParallelPlan(1, 1, 1, 2, 0, 2, 2, 128, 1, Planner.CostModel.Plans.Recompute.None, false, Precision.Fp32);
        var ringed = cluster with { Gpu = cluster.Gpu with { Profiled = new(BlockForward: 1.1, CpComm: 2, CpBlockForward: 1.5, CpBlockBackward: 1.75) } };
        var c = Planner.CostModel.Pricing.BlockCosts.Compute(gpt, cluster, cp, options).Block;
        var d = Planner.CostModel.Pricing.BlockCosts.Compute(gpt, ringed, cp, options).Block;
        Assert.True(c.CpForward > 0 && c.CpBackward > 0);
        Assert.Equal(2 * c.CpForward, d.CpForward, 12);
        Assert.Equal(2 * c.CpBackward, d.CpBackward, 12);
        // The context-parallel block factor, not the whole block's, where the sequence is split; the whole block's without.
        Assert.Equal(1.5 * c.Forward, d.Forward, 12);
        Assert.Equal(1.75 * c.Backward, d.Backward, 12);
        var whole = cp with { Cp = 1 };
        Assert.Equal(1.1 * Planner.CostModel.Pricing.BlockCosts.Compute(gpt, cluster, whole, options).Block.Forward,
            Planner.CostModel.Pricing.BlockCosts.Compute(gpt, ringed, whole, options).Block.Forward, 12);
    }
}
