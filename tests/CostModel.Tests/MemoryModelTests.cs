using Xunit;
using Planner.CostModel.Compute;
using Planner.CostModel.Memory;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;

namespace Planner.CostModel.Tests;

/// <summary>
/// Activation memory against Korthikanti et al. 2022 (Sec. 4, Table 2) and model-state bytes per parameter
/// against Rajbhandari et al. 2020 (ZeRO).
/// </summary>
public class MemoryModelTests
{
    private static readonly GpuSpec A100 = ClusterLoader.LoadGpu("a100-80g");

    // s = 2048, h = 4096, a = 32 heads: a GPT in the paper's form (ffn = 4h, kv = heads).
    private const int S = 2048, H = 4096, A = 32, L = 16, V = 51200;

    private static ModelSpec Gpt(int l = L, int h = H, int heads = A, int v = V, int maxSeq = S) =>
        new("gpt", l, h, heads, heads, 4 * h, v, maxSeq, MlpKind.Gelu, NormKind.LayerNorm, PositionKind.Learned,
            Biases: true, TiedEmbeddings: true);

    private static ParallelPlan Plan(int tp = 1, int mbs = 1, bool sp = false, Recompute r = Recompute.None,
        int dp = 1, int zero = 0, int pp = 1, Precision precision = Precision.Fp16, int seq = S) =>
        new(Tp: tp, Pp: pp, Dp: dp, Cp: 1, Zero: zero, Mbs: mbs, Gbs: mbs * dp * 8, Seq: seq, Vpp: 1, Recompute: r,
            SequenceParallel: sp, Precision: precision);

    private static MemoryModel Memory(ModelSpec m, ParallelPlan p) =>
        new(m, p, new TransformerOps(m, p, flashAttention: false), A100);

    private static void AssertRel(double expected, double actual, double tol = 1e-12) =>
        Assert.True(Math.Abs(actual - expected) <= tol * Math.Abs(expected),
            $"expected {expected:E10}, got {actual:E10}");

    public static TheoryData<int, int> BatchAndTp => new()
    {
        { 1, 1 }, { 1, 2 }, { 4, 1 }, { 4, 4 }, { 2, 8 }, { 1, 32 },
    };

    [Theory]
    [InlineData(1)]
    [InlineData(4)]
    public void NoRecompute_Tp1_Korthikanti(int b)
    {
        var m = Gpt();
        double got = Memory(m, Plan(mbs: b)).ActivationsPerLayer(Recompute.None);
        double s = S, h = H, a = A;
        // Korthikanti et al. 2022, Eq. 1: s·b·h·(34 + 5·a·s/h).
        AssertRel(s * b * h * (34 + 5 * a * s / h), got);
    }

    [Theory]
    [MemberData(nameof(BatchAndTp))]
    public void NoRecompute_TensorParallel_WithoutSp_Korthikanti(int b, int t)
    {
        var m = Gpt();
        double got = Memory(m, Plan(tp: t, mbs: b)).ActivationsPerLayer(Recompute.None);
        double s = S, h = H, a = A;
        // Eq. 2: s·b·h·(10 + 24/t + 5·a·s/(h·t)).
        AssertRel(s * b * h * (10 + 24.0 / t + 5 * a * s / (h * t)), got);
    }

    [Theory]
    [MemberData(nameof(BatchAndTp))]
    public void NoRecompute_TensorAndSequenceParallel_Korthikanti(int b, int t)
    {
        var m = Gpt();
        double got = Memory(m, Plan(tp: t, mbs: b, sp: true)).ActivationsPerLayer(Recompute.None);
        double s = S, h = H, a = A;
        // Eq. 4: s·b·h/t·(34 + 5·a·s/h).
        AssertRel(s * b * h / t * (34 + 5 * a * s / h), got);
    }

    [Theory]
    [MemberData(nameof(BatchAndTp))]
    public void SelectiveRecompute_WithSp_Korthikanti(int b, int t)
    {
        var m = Gpt();
        double got = Memory(m, Plan(tp: t, mbs: b, sp: true, r: Recompute.Selective)).ActivationsPerLayer(Recompute.Selective);
        // Eq. 6: 34·s·b·h/t.
        AssertRel(34.0 * S * b * H / t, got);
    }

    [Theory]
    [MemberData(nameof(BatchAndTp))]
    public void FullRecompute_NoSp_KeepsBlockInput(int b, int t)
    {
        var m = Gpt();
        double got = Memory(m, Plan(tp: t, mbs: b, r: Recompute.Full)).ActivationsPerLayer(Recompute.Full);
        // Sec. 4.3: 2·s·b·h bytes per layer (the fp16 block input, replicated across TP ranks).
        AssertRel(2.0 * S * b * H, got);
    }

    [Fact]
    public void OtherShape_StillMatchesKorthikanti()
    {
        // GPT-3-like block (h = 12288, a = 96) at tp = 8 with SP.
        var m = Gpt(l: 4, h: 12288, heads: 96);
        double got = Memory(m, Plan(tp: 8, mbs: 1, sp: true)).ActivationsPerLayer(Recompute.None);
        double s = S, h = 12288, a = 96;
        AssertRel(s * h / 8 * (34 + 5 * a * s / h), got);
    }

    [Fact]
    public void Fp32_DoublesTheTwoByteTerms()
    {
        // Without the one-byte dropout masks (2 of the 34 per s·b·h, and 1 of the 5 per a·s²·b) every term doubles:
        // 4 bytes per element: s·b·h·(2 + 2·32) + a·s²·b·(1 + 2·4) = s·b·h·66 + 9·a·s²·b.
        var m = Gpt();
        double got = Memory(m, Plan(precision: Precision.Fp32)).ActivationsPerLayer(Recompute.None);
        double s = S, h = H, a = A;
        AssertRel(s * h * 66 + 9 * a * s * s, got);
    }

    // ---- Model state ----

    [Fact]
    public void StageParams_SingleStageTp1_IsTotalParams()
    {
        var m = Gpt();
        var mem = Memory(m, Plan());
        Assert.Equal(m.TotalParams, mem.StageParams(L, first: true, last: true));
    }

    [Fact]
    public void MixedPrecision_Zero0_Is16BytesPerParam()
    {
        var m = Gpt();
        var p = Plan(dp: 8, zero: 0);
        var mem = Memory(m, p);
        double n = mem.StageParams(L, true, true);
        var st = mem.Stage(0, L, inFlight: 1, chunks: 1);
        Assert.Equal(2 * n, st.Weights);
        Assert.Equal(2 * n, st.Gradients);
        Assert.Equal(12 * n, st.Optimizer);
        Assert.Equal(16 * n, st.Weights + st.Gradients + st.Optimizer);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void MixedPrecision_ZeroStages_ShardOverDp(int zero)
    {
        const int dp = 8;
        var m = Gpt();
        var mem = Memory(m, Plan(dp: dp, zero: zero));
        double n = mem.StageParams(L, true, true);
        var st = mem.Stage(0, L, inFlight: 1, chunks: 1);
        // Rajbhandari et al. 2020, Fig. 1: (2 + 2 + K)·Ψ with K = 12; stage 1 shards K, stage 2 also the
        // gradients, stage 3 also the weights.
        Assert.Equal(12 * n / dp, st.Optimizer, 1e-6);
        Assert.Equal(zero >= 2 ? 2 * n / dp : 2 * n, st.Gradients, 1e-6);
        Assert.Equal(zero >= 3 ? 2 * n / dp : 2 * n, st.Weights, 1e-6);
        double perParam = zero switch { 1 => 4 + 12.0 / dp, 2 => 2 + 14.0 / dp, _ => 16.0 / dp };
        AssertRel(perParam * n, st.Weights + st.Gradients + st.Optimizer, 1e-12);
    }

    /// <summary>
    /// The executor's layout: fp32 parameters cast at each use. Its model states per parameter, by ZeRO stage and
    /// precision, and the casts each micro-batch in flight keeps under mixed precision.
    /// </summary>
    [Theory]
    [InlineData(0, Precision.Bf16)]
    [InlineData(1, Precision.Bf16)]
    [InlineData(2, Precision.Bf16)]
    [InlineData(3, Precision.Bf16)]
    [InlineData(0, Precision.Fp32)]
    [InlineData(1, Precision.Fp32)]
    [InlineData(3, Precision.Fp32)]
    public void Fp32_parameters_cast_at_use_are_priced_as_the_executor_holds_them(int zero, Precision precision)
    {
        const int dp = 8, inFlight = 3;
        var m = Gpt();
        var plan = Plan(dp: dp, zero: zero, precision: precision);
        var ops = new TransformerOps(m, plan, flashAttention: false);
        var plain = new MemoryModel(m, plan, ops, A100);
        var executor = new MemoryModel(m, plan, ops, A100, PricingOptions.Default with { Precision = new(Parameters: Dtype.Fp32) });
        double n = executor.StageParams(L, true, true);
        var st = executor.Stage(0, L, inFlight, chunks: 1);
        var reference = plain.Stage(0, L, inFlight, chunks: 1);
        // fp32 parameters and gradients (the gradients sharded from ZeRO-2, the parameters kept only as the master
        // shard between uses under ZeRO-3); Adam's moments, and from ZeRO-1 an fp32 master shard, sharded.
        Assert.Equal(zero >= 3 ? 0 : 4 * n, st.Weights, 1e-6);
        Assert.Equal(zero >= 2 ? 4 * n / dp : 4 * n, st.Gradients, 1e-6);
        Assert.Equal(zero >= 1 ? 12 * n / dp : 8 * n, st.Optimizer, 1e-6);
        // Mixed precision: each micro-batch in flight keeps a cast of the weights for its backward.
        bool mixed = precision != Precision.Fp32;
        AssertRel(reference.Activations + (mixed ? inFlight * n * 2 : 0), st.Activations);
        // ZeRO-3 gathers the whole chunk in fp32 at a time.
        if (zero >= 3)
            Assert.True(st.Working > reference.Working);
        // An fp32 plan under ZeRO-0 is held the same either way.
        if (!mixed && zero == 0)
            Assert.Equal(reference.Total, st.Total, 1e-6);
    }

    [Fact]
    public void Fp32_Is16BytesPerParam()
    {
        var m = Gpt();
        var mem = Memory(m, Plan(precision: Precision.Fp32));
        double n = mem.StageParams(L, true, true);
        var st = mem.Stage(0, L, 1, 1);
        Assert.Equal(4 * n, st.Weights);
        Assert.Equal(4 * n, st.Gradients);
        Assert.Equal(8 * n, st.Optimizer); // Adam's two fp32 moments, no separate master copy
        Assert.Equal(16 * n, st.Weights + st.Gradients + st.Optimizer);
    }

    [Fact]
    public void TensorParallel_DividesLayerParams()
    {
        var m = Gpt();
        var tp1 = Memory(m, Plan(tp: 1)).StageParams(L, false, false);
        var tp4 = Memory(m, Plan(tp: 4)).StageParams(L, false, false);
        Assert.Equal((double)L * m.LayerParams, tp1);
        AssertRel(tp1 / 4, tp4);
    }

    [Fact]
    public void MoreInFlightMicroBatches_MoreActivationMemory()
    {
        var m = Gpt();
        var mem = Memory(m, Plan(tp: 2, sp: true, pp: 4));
        double perLayer = mem.ActivationsPerLayer(Recompute.None);
        double previous = 0, previousTotal = 0;
        foreach (int inFlight in new[] { 1, 2, 4, 8 })
        {
            var st = mem.Stage(1, 4, inFlight, 1); // a middle stage: neither embedding nor head
            // Activations are the per-layer bytes for every layer and micro-batch in flight, nothing else.
            AssertRel(perLayer * 4 * inFlight, st.Activations);
            Assert.Equal(inFlight, st.InFlight);
            Assert.True(st.Activations > previous);
            Assert.True(st.Total > previousTotal);
            previous = st.Activations;
            previousTotal = st.Total;
        }
    }

    [Fact]
    public void Total_IsSumOfParts()
    {
        var m = Gpt();
        var st = Memory(m, Plan(tp: 2, dp: 4, zero: 1, pp: 2, r: Recompute.Selective)).Stage(1, 8, 2, 1);
        double allocated = st.Weights + st.Gradients + st.Optimizer + st.Activations + st.Working + st.Buffers;
        AssertRel(allocated + st.Overhead, st.Total);
        // Overhead: 5% fragmentation of what is allocated plus the GPU's reserved memory.
        AssertRel(MemoryModel.Fragmentation * allocated + A100.ReservedGib * Units.GiB, st.Overhead);
    }

    [Fact]
    public void A_profiled_memory_factor_replaces_the_default_fragmentation()
    {
        var m = Gpt();
        var plan = Plan(tp: 2, dp: 2, zero: 1, pp: 2);
        var gpu = A100 with { Profiled = new(MemoryFactor: 1.3) };
        var st = new MemoryModel(m, plan, new TransformerOps(m, plan, flashAttention: false), gpu).Stage(1, 8, 2, 1);
        double allocated = st.Weights + st.Gradients + st.Optimizer + st.Activations + st.Working + st.Buffers;
        AssertRel(0.3 * allocated + A100.ReservedGib * Units.GiB, st.Overhead, 1e-9);
        var plain = Memory(m, plan).Stage(1, 8, 2, 1);
        AssertRel(allocated, plain.Weights + plain.Gradients + plain.Optimizer + plain.Activations + plain.Working + plain.Buffers, 1e-12);
    }

    [Fact]
    public void Recompute_OrdersActivationMemory()
    {
        var m = Gpt();
        var mem = Memory(m, Plan(tp: 4, sp: true));
        double none = mem.ActivationsPerLayer(Recompute.None);
        double sel = mem.ActivationsPerLayer(Recompute.Selective);
        double full = mem.ActivationsPerLayer(Recompute.Full);
        Assert.True(none > sel);
        Assert.True(sel > full);
        // With SP the kept block input is sharded too: 2·s·b·h/t.
        AssertRel(2.0 * S * H / 4, full);
    }
}
