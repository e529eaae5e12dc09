using Xunit;
using Planner.CostModel.Pipeline;

namespace Planner.CostModel.Tests;

/// <summary>Shared (pp, vpp, microBatches) grid; invalid combinations are filtered out via Validate.</summary>
internal static class PipelineGrid
{
    public static readonly int[] Pps = [1, 2, 3, 4, 8];
    public static readonly int[] Vpps = [1, 2, 3, 4];
    public static readonly int[] MicroBatchCounts = [1, 2, 4, 8, 12, 16, 24];

    public static TheoryData<int, int, int> Valid()
    {
        var data = new TheoryData<int, int, int>();
        foreach (int pp in Pps)
            foreach (int vpp in Vpps)
                foreach (int m in MicroBatchCounts)
                    if (ScheduleGenerator.Validate(pp, vpp, m) is null)
                        data.Add(pp, vpp, m);
        return data;
    }
}

public class PipelineScheduleTests
{
    public static TheoryData<int, int, int> Grid => PipelineGrid.Valid();

    [Fact]
    public void Grid_IsNotTriviallyEmpty()
    {
        // Guards against Validate silently rejecting everything (which would make the theories vacuous).
        Assert.True(Grid.Count() > 60);
    }

    [Theory]
    [MemberData(nameof(Grid))]
    public void EveryPassAppearsOnce_AndBackwardFollowsForward(int pp, int vpp, int m)
    {
        var schedule = ScheduleGenerator.Generate(pp, vpp, m);
        Assert.Equal(pp, schedule.Stages.Count);

        for (int s = 0; s < pp; s++)
        {
            var actions = schedule.Stages[s];
            Assert.Equal(2 * m * vpp, actions.Count);
            var fwdAt = new int[m, vpp];
            var bwdAt = new int[m, vpp];
            for (int mb = 0; mb < m; mb++)
                for (int c = 0; c < vpp; c++)
                    fwdAt[mb, c] = bwdAt[mb, c] = -1;

            for (int i = 0; i < actions.Count; i++)
            {
                var a = actions[i];
                Assert.InRange(a.MicroBatch, 0, m - 1);
                Assert.InRange(a.Chunk, 0, vpp - 1);
                var at = a.Kind == PassKind.Forward ? fwdAt : bwdAt;
                Assert.True(at[a.MicroBatch, a.Chunk] < 0, $"stage {s}: {a} appears twice");
                at[a.MicroBatch, a.Chunk] = i;
            }

            for (int mb = 0; mb < m; mb++)
            {
                for (int c = 0; c < vpp; c++)
                {
                    Assert.True(fwdAt[mb, c] >= 0, $"stage {s}: missing F mb={mb} chunk={c}");
                    Assert.True(bwdAt[mb, c] > fwdAt[mb, c], $"stage {s}: B mb={mb} chunk={c} not after its F");
                }
            }
        }
    }

    [Theory]
    [MemberData(nameof(Grid))]
    public void MaxInFlight_WithinWarmupBound(int pp, int vpp, int m)
    {
        var schedule = ScheduleGenerator.Generate(pp, vpp, m);
        for (int s = 0; s < pp; s++)
        {
            int bound = vpp == 1
                ? Math.Min(pp - s, m)
                : Math.Min(ScheduleGenerator.WarmupForwards(pp, vpp, m, s) + 1, m * vpp);
            int inFlight = ScheduleGenerator.MaxInFlight(schedule, s);
            Assert.InRange(inFlight, 1, bound);
        }
    }

    [Theory]
    [MemberData(nameof(Grid))]
    public void Simulation_NeverDeadlocks(int pp, int vpp, int m)
    {
        var schedule = ScheduleGenerator.Generate(pp, vpp, m);
        var sim = PipelineSimulator.Simulate(schedule, (_, _, k) => k == PassKind.Forward ? 1.0 : 2.0, 0.1);
        Assert.True(sim.MakespanSeconds > 0);
    }

    [Fact]
    public void OneFOneB_StageOrder_MatchesMegatron()
    {
        // pp=4, m=6, stage 1: warm-up min(4-1-1, 6) = 2 forwards, 1F1B, then 2 cool-down backwards.
        var s1 = ScheduleGenerator.Generate(4, 1, 6).Stages[1];
        Assert.Equal("F0 F1 F2 B0 F3 B1 F4 B2 F5 B3 B4 B5", Render(s1, withChunk: false));

        // Last stage has no warm-up; first stage holds pp micro-batches (the classic 1F1B memory fact).
        var schedule = ScheduleGenerator.Generate(4, 1, 6);
        Assert.Equal("F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5", Render(schedule.Stages[3], withChunk: false));
        Assert.Equal(4, ScheduleGenerator.MaxInFlight(schedule, 0));
        Assert.Equal(1, ScheduleGenerator.MaxInFlight(schedule, 3));
    }

    [Fact]
    public void OneFOneB_FewerMicroBatchesThanStages_IsAllForwardThenAllBackward()
    {
        var s0 = ScheduleGenerator.Generate(8, 1, 2).Stages[0];
        Assert.Equal("F0 F1 B0 B1", Render(s0, withChunk: false));
    }

    [Fact]
    public void SingleStage_AlternatesForwardBackward()
    {
        var schedule = ScheduleGenerator.Generate(1, 1, 3);
        Assert.Equal("F0 B0 F1 B1 F2 B2", Render(schedule.Stages[0], withChunk: false));
        Assert.Equal(1, ScheduleGenerator.MaxInFlight(schedule, 0));
    }

    [Fact]
    public void Interleaved_StageOrder_MatchesMegatron()
    {
        // pp=2, vpp=2, m=4: forwards sweep groups of pp micro-batches chunk 0 then chunk 1; backwards
        // chunk 1 then chunk 0. Warm-up: stage 0 = (2-0-1)*2 + (2-1)*2 = 4, stage 1 = 0 + 2 = 2.
        var schedule = ScheduleGenerator.Generate(2, 2, 4);
        Assert.Equal(
            "F0.0 F1.0 F0.1 F1.1 F2.0 B0.1 F3.0 B1.1 F2.1 B0.0 F3.1 B1.0 B2.1 B3.1 B2.0 B3.0",
            Render(schedule.Stages[0], withChunk: true));
        Assert.Equal(
            "F0.0 F1.0 F0.1 B0.1 F1.1 B1.1 F2.0 B0.0 F3.0 B1.0 F2.1 B2.1 F3.1 B3.1 B2.0 B3.0",
            Render(schedule.Stages[1], withChunk: true));
        Assert.Equal(5, ScheduleGenerator.MaxInFlight(schedule, 0));
        Assert.Equal(3, ScheduleGenerator.MaxInFlight(schedule, 1));
    }

    [Theory]
    [InlineData(0, 1, 4, "pipeline-parallel size")]
    [InlineData(2, 0, 4, "virtual pipeline size")]
    [InlineData(2, 1, 0, "micro-batches")]
    [InlineData(1, 2, 4, "requires pipeline-parallel size > 1")]
    [InlineData(4, 2, 6, "divisible")]
    [InlineData(4, 2, 2, "divisible")]
    public void Validate_RejectsInvalid_AndGenerateThrowsSameReason(int pp, int vpp, int m, string fragment)
    {
        string? reason = ScheduleGenerator.Validate(pp, vpp, m);
        Assert.NotNull(reason);
        Assert.Contains(fragment, reason);
        var ex = Assert.Throws<ArgumentException>(() => ScheduleGenerator.Generate(pp, vpp, m));
        Assert.Equal(reason, ex.Message);
    }

    [Theory]
    [InlineData(4, 1, 6)] // non-interleaved needs no divisibility
    [InlineData(4, 2, 8)]
    [InlineData(1, 1, 1)]
    public void Validate_AcceptsValid(int pp, int vpp, int m)
    {
        Assert.Null(ScheduleGenerator.Validate(pp, vpp, m));
    }

    [Fact]
    public void MaxInFlight_RejectsBadStage()
    {
        var schedule = ScheduleGenerator.Generate(2, 1, 2);
        Assert.Throws<ArgumentOutOfRangeException>(() => ScheduleGenerator.MaxInFlight(schedule, 2));
    }

    private static string Render(IReadOnlyList<PipelineAction> actions, bool withChunk)
    {
        var parts = new string[actions.Count];
        for (int i = 0; i < actions.Count; i++)
        {
            var a = actions[i];
            string k = a.Kind == PassKind.Forward ? "F" : "B";
            parts[i] = withChunk ? $"{k}{a.MicroBatch}.{a.Chunk}" : $"{k}{a.MicroBatch}";
        }
        return string.Join(' ', parts);
    }
}
