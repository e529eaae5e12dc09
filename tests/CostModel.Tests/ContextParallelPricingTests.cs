using Xunit;
using Planner.CostModel.Comm;
using Planner.CostModel.Compute;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;

namespace Planner.CostModel.Tests;

/// <summary>The price of context parallelism's ring: what the executor's ring attention adds to Megatron-Core's price.</summary>
public class ContextParallelPricingTests
{
    [Theory]
    [InlineData(2)]
    [InlineData(4)]
    public void The_gradients_hop_home_exposed_adds_one_kv_transfer_to_each_blocks_backward(int cp)
    {
        var llama = ModelLoader.Load("llama3-8b");
        var cluster = ClusterLoader.Load("dgx-h100");
        var plan = new ParallelPlan(2, 1, 1, cp, 1, 1, 8, 16384, 1, Recompute.None, true, Precision.Bf16);
        var without = BlockCosts.Compute(llama, cluster, plan, PricingOptions.Default).Kinds[0];
        var with = BlockCosts.Compute(llama, cluster, plan, PricingOptions.Default with { CpGradients = CpGradientReturn.HomeHop }).Kinds[0];
        // One send/recv of the rank's K and V (seq / cp tokens of its kv heads, in bf16) over the CP group.
        var ops = new TransformerOps(llama, plan, flashAttention: true, fusedLoss: true);
        double kvBytes = ops.Tokens * ops.LocalKvHeads * (llama.QkHeadDim + llama.HeadDim) * 2;
        double hop = CollectiveModel.Seconds(Collective.SendRecv, kvBytes, Placement.For(plan, cluster), Axis.Cp, cluster, CollectiveAlgorithm.Ring);
        Assert.True(hop > 0);
        Assert.Equal(without.CpBackward + hop, with.CpBackward, 12);
        Assert.Equal(without.CpForward, with.CpForward);
        // The executor's stack states it; Megatron-Core's price is unchanged.
        Assert.Equal(CpGradientReturn.HomeHop, StackLoader.Options("planner").CpGradients);
        Assert.Equal(CpGradientReturn.HiddenInRing, PricingOptions.Default.CpGradients);
    }

    [Fact]
    public void Each_pass_of_the_ring_waits_once_for_its_peers_arrival_where_a_profile_measured_one()
    {
        var llama = ModelLoader.Load("llama3-8b");
        var cluster = ClusterLoader.Load("dgx-h100");
        var plan = new ParallelPlan(2, 1, 1, 2, 1, 1, 8, 16384, 1, Recompute.None, true, Precision.Bf16);
        // A specified cluster's links have no arrival time: the price is the transfers' alone.
        Assert.Equal(0, CollectiveModel.Arrival(Placement.For(plan, cluster), Axis.Cp, cluster));
        var shared = cluster with { IntraNode = cluster.IntraNode with { ArrivalUs = 700 }, InterNode = cluster.InterNode with { ArrivalUs = 700 } };
        var idle = BlockCosts.Compute(llama, cluster, plan, PricingOptions.Default).Kinds[0];
        var waiting = BlockCosts.Compute(llama, shared, plan, PricingOptions.Default).Kinds[0];
        Assert.Equal(idle.CpForward + 700e-6, waiting.CpForward, 12);
        Assert.Equal(idle.CpBackward + 700e-6, waiting.CpBackward, 12);
        // Without context parallelism nothing is added.
        var one = plan with { Cp = 1 };
        Assert.Equal(0, BlockCosts.Compute(llama, shared, one, PricingOptions.Default).Kinds[0].CpForward);
    }
}
