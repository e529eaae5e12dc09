using Planner.CostModel.Comm;
using Planner.CostModel.Plans;
using Planner.CostModel.Specs;
using Planner.Executor.Distributed;
using Xunit;

namespace Planner.Executor.Tests;

public class ProcessGroupLayoutTests
{
    private static ParallelPlan Plan(int tp, int cp, int dp, int pp) =>
        new(tp, pp, dp, cp, 0, 1, dp * 4, 16, 1, Recompute.None, false, Precision.Fp32);

    public static TheoryData<int, int, int, int> Meshes => new()
    {
        { 1, 1, 1, 1 }, { 2, 1, 2, 1 }, { 2, 1, 1, 2 }, { 2, 2, 2, 2 }, { 4, 1, 2, 3 }, { 1, 2, 3, 2 },
    };

    [Theory]
    [MemberData(nameof(Meshes))]
    public void Each_axis_partitions_the_ranks_into_groups_of_its_degree(int tp, int cp, int dp, int pp)
    {
        var layout = new ProcessGroupLayout(Plan(tp, cp, dp, pp));
        foreach (var (axis, size) in new[] { (Axis.Tp, tp), (Axis.Cp, cp), (Axis.Dp, dp), (Axis.Pp, pp) })
        {
            var groups = layout.Groups(axis);
            Assert.Equal(layout.WorldSize / size, groups.Count);
            var all = groups.SelectMany(g => g).OrderBy(r => r).ToArray();
            Assert.Equal(Enumerable.Range(0, layout.WorldSize), all);
            foreach (var g in groups)
            {
                Assert.Equal(size, g.Length);
                foreach (int r in g)
                    Assert.Equal(g, layout.GroupOf(axis, r));
            }
        }
    }

    [Theory]
    [MemberData(nameof(Meshes))]
    public void Coordinates_round_trip_and_group_members_differ_only_on_their_axis(int tp, int cp, int dp, int pp)
    {
        var layout = new ProcessGroupLayout(Plan(tp, cp, dp, pp));
        for (int r = 0; r < layout.WorldSize; r++)
        {
            var c = layout.Coordinates(r);
            Assert.Equal(r, layout.Rank(c));
            foreach (int m in layout.GroupOf(Axis.Dp, r))
            {
                var o = layout.Coordinates(m);
                Assert.Equal((c.Tp, c.Cp, c.Pp), (o.Tp, o.Cp, o.Pp));
            }
            foreach (int m in layout.GroupOf(Axis.Tp, r))
            {
                var o = layout.Coordinates(m);
                Assert.Equal((c.Cp, c.Dp, c.Pp), (o.Cp, o.Dp, o.Pp));
            }
        }
    }

    [Fact]
    public void Tensor_parallel_ranks_are_consecutive_and_pipeline_is_outermost()
    {
        // tp=2, cp=1, dp=2, pp=2: ranks 0,1 share a TP group; DP peers are 2 apart; PP peers 4 apart.
        var layout = new ProcessGroupLayout(Plan(2, 1, 2, 2));
        Assert.Equal(new[] { 0, 1 }, layout.GroupOf(Axis.Tp, 1));
        Assert.Equal(new[] { 1, 3 }, layout.GroupOf(Axis.Dp, 1));
        Assert.Equal(new[] { 3, 7 }, layout.GroupOf(Axis.Pp, 3));
        Assert.Equal(((int?)null, (int?)7), layout.PipelineNeighbours(3));
        Assert.Equal(((int?)3, (int?)null), layout.PipelineNeighbours(7));
    }

    [Fact]
    public void A_rank_outside_the_world_is_rejected()
    {
        var layout = new ProcessGroupLayout(Plan(2, 1, 2, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => layout.Coordinates(4));
        Assert.Throws<ArgumentOutOfRangeException>(() => layout.GroupOf(Axis.Tp, -1));
    }
}
