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

    /// <summary>A checkpoint directory with complete checkpoints of run <c>r1</c> at the steps given (and one of another
    /// run, and one without its manifest).</summary>
    private static string Checkpoints(params int[] steps)
    {
        string dir = Directory.CreateTempSubdirectory("planner-restart-").FullName;
        CheckpointManifest Manifest(string run, int step) => new(CheckpointManifest.CurrentFormat, run, step, "plan.json", "gpt2", null, 2, 1234, 1e-3, 1e-8, null,
            new CheckpointLayout(1, 1, 2, 1, 1, 0, 1, 2), "adamw", Shards: ["rank-0.bin", "rank-1.bin"]);
        foreach (int s in steps)
        {
            string folder = CheckpointFolders.Of(dir, s);
            Directory.CreateDirectory(folder);
            File.WriteAllText(Path.Combine(folder, CheckpointManifest.FileName), Manifest("r1", s).ToJson());
        }
        Directory.CreateDirectory(CheckpointFolders.Of(dir, 97)); // incomplete: no manifest
        string other = CheckpointFolders.Of(dir, 98);
        Directory.CreateDirectory(other);
        File.WriteAllText(Path.Combine(other, CheckpointManifest.FileName), Manifest("another", 98).ToJson());
        return dir;
    }

    [Fact]
    public void A_restart_resumes_from_the_runs_latest_checkpoint_inside_its_steps()
    {
        string dir = Checkpoints(2, 4, 6);
        try
        {
            var policy = new RestartPolicy(3, dir);
            var args = new RunArguments("/p/plan.json", 6, 0, 1234, 1e-3, 1e-8, null, null, 2);
            Assert.Equal((null, args), policy.Resume(0, "r1", null, args));
            // Steps 0..5: the checkpoint after step 6 ends the run; the one after 4 leaves 2 to train.
            var (from, again) = policy.Resume(1, "r1", null, args);
            Assert.Equal(CheckpointFolders.Of(dir, 4), from!.Value.Folder);
            Assert.Equal((4, 2, "/p/plan.json"), (again.FirstStep, again.Steps, again.Plan));
            // Another run's checkpoints and incomplete folders are never taken.
            Assert.Equal((null, args), policy.Resume(1, "r2", null, args));
            Assert.Equal((null, args), new RestartPolicy(3, null).Resume(1, "r1", null, args));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void A_restart_of_a_resumed_run_reads_the_plan_from_the_new_checkpoint()
    {
        string dir = Checkpoints(2, 4);
        try
        {
            string old = CheckpointFolders.Of(dir, 2);
            var resumed = (old, CheckpointManifest.Read(old));
            var args = new RunArguments(Path.Combine(old, CheckpointManifest.PlanCopy), 4, 2, 1234, 1e-3, 1e-8, null, null, 2);
            var (from, again) = new RestartPolicy(1, dir).Resume(1, "r1", resumed, args);
            Assert.Equal(CheckpointFolders.Of(dir, 4), from!.Value.Folder);
            Assert.Equal(Path.Combine(CheckpointFolders.Of(dir, 4), CheckpointManifest.PlanCopy), again.Plan);
            Assert.Equal((4, 2), (again.FirstStep, again.Steps));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void A_rank_that_refused_its_input_is_not_restarted()
    {
        int attempts = 0;
        var e = Assert.Throws<RankFailedException>(() => new RestartPolicy(3, null).Run<int>(_ =>
        {
            attempts++;
            throw new RankFailedException("rank 0 failed (exit code 2) before its first step: planner: --plan: file 'x' not found", BadInput: true);
        }, TextWriter.Null));
        Assert.Equal(1, attempts);
        Assert.True(e.BadInput);
    }
}
