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
        var with = BlockCosts.Compute(llama, cluster, plan, PricingOptions.Default with { CpGradHomeHop = true }).Kinds[0];
        // One send/recv of the rank's K and V (seq / cp tokens of its kv heads, in bf16) over the CP group.
        var ops = new TransformerOps(llama, plan, flashAttention: true, fusedLoss: true);
        double kvBytes = ops.Tokens * ops.LocalKvHeads * (llama.QkHeadDim + llama.HeadDim) * 2;
        double hop = CollectiveModel.Seconds(Collective.SendRecv, kvBytes, Placement.For(plan, cluster), Axis.Cp, cluster, CollectiveAlgorithm.Ring);
        Assert.True(hop > 0);
        Assert.Equal(without.CpBackward + hop, with.CpBackward, 12);
        Assert.Equal(without.CpForward, with.CpForward);
        // The executor's stack states it; Megatron-Core's price is unchanged.
        Assert.True(StackLoader.Options("planner").CpGradHomeHop);
        Assert.False(PricingOptions.Default.CpGradHomeHop);
    }
}
