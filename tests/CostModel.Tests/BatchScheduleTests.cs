using Xunit;
using Planner.CostModel.Specs;
using Planner.CostModel.Training;

namespace Planner.CostModel.Tests;

/// <summary>A batch schedule file (<c>--batch-schedule</c>, docs/run-level.md): the same run as Megatron's ramp when it
/// writes the ramp down, a schedule in tokens that trains exactly its budget, and malformed files refused naming the
/// file and line.</summary>
public class BatchScheduleTests
{
    private static TrainingRun Run(TrainingRequest req) => RunFixture.Run(RunFixture.Cluster(), req);

    [Fact]
    public void FileWritingDownMegatronsRampGivesTheSameRun()
    {
        // 128 → 512 by 128 over 300,000 samples: three increments of 100,000 samples.
        var ramp = Run(new TrainingRequest(2e11, Rampup: new BatchRampup(128, 128, 300_000)));
        var file = BatchSchedule.Parse("samples,gbs\n0,128\n100000,256\n200000,384\n300000,512\n", "ramp.csv");
        var scheduled = Run(new TrainingRequest(2e11, Schedule: file));
        Assert.Equal(ramp.Segments.Select(s => (s.Steps, s.Prediction.Plan.Gbs)), scheduled.Segments.Select(s => (s.Steps, s.Prediction.Plan.Gbs)));
        Assert.Equal(ramp.UsefulSeconds, scheduled.UsefulSeconds, 6);
        Assert.Equal("ramp.csv", scheduled.Inputs["batch_schedule"]);
    }

    [Fact]
    public void ScheduleInTokensTrainsItsBudgetAndNeverSavesTime()
    {
        var file = BatchSchedule.Parse("# adaptive batch from the gradient noise scale\ntokens,gbs\n0,64\n1e9,128\n5e9,256\n2e10,512\n", "gns.csv");
        var plain = Run(new TrainingRequest(1e11));
        var scheduled = Run(new TrainingRequest(1e11, Schedule: file));
        Assert.Equal(new[] { 64, 128, 256, 512 }, scheduled.Segments.Select(s => s.Prediction.Plan.Gbs));
        Assert.Equal(1e11, scheduled.Segments.Sum(s => s.Tokens), 1e11 * 1e-9 + 4 * 512 * 4096);
        // Each change happens at the first whole step past its token count.
        Assert.InRange(scheduled.Segments[0].Tokens - 1e9, 0, 64 * 4096);
        Assert.True(scheduled.UsefulSeconds > plain.UsefulSeconds);
    }

    [Fact]
    public void BatchAtFollowsTheChanges()
    {
        var f = BatchSchedule.Parse("samples,gbs\n0,8\n100,16\n", "f.csv");
        Assert.Equal(8, f.BatchAt(0, out double left));
        Assert.Equal(100, left);
        Assert.Equal(8, f.BatchAt(99.5, out _));
        Assert.Equal(16, f.BatchAt(100, out left));
        Assert.True(double.IsPositiveInfinity(left));
    }

    [Theory]
    [InlineData("", "no changes")]
    [InlineData("steps,gbs\n0,64\n", "line 1")]
    [InlineData("samples,gbs\n5,64\n", "line 2")]
    [InlineData("samples,gbs\n0,64\n100,128\n100,256\n", "line 4")]
    [InlineData("samples,gbs\n0,64\n100,abc\n", "line 3")]
    [InlineData("samples,gbs\n0,-64\n", "line 2")]
    [InlineData("samples,gbs\n0,64,1\n", "line 2")]
    public void MalformedFilesNameTheFileAndLine(string text, string where)
    {
        var e = Assert.Throws<InputException>(() => BatchSchedule.Parse(text, "bad.csv"));
        Assert.Equal("batch_schedule", e.Field);
        Assert.Contains("bad.csv", e.Message);
        Assert.Contains(where, e.Message);
    }

    [Theory]
    [InlineData("samples,gbs\n0,128\n1000,256\n", "not the plan's gbs")]
    [InlineData("samples,gbs\n0,48\n1000,512\n", "mbs·dp")]
    public void SchedulesThePlanCannotRunAreRefused(string text, string reason)
    {
        var e = Assert.Throws<InputException>(() => Run(new TrainingRequest(2e11, Schedule: BatchSchedule.Parse(text, "s.csv"))));
        Assert.Equal("batch_schedule", e.Field);
        Assert.Contains(reason, e.Message);
    }
}
