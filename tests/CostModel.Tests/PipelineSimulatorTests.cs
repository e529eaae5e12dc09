using Xunit;
using Planner.CostModel.Pipeline;

namespace Planner.CostModel.Tests;

public class PipelineSimulatorTests
{
    public static TheoryData<int, int, int> Grid => PipelineGrid.Valid();

    public static TheoryData<double, double> ForwardBackwardTimes => new()
    {
        { 1.0, 2.0 },
        { 1.0, 1.0 },
        { 0.3, 0.7 },
        { 2.0, 1.0 },
    };

    [Theory]
    [MemberData(nameof(ForwardBackwardTimes))]
    public void OneFOneB_UniformTimes_MatchesClosedForm(double f, double b)
    {
        foreach (int pp in PipelineGrid.Pps)
        {
            foreach (int m in PipelineGrid.MicroBatchCounts)
            {
                var sim = PipelineSimulator.Simulate(ScheduleGenerator.Generate(pp, 1, m), Uniform(f, b, 1), 0);
                Assert.Equal((m + pp - 1) * (f + b), sim.MakespanSeconds, 1e-9);
                Assert.Equal((pp - 1) * (f + b), sim.BubbleSeconds, 1e-9);
            }
        }
    }

    [Theory]
    [MemberData(nameof(ForwardBackwardTimes))]
    public void Interleaved_UniformTimes_MatchesNarayananClosedForm(double f, double b)
    {
        // Narayanan et al. 2021: with per-chunk times f/v and b/v the bubble is (p-1)(f+b)/v, i.e. a bubble
        // fraction of (p-1)/(v·m). In this zero-p2p model the Megatron ordering attains it exactly (also for
        // f != b and for m == p), so we assert equality rather than a bound with slack.
        foreach (int pp in PipelineGrid.Pps)
        {
            foreach (int vpp in PipelineGrid.Vpps)
            {
                foreach (int m in PipelineGrid.MicroBatchCounts)
                {
                    if (m % pp != 0 || ScheduleGenerator.Validate(pp, vpp, m) is not null)
                        continue;
                    var sim = PipelineSimulator.Simulate(ScheduleGenerator.Generate(pp, vpp, m), Uniform(f, b, vpp), 0);
                    double expected = (m + (pp - 1.0) / vpp) * (f + b);
                    Assert.Equal(expected, sim.MakespanSeconds, 1e-9);
                    Assert.Equal((pp - 1.0) / vpp * (f + b), sim.BubbleSeconds, 1e-9);
                }
            }
        }
    }

    [Fact]
    public void Interleaved_LargestSearchSize_MatchesClosedForm()
    {
        // The planner's upper end (8.4M actions); also a smoke test that the simulator copes with it.
        const int pp = 128, vpp = 8, m = 4096;
        var sim = PipelineSimulator.Simulate(ScheduleGenerator.Generate(pp, vpp, m), Uniform(1.0, 2.0, vpp), 0);
        double expected = (m + (pp - 1.0) / vpp) * 3.0;
        Assert.Equal(expected, sim.MakespanSeconds, expected * 1e-12);
    }

    [Theory]
    [MemberData(nameof(Grid))]
    public void Makespan_GrowsMonotonicallyWithP2p(int pp, int vpp, int m)
    {
        var schedule = ScheduleGenerator.Generate(pp, vpp, m);
        var dur = Uniform(1.0, 2.0, vpp);
        double previous = PipelineSimulator.Simulate(schedule, dur, 0).MakespanSeconds;
        double closed = (m + (pp - 1.0) / vpp) * 3.0;
        foreach (double p2p in new[] { 1e-3, 0.01, 0.1, 0.5, 2.0 })
        {
            double makespan = PipelineSimulator.Simulate(schedule, dur, p2p).MakespanSeconds;
            Assert.True(makespan >= previous - 1e-12, $"p2p={p2p}: {makespan} < {previous}");
            if (pp > 1)
                // Micro-batch 0 must cross pp-1 links down and pp-1 links back up at least once.
                Assert.True(makespan >= closed + 2 * (pp - 1) * p2p - 1e-9, $"p2p={p2p}: {makespan} below lower bound");
            else
                // With one stage there are no links, so p2p must not matter.
                Assert.Equal(previous, makespan);
            previous = makespan;
        }
    }

    [Theory]
    [MemberData(nameof(Grid))]
    public void UnequalStageTimes_MakespanAtLeastSlowestStage(int pp, int vpp, int m)
    {
        // Deterministic spread of per-stage (and per-chunk) times, the slowest stage up to ~3x the fastest.
        double F(int s, int c) => 0.5 + ((s * 7 + c * 3) % 5) * 0.25;
        double B(int s, int c) => 2.0 * F(s, c) + (s % 2) * 0.1;
        var sim = PipelineSimulator.Simulate(
            ScheduleGenerator.Generate(pp, vpp, m),
            (s, c, k) => k == PassKind.Forward ? F(s, c) : B(s, c),
            0.05);

        double slowest = 0;
        for (int s = 0; s < pp; s++)
        {
            double perMicroBatch = 0;
            for (int c = 0; c < vpp; c++)
                perMicroBatch += F(s, c) + B(s, c);
            Assert.Equal(m * perMicroBatch, sim.StageBusySeconds[s], 1e-9);
            Assert.Equal(sim.MakespanSeconds - sim.StageBusySeconds[s], sim.StageIdleSeconds[s], 1e-9);
            Assert.True(sim.StageIdleSeconds[s] >= -1e-9);
            slowest = Math.Max(slowest, m * perMicroBatch);
        }
        Assert.True(sim.MakespanSeconds >= slowest - 1e-9);
        Assert.Equal(sim.MakespanSeconds - slowest, sim.BubbleSeconds, 1e-9);
    }

    [Fact]
    public void TwoStages_HandComputedTimeline()
    {
        // Stage 0: F=1, B=2; stage 1: F=2, B=4; m=2.
        // s0: F0[0,1] F1[1,2] ... B0[7,9] B1[13,15];  s1: F0[1,3] B0[3,7] F1[7,9] B1[9,13].
        var schedule = ScheduleGenerator.Generate(2, 1, 2);
        Func<int, int, PassKind, double> dur = (s, _, k) => (s + 1) * (k == PassKind.Forward ? 1.0 : 2.0);

        var sim = PipelineSimulator.Simulate(schedule, dur, 0);
        Assert.Equal(15.0, sim.MakespanSeconds, 1e-12);
        Assert.Equal([6.0, 12.0], sim.StageBusySeconds);
        Assert.Equal([9.0, 3.0], sim.StageIdleSeconds);
        Assert.Equal(3.0, sim.BubbleSeconds, 1e-12);

        // With 0.5 s per hop: s1 F0 starts at 1.5, ..., s0 B1 waits for 13.5 + 0.5 → ends at 16.
        Assert.Equal(16.0, PipelineSimulator.Simulate(schedule, dur, 0.5).MakespanSeconds, 1e-12);
    }

    [Fact]
    public void Deadlock_Throws()
    {
        // Stage 1 wants B0 before it has run F0: its own forward can never precede it.
        var schedule = new PipelineSchedule(2, 1, 1,
        [
            [new(PassKind.Forward, 0, 0), new(PassKind.Backward, 0, 0)],
            [new(PassKind.Backward, 0, 0), new(PassKind.Forward, 0, 0)],
        ]);
        var ex = Assert.Throws<InvalidOperationException>(() => PipelineSimulator.Simulate(schedule, (_, _, _) => 1.0, 0));
        Assert.Contains("deadlock", ex.Message);
    }

    [Fact]
    public void CrossStageDeadlock_Throws()
    {
        // Stage 0 runs mb1 before mb0 while stage 1 insists on mb0 first, and each waits on the other's backward.
        var schedule = new PipelineSchedule(2, 1, 2,
        [
            [new(PassKind.Forward, 0, 0), new(PassKind.Backward, 1, 0), new(PassKind.Forward, 1, 0), new(PassKind.Backward, 0, 0)],
            [new(PassKind.Forward, 0, 0), new(PassKind.Forward, 1, 0), new(PassKind.Backward, 0, 0), new(PassKind.Backward, 1, 0)],
        ]);
        Assert.Throws<InvalidOperationException>(() => PipelineSimulator.Simulate(schedule, (_, _, _) => 1.0, 0));
    }

    [Fact]
    public void MalformedInputs_ThrowArgumentException()
    {
        var ok = ScheduleGenerator.Generate(2, 1, 2);
        Assert.Throws<ArgumentException>(() => PipelineSimulator.Simulate(ok, (_, _, _) => 1.0, -1));
        Assert.Throws<ArgumentException>(() => PipelineSimulator.Simulate(ok, (_, _, _) => double.NaN, 0));

        var duplicate = new PipelineSchedule(1, 1, 1,
            [[new(PassKind.Forward, 0, 0), new(PassKind.Forward, 0, 0), new(PassKind.Backward, 0, 0)]]);
        Assert.Throws<ArgumentException>(() => PipelineSimulator.Simulate(duplicate, (_, _, _) => 1.0, 0));

        var outOfRange = new PipelineSchedule(1, 1, 1, [[new(PassKind.Forward, 1, 0)]]);
        Assert.Throws<ArgumentException>(() => PipelineSimulator.Simulate(outOfRange, (_, _, _) => 1.0, 0));

        var wrongStageCount = new PipelineSchedule(2, 1, 1, [[new(PassKind.Forward, 0, 0)]]);
        Assert.Throws<ArgumentException>(() => PipelineSimulator.Simulate(wrongStageCount, (_, _, _) => 1.0, 0));
    }

    [Fact]
    public void ListBackedSchedule_GivesSameResultAsGenerated()
    {
        // Hand-built schedules may use List<T>; the simulator must not depend on the generator's storage type.
        var generated = ScheduleGenerator.Generate(4, 2, 8);
        var stages = new List<IReadOnlyList<PipelineAction>>();
        foreach (var stage in generated.Stages)
            stages.Add(new List<PipelineAction>(stage));
        var copy = generated with { Stages = stages };

        var dur = Uniform(1.0, 2.0, 2);
        Assert.Equal(
            PipelineSimulator.Simulate(generated, dur, 0.01).MakespanSeconds,
            PipelineSimulator.Simulate(copy, dur, 0.01).MakespanSeconds);
    }

    private static Func<int, int, PassKind, double> Uniform(double f, double b, int vpp) =>
        (_, _, k) => k == PassKind.Forward ? f / vpp : b / vpp;
}
