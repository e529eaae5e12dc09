using System.Diagnostics;
using System.Text.Json.Nodes;
using Xunit;

namespace Planner.Cli.Tests;

/// <summary>
/// `run` across machines, emulated on loopback: the ranks started by several `run` processes (one per node with
/// --nnodes/--node-rank, or one per task from Slurm's or Open MPI's variables) train as one job, and the process of
/// rank 0 reports every rank's measurements.
/// </summary>
[Collection("executor")]
public sealed class MultiNodeLaunchTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), $"planner-nodes-{Guid.NewGuid():N}");

    public MultiNodeLaunchTests()
    {
        Directory.CreateDirectory(_dir);
        File.WriteAllText(Path.Combine(_dir, "config.json"),
            """{"model_type": "gpt2", "n_layer": 2, "n_embd": 64, "n_head": 4, "n_positions": 64, "vocab_size": 256, "n_inner": null, "tie_word_embeddings": true}""");
    }

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    private string Plan(int tp, int pp, int dp)
    {
        string path = Path.Combine(_dir, $"plan-{tp}-{pp}-{dp}.json");
        File.WriteAllText(path, $$"""
            {"model": "{{Path.Combine(_dir, "config.json")}}", "cluster": "local-cpu", "tp": {{tp}}, "pp": {{pp}}, "dp": {{dp}}, "cp": 1,
             "zero": 0, "mbs": 4, "gbs": 16, "seq": 32, "vpp": 1, "recompute": "none", "sequence_parallel": false, "precision": "fp32"}
            """);
        return path;
    }

    private static Process Start(string[] args, IReadOnlyDictionary<string, string> env)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "planner.dll"));
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        foreach (var (key, value) in env)
            psi.Environment[key] = value;
        return Process.Start(psi)!;
    }

    /// <summary>Starts one `run` per (arguments, environment) at once; returns each one's exit code, output, error.</summary>
    private static (int Code, string Output, string Error)[] RunAll(IEnumerable<(string[] Args, Dictionary<string, string> Env)> launches) =>
        Launched.WaitAll(launches.Select(l => Start(l.Args, l.Env)).ToList(), TimeSpan.FromMinutes(5));

    private string[] RunArgs(string plan, params string[] more) =>
        ["run", "--plan", plan, "--steps", "3", "--warmup", "0", "--json", "--history", Path.Combine(_dir, "history.csv"), .. more];

    private static double[] Losses(JsonNode report) => report["measured"]!["loss"]!.AsArray().Select(v => (double)v!).ToArray();

    public static TheoryData<string, int, int, int> Launchers() => new()
    {
        // PP=2: only the last stage (rank 1, on the second "machine") computes the loss: rank 0 must gather it.
        { "nnodes", 1, 2, 1 },
        { "slurm", 1, 2, 1 },
        { "openmpi", 1, 1, 2 },
        { "nnodes", 2, 1, 2 },
    };

    [Trait("Category", "Slow")]
    [Theory]
    [MemberData(nameof(Launchers))]
    public void Ranks_started_by_several_launchers_train_as_one_machine_and_rank_0_reports_them_all(string launcher, int tp, int pp, int dp)
    {
        string plan = Plan(tp, pp, dp);
        int world = tp * pp * dp;
        var (code, single, error) = ExecutorParityTests.Planner(RunArgs(plan));
        Assert.True(code == 0, error);
        int port = Commands.RankProcesses.FreePort();
        int nodes = launcher == "nnodes" ? 2 : world;
        var launches = Enumerable.Range(0, nodes).Select(i => launcher switch
        {
            "nnodes" => (RunArgs(plan, "--nnodes", "2", "--node-rank", i.ToString(), "--master-port", port.ToString()), new Dictionary<string, string>()),
            "slurm" => (RunArgs(plan, "--master-port", port.ToString()), new Dictionary<string, string>
            {
                // What srun sets for each task of a step (SLURM_STEP_NUM_TASKS marks a task, not the batch script).
                ["SLURM_PROCID"] = i.ToString(),
                ["SLURM_NTASKS"] = world.ToString(),
                ["SLURM_STEP_NUM_TASKS"] = world.ToString(),
                ["SLURM_STEP_NODELIST"] = "localhost",
                ["SLURM_JOB_ID"] = "77",
            }),
            _ => (RunArgs(plan, "--master-port", port.ToString(), "--master-addr", "127.0.0.1"), new Dictionary<string, string>
            {
                ["OMPI_COMM_WORLD_RANK"] = i.ToString(),
                ["OMPI_COMM_WORLD_SIZE"] = world.ToString(),
            }),
        }).ToList();
        var results = RunAll(launches);
        foreach (var (c, _, err) in results)
            Assert.True(c == 0, err);

        var report = JsonNode.Parse(results[0].Output)!;
        var expected = Losses(JsonNode.Parse(single)!);
        var losses = Losses(report);
        Assert.Equal(3, losses.Length);
        for (int s = 0; s < 3; s++)
            Assert.Equal(expected[s], losses[s], 1e-6);
        // Every rank's measurements reached the report, not only those of the ranks rank 0's launcher started.
        Assert.Equal(world, report["measured"]!["peak_memory_gib_by_rank"]!.AsArray().Count);
        Assert.Equal(world, report["measured"]!["compute_s_by_rank"]!.AsArray().Count);
        // The other launchers say which ranks they ran and where the report is.
        for (int i = 1; i < nodes; i++)
        {
            var other = JsonNode.Parse(results[i].Output)!;
            Assert.Null(other["measured"]);
            var ranks = other["ranks"]!.AsArray().Select(v => (int)v!).ToArray();
            Assert.Equal(launcher == "nnodes" ? Enumerable.Range(i * world / 2, world / 2).ToArray() : [i], ranks);
        }
    }

    [Trait("Category", "Slow")]
    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    public void A_rank_killed_on_one_machine_ends_both_launchers_or_restarts_them_both(int restarts)
    {
        // DP=2 over two launchers; rank 1 (the second "machine") kills itself at step 1 of the first attempt.
        string plan = Plan(1, 1, 2);
        var (code, single, error) = ExecutorParityTests.Planner(RunArgs(plan));
        Assert.True(code == 0, error);
        int port = Commands.RankProcesses.FreePort();
        var env = new Dictionary<string, string> { ["PLANNER_FAULT"] = "rank=1,step=1,action=kill" };
        var results = RunAll(Enumerable.Range(0, 2).Select(i => (RunArgs(plan, "--nnodes", "2", "--node-rank", i.ToString(), "--master-port", port.ToString(),
            "--timeout", "10", "--max-restarts", restarts.ToString()), env)));
        if (restarts == 0)
        {
            // Each machine names its own rank: the one that died, and the one whose peer vanished.
            Assert.Equal([1, 1], results.Select(x => x.Code));
            Assert.Matches(@"^planner: rank 1 died with signal 9 \(SIGKILL\) at step 1", results[1].Error);
            Assert.Matches(@"^planner: rank 0 failed \(exit code 1\) at step 1: ", results[0].Error);
            return;
        }
        // Both launchers restart their ranks (at the agreed port plus one) and the job finishes as if it never failed.
        foreach (var (c, _, err) in results)
            Assert.True(c == 0, err);
        var report = JsonNode.Parse(results[0].Output)!;
        Assert.Equal(Losses(JsonNode.Parse(single)!), Losses(report));
        Assert.Equal(1, (int)report["measured"]!["restarts"]!);
        Assert.Contains("rank 1 died with signal 9 (SIGKILL) at step 1", results[1].Error);
    }

    [Trait("Category", "Slow")]
    [Fact]
    public void Run_from_a_slurm_batch_script_without_srun_starts_every_rank_itself_and_says_so()
    {
        // sbatch's script sees the job's variables (SLURM_PROCID=0, the job's SLURM_NTASKS) but no step's: it is one
        // process, not one task per rank; taking it for rank 0 of 2 tasks would wait for a rank 1 that never starts.
        string plan = Plan(1, 2, 1);
        var (code, single, error) = ExecutorParityTests.Planner(RunArgs(plan));
        Assert.True(code == 0, error);
        var results = RunAll([(RunArgs(plan), new Dictionary<string, string>
        {
            ["SLURM_JOB_ID"] = "77", ["SLURM_PROCID"] = "0", ["SLURM_LOCALID"] = "0", ["SLURM_NTASKS"] = "2",
            ["SLURM_JOB_NUM_NODES"] = "2", ["SLURM_NODELIST"] = "node[1-2]",
        })]);
        var (c, output, err) = results[0];
        Assert.True(c == 0, err);
        Assert.Contains("Slurm job 77's batch script, not an srun step", err);
        var report = JsonNode.Parse(output)!;
        Assert.Equal(2, report["measured"]!["peak_memory_gib_by_rank"]!.AsArray().Count);
        var expected = Losses(JsonNode.Parse(single)!);
        var losses = Losses(report);
        for (int s = 0; s < 3; s++)
            Assert.Equal(expected[s], losses[s], 1e-6);
    }

    [Theory]
    [InlineData("SLURM_PROCID", "first", "SLURM_STEP_NUM_TASKS", "2", "SLURM_PROCID")]
    [InlineData("SLURM_PROCID", "0", "SLURM_STEP_NUM_TASKS", "-2", "SLURM_STEP_NUM_TASKS")]
    [InlineData("OMPI_COMM_WORLD_RANK", "0", "OMPI_COMM_WORLD_SIZE", "4", "4 tasks but the plan has 2 ranks")]
    [InlineData("OMPI_COMM_WORLD_RANK", "2", "OMPI_COMM_WORLD_SIZE", "2", "rank 2 is not below its 2 tasks")]
    public void Bad_scheduler_variables_exit_2_naming_them(string rankVar, string rank, string sizeVar, string size, string named)
    {
        var results = RunAll([(RunArgs(Plan(1, 1, 2)), new Dictionary<string, string> { [rankVar] = rank, [sizeVar] = size })]);
        var (code, output, error) = results[0];
        Assert.Equal(2, code);
        Assert.Contains(named, error);
        Assert.Single(error.Trim().Split('\n'));
        Assert.Equal("", output);
    }
}
