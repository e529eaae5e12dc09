using System.Text.Json.Nodes;
using Xunit;
using Xunit.Abstractions;

namespace Planner.Cli.Tests;

/// <summary>
/// `run` when a rank dies, exits or hangs (the PLANNER_FAULT test hook): the run ends with exit 1 naming the rank,
/// within --timeout plus a few seconds, with no rank process left and the rendezvous port free; with --max-restarts it
/// starts every rank again and finishes with the losses of a run that never failed.
/// </summary>
[Collection("executor")]
[Trait("Category", "Slow")] // rank processes: ./test --all
public sealed class RankFailureTests : IDisposable
{
    private const int Timeout = 10;
    private readonly string _dir = Path.Combine(Path.GetTempPath(), $"planner-faults-{Guid.NewGuid():N}");
    private readonly ITestOutputHelper _log;

    public RankFailureTests(ITestOutputHelper log)
    {
        _log = log;
        Directory.CreateDirectory(_dir);
        File.WriteAllText(Path.Combine(_dir, "config.json"),
            """{"model_type": "gpt2", "n_layer": 2, "n_embd": 64, "n_head": 4, "n_positions": 64, "vocab_size": 256, "n_inner": null, "tie_word_embeddings": true}""");
        File.WriteAllText(PlanPath, $$"""
            {"model": "{{Path.Combine(_dir, "config.json")}}", "cluster": "local-cpu", "tp": 1, "pp": 1, "dp": 2, "cp": 1,
             "zero": 0, "mbs": 4, "gbs": 16, "seq": 32, "vpp": 1, "recompute": "none", "sequence_parallel": false, "precision": "fp32"}
            """);
    }

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    private string PlanPath => Path.Combine(_dir, "dp2.json");

    private string[] RunArgs(int steps, params string[] more) =>
        ["run", "--plan", PlanPath, "--steps", steps.ToString(), "--timeout", Timeout.ToString(), "--history", Path.Combine(_dir, "history.csv"), .. more];

    [Theory]
    [InlineData("kill", @"rank 1 died with signal 9 \(SIGKILL\) at step 2")]
    [InlineData("exit", @"rank 1 failed \(exit code 3\) at step 2: planner: injected fault")]
    [InlineData("hang", @"rank 1 hung at step 2: no heartbeat for 1\d s \(--timeout 10 s\)")]
    public void A_failed_rank_ends_the_run_naming_it_and_leaves_nothing(string action, string message)
    {
        var run = FaultyRun.Start(RunArgs(200), $"rank=1,step=2,action={action}");
        Assert.Equal(1, run.Code);
        Assert.Matches(message, run.Error);
        Assert.Single(run.Error.Trim().Split('\n'));
        // From the moment the rank stopped or vanished to the launcher's exit: at once when it ends, about the
        // timeout (its last heartbeat was as step 2 began) when it stops.
        Assert.NotNull(run.FaultToExit);
        double seconds = run.FaultToExit.Value.TotalSeconds;
        _log.WriteLine($"{action}: exit {run.Code} {seconds:F1} s after the fault, {run.Left.Count} of {run.Ranks.Count} ranks left: {run.Error.Trim()}");
        if (action == "hang")
            Assert.InRange(seconds, Timeout - 1.5, Timeout + 5);
        else
            Assert.InRange(seconds, 0, 5);
        Assert.Equal(2, run.Ranks.Count);
        Assert.Empty(run.Left);
        Assert.True(run.PortFree, $"the rendezvous port {run.Port} is still held");
    }

    [Fact]
    public void A_deadlocked_rank_that_still_beats_is_ended_by_the_collective_timeout()
    {
        // Rank 1 blocks at step 2 with its heartbeat going on; rank 0's all-reduce of step 2 waits --timeout and fails.
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var run = FaultyRun.Start(RunArgs(200), "rank=1,step=2,action=stall");
        double seconds = clock.Elapsed.TotalSeconds;
        _log.WriteLine($"stall: exit {run.Code} after {seconds:F1} s in all, {run.Left.Count} of {run.Ranks.Count} ranks left: {run.Error.Trim()}");
        Assert.Equal(1, run.Code);
        Assert.Matches(@"rank 0 failed \(exit code \d+\) at step 2: ", run.Error);
        Assert.Single(run.Error.Trim().Split('\n'));
        // At least the timeout (the collective waited for it), and not the default ten minutes: start-up and two
        // steps take a few seconds.
        Assert.InRange(seconds, Timeout, Timeout + 30);
        Assert.Empty(run.Left);
        Assert.True(run.PortFree, $"the rendezvous port {run.Port} is still held");
    }

    [Fact]
    public void A_restart_after_a_killed_rank_finishes_with_the_uninterrupted_losses()
    {
        var clean = FaultyRun.Start(RunArgs(4, "--json"), fault: null);
        Assert.True(clean.Code == 0, clean.Error);
        var restarted = FaultyRun.Start(RunArgs(4, "--json", "--max-restarts", "1"), "rank=1,step=2,action=kill,attempt=0");
        Assert.True(restarted.Code == 0, restarted.Error);
        var measured = JsonNode.Parse(restarted.Output)!["measured"]!;
        Assert.Equal(1, (int)measured["restarts"]!);
        Assert.Matches(@"^rank 1 died with signal 9 \(SIGKILL\) at step 2", (string)measured["failures"]![0]!);
        Assert.Equal(Losses(clean.Output), Losses(restarted.Output));
        Assert.Contains("starting every rank again (restart 1 of 1)", restarted.Error);
        Assert.Equal(4, restarted.Ranks.Count); // two ranks per attempt
        Assert.Empty(restarted.Left);
    }

    [Fact]
    public void A_restart_resumes_from_the_runs_last_checkpoint_with_the_uninterrupted_losses()
    {
        var clean = FaultyRun.Start(RunArgs(5, "--json"), fault: null);
        Assert.True(clean.Code == 0, clean.Error);
        string ck = Path.Combine(_dir, "ck");
        // Checkpoints after steps 2 and 4 (counting from 1); rank 1 dies in step 3 (from 0): the restart resumes at step 2.
        var restarted = FaultyRun.Start(RunArgs(5, "--json", "--max-restarts", "1", "--checkpoint-dir", ck, "--checkpoint-every", "2"),
            "rank=1,step=3,action=kill,attempt=0");
        Assert.True(restarted.Code == 0, restarted.Error);
        var measured = JsonNode.Parse(restarted.Output)!["measured"]!;
        Assert.Equal(1, (int)measured["restarts"]!);
        Assert.Equal(2, (int)measured["first_step"]!);
        Assert.Equal(Losses(clean.Output)[2..], Losses(restarted.Output));
        Assert.Empty(restarted.Left);
    }

    [Fact]
    public void Ranks_whose_launcher_is_killed_end_themselves()
    {
        // SIGKILL leaves the launcher no chance to end its ranks: each sees itself reparented and ends within a second.
        var psi = new System.Diagnostics.ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in (string[])[Path.Combine(AppContext.BaseDirectory, "planner.dll"), .. RunArgs(100000)])
            psi.ArgumentList.Add(a);
        using var launcher = System.Diagnostics.Process.Start(psi)!;
        _ = launcher.StandardOutput.ReadToEndAsync();
        _ = launcher.StandardError.ReadToEndAsync();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        List<int> ranks = [];
        while (ranks.Count < 2 && clock.Elapsed < TimeSpan.FromMinutes(1))
        {
            Thread.Sleep(100);
            ranks = FaultyRun.Descendants(launcher.Id).Where(pid => FaultyRun.CommandLine(pid)?.Contains("rank") == true).ToList();
        }
        Assert.Equal(2, ranks.Count);
        launcher.Kill(entireProcessTree: false);
        launcher.WaitForExit();
        var killed = clock.Elapsed;
        while (ranks.Any(pid => FaultyRun.State(pid) is { } st && st != 'Z') && clock.Elapsed - killed < TimeSpan.FromSeconds(10))
            Thread.Sleep(50);
        var left = ranks.Where(pid => FaultyRun.State(pid) is { } st && st != 'Z').ToList();
        _log.WriteLine($"orphans: {left.Count} of 2 ranks left {(clock.Elapsed - killed).TotalSeconds:F1} s after the launcher's SIGKILL");
        foreach (int pid in left)
            System.Diagnostics.Process.GetProcessById(pid).Kill();
        Assert.Empty(left);
        // A rank still starting (.NET and libtorch loading) looks once its heartbeat thread runs, then every second.
        Assert.InRange((clock.Elapsed - killed).TotalSeconds, 0, 5);
    }

    [Theory]
    [InlineData("--timeout", "0")]
    [InlineData("--timeout", "-5")]
    [InlineData("--max-restarts", "-1")]
    public void A_bad_timeout_or_restart_count_is_exit_2(string flag, string value)
    {
        var (code, _, error) = ExecutorParityTests.Planner(["run", "--plan", PlanPath, "--steps", "2", flag, value]);
        Assert.Equal(2, code);
        Assert.StartsWith($"planner: {flag}: {value} must be", error);
        Assert.Single(error.Trim().Split('\n'));
    }

    [Fact]
    public void A_malformed_fault_variable_is_exit_2_before_any_rank_starts()
    {
        var run = FaultyRun.Start(RunArgs(2), "rank=1,step=2,action=explode");
        Assert.Equal(2, run.Code);
        Assert.Contains("PLANNER_FAULT: action 'explode' is not kill, hang, exit or stall", run.Error);
        Assert.Empty(run.Ranks);
    }

    private static double[] Losses(string output) =>
        JsonNode.Parse(output)!["measured"]!["loss"]!.AsArray().Select(v => (double)v!).ToArray();
}
