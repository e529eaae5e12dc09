using Xunit;
using Planner.CostModel.Memory;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;

namespace Planner.CostModel.Tests;

/// <summary>End-to-end properties of <see cref="Pricer.Price"/>: the breakdown adds up, throughput follows from the
/// step time, more data parallelism does not slow a compute-bound step, out-of-memory plans are flagged.</summary>
public class PricerTests
{
    private static ParallelPlan Plan(int tp, int pp, int dp, int cp = 1, int zero = 0, int mbs = 1, int gbs = 64,
        int seq = 4096, int vpp = 1, Recompute r = Recompute.None, bool sp = false, Precision precision = Precision.Bf16) =>
        new(tp, pp, dp, cp, zero, mbs, gbs, seq, vpp, r, sp, precision);

    private static readonly PricingOptions Megatron2021 = new()
    {
        Kernels = new(Attention: AttentionKernel.Materialized),
        DataParallel = new(GradReduce: GradientReduction.AfterBackward),
    };
    private static readonly PricingOptions HierarchicalOptions = new() { Algorithm = Comm.CollectiveAlgorithm.Hierarchical };

    /// <summary>(model, cluster, plan, options) cases spanning pp 1/4, vpp 1/2, zero 0–3, every recompute, cp 1/2.</summary>
    private static readonly (string Model, string Cluster, ParallelPlan Plan, PricingOptions? Options)[] Cases =
    [
        ("llama2-7b", "dgx-a100-80g", Plan(tp: 8, pp: 1, dp: 16, gbs: 128), null),
        ("llama2-7b", "dgx-a100-80g", Plan(tp: 4, pp: 4, dp: 8, zero: 1, r: Recompute.Selective, sp: true), null),
        ("llama2-7b", "dgx-a100-80g", Plan(tp: 2, pp: 4, dp: 4, cp: 2, zero: 1, vpp: 2, r: Recompute.Full, sp: true), null),
        ("llama2-7b", "dgx-a100-80g", Plan(tp: 8, pp: 1, dp: 8, cp: 2, zero: 3, gbs: 32, r: Recompute.Full), null),
        ("llama2-7b", "dgx-a100-80g", Plan(tp: 1, pp: 4, dp: 32, gbs: 256, vpp: 2, r: Recompute.Selective), Megatron2021),
        ("llama2-7b", "dgx-a100-80g", Plan(tp: 2, pp: 2, dp: 8, zero: 2, mbs: 2), HierarchicalOptions),
        ("megatron-1.7b", "dgx-a100-80g", Plan(tp: 2, pp: 4, dp: 2, mbs: 2, gbs: 32, seq: 2048, vpp: 2, r: Recompute.Full), Megatron2021),
        ("megatron-18b", "dgx-a100-80g", Plan(tp: 8, pp: 4, dp: 4, zero: 1, gbs: 128, seq: 2048, r: Recompute.Selective, sp: true), Megatron2021),
        ("gpt2", "dgx-a100-80g-1node", Plan(tp: 1, pp: 1, dp: 8, zero: 1, mbs: 4, gbs: 64, seq: 1024), null),
        ("mixtral-8x7b", "dgx-h100", Plan(tp: 8, pp: 4, dp: 4, zero: 1, gbs: 64, seq: 4096, vpp: 2, r: Recompute.Selective, sp: true), null),
    ];

    public static TheoryData<int> CaseIndices()
    {
        var d = new TheoryData<int>();
        for (int i = 0; i < Cases.Length; i++)
            d.Add(i);
        return d;
    }

    private static Prediction Price(int i)
    {
        var (model, cluster, plan, options) = Cases[i];
        return Pricer.Price(ModelLoader.Load(model), ClusterLoader.Load(cluster), plan, options);
    }

    private static void AssertRel(double expected, double actual, double tol = 1e-9) =>
        Assert.True(Math.Abs(actual - expected) <= tol * Math.Abs(expected),
            $"expected {expected:E12}, got {actual:E12}");

    [Theory]
    [MemberData(nameof(CaseIndices))]
    public void Breakdown_AddsUpToStepTime(int i)
    {
        var r = Price(i);
        Assert.True(r.StepTimeSeconds > 0 && double.IsFinite(r.StepTimeSeconds));
        AssertRel(r.StepTimeSeconds, r.Breakdown.Total);
    }

    [Theory]
    [MemberData(nameof(CaseIndices))]
    public void Breakdown_PartsAreNonNegative(int i)
    {
        var b = Price(i).Breakdown;
        const double eps = -1e-12;
        Assert.True(b.Compute > 0);
        Assert.True(b.Recompute >= eps);
        Assert.True(b.TpComm >= eps);
        Assert.True(b.PpComm >= eps);
        Assert.True(b.DpComm >= eps);
        Assert.True(b.Bubble >= eps);
        Assert.True(b.Optimizer >= eps);
    }

    [Theory]
    [MemberData(nameof(CaseIndices))]
    public void TokensPerSecond_IsGbsTimesSeqOverStep(int i)
    {
        var r = Price(i);
        var p = Cases[i].Plan;
        AssertRel((double)p.Gbs * p.Seq / r.StepTimeSeconds, r.TokensPerSecond);
    }

    [Theory]
    [MemberData(nameof(CaseIndices))]
    public void MemoryByStage_OnePerStage_PeakIsLargest(int i)
    {
        var r = Price(i);
        var p = Cases[i].Plan;
        Assert.Equal(p.Pp, r.MemoryByStage.Count);
        double max = r.MemoryByStage.Max(s => s.Total);
        AssertRel(max / Units.GiB, r.PeakMemoryGib);
        Assert.Equal(r.PeakMemoryGib <= r.GpuMemoryGib, r.Fits);
    }

    [Theory]
    [MemberData(nameof(CaseIndices))]
    public void RecomputeBreakdown_MatchesPolicy(int i)
    {
        var r = Price(i);
        var (_, _, plan, options) = Cases[i];
        bool flash = (options ?? PricingOptions.Default).Kernels.FusedAttention;
        bool expectsRecompute = plan.Recompute == Recompute.Full || (plan.Recompute == Recompute.Selective && !flash);
        if (expectsRecompute)
            Assert.True(r.Breakdown.Recompute > 0);
        else
            Assert.Equal(0, r.Breakdown.Recompute);
    }

    [Fact]
    public void ModelTflops_MatchesNarayananFormula()
    {
        // megatron-1.7b: l = 24, h = 2304, V = 51200 (tied); model FLOPs 72·B·s·l·h²·(1 + s/(6h) + V/(12·l·h)).
        var r = Price(6);
        var p = Cases[6].Plan;
        double B = p.Gbs, s = p.Seq, l = 24, h = 2304, V = 51200;
        double modelFlops = 72 * B * s * l * h * h * (1 + s / (6 * h) + V / (12 * l * h));
        double hardwareFlops = 96 * B * s * l * h * h * (1 + s / (6 * h) + V / (16 * l * h)); // full recompute
        AssertRel(modelFlops / (p.Gpus * r.StepTimeSeconds) / 1e12, r.ModelTflopsPerGpu);
        AssertRel(hardwareFlops / (p.Gpus * r.StepTimeSeconds) / 1e12, r.HardwareTflopsPerGpu);
        AssertRel(r.ModelTflopsPerGpu / 312, r.Mfu);
        Assert.True(r.Mfu is > 0 and < 1);
    }

    public static TheoryData<int> DpDegrees => new() { 1, 2, 4, 8 };

    [Fact]
    public void MoreDpGpus_SameGbs_NeverSlower_AcrossNodes()
    {
        // llama2-7b, tp = 8 on each node, gbs 256: compute-bound (≥ 16 micro-batches of 4096 tokens per replica).
        var model = ModelLoader.Load("llama2-7b");
        var cluster = ClusterLoader.Load("dgx-a100-80g");
        double previous = double.PositiveInfinity;
        foreach (int dp in new[] { 1, 2, 4, 8, 16 })
        {
            var plan = Plan(tp: 8, pp: 1, dp: dp, zero: 1, gbs: 256, r: Recompute.Selective, sp: true);
            double step = Pricer.Price(model, cluster, plan).StepTimeSeconds;
            Assert.True(step <= 1.01 * previous, $"dp = {dp}: {step:F4} s after {previous:F4} s");
            previous = step;
        }
    }

    [Fact]
    public void MoreDpGpus_SameGbs_NeverSlower_InOneNode()
    {
        var model = ModelLoader.Load("gpt2");
        var cluster = ClusterLoader.Load("dgx-a100-80g-1node");
        double previous = double.PositiveInfinity, first = 0;
        foreach (int dp in new[] { 1, 2, 4, 8 })
        {
            var plan = Plan(tp: 1, pp: 1, dp: dp, mbs: 4, gbs: 256, seq: 1024);
            double step = Pricer.Price(model, cluster, plan).StepTimeSeconds;
            Assert.True(step <= 1.01 * previous, $"dp = {dp}: {step:F4} s after {previous:F4} s");
            if (dp == 1)
                first = step;
            previous = step;
        }
        // 8× the GPUs on a compute-bound step: at least 4× faster.
        Assert.True(previous < first / 4, $"dp = 8 step {previous:F4} s vs dp = 1 {first:F4} s");
    }

    [Fact]
    public void PlanBeyondGpuMemory_DoesNotFit()
    {
        // llama3-70b unsharded on one A100: model states alone are 16 bytes × 70.55e9 ≈ 1051 GiB.
        var model = ModelLoader.Load("llama3-70b");
        var r = Pricer.Price(model, ClusterLoader.Load("dgx-a100-80g"), Plan(tp: 1, pp: 1, dp: 1, gbs: 1));
        Assert.False(r.Fits);
        Assert.Equal(80, r.GpuMemoryGib);
        Assert.True(r.PeakMemoryGib >= 16.0 * model.TotalParams / Units.GiB);
    }

    [Fact]
    public void SmallModel_Fits()
    {
        var r = Pricer.Price(ModelLoader.Load("gpt2"), ClusterLoader.Load("dgx-a100-80g-1node"), Plan(tp: 1, pp: 1, dp: 8, gbs: 64, seq: 1024));
        Assert.True(r.Fits);
        Assert.True(r.PeakMemoryGib < r.GpuMemoryGib);
    }

    [Fact]
    public void TpNotDividingHeads_Throws()
    {
        // gpt2 has 12 heads.
        var e = Assert.Throws<InputException>(() =>
            Pricer.Price(ModelLoader.Load("gpt2"), ClusterLoader.Load("dgx-a100-80g-1node"), Plan(tp: 8, pp: 1, dp: 1, gbs: 8, seq: 1024)));
        // The cost model names the plan key; the CLI turns it into a flag.
        Assert.Equal("tp: 8 does not divide the 12 attention heads of 'gpt2'", e.Message);
    }

    [Fact]
    public void MoreGpusThanCluster_Throws()
    {
        Assert.Throws<InputException>(() =>
            Pricer.Price(ModelLoader.Load("gpt2"), ClusterLoader.Load("dgx-a100-80g-1node"), Plan(tp: 1, pp: 1, dp: 16, gbs: 64, seq: 1024)));
    }

    [Fact]
    public void UnsupportedPrecision_Throws()
    {
        // A100 has no fp8 rate.
        Assert.Throws<InputException>(() =>
            Pricer.Price(ModelLoader.Load("gpt2"), ClusterLoader.Load("dgx-a100-80g-1node"),
                Plan(tp: 1, pp: 1, dp: 8, gbs: 64, seq: 1024, precision: Precision.Fp8)));
    }

    [Fact]
    public void SingleGpu_NoCommunicationOrBubble()
    {
        var r = Pricer.Price(ModelLoader.Load("gpt2"), ClusterLoader.Load("dgx-a100-80g-1node"), Plan(tp: 1, pp: 1, dp: 1, gbs: 8, seq: 1024));
        Assert.Equal(0, r.Breakdown.TpComm);
        Assert.Equal(0, r.Breakdown.PpComm);
        Assert.Equal(0, r.Breakdown.DpComm);
        Assert.Equal(0, r.Breakdown.Bubble, 12);
        AssertRel(r.StepTimeSeconds, r.Breakdown.Compute + r.Breakdown.Optimizer);
    }

    [Fact]
    public void PartialRecompute_LiesBetweenNoneAndFull_InTimeMemoryAndFlops()
    {
        // Llama 2 7B, 32 blocks on 4 stages with 2 chunks each: 4 blocks per chunk.
        var model = ModelLoader.Load("llama2-7b");
        var cluster = ClusterLoader.Load("dgx-a100-80g");
        var basePlan = Plan(tp: 2, pp: 4, dp: 16, zero: 1, vpp: 2, sp: true, gbs: 256);
        var none = Pricer.Price(model, cluster, basePlan);
        var full = Pricer.Price(model, cluster, basePlan with { Recompute = Recompute.Full });
        var previous = none;
        for (int k = 1; k <= 3; k++)
        {
            var partial = Pricer.Price(model, cluster, basePlan with { Recompute = Recompute.Full, RecomputeLayers = k });
            Assert.True(partial.StepTimeSeconds > previous.StepTimeSeconds, $"k={k}: more recompute must cost time");
            Assert.True(partial.PeakMemoryGib < previous.PeakMemoryGib, $"k={k}: more recompute must save memory");
            Assert.True(partial.StepTimeSeconds < full.StepTimeSeconds && partial.PeakMemoryGib > full.PeakMemoryGib);
            // Recompute time is k blocks of the four in each chunk.
            AssertRel(full.Breakdown.Recompute * k / 4, partial.Breakdown.Recompute);
            previous = partial;
        }
        // The hardware FLOPs count k/4 of full recompute's extra forward.
        var flopsNone = Compute.Flops.PerStep(model, basePlan, true);
        var flopsFull = Compute.Flops.PerStep(model, basePlan with { Recompute = Recompute.Full }, true);
        var flopsOne = Compute.Flops.PerStep(model, basePlan with { Recompute = Recompute.Full, RecomputeLayers = 1 }, true);
        AssertRel((flopsFull.Hardware - flopsNone.Hardware) / 4, flopsOne.Hardware - flopsNone.Hardware);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(3)]
    public void OptimizerOffload_MovesStateToTheHost_AndTheStepIsTheSlowerOfGpuAndCpu(int zero)
    {
        var model = ModelLoader.Load("llama2-7b");
        var cluster = ClusterLoader.Load("dgx-a100-80g");
        var plan = Plan(tp: 2, pp: 2, dp: 32, zero: zero, gbs: 256, sp: true);
        var onGpu = Pricer.Price(model, cluster, plan);
        double[] fractions = [0, 0.25, 0.5, 1];
        var variants = Pricer.PriceOffloads(model, cluster, plan, fractions);
        for (int i = 0; i < fractions.Length; i++)
        {
            var alone = Pricer.Price(model, cluster, plan with { OptimizerOffload = fractions[i] });
            Assert.Equal(alone.StepTimeSeconds, variants[i].StepTimeSeconds, 12); // one simulation prices every fraction
            Assert.Equal(alone.PeakMemoryGib, variants[i].PeakMemoryGib, 12);
            Assert.Equal(fractions[i], variants[i].Plan.OptimizerOffload);
            var mem = variants[i].MemoryByStage[0];
            // GPU optimizer memory falls and host memory rises in proportion; the optimizer state plus the fp32
            // gradient copy of the offloaded share is on the host (12 + 4 bytes per parameter).
            AssertRel(onGpu.MemoryByStage[0].Optimizer * (1 - fractions[i]), mem.Optimizer);
            AssertRel(onGpu.MemoryByStage[0].Optimizer * fractions[i] * 16 / 12, mem.Host);
        }
        // PCIe at 12 GB/s is far slower than HBM: offloading everything slows the optimizer step.
        Assert.True(variants[3].Breakdown.Optimizer > onGpu.Breakdown.Optimizer * 5);
        // The pipeline is the same: only the step after the flush changes.
        Assert.Equal(onGpu.Breakdown.Compute, variants[3].Breakdown.Compute);
        Assert.Equal(onGpu.Breakdown.Bubble, variants[3].Breakdown.Bubble);
        Assert.Equal(onGpu.Breakdown.PpComm, variants[3].Breakdown.PpComm);
        Assert.Equal(onGpu.Breakdown.TpComm, variants[3].Breakdown.TpComm);
    }

    [Fact]
    public void OptimizerOffload_NeedsAHost_AndItsMemory()
    {
        var model = ModelLoader.Load("llama2-70b");
        var cluster = ClusterLoader.Load("dgx-a100-80g");
        var plan = Plan(tp: 8, pp: 2, dp: 8, gbs: 64, r: Recompute.Full, sp: true) with { OptimizerOffload = 1 };
        var e = Assert.Throws<InputException>(() => Pricer.Price(model, cluster with { Host = null }, plan));
        Assert.Contains("host", e.Message);
        Assert.True(Pricer.Price(model, cluster, plan).Fits);
        // 70B over tp·pp = 16 without ZeRO: 4.4B parameters per GPU, 70 GB of host state per GPU, 560 GB per node.
        var small = cluster with { Host = cluster.Host! with { MemoryGib = 256 } };
        var r = Pricer.Price(model, small, plan);
        Assert.False(r.Fits);
        Assert.True(r.MemoryByStage.Max(m => m.Host) * 8 > 256 * Units.GiB * HostSpec.UsableFraction);
    }

    [Fact]
    public void Unfused_gradient_accumulation_adds_a_pass_over_the_gradients_per_micro_batch()
    {
        var model = ModelLoader.Load("llama2-7b");
        var cluster = ClusterLoader.Load("dgx-a100-80g");
        var plan = Plan(tp: 8, pp: 1, dp: 16, gbs: 128); // 8 micro-batches
        var fused = Pricer.Price(model, cluster, plan);
        var autograd = Pricer.Price(model, cluster, plan, new PricingOptions { Kernels = new(GradAccumulation: GradientAccumulation.SeparatePass) });
        // 7 of 8 micro-batches read two gradient copies and write one: 3 · 2 bytes per parameter of the rank.
        double parameters = fused.MemoryByStage[0].Gradients / 2;
        double pass = 3 * 2 * parameters / (cluster.Gpu.MemoryBandwidthGbs * 1e9 * cluster.Gpu.MemoryEfficiency);
        AssertRel(fused.Breakdown.Compute + 7 * pass, autograd.Breakdown.Compute, 1e-6);
        Assert.True(autograd.StepTimeSeconds > fused.StepTimeSeconds);
    }

    [Fact]
    public void Gradient_bucket_copies_add_the_gradients_reduced_at_once_to_zero0_to_2_data_parallelism()
    {
        var model = ModelLoader.Load("llama2-7b");
        var cluster = ClusterLoader.Load("dgx-a100-80g");
        var copies = new PricingOptions { DataParallel = new(Buffer: ReductionBuffer.BucketCopies) };
        var zero0 = Plan(tp: 8, pp: 1, dp: 16, gbs: 128);
        (MemoryBreakdown Plain, MemoryBreakdown Copied) Stage0(ParallelPlan plan) =>
            (Pricer.Price(model, cluster, plan).MemoryByStage[0], Pricer.Price(model, cluster, plan, copies).MemoryByStage[0]);
        // ZeRO-0 and ZeRO-1 copy every bucket of the last backward beside the stage's full gradients.
        foreach (var plan in new[] { zero0, zero0 with { Zero = 1 } })
        {
            var (plain, copied) = Stage0(plan);
            AssertRel(plain.Buffers + plain.Gradients, copied.Buffers);
        }
        // ZeRO-2 keeps the gradient shard, and copies one chunk's gradients (here two chunks per stage) at a time.
        var zero2 = Plan(tp: 8, pp: 2, dp: 8, zero: 2, gbs: 128, vpp: 2);
        var (plain2, copied2) = Stage0(zero2);
        AssertRel(plain2.Buffers + plain2.Gradients * zero2.Dp / 2, copied2.Buffers);
        // ZeRO-3 reduce-scatters synchronously; without data parallelism there is nothing to reduce.
        foreach (var plan in new[] { zero0 with { Zero = 3 }, Plan(tp: 8, pp: 1, dp: 1, gbs: 8) })
        {
            var (plain, copied) = Stage0(plan);
            Assert.Equal(plain.Buffers, copied.Buffers);
        }
    }

    /// <summary>
    /// ZeRO's reduce-scatters run as all-reduces and every data-parallel collective in fp32 (the executor on Gloo):
    /// the DP tail (ZeRO-1/2) and the ZeRO-3 backward's collectives are priced with those collectives and bytes.
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Reduce_scatter_as_all_reduce_and_fp32_collectives_are_priced_as_such(int zero)
    {
        var model = ModelLoader.Load("llama2-7b");
        var cluster = ClusterLoader.Load("dgx-a100-80g");
        var plan = Plan(tp: 8, pp: 1, dp: 16, zero: zero, gbs: 128, seq: 1024); // bf16
        var placement = new Comm.Placement(plan, cluster.GpusPerNode);
        var serial = new PricingOptions { DataParallel = new(GradReduce: GradientReduction.AfterBackward) };
        var reference = PipelineCosts.Compute(model, cluster, plan, serial);
        var executorOptions = serial with { DataParallel = serial.DataParallel with { Scatter = ScatterCollective.AllReduce, Dtype = Dtype.Fp32 } };
        var executor = PipelineCosts.Compute(model, cluster, plan, executorOptions);
        double stageParams = reference.Memories[0].StageParams(model.Layers, true, true);
        double Seconds(Comm.Collective op, double bytes) => Comm.CollectiveModel.Seconds(op, bytes, placement, Comm.Axis.Dp, cluster);
        if (zero <= 2)
        {
            // Nothing overlapped: the tail is the reduction and the gather in full.
            AssertRel(Seconds(Comm.Collective.ReduceScatter, stageParams * 2) + Seconds(Comm.Collective.AllGather, stageParams * 2), reference.Parts[0].DpTail);
            AssertRel(Seconds(Comm.Collective.AllReduce, stageParams * 4) + Seconds(Comm.Collective.AllGather, stageParams * 4), executor.Parts[0].DpTail);
        }
        else
        {
            // ZeRO-3 prices its gathers and reduce-scatters per chunk and micro-batch, partly hidden behind the compute:
            // each option alone costs more, both together more than either; fp32 is no change for an fp32 plan.
            double Zero3(ParallelPlan p, PricingOptions o) => PipelineCosts.Compute(model, cluster, p, o).Parts[0].Zero3;
            double plain = Zero3(plan, serial), asAllReduce = Zero3(plan, serial with { DataParallel = serial.DataParallel with { Scatter = ScatterCollective.AllReduce } });
            double fp32 = Zero3(plan, serial with { DataParallel = serial.DataParallel with { Dtype = Dtype.Fp32 } }), both = Zero3(plan, executorOptions);
            Assert.True(asAllReduce > plain && fp32 > plain && both > Math.Max(asAllReduce, fp32), $"{plain} {asAllReduce} {fp32} {both}");
            var plan32 = plan with { Precision = Precision.Fp32 };
            Assert.Equal(Zero3(plan32, serial), Zero3(plan32, serial with { DataParallel = serial.DataParallel with { Dtype = Dtype.Fp32 } }));
        }
    }

    [Theory]
    [InlineData(Recompute.None)]
    [InlineData(Recompute.Full)]
    public void Zero3_without_prefetch_pays_each_gather_and_reduce_scatter_in_full(Recompute recompute)
    {
        // One stage, one chunk: every micro-batch gathers the weights for its forward and its backward (once, even
        // with full recompute: the executor gathers before the chunk's backward, which recomputes inside it) and
        // reduce-scatters the gradients, none of it behind the compute.
        var model = ModelLoader.Load("llama2-7b");
        var cluster = ClusterLoader.Load("dgx-a100-80g");
        var plan = Plan(tp: 8, pp: 1, dp: 16, zero: 3, gbs: 128, seq: 1024, r: recompute);
        var placement = new Comm.Placement(plan, cluster.GpusPerNode);
        var costs = PipelineCosts.Compute(model, cluster, plan, new PricingOptions { DataParallel = new(Zero3: Zero3Schedule.Serial) });
        double stageParams = costs.Memories[0].StageParams(model.Layers, true, true);
        double gather = Comm.CollectiveModel.Seconds(Comm.Collective.AllGather, stageParams * 2, placement, Comm.Axis.Dp, cluster);
        double reduce = Comm.CollectiveModel.Seconds(Comm.Collective.ReduceScatter, stageParams * 2, placement, Comm.Axis.Dp, cluster);
        AssertRel(plan.MicroBatches * (2 * gather + reduce), costs.Parts[0].Zero3);
        // Prefetching hides some of it (with full recompute it also gathers a second time, which can cost more).
        if (recompute == Recompute.None)
            Assert.True(PipelineCosts.Compute(model, cluster, plan, PricingOptions.Default).Parts[0].Zero3 < costs.Parts[0].Zero3);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    public void A_tied_embedding_reduced_after_the_flush_is_priced_apart_and_exposed(int zero)
    {
        // gpt2-xl's embedding is tied across the two stages: the first and the last stage each reduce it over DP.
        var model = ModelLoader.Load("gpt2-xl");
        var cluster = ClusterLoader.Load("dgx-a100-80g");
        var plan = Plan(tp: 1, pp: 2, dp: 8, zero: zero, gbs: 256, seq: 1024);
        var placement = new Comm.Placement(plan, cluster.GpusPerNode);
        var serial = new PricingOptions { DataParallel = new(GradReduce: GradientReduction.AfterBackward, Zero2Reduce: Zero2Reduction.PerMicroBatch) };
        var apart = serial with { DataParallel = serial.DataParallel with { TiedEmbedding = TiedEmbeddingReduction.AfterFlush } };
        var costs = PipelineCosts.Compute(model, cluster, plan, apart);
        double tiedParams = (double)model.Vocab * model.Hidden;
        var op = zero == 0 ? Comm.Collective.AllReduce : Comm.Collective.ReduceScatter;
        int reductions = zero == 2 ? plan.MicroBatches : 1;
        for (int s = 0; s < 2; s++)
        {
            double stageParams = costs.Memories[0].StageParams(costs.Layout.LayersOnStage(s), s == 0, s == 1);
            double Dp(Comm.Collective c, double bytes) => Comm.CollectiveModel.Seconds(c, bytes, placement, Comm.Axis.Dp, cluster);
            double gather = zero == 0 ? 0 : Dp(Comm.Collective.AllGather, stageParams * 2);
            // The pipeline's sum: the whole gradient, or under ZeRO-2 the shard already reduced over DP.
            int pairPerNode = placement.CrossesDomains(Comm.Axis.Pp) ? 1 : 2;
            double tied = Comm.CollectiveModel.Seconds(Comm.Collective.AllReduce, tiedParams * 2 / (zero == 2 ? plan.Dp : 1), 2, pairPerNode, cluster);
            AssertRel((Dp(op, (stageParams - tiedParams) * 2) + Dp(op, tiedParams * 2)) * reductions + gather + tied, costs.Parts[s].DpTail);
            var together = PipelineCosts.Compute(model, cluster, plan, serial);
            double tiedTogether = Comm.CollectiveModel.Seconds(Comm.Collective.AllReduce, tiedParams * 2, 2, pairPerNode, cluster);
            AssertRel(Dp(op, stageParams * 2) * reductions + gather + tiedTogether, together.Parts[s].DpTail);
        }
        // Overlapped with the backward, the embedding reduced apart is exposed: the tail grows (under ZeRO-2 the
        // pipeline then sums only a shard, which can make up for it).
        var overlapped = new PricingOptions { DataParallel = new(Zero2Reduce: Zero2Reduction.PerMicroBatch, ParamGather: ParameterGather.AfterStep) };
        if (zero <= 1)
            Assert.True(PipelineCosts.Compute(model, cluster, plan, overlapped with { DataParallel = overlapped.DataParallel with { TiedEmbedding = TiedEmbeddingReduction.AfterFlush } }).Parts[0].DpTail
                        > PipelineCosts.Compute(model, cluster, plan, overlapped).Parts[0].DpTail);
    }

    [Theory]
    [InlineData(0, 1)]
    [InlineData(1, 1)]
    [InlineData(2, 1)]
    [InlineData(0, 2)]
    [InlineData(1, 2)]
    public void A_collective_per_bucket_pays_each_blocks_head_and_embedding_reduction_apart(int zero, int pp)
    {
        // gpt2-xl over DP 8: each stage reduces its blocks' gradients, the last stage its head's (final norm and the
        // tied embedding's copy), the first its embedding's, one collective each; not overlapped, all in the tail.
        var model = ModelLoader.Load("gpt2-xl");
        var cluster = ClusterLoader.Load("dgx-a100-80g");
        var plan = Plan(tp: 1, pp: pp, dp: 8, zero: zero, gbs: 256, seq: 1024);
        var placement = new Comm.Placement(plan, cluster.GpusPerNode);
        var one = new PricingOptions { DataParallel = new(GradReduce: GradientReduction.AfterBackward) };
        var costs = PipelineCosts.Compute(model, cluster, plan, one with { DataParallel = one.DataParallel with { Granularity = CollectiveGranularity.PerBucket } });
        var together = PipelineCosts.Compute(model, cluster, plan, one);
        double Dp(Comm.Collective c, double bytes) => Comm.CollectiveModel.Seconds(c, bytes, placement, Comm.Axis.Dp, cluster);
        var op = zero == 0 ? Comm.Collective.AllReduce : Comm.Collective.ReduceScatter;
        for (int s = 0; s < pp; s++)
        {
            int layers = costs.Layout.LayersOnStage(s);
            double stageParams = costs.Memories[0].StageParams(layers, s == 0, s == pp - 1);
            var buckets = Enumerable.Repeat((double)model.LayerParams, layers).ToList();
            if (s == pp - 1)
                buckets.Add(model.NormParams + (pp > 1 ? (double)model.Vocab * model.Hidden : 0));
            if (s == 0)
                buckets.Add(model.EmbeddingParams);
            Assert.Equal(stageParams, buckets.Sum(), 6);
            double Each(Comm.Collective c) => buckets.Sum(b => Dp(c, b * 2));
            double gather = zero == 0 ? 0 : Each(Comm.Collective.AllGather);
            double tied = pp > 1 ? Comm.CollectiveModel.Seconds(Comm.Collective.AllReduce, (double)model.Vocab * model.Hidden * 2, 2, placement.CrossesDomains(Comm.Axis.Pp) ? 1 : 2, cluster) : 0;
            AssertRel(Each(op) + gather + tied, costs.Parts[s].DpTail);
            // Each collective pays its latency: more than the stage's gradients priced as one.
            Assert.True(costs.Parts[s].DpTail > together.Parts[s].DpTail);
        }
    }

    [Theory]
    [InlineData(0, 1)]
    [InlineData(1, 1)]
    [InlineData(1, 2)]
    public void Buckets_issued_back_to_back_pay_the_peers_arrival_once(int zero, int pp)
    {
        // A measured machine's links carry the peers' arrival (what a collective right after compute waits for them):
        // one collective pays it in full, a reduction's buckets issued back to back once, not once per bucket.
        var model = ModelLoader.Load("gpt2-xl");
        var spec = ClusterLoader.Load("dgx-a100-80g");
        const double arrivalUs = 700;
        var late = spec with { IntraNode = spec.IntraNode with { ArrivalUs = arrivalUs }, InterNode = spec.InterNode with { ArrivalUs = arrivalUs } };
        foreach (var op in new[] { Comm.Collective.AllReduce, Comm.Collective.AllGather, Comm.Collective.AllToAll })
            Assert.Equal(arrivalUs * 1e-6, Comm.CollectiveModel.Seconds(op, 1e6, 8, 8, late) - Comm.CollectiveModel.Seconds(op, 1e6, 8, 8, spec), 12);
        Assert.Equal(0, Comm.CollectiveModel.Seconds(Comm.Collective.SendRecv, 1e6, 2, 2, late) - Comm.CollectiveModel.Seconds(Comm.Collective.SendRecv, 1e6, 2, 2, spec), 12);
        var plan = Plan(tp: 1, pp: pp, dp: 8, zero: zero, gbs: 256, seq: 1024);
        var perBucket = new PricingOptions { DataParallel = new(GradReduce: GradientReduction.AfterBackward, ParamGather: ParameterGather.AfterStep, Granularity: CollectiveGranularity.PerBucket) };
        var before = PipelineCosts.Compute(model, spec, plan, perBucket);
        var after = PipelineCosts.Compute(model, late, plan, perBucket);
        // Bursts after the flush: the reduction, ZeRO's gather of the updated shards, the tied embedding's all-reduce
        // between stages.
        int bursts = 1 + (zero > 0 ? 1 : 0) + (pp > 1 ? 1 : 0);
        for (int s = 0; s < pp; s++)
        {
            int buckets = before.Layout.LayersOnStage(s) + (s == 0 ? 1 : 0) + (s == pp - 1 ? 1 : 0);
            Assert.True(buckets > bursts);
            AssertRel(before.Parts[s].DpTail + bursts * arrivalUs * 1e-6, after.Parts[s].DpTail);
            // Overlapped with the backward, each bucket's all-reduce is issued while the pass computes: each pays the
            // arrival.
            if (zero == 0)
            {
                var overlapped = perBucket with { DataParallel = perBucket.DataParallel with { GradReduce = GradientReduction.OverlappedWithBackward } };
                double grown = PipelineCosts.Compute(model, late, plan, overlapped).Parts[s].DpTail - PipelineCosts.Compute(model, spec, plan, overlapped).Parts[s].DpTail;
                // The last bucket's arrival exposed, the others' behind the backward at the GPU's overlap slowdown.
                AssertRel(arrivalUs * 1e-6 * (1 + spec.Gpu.OverlapSlowdown * (buckets - 1)), grown);
            }
        }
    }

    /// <summary>The DP tail of a ZeRO-1/2 stage under each combination of the options, against its parts priced
    /// from <see cref="Comm.CollectiveModel.Seconds"/> and <see cref="GpuSpec.Overlapped"/>.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void Zero_reduce_scatter_and_gather_overlap_options_change_the_dp_tail_as_priced(int zero)
    {
        // llama2-7b over 16 nodes of DGX A100 with TP 8 inside a node and short sequences: each stage reduce-scatters
        // its bf16 gradients and all-gathers its bf16 weights over InfiniBand, longer than one micro-batch's backward
        // (comm-bound).
        var model = ModelLoader.Load("llama2-7b");
        var cluster = ClusterLoader.Load("dgx-a100-80g");
        var plan = Plan(tp: 8, pp: 1, dp: 16, zero: zero, gbs: 128, seq: 1024); // 8 micro-batches
        PipelineCosts Costs(PricingOptions o) => PipelineCosts.Compute(model, cluster, plan, o);
        var reference = Costs(PricingOptions.Default);
        var part = reference.Parts[0];
        var placement = new Comm.Placement(plan, cluster.GpusPerNode);
        double stageParams = reference.Memories[0].StageParams(model.Layers, true, true);
        double rs = Comm.CollectiveModel.Seconds(Comm.Collective.ReduceScatter, stageParams * 2, placement, Comm.Axis.Dp, cluster);
        double ag = Comm.CollectiveModel.Seconds(Comm.Collective.AllGather, stageParams * 2, placement, Comm.Axis.Dp, cluster);
        Assert.True(rs > part.LastBackward, $"reduce-scatter {rs} s within a backward of {part.LastBackward} s: not comm-bound");
        // The embedding's bucket comes last in the backward: it is exposed whatever the overlap.
        double last = model.EmbeddingParams / 8.0 / stageParams * rs;
        double exposedReduce = cluster.Gpu.Overlapped(part.LastBackward, rs - last) - part.LastBackward + last;
        double exposedGather = cluster.Gpu.Overlapped(part.FirstForward, ag) - part.FirstForward;
        Assert.True(exposedReduce < rs && exposedGather < ag);
        int m = plan.MicroBatches;

        AssertRel(exposedReduce + exposedGather, reference.Parts[0].DpTail);
        // The gather after the optimizer step, not behind the next forward: all of it shows.
        AssertRel(exposedReduce + ag, Costs(new PricingOptions { DataParallel = new(ParamGather: ParameterGather.AfterStep) }).Parts[0].DpTail);
        // Nothing overlapped: the reduce-scatter and the gather in full (the gather option needs the overlap).
        AssertRel(rs + ag, Costs(new PricingOptions { DataParallel = new(GradReduce: GradientReduction.AfterBackward) }).Parts[0].DpTail);
        AssertRel(rs + ag, Costs(new PricingOptions { DataParallel = new(GradReduce: GradientReduction.AfterBackward, ParamGather: ParameterGather.OverlappedWithForward) }).Parts[0].DpTail);
        // ZeRO-2 reducing every micro-batch: m reduce-scatters, each as exposed as the last one is behind its backward;
        // more than once a step. ZeRO-1 reduces once a step whatever the option.
        var perMicroBatch = Costs(new PricingOptions { DataParallel = new(ParamGather: ParameterGather.AfterStep, Zero2Reduce: Zero2Reduction.PerMicroBatch) }).Parts[0].DpTail;
        var serialPerMicroBatch = Costs(new PricingOptions { DataParallel = new(GradReduce: GradientReduction.AfterBackward, Zero2Reduce: Zero2Reduction.PerMicroBatch) }).Parts[0].DpTail;
        if (zero == 2)
        {
            AssertRel(m * exposedReduce + ag, perMicroBatch);
            AssertRel(m * rs + ag, serialPerMicroBatch);
            Assert.True(perMicroBatch > exposedReduce + ag);
        }
        else
        {
            AssertRel(exposedReduce + ag, perMicroBatch);
            AssertRel(rs + ag, serialPerMicroBatch);
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Zero2_reducing_every_micro_batch_under_interleaving_exposes_each_chunks_last_bucket(bool perBucket)
    {
        // llama2-7b (untied) over PP 2 x 2 chunks and DP 4 inside one DGX node (the reduce-scatters shorter than the
        // backward, so that overlap matters): every micro-batch, each chunk's reduce-scatter runs behind that chunk's
        // backward and is waited for at its end, so each chunk's last bucket (the first stage's embedding, else the
        // chunk's first block) is exposed, not only the stage's last one.
        var model = ModelLoader.Load("llama2-7b");
        var cluster = ClusterLoader.Load("dgx-a100-80g");
        var plan = Plan(tp: 1, pp: 2, dp: 4, zero: 2, gbs: 64, seq: 2048) with { Vpp = 2 };
        var options = new PricingOptions { DataParallel = new(ParamGather: ParameterGather.AfterStep, Zero2Reduce: Zero2Reduction.PerMicroBatch, Granularity: perBucket ? CollectiveGranularity.PerBucket : CollectiveGranularity.OnePerStage) };
        var costs = PipelineCosts.Compute(model, cluster, plan, options);
        var placement = new Comm.Placement(plan, cluster.GpusPerNode);
        Assert.False(placement.CrossesDomains(Comm.Axis.Dp));
        double Dp(Comm.Collective c, double bytes) => Comm.CollectiveModel.Seconds(c, bytes, placement, Comm.Axis.Dp, cluster);
        double Collect(Comm.Collective c, List<double> buckets) => perBucket ? buckets.Sum(b => Dp(c, b * 2)) : Dp(c, buckets.Sum() * 2);
        double block = model.LayerParams;
        double chunkExposedAlone = 0;
        for (int s = 0; s < 2; s++)
        {
            double exposed = 0;
            var all = new List<double>();
            for (int c = 0; c < 2; c++)
            {
                int layers = costs.Layout.LayersOf(s, c);
                var buckets = Enumerable.Repeat(block, layers).ToList();
                if (costs.Layout.HasHead(s, c))
                    buckets.Add(model.NormParams + model.LmHeadParams);
                if (costs.Layout.HasEmbedding(s, c))
                    buckets.Add(model.EmbeddingParams);
                all.AddRange(buckets);
                double rs = Collect(Comm.Collective.ReduceScatter, buckets);
                double lastParams = costs.Layout.HasEmbedding(s, c) ? model.EmbeddingParams : block;
                double last = perBucket ? Dp(Comm.Collective.ReduceScatter, lastParams * 2) : lastParams / buckets.Sum() * rs;
                exposed += cluster.Gpu.Overlapped(costs.Backward[s, c], rs - last) - costs.Backward[s, c] + last;
                Assert.True(rs < costs.Backward[s, c], $"reduce-scatter {rs} s beyond its chunk's backward {costs.Backward[s, c]} s");
                if (c > 0)
                    chunkExposedAlone += last;
            }
            double gather = Collect(Comm.Collective.AllGather, all);
            AssertRel(plan.MicroBatches * exposed + gather, costs.Parts[s].DpTail);
        }
        Assert.True(chunkExposedAlone > 0);
    }

    [Fact]
    public void The_last_gradients_of_the_backward_are_reduced_after_it_whatever_the_overlap()
    {
        // gpt2 on one DGX node with DP=8: the backward ends with the embedding, whose all-reduce cannot overlap it.
        var model = ModelLoader.Load("gpt2");
        var cluster = ClusterLoader.Load("dgx-a100-80g-1node");
        var plan = Plan(tp: 1, pp: 1, dp: 8, mbs: 4, gbs: 64, seq: 1024);
        var r = Pricer.Price(model, cluster, plan);
        double embedding = Comm.CollectiveModel.Seconds(Comm.Collective.AllReduce, model.EmbeddingParams * 2.0,
            new Comm.Placement(plan, cluster.GpusPerNode), Comm.Axis.Dp, cluster, Comm.CollectiveAlgorithm.Ring);
        Assert.True(r.Breakdown.DpComm >= embedding * 0.99, $"exposed {r.Breakdown.DpComm} s, embedding's all-reduce {embedding} s");
        // Without overlap the whole reduction is exposed, which is more.
        var serial = Pricer.Price(model, cluster, plan, new PricingOptions { DataParallel = new(GradReduce: GradientReduction.AfterBackward) });
        Assert.True(serial.Breakdown.DpComm > r.Breakdown.DpComm);
    }

    [Theory]
    [InlineData(0.5, 1.0, 0.2, 1.1)]   // a short collective behind compute: half its time shows
    [InlineData(0.5, 0.1, 1.0, 1.0)]   // a long one: the compute hides inside it
    [InlineData(1.5, 1.0, 0.2, 1.3)]   // a measured slowdown of 1 or more: nothing overlaps, the time is paid 1.5x
    [InlineData(1.5, 0.1, 1.0, 1.6)]
    [InlineData(1.0, 0.1, 1.0, 1.1)]
    public void Overlapped_pays_the_slowdown_times_the_communication_and_at_or_above_1_overlaps_nothing(double slowdown, double compute, double comm, double expected)
    {
        var gpu = ClusterLoader.LoadGpu("h100-sxm") with { OverlapSlowdown = slowdown };
        Assert.Equal(expected, gpu.Overlapped(compute, comm), 12);
        Assert.Equal(compute, gpu.Overlapped(compute, 0), 12);
    }
}
