using Xunit;
using Planner.CostModel.Comm;
using Planner.CostModel.Plans;
using Planner.CostModel.Specs;

namespace Planner.CostModel.Tests;

/// <summary>Alpha–beta collective costs computed by hand, and rank placement on the device mesh.</summary>
public class CollectiveModelTests
{
    private const double GB = 1e9;
    private const double IntraAlpha = 3e-6, InterAlpha = 6e-6;

    /// <summary>8 GPUs per node, NVSwitch 300 GB/s and 3 µs, network 25 GB/s and 6 µs, both at efficiency 1.</summary>
    private static ClusterSpec Cluster(int nodes = 16, int perNode = 8) =>
        new("test", ClusterLoader.LoadGpu("a100-80g"), nodes, perNode,
            new LinkSpec(300, 3, 1), new LinkSpec(25, 6, 1));

    private static void AssertRel(double expected, double actual, double tol = 1e-12) =>
        Assert.True(Math.Abs(actual - expected) <= tol * Math.Abs(expected),
            $"expected {expected:E12}, got {actual:E12}");

    [Fact]
    public void RingAllReduce_OneNode_HandComputed()
    {
        double got = CollectiveModel.Seconds(Collective.AllReduce, 1 * GB, 8, 8, Cluster());
        // 2(n−1) steps of α, and 2·(n−1)/n·S through each GPU's 300 GB/s link.
        double expected = 2 * (7 * 3e-6 + 7.0 / 8 * 1e9 / 300e9);
        AssertRel(expected, got);
        Assert.Equal(0.005875, got, 6); // 2·(21 µs + 2.9167 ms) ≈ 5.875 ms
    }

    [Theory]
    [InlineData(Collective.ReduceScatter)]
    [InlineData(Collective.AllGather)]
    public void ReduceScatterAndAllGather_AreHalfOfAllReduce(Collective op)
    {
        double ar = CollectiveModel.Seconds(Collective.AllReduce, 1 * GB, 8, 8, Cluster());
        double half = CollectiveModel.Seconds(op, 1 * GB, 8, 8, Cluster());
        AssertRel(7 * 3e-6 + 7.0 / 8 * 1e9 / 300e9, half);
        AssertRel(ar / 2, half);
    }

    [Fact]
    public void RingAllReduce_AcrossNodes_OnePerNode()
    {
        double s = 2 * GB;
        double got = CollectiveModel.Seconds(Collective.AllReduce, s, 32, 1, Cluster(nodes: 32));
        double expected = 2 * (31 * InterAlpha + 31.0 / 32 * s / 25e9);
        AssertRel(expected, got);
    }

    [Fact]
    public void Ring_SeveralMembersPerDomain_UsesInterTierForEveryRank()
    {
        double s = 1 * GB;
        // 16 ranks, 8 per node: a flat ring at the network's per-GPU bandwidth and latency.
        double got = CollectiveModel.Seconds(Collective.AllReduce, s, 16, 8, Cluster(), CollectiveAlgorithm.Ring);
        AssertRel(2 * (15 * InterAlpha + 15.0 / 16 * s / 25e9), got);
        double ag = CollectiveModel.Seconds(Collective.AllGather, s, 16, 8, Cluster(), CollectiveAlgorithm.Ring);
        AssertRel(15 * InterAlpha + 15.0 / 16 * s / 25e9, ag);
    }

    [Fact]
    public void Hierarchical_IsIntraPhasePlusInterPhaseOnSlice()
    {
        double s = 1 * GB;
        // 32 ranks, 8 per node, 4 nodes: ring of 8 over NVSwitch on S, then ring of 4 over the network on S/8.
        double got = CollectiveModel.Seconds(Collective.AllReduce, s, 32, 8, Cluster(), CollectiveAlgorithm.Hierarchical);
        double intra = 2 * (7 * IntraAlpha + 7.0 / 8 * s / 300e9);
        double inter = 2 * (3 * InterAlpha + 3.0 / 4 * (s / 8) / 25e9);
        AssertRel(intra + inter, got);
        // Reduce-scatter: one pass of each phase.
        double rs = CollectiveModel.Seconds(Collective.ReduceScatter, s, 32, 8, Cluster(), CollectiveAlgorithm.Hierarchical);
        AssertRel((intra + inter) / 2, rs);
        // Faster than the flat ring on the network tier.
        Assert.True(got < CollectiveModel.Seconds(Collective.AllReduce, s, 32, 8, Cluster(), CollectiveAlgorithm.Ring));
    }

    [Fact]
    public void Hierarchical_OnePerNode_EqualsRing()
    {
        double s = 1 * GB;
        double h = CollectiveModel.Seconds(Collective.AllReduce, s, 16, 1, Cluster(), CollectiveAlgorithm.Hierarchical);
        double r = CollectiveModel.Seconds(Collective.AllReduce, s, 16, 1, Cluster(), CollectiveAlgorithm.Ring);
        AssertRel(2 * (15 * InterAlpha + 15.0 / 16 * s / 25e9), h);
        AssertRel(r, h);
    }

    [Fact]
    public void Hierarchical_WithinOneNode_EqualsRing()
    {
        double s = 1 * GB;
        double h = CollectiveModel.Seconds(Collective.AllReduce, s, 8, 8, Cluster(), CollectiveAlgorithm.Hierarchical);
        AssertRel(2 * (7 * IntraAlpha + 7.0 / 8 * s / 300e9), h);
    }

    [Fact]
    public void SendRecv_IsAlphaPlusBytesOverBandwidth_OnTheRightTier()
    {
        double s = 64e6;
        AssertRel(IntraAlpha + s / 300e9, CollectiveModel.Seconds(Collective.SendRecv, s, 2, 2, Cluster()));
        AssertRel(InterAlpha + s / 25e9, CollectiveModel.Seconds(Collective.SendRecv, s, 2, 1, Cluster()));
    }

    [Fact]
    public void AllToAll_OneNode_HandComputed()
    {
        double s = 1 * GB;
        // Each rank sends 7/8 of its bytes to the other 7 ranks over NVSwitch at once: one latency.
        AssertRel(IntraAlpha + 7.0 / 8 * s / 300e9, CollectiveModel.Seconds(Collective.AllToAll, s, 8, 8, Cluster()));
        // Across 2 nodes of 8: 8/16 of the bytes leave the node, 7/16 stay; the network share dominates.
        AssertRel(InterAlpha + 8.0 / 16 * s / 25e9, CollectiveModel.Seconds(Collective.AllToAll, s, 16, 8, Cluster()));
    }

    [Fact]
    public void AllToAll_RunsAtTheLinksAllToAllEfficiency_NotTheRingOne()
    {
        double s = 1 * GB;
        var c = Cluster() with { IntraNode = new LinkSpec(300, 3, 0.7, 0.4), InterNode = new LinkSpec(25, 6, 0.85, 0.5) };
        AssertRel(IntraAlpha + 7.0 / 8 * s / (0.4 * 300e9), CollectiveModel.Seconds(Collective.AllToAll, s, 8, 8, c));
        // Inside a node's share at 7/16 of the bytes over 120 GB/s is faster than the network's 8/16 over 12.5 GB/s.
        AssertRel(InterAlpha + 8.0 / 16 * s / (0.5 * 25e9), CollectiveModel.Seconds(Collective.AllToAll, s, 16, 8, c));
        // The ring efficiency leaves the all-to-all alone.
        Assert.Equal(CollectiveModel.Seconds(Collective.AllToAll, s, 8, 8, c),
            CollectiveModel.Seconds(Collective.AllToAll, s, 8, 8, c with { IntraNode = c.IntraNode with { Efficiency = 0.1 } }));
    }

    [Fact]
    public void Efficiency_ScalesBandwidthTerm()
    {
        var c = Cluster() with { IntraNode = new LinkSpec(300, 3, 0.5) };
        AssertRel(2 * (7 * IntraAlpha + 7.0 / 8 * 1e9 / 150e9), CollectiveModel.Seconds(Collective.AllReduce, 1e9, 8, 8, c));
    }

    [Theory]
    [InlineData(Collective.AllReduce)]
    [InlineData(Collective.ReduceScatter)]
    [InlineData(Collective.AllGather)]
    [InlineData(Collective.AllToAll)]
    [InlineData(Collective.SendRecv)]
    public void SizeOneOrNoBytes_CostsNothing(Collective op)
    {
        Assert.Equal(0, CollectiveModel.Seconds(op, 1e9, 1, 1, Cluster()));
        Assert.Equal(0, CollectiveModel.Seconds(op, 0, 8, 8, Cluster()));
        Assert.Equal(0, CollectiveModel.Seconds(op, 1e9, 1, 1, Cluster(), CollectiveAlgorithm.Hierarchical));
    }

    // ---- Placement ----

    private static ParallelPlan Plan(int tp, int pp, int dp, int cp = 1) =>
        new(Tp: tp, Pp: pp, Dp: dp, Cp: cp, Zero: 0, Mbs: 1, Gbs: dp * 4, Seq: 2048, Vpp: 1, Recompute: Recompute.None,
            SequenceParallel: false, Precision: Precision.Bf16);

    [Fact]
    public void Strides_TpInnermost_ThenCp_Dp_Pp()
    {
        var p = new Placement(Plan(tp: 4, pp: 3, dp: 5, cp: 2), 8);
        Assert.Equal(1, p.Stride(Axis.Tp));
        Assert.Equal(4, p.Stride(Axis.Cp));
        Assert.Equal(8, p.Stride(Axis.Dp));
        Assert.Equal(40, p.Stride(Axis.Pp));
        Assert.Equal(4, p.Size(Axis.Tp));
        Assert.Equal(2, p.Size(Axis.Cp));
        Assert.Equal(5, p.Size(Axis.Dp));
        Assert.Equal(3, p.Size(Axis.Pp));
    }

    [Fact]
    public void GroupOf_2x2x2Mesh()
    {
        // tp = dp = pp = 2: rank = (pp_index·2 + dp_index)·2 + tp_index.
        var p = new Placement(Plan(tp: 2, pp: 2, dp: 2), 8);
        // Rank 5 = pp 1, dp 0, tp 1.
        Assert.Equal(new[] { 4, 5 }, p.GroupOf(Axis.Tp, 5));
        Assert.Equal(new[] { 5, 7 }, p.GroupOf(Axis.Dp, 5));
        Assert.Equal(new[] { 1, 5 }, p.GroupOf(Axis.Pp, 5));
        Assert.Equal(new[] { 5 }, p.GroupOf(Axis.Cp, 5));
        // Rank 2 = pp 0, dp 1, tp 0.
        Assert.Equal(new[] { 2, 3 }, p.GroupOf(Axis.Tp, 2));
        Assert.Equal(new[] { 0, 2 }, p.GroupOf(Axis.Dp, 2));
        Assert.Equal(new[] { 2, 6 }, p.GroupOf(Axis.Pp, 2));
    }

    [Fact]
    public void GroupOf_EveryRankOfA4DMesh_MatchesCoordinates()
    {
        const int tp = 2, cp = 2, dp = 3, pp = 2;
        var p = new Placement(Plan(tp, pp, dp, cp), 8);
        int Rank(int t, int c, int d, int q) => ((q * dp + d) * cp + c) * tp + t;
        for (int q = 0; q < pp; q++)
            for (int d = 0; d < dp; d++)
                for (int c = 0; c < cp; c++)
                    for (int t = 0; t < tp; t++)
                    {
                        int r = Rank(t, c, d, q);
                        Assert.Equal(Enumerable.Range(0, tp).Select(i => Rank(i, c, d, q)), p.GroupOf(Axis.Tp, r));
                        Assert.Equal(Enumerable.Range(0, cp).Select(i => Rank(t, i, d, q)), p.GroupOf(Axis.Cp, r));
                        Assert.Equal(Enumerable.Range(0, dp).Select(i => Rank(t, c, i, q)), p.GroupOf(Axis.Dp, r));
                        Assert.Equal(Enumerable.Range(0, pp).Select(i => Rank(t, c, d, i)), p.GroupOf(Axis.Pp, r));
                    }
    }

    [Fact]
    public void CrossesDomains_Tp8_StaysInNode_DpCrosses()
    {
        var p = new Placement(Plan(tp: 8, pp: 2, dp: 4), 8);
        Assert.False(p.CrossesDomains(Axis.Tp));
        Assert.Equal(8, p.MembersPerDomain(Axis.Tp));
        Assert.True(p.CrossesDomains(Axis.Dp));
        Assert.Equal(1, p.MembersPerDomain(Axis.Dp));
        Assert.True(p.CrossesDomains(Axis.Pp));
    }

    [Fact]
    public void MembersPerDomain_Tp4_Dp4()
    {
        // DP neighbours are 4 ranks apart: 2 of them share each 8-GPU node, so the group spans 2 nodes.
        var p = new Placement(Plan(tp: 4, pp: 1, dp: 4), 8);
        Assert.Equal(2, p.MembersPerDomain(Axis.Dp));
        Assert.True(p.CrossesDomains(Axis.Dp));
        var small = new Placement(Plan(tp: 2, pp: 1, dp: 4), 8);
        Assert.Equal(4, small.MembersPerDomain(Axis.Dp));
        Assert.False(small.CrossesDomains(Axis.Dp));
    }

    [Fact]
    public void Seconds_ForPlacedAxis_UsesItsTier()
    {
        var c = Cluster();
        var p = new Placement(Plan(tp: 8, pp: 1, dp: 4), 8);
        double s = 1e9;
        // TP inside the node; DP one rank per node over the network.
        AssertRel(2 * (7 * IntraAlpha + 7.0 / 8 * s / 300e9), CollectiveModel.Seconds(Collective.AllReduce, s, p, Axis.Tp, c));
        AssertRel(2 * (3 * InterAlpha + 3.0 / 4 * s / 25e9), CollectiveModel.Seconds(Collective.AllReduce, s, p, Axis.Dp, c));
    }
}
