using Xunit;
using Planner.CostModel.Comm;
using Planner.CostModel.Compute;
using Planner.CostModel.Memory;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;

namespace Planner.CostModel.Tests;

/// <summary>Mixture-of-experts pricing: expert groups carved from a stage's ranks, experts sharded by EP and expert TP,
/// ZeRO sharding over the expert-data-parallel ranks, the all-to-all on the tier the EP group spans, the checks.</summary>
public class ExpertParallelTests
{
    private static readonly ModelSpec Qwen = ModelLoader.Load("qwen3-30b-a3b");

    private static ParallelPlan Plan(int tp = 1, int pp = 1, int dp = 8, int ep = 1, int etp = 1, int zero = 1, int mbs = 1, int gbs = 64,
        int seq = 4096, Precision precision = Precision.Bf16, int cp = 1) =>
        new(tp, pp, dp, cp, zero, mbs, gbs, seq, 1, Recompute.None, tp > 1, precision, Ep: ep, Etp: etp);

    /// <summary>Eight GB200s on one NVLink domain (two trays of four).</summary>
    private static ClusterSpec Gb200(int nodes = 2, int? domain = 72) =>
        ClusterLoader.Load("gb200-nvl72") with { Nodes = nodes, NvlinkDomainSize = domain };

    private static MemoryModel Memory(ModelSpec m, ParallelPlan p, GpuSpec gpu) =>
        new(m, p, new TransformerOps(m, p, flashAttention: true), gpu);

    [Fact]
    public void Expert_groups_are_carved_from_a_stages_ranks_as_megatron_does()
    {
        // 16 GPUs, tp 2, pp 2, dp 4: a stage's 8 ranks; ep 4, etp 1 gives expert-DP 2 (Megatron-Core's example).
        var p = new Placement(new ParallelPlan(2, 2, 4, 1, 1, 1, 8, 1024, 1, Recompute.None, true, Precision.Bf16, Ep: 4), 8);
        Assert.Equal(new[] { 0, 1, 2, 3 }, p.GroupOf(Axis.Ep, 1));
        Assert.Equal(new[] { 4, 5, 6, 7 }, p.GroupOf(Axis.Ep, 6));
        Assert.Equal(new[] { 8, 9, 10, 11 }, p.GroupOf(Axis.Ep, 8));
        Assert.Equal(new[] { 1, 5 }, p.GroupOf(Axis.Edp, 1));
        Assert.Equal(2, p.Size(Axis.Edp));
        // ep 4 with etp 2: EP groups stride 2, expert-TP groups consecutive, no expert-DP left.
        var q = new Placement(new ParallelPlan(2, 2, 4, 1, 1, 1, 8, 1024, 1, Recompute.None, true, Precision.Bf16, Ep: 4, Etp: 2), 8);
        Assert.Equal(new[] { 0, 2, 4, 6 }, q.GroupOf(Axis.Ep, 0));
        Assert.Equal(new[] { 1, 3, 5, 7 }, q.GroupOf(Axis.Ep, 3));
        Assert.Equal(new[] { 0, 1 }, q.GroupOf(Axis.Etp, 0));
        Assert.Equal(1, q.Size(Axis.Edp));
        // The dense weights' data-parallel group spans data and context parallelism: every rank with the same tp index.
        Assert.Equal(new[] { 1, 3, 5, 7 }, p.GroupOf(Axis.DpCp, 3));
    }

    [Fact]
    public void Experts_are_split_by_ep_and_etp_and_the_rest_by_tp()
    {
        var gpu = Gb200().Gpu;
        int moe = new TransformerOps(Qwen, Plan(), true).KindIndex(new LayerKind(true, 0));
        var (dense1, expert1) = Memory(Qwen, Plan(ep: 1), gpu).BlockParams(moe);
        var (dense8, expert8) = Memory(Qwen, Plan(ep: 8), gpu).BlockParams(moe);
        var (denseTp, expertEtp) = Memory(Qwen, Plan(tp: 2, dp: 4, ep: 2, etp: 2), gpu).BlockParams(moe);
        double experts = (double)Qwen.Experts * Qwen.MlpParamsPerExpert;
        Assert.Equal(experts, expert1);
        Assert.Equal(experts / 8, expert8, 6);
        Assert.Equal(experts / 4, expertEtp, 6);
        Assert.Equal(Qwen.LayerParams - experts, dense1, 6);
        Assert.Equal(dense1, dense8, 6);
        Assert.Equal(dense1 / 2, denseTp, 6);
    }

    [Fact]
    public void Zero_shards_experts_over_the_expert_data_parallel_ranks()
    {
        var gpu = Gb200().Gpu;
        // 8 ranks: ep 8 leaves no expert-DP (the expert optimizer state is not sharded), ep 2 leaves 4.
        var mem8 = Memory(Qwen, Plan(ep: 8, zero: 1), gpu);
        var mem2 = Memory(Qwen, Plan(ep: 2, zero: 1), gpu);
        var mix = BlockMix.Uniform(1, Qwen.Layers);
        var (d8, x8) = mem8.Params(mix, true, true);
        var (d2, x2) = mem2.Params(mix, true, true);
        Assert.Equal(d8, d2, 3);
        Assert.Equal(4 * x8, x2, 3); // ep 2 holds four times the experts of ep 8
        double state8 = mem8.Stage(0, mix, 1, 1).Optimizer, state2 = mem2.Stage(0, mix, 1, 1).Optimizer;
        // Optimizer state: dense / 8 + experts / edp, 12 bytes each in mixed precision.
        Assert.Equal(12 * (d8 / 8 + x8 / 1), state8, 3);
        Assert.Equal(12 * (d2 / 8 + x2 / 4), state2, 3);
        // ZeRO-3 shards the weights themselves likewise.
        var z3 = Memory(Qwen, Plan(ep: 2, zero: 3), gpu).Stage(0, mix, 1, 1);
        Assert.Equal(2 * (d2 / 8 + x2 / 4), z3.Weights, 3);
    }

    [Fact]
    public void The_all_to_all_runs_on_nvlink_inside_a_domain_and_on_the_network_across()
    {
        // ep 8 over two trays of four: one NVL72 domain keeps the exchange on NVLink; trays as their own domains send half
        // of it over the network.
        var plan = Plan(ep: 8, dp: 8);
        var inDomain = Pricer.Price(Qwen, Gb200(2, 72), plan);
        var acrossTrays = Pricer.Price(Qwen, Gb200(2, null), plan);
        Assert.False(Placement.For(plan, Gb200(2, 72)).CrossesDomains(Axis.Ep));
        Assert.True(Placement.For(plan, Gb200(2, null)).CrossesDomains(Axis.Ep));
        Assert.True(inDomain.Breakdown.EpComm > 0);
        Assert.True(acrossTrays.Breakdown.EpComm > 3 * inDomain.Breakdown.EpComm,
            $"ep_comm {acrossTrays.Breakdown.EpComm} across trays against {inDomain.Breakdown.EpComm} in one domain");
        // The exchange is the all-to-all of the collective model for the EP group, four per MoE block and micro-batch
        // (dispatch and combine, forward and backward), and nothing else.
        var c = Gb200(2, 72);
        var ops = new TransformerOps(Qwen, plan, true);
        double copies = BlockCosts.DispatchedCopies(Qwen.Experts, Qwen.ExpertsPerToken, 8, deduplicated: true);
        double perA2a = CollectiveModel.Seconds(Collective.AllToAll, ops.RoutedTokens * copies * Qwen.Hidden * 2, Placement.For(plan, c), Axis.Ep, c);
        Assert.Equal(4 * perA2a * Qwen.Moe!.MoeLayers * plan.MicroBatches, inDomain.Breakdown.EpComm, 9);
        Assert.Equal(0, Pricer.Price(Qwen, c, Plan(ep: 1)).Breakdown.EpComm);
    }

    [Fact]
    public void Zero3_gathers_dense_weights_over_data_parallelism_and_experts_over_expert_data_parallelism()
    {
        // Without prefetch every gather waits: ep 8 on 8 ranks leaves each expert on one rank (nothing to gather for
        // the experts), ep 2 gathers the experts over 4 ranks; the dense weights are gathered over all 8 either way.
        var c = Gb200(2, 72);
        var options = PricingOptions.Default with { DataParallel = new(Zero3: Zero3Schedule.Serial) };
        var ep8 = PipelineCosts.Compute(Qwen, c, Plan(ep: 8, zero: 3), options);
        var ep2 = PipelineCosts.Compute(Qwen, c, Plan(ep: 2, zero: 3), options);
        var zero1 = PipelineCosts.Compute(Qwen, c, Plan(ep: 8, zero: 1), options);
        Assert.Equal(0, zero1.Parts[0].Zero3);
        Assert.True(ep8.Parts[0].Zero3 > 0, "the dense weights are gathered and reduce-scattered");
        Assert.True(ep2.Parts[0].Zero3 > 2 * ep8.Parts[0].Zero3, $"ep 2 {ep2.Parts[0].Zero3} s against ep 8 {ep8.Parts[0].Zero3} s");
        // With prefetch (Megatron-FSDP, torchtitan) they hide behind the compute.
        var hidden = PipelineCosts.Compute(Qwen, c, Plan(ep: 2, zero: 3), PricingOptions.Default);
        Assert.True(hidden.Parts[0].Zero3 < ep2.Parts[0].Zero3);
    }

    [Fact]
    public void Deduplicated_dispatch_sends_one_copy_per_rank_hit()
    {
        // 128 experts over 8 ranks (16 each), top 8: a rank is missed with probability C(112, 8) / C(128, 8).
        double missed = 1;
        for (int i = 0; i < 8; i++)
            missed *= (112.0 - i) / (128 - i);
        Assert.Equal(8 * (1 - missed), BlockCosts.DispatchedCopies(128, 8, 8, deduplicated: true), 12);
        Assert.Equal(8, BlockCosts.DispatchedCopies(128, 8, 8, deduplicated: false));
        // One expert per rank: every routed expert is on its own rank, nothing to deduplicate.
        Assert.Equal(8, BlockCosts.DispatchedCopies(128, 8, 128, deduplicated: true), 9);
        Assert.Equal(8, BlockCosts.DispatchedCopies(128, 8, 1, deduplicated: true));
    }

    [Fact]
    public void Expert_gemms_are_priced_at_the_per_expert_token_count()
    {
        // ep 8: each rank runs 16 experts of 8·4096·8/128 = 2048 tokens each (balanced), the same work as ep 1's 128 experts
        // of 256 tokens, in bigger GEMMs.
        var ep8 = new TransformerOps(Qwen, Plan(ep: 8), true);
        var ep1 = new TransformerOps(Qwen, Plan(ep: 1), true);
        var fc1 = ep8.Blocks[0].Single(o => o.Name == "expert_fc1");
        Assert.Equal(16, fc1.Gemm!.Value.Batch);
        Assert.Equal(4096.0 * 8 * 8 / 128, fc1.Gemm.Value.M);
        var fc1One = ep1.Blocks[0].Single(o => o.Name == "expert_fc1");
        Assert.Equal(fc1.Flops, fc1One.Flops, 3);
        Assert.True(fc1.Grouped);
        // The busiest expert's load scales the busiest rank's tokens.
        var skewed = new TransformerOps(Qwen, Plan(ep: 8) with { MoeImbalance = 2 }, true);
        Assert.True(skewed.ExpertTokens > ep8.ExpertTokens);
    }

    [Theory]
    [InlineData(3, 1, "ep", "3", "128 experts")]
    [InlineData(8, 5, "etp", "5", "ffn size 768")]
    [InlineData(16, 1, "ep·etp", "16", "tp·cp·dp")]
    public void Plans_that_cannot_split_the_experts_are_refused(int ep, int etp, string field, string value, string named)
    {
        var problem = PlanCheck.Problem(Qwen, Gb200(), Plan(ep: ep, etp: etp));
        Assert.NotNull(problem);
        Assert.Equal((field, value), (problem.Field, problem.Value));
        Assert.Contains(named, problem.Reason);
    }

    [Fact]
    public void Expert_flags_on_a_dense_model_and_split_experts_without_sequence_parallelism_are_refused()
    {
        var dense = ModelLoader.Load("llama3-8b");
        var onDense = PlanCheck.Problem(dense, Gb200(), Plan(ep: 2))!;
        Assert.Equal(("ep", "2"), (onDense.Field, onDense.Value));
        Assert.Contains("dense", onDense.Reason);
        var noSp = Plan(tp: 2, dp: 4, ep: 2, etp: 2) with { SequenceParallel = false };
        var withoutSp = PlanCheck.Problem(Qwen, Gb200(), noSp)!;
        Assert.Equal(("sequence_parallel", "false"), (withoutSp.Field, withoutSp.Value));
    }

    [Fact]
    public void Dense_first_blocks_and_mtp_are_priced_on_their_own_stages()
    {
        // DeepSeek-V3: blocks 0-2 dense, the rest MoE; the MTP module on the last stage.
        var m = ModelLoader.Load("deepseek-v3");
        var plan = new ParallelPlan(1, 8, 32, 1, 1, 1, 256, 4096, 1, Recompute.None, false, Precision.Bf16, Ep: 32);
        var layout = StageLayout.Of(m, plan);
        var ops = new TransformerOps(m, plan, true);
        int dense = ops.KindIndex(new LayerKind(false, 0)), moe = ops.KindIndex(new LayerKind(true, 0));
        Assert.Equal(3, layout.MixOnStage(0).Counts[dense]);
        Assert.Equal(5, layout.MixOnStage(0).Counts[moe]);
        Assert.Equal(0, layout.MixOnStage(1).Counts[dense]);
        var cluster = ClusterLoader.Load("gb200-nvl72") with { Nodes = 64 };
        var costs = PipelineCosts.Compute(m, cluster, plan, PricingOptions.Default);
        var plain = PipelineCosts.Compute(ModelLoader.Load("deepseek-v3-nomtp"), cluster, plan, PricingOptions.Default);
        // The MTP module adds a block, its projection and the head again to the last stage only.
        Assert.Equal(plain.Forward[3, 0], costs.Forward[3, 0], 9);
        Assert.True(costs.Forward[7, 0] > plain.Forward[7, 0] * 1.05);
        Assert.True(costs.StageMemory(7, plan).Total > plain.StageMemory(7, plan).Total);
    }

    [Fact]
    public void A_jobs_trays_spread_evenly_over_the_fewest_racks()
    {
        // 64 trays of 4 GB200 on NVL72 racks (18 trays each) take four racks, 16 trays (64 GPUs) of each: an EP group of
        // 64 consecutive ranks stays inside a rack, a data-parallel group of 128 spans two.
        var plan = new ParallelPlan(1, 2, 128, 1, 1, 1, 4096, 4096, 1, Recompute.None, false, Precision.Bf16, Ep: 64);
        var racks = new Placement(plan, 72, 4);
        Assert.Equal(64, racks.MembersPerDomain(Axis.Ep));
        Assert.False(racks.CrossesDomains(Axis.Ep));
        Assert.True(racks.CrossesDomains(Axis.DpCp));
        Assert.Equal(64, racks.MembersPerDomain(Axis.DpCp));
        Assert.True(racks.CrossesDomains(Axis.Pp));
        Assert.Equal(racks, Placement.For(plan, ClusterLoader.Load("gb200-nvl72") with { Nodes = 64 }));
        // 20 trays: two racks of 10 (40 GPUs each). Groups of 8 tile a rack's share; groups of 16 do not (ranks 32-47 straddle).
        var ep8 = new ParallelPlan(1, 1, 80, 1, 1, 1, 80, 4096, 1, Recompute.None, false, Precision.Bf16, Ep: 8);
        Assert.False(new Placement(ep8, 72, 4).CrossesDomains(Axis.Ep));
        Assert.True(new Placement(ep8 with { Ep = 16 }, 72, 4).CrossesDomains(Axis.Ep));
        // A job inside one rack keeps every group on NVLink.
        var small = new ParallelPlan(1, 1, 32, 1, 1, 1, 32, 4096, 1, Recompute.None, false, Precision.Bf16, Ep: 32);
        Assert.False(new Placement(small, 72, 4).CrossesDomains(Axis.DpCp));
        Assert.False(new Placement(small, 72, 4).CrossesDomains(Axis.Ep));
    }

    [Fact]
    public void The_search_memory_filter_is_every_stages_peak_for_blocks_of_several_kinds()
    {
        // DeepSeek-V3's dense first blocks and MTP module, GPT-OSS's windowed blocks: a middle stage may hold the most, and
        // the filter (the larger of EndStageMemory's pair) must be the priced peak exactly.
        var cluster = ClusterLoader.Load("gb200-nvl72") with { Nodes = 64 };
        int compared = 0;
        foreach (var (name, ep) in new[] { ("deepseek-v3", 32), ("gpt-oss-120b", 16) })
        {
            var m = ModelLoader.Load(name);
            foreach (int pp in new[] { 2, 4, 8 })
                foreach (var rc in new[] { Recompute.None, Recompute.Full })
                {
                    var plan = new ParallelPlan(1, pp, 256 / pp, 1, 1, 1, 1024, 4096, 1, rc, false, Precision.Bf16, Ep: ep);
                    if (PlanCheck.Problem(m, cluster, plan) is not null)
                        continue;
                    var options = PricingOptions.Default;
                    var block = BlockCosts.Compute(m, cluster, plan, options);
                    var (first, last, _, _) = PipelineCosts.EndStageMemory(m, cluster, plan, block, plan, options);
                    double priced = Pricer.Price(m, cluster, plan).PeakMemoryGib * Units.GiB;
                    Assert.Equal(priced, Math.Max(first.Total, last.Total), priced * 1e-12);
                    compared++;
                }
        }
        Assert.True(compared >= 8, $"{compared} plans compared");
    }

    [Fact]
    public void Host_memory_is_checked_on_every_stage_when_the_blocks_differ()
    {
        // DeepSeek-V3 (no MTP) on 8 stages: the first stage holds three dense blocks, so a stage of MoE blocks only offloads
        // more. Host memory between the end stages' need and the largest stage's must be refused.
        var m = ModelLoader.Load("deepseek-v3-nomtp");
        var cluster = ClusterLoader.Load("gb200-nvl72") with { Nodes = 64 };
        var plan = new ParallelPlan(1, 8, 32, 1, 1, 1, 1024, 4096, 1, Recompute.Full, false, Precision.Bf16, Ep: 32, OptimizerOffload: 0.5);
        var costs = PipelineCosts.Compute(m, cluster, plan, PricingOptions.Default);
        var host = Enumerable.Range(0, 8).Select(s => costs.StageMemory(s, plan).Host).ToArray();
        double ends = Math.Max(host[0], host[7]), most = host.Max();
        Assert.True(most > ends, $"a middle stage should offload the most: {string.Join(", ", host)}");
        var hostSpec = cluster.Host!;
        ClusterSpec WithHostBytesPerGpu(double bytes) =>
            cluster with { Host = hostSpec with { MemoryGib = bytes * cluster.GpusPerNode / HostSpec.UsableFraction / Units.GiB } };
        Assert.False(Pricer.Price(m, WithHostBytesPerGpu((ends + most) / 2), plan).Fits);
        Assert.True(Pricer.Price(m, WithHostBytesPerGpu(most * 1.001), plan).Fits);
    }

    [Fact]
    public void The_busiest_ranks_load_follows_the_imbalance_and_the_capacity()
    {
        // Qwen3-30B-A3B's 128 experts over ep 8: 16 per rank, the busiest expert at twice the mean.
        var skew = Plan(ep: 8) with { MoeImbalance = 2 };
        Assert.Equal(1, Plan(ep: 8).ExpertLoad(128));
        Assert.Equal((2 + 15) / 16.0, skew.ExpertLoad(128), 12);
        Assert.Equal((1.25 + 15) / 16.0, (skew with { MoeCapacity = 1.25 }).ExpertLoad(128), 12);
        // A capacity below the mean drops tokens of every expert.
        Assert.Equal(0.8, (skew with { MoeCapacity = 0.8 }).ExpertLoad(128), 12);
        // One expert per rank: the busiest expert's load; no EP: the mean, capped likewise.
        Assert.Equal(2, (skew with { Dp = 128, Ep = 128 }).ExpertLoad(128), 12);
        Assert.Equal(1, (skew with { Ep = 1 }).ExpertLoad(128));
        Assert.Equal(0.8, (skew with { Ep = 1, MoeCapacity = 0.8 }).ExpertLoad(128), 12);
    }

    [Fact]
    public void Zero_shards_dense_weights_over_data_and_context_and_experts_over_expert_data_ranks()
    {
        // tp 2, cp 2, dp 4: 16 ranks a stage, dense state over dp·cp = 8; ep 4 leaves expert-DP 4.
        var p = Plan(tp: 2, dp: 4, cp: 2, ep: 4, zero: 1);
        Assert.Equal(4, p.ExpertDp);
        Assert.Equal(100.0 / 8 + 40.0 / 4, p.Sharded(100, 40, 1), 12);
        Assert.Equal(140, p.Sharded(100, 40, 2), 12); // ZeRO-1 leaves gradients and weights whole
        Assert.Equal(100.0 / 8 + 40.0 / 4, (p with { Zero = 3 }).Sharded(100, 40, 3), 12);
    }

    [Fact]
    public void A_capacity_factor_sends_one_copy_per_routed_expert()
    {
        // Trays as their own domains: the exchange crosses the network. A capacity no expert reaches keeps the load, but
        // the all-to-all dispatcher it needs sends a copy per routed expert, not one per rank hit.
        var c = Gb200(2, null);
        var dropless = Plan(ep: 8);
        var capped = dropless with { MoeCapacity = 8 };
        Assert.Equal(dropless.ExpertLoad(128), capped.ExpertLoad(128));
        double a = Pricer.Price(Qwen, c, dropless).Breakdown.EpComm, b = Pricer.Price(Qwen, c, capped).Breakdown.EpComm;
        double ratio = BlockCosts.DispatchedCopies(128, 8, 8, deduplicated: false) / BlockCosts.DispatchedCopies(128, 8, 8, deduplicated: true);
        Assert.True(ratio > 1.1, $"copies ratio {ratio}");
        Assert.InRange(b / a, 0.95 * ratio, 1.0001 * ratio);
    }

    [Fact]
    public void A_rack_boundary_inside_a_group_leaves_its_far_members_on_the_network()
    {
        // 40 trays on NVL72 racks: three racks of 14, 13 and 13 trays (56, 52, 52 GPUs). EP 32 groups of consecutive ranks:
        // ranks 32-63 straddle the first boundary (24 in the first rack, 8 in the second), ranks 96-127 the second
        // (12 and 20). The worst rank shares its rack with 8 of its group.
        var plan = new ParallelPlan(1, 1, 160, 1, 1, 1, 160, 4096, 1, Recompute.None, false, Precision.Bf16, Ep: 32);
        var p = new Placement(plan, 72, 4);
        Assert.Equal(8, p.MembersPerDomain(Axis.Ep));
        Assert.True(p.CrossesDomains(Axis.Ep));
        // Expert TP 2 and EP 16: EP groups two ranks apart in blocks of 32; the first boundary (rank 56) leaves 12 members
        // of a group before it and 4 after, the second (rank 108) 6 and 10.
        var strided = new Placement(plan with { Tp = 2, Dp = 80, Ep = 16, Etp = 2, SequenceParallel = true }, 72, 4);
        Assert.Equal(2, strided.Stride(Axis.Ep));
        Assert.Equal(4, strided.MembersPerDomain(Axis.Ep));
    }

    [Fact]
    public void The_all_to_all_dispatcher_exchanges_its_routing_counts_once_per_forward()
    {
        // The executor's stack dispatches one copy per routed expert and sends the counts per expert first; the flex
        // dispatcher (megatron-core's) exchanges no counts.
        var c = Gb200(2, 72);
        var plan = Plan(ep: 8, dp: 8);
        var executor = StackLoader.Options("planner");
        var alltoall = Pricer.Price(Qwen, c, plan, executor with { Moe = executor.Moe with { Dispatcher = ExpertDispatcher.AllToAll } });
        var ops = new TransformerOps(Qwen, plan, executor.Kernels.FusedAttention);
        var placement = Placement.For(plan, c);
        double copies = BlockCosts.DispatchedCopies(Qwen.Experts, Qwen.ExpertsPerToken, 8, deduplicated: false);
        double perA2a = CollectiveModel.Seconds(Collective.AllToAll, ops.RoutedTokens * copies * Qwen.Hidden * 2, placement, Axis.Ep, c);
        double counts = CollectiveModel.Seconds(Collective.AllToAll, Qwen.Experts * 8.0, placement, Axis.Ep, c);
        Assert.True(counts > 0);
        Assert.Equal((4 * perA2a + counts) * Qwen.Moe!.MoeLayers * plan.MicroBatches, alltoall.Breakdown.EpComm, 9);
    }

    [Fact]
    public void Experts_held_whole_take_each_tp_ranks_part_of_replicated_tokens_without_sequence_parallelism()
    {
        // Megatron-Core requires sequence parallelism for MoE at tp > 1; the executor also runs experts held whole (etp 1)
        // without it: each TP rank routes its part of the tokens and the outputs are all-gathered. Experts split over
        // etp > 1 still need it.
        var c = Gb200(2, 72);
        var sp = Plan(tp: 2, dp: 4);
        var noSp = sp with { SequenceParallel = false };
        Assert.Null(PlanCheck.Problem(Qwen, c, noSp));
        Assert.Equal("sequence_parallel", PlanCheck.Problems(Qwen, c, noSp with { Etp = 2 }).Single().Field);
        // Each TP rank routes an equal part of every sequence.
        Assert.Contains(PlanCheck.Problems(Qwen, c, noSp with { Seq = 4097 }), p => p.Field == "seq" && p.Reason.Contains("tp = 2"));
        // The same routed tokens and expert GEMMs either way; the router scores every replicated token without SP.
        var opsSp = new TransformerOps(Qwen, sp, true);
        var opsNoSp = new TransformerOps(Qwen, noSp, true);
        Assert.Equal(opsSp.RoutedTokens, opsNoSp.RoutedTokens);
        Assert.Equal(opsSp.Tokens / 2, opsNoSp.RoutedTokens);
        int moe = opsSp.KindIndex(new LayerKind(true, 0));
        double Flops(TransformerOps o, string name) => o.Blocks[moe].Where(op => op.Name == name).Sum(op => op.Flops);
        Assert.Equal(Flops(opsSp, "expert_fc1"), Flops(opsNoSp, "expert_fc1"));
        Assert.Equal(2 * Flops(opsSp, "router"), Flops(opsNoSp, "router"));
        // The MoE block's outputs and input gradients gathered over TP: one all-gather of the hidden states each pass.
        var blocks = BlockCosts.Compute(Qwen, c, noSp, PricingOptions.Default);
        double hidden = opsNoSp.Tokens * Qwen.Hidden * 2;
        double gather = CollectiveModel.Seconds(Collective.AllGather, hidden, Placement.For(noSp, c), Axis.Tp, c);
        double attention = CollectiveModel.Seconds(Collective.AllReduce, hidden, Placement.For(noSp, c), Axis.Tp, c);
        Assert.Equal(attention + gather, blocks.Kinds[moe].TpForward, 12);
        Assert.Equal(attention + gather, blocks.Kinds[moe].TpBackward, 12);
    }
}
