using Planner.Cli.Commands;
using Planner.CostModel.Specs;
using Planner.Executor.Training;
using Xunit;

namespace Planner.Cli.Tests;

/// <summary>run --max-restarts' policy and the PLANNER_FAULT test hook's variable, without rank processes.</summary>
public sealed class RestartPolicyTests
{
    /// <summary>An attempt that fails (as a launcher reports a failed rank) on the attempts listed.</summary>
    private static Func<int, int> FailingOn(params int[] attempts) => attempt =>
        attempts.Contains(attempt) ? throw new RankFailedException($"rank 1 died in attempt {attempt}") : attempt;

    [Fact]
    public void A_failure_within_the_restarts_is_survived_and_reported()
    {
        var error = new StringWriter();
        var (result, failures) = new RestartPolicy(2, null).Run(FailingOn(0, 1), error);
        Assert.Equal(2, result); // the attempt that succeeded
        Assert.Equal(["rank 1 died in attempt 0", "rank 1 died in attempt 1"], failures);
        Assert.Equal(2, error.ToString().Trim().Split('\n').Length);
        Assert.Contains("(restart 2 of 2)", error.ToString());
    }

    [Fact]
    public void A_failure_beyond_the_restarts_ends_the_run_with_its_line()
    {
        var e = Assert.Throws<RankFailedException>(() => new RestartPolicy(1, null).Run(FailingOn(0, 1), TextWriter.Null));
        Assert.Equal("rank 1 died in attempt 1 (after 1 restart(s))", e.Message);
        e = Assert.Throws<RankFailedException>(() => new RestartPolicy(0, null).Run(FailingOn(0), TextWriter.Null));
        Assert.Equal("rank 1 died in attempt 0", e.Message);
    }

    [Fact]
    public void The_fault_variable_is_read_and_bad_forms_are_refused()
    {
        Assert.Equal(new RankFault(1, 2, FaultAction.Hang, 0), RankFault.Parse("rank=1,step=2,action=hang"));
        Assert.Equal(new RankFault(0, 5, FaultAction.Exit, 1), RankFault.Parse(" attempt=1, action=exit ,rank=0,step=5"));
        Assert.True(RankFault.Parse("rank=1,step=2,action=kill").Strikes(1, 2, 0));
        Assert.False(RankFault.Parse("rank=1,step=2,action=kill").Strikes(1, 2, 1));
        Assert.False(RankFault.Parse("rank=1,step=2,action=kill").Strikes(0, 2, 0));
        foreach (var (text, named) in new[]
        {
            ("rank=1,step=2", "action ''"), ("rank=1,action=kill", "lacks step="), ("rank=-1,step=2,action=kill", "rank '-1'"),
            ("rank=1,step=2,action=kill,when=now", "'when=now'"), ("rank=1,rank=2,step=2,action=kill", "'rank=2'"),
        })
        {
            var e = Assert.Throws<InputException>(() => RankFault.Parse(text));
            Assert.Contains("PLANNER_FAULT", e.Message);
            Assert.Contains(named, e.Message);
        }
    }
}
