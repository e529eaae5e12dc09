using Planner.Executor.Training;

namespace Planner.Cli.Commands;

/// <summary>
/// run --max-restarts, torchrun-elastic style: after a rank fails or hangs every rank has been ended
/// (<see cref="RankProcesses"/>); all are started again, up to <paramref name="Restarts"/> times, from the run's last
/// checkpoint when it keeps checkpoints in <paramref name="CheckpointDir"/> (else from step 0).
/// </summary>
public sealed record RestartPolicy(int Restarts, string? CheckpointDir)
{
    /// <summary>The largest --max-restarts.</summary>
    public const int MaxRestarts = 1000;

    /// <summary>Where the ranks of <paramref name="attempt"/> (0: the first run) start: a restart of a run that keeps
    /// checkpoints resumes from the latest complete one of this run (its id) after this invocation's first step and
    /// before its last, training the steps left of the run's total (<paramref name="args"/>: its first step and steps);
    /// otherwise the run starts as it first did. On one machine; launchers on several machines each read the shared
    /// directory after their own ranks ended (docs/checkpoints.md).</summary>
    public ((string Folder, CheckpointManifest Manifest)? From, RunArguments Args) Resume(int attempt, string runId,
        (string Folder, CheckpointManifest Manifest)? resumed, RunArguments args)
    {
        if (attempt == 0 || CheckpointDir is not { } dir)
            return (resumed, args);
        int end = args.FirstStep + args.Steps;
        // The latest complete checkpoint of this run inside the steps this invocation trains (one written at its last
        // step leaves nothing to train: the one before it is taken).
        var latest = CheckpointFolders.All(dir).Where(x => x.Complete && x.Step > args.FirstStep && x.Step < end)
            .Select(x => (x.Folder, Manifest: CheckpointManifest.Read(x.Folder))).LastOrDefault(x => x.Manifest.RunId == runId);
        if (latest.Folder is null)
            return (resumed, args);
        // A plan read from the resumed checkpoint's copy is read from the new one's (the old folder may be pruned).
        string plan = resumed is { } r && Path.GetFullPath(args.Plan) == Path.GetFullPath(Path.Combine(r.Folder, CheckpointManifest.PlanCopy))
            ? Path.Combine(latest.Folder, CheckpointManifest.PlanCopy) : args.Plan;
        return ((latest.Folder, latest.Manifest), args with { Plan = plan, FirstStep = latest.Manifest.Step, Steps = end - latest.Manifest.Step });
    }

    /// <summary>Runs <paramref name="attempt"/> (given its number) until it succeeds or has failed more than
    /// <see cref="Restarts"/> times; returns its result and the line of each failure it survived, each also said on
    /// <paramref name="error"/>.</summary>
    /// <exception cref="RankFailedException">The last attempt's failure, when no restart is left.</exception>
    public (T Result, IReadOnlyList<string> Failures) Run<T>(Func<int, T> attempt, TextWriter error)
    {
        var failures = new List<string>();
        while (true)
        {
            try
            {
                return (attempt(failures.Count), failures);
            }
            catch (RankFailedException e) when (failures.Count < Restarts && !e.BadInput)
            {
                failures.Add(e.Message);
                error.WriteLine($"planner: {e.Message}; starting every rank again (restart {failures.Count} of {Restarts})");
            }
            catch (RankFailedException e) when (failures.Count > 0)
            {
                throw new RankFailedException($"{e.Message} (after {failures.Count} restart(s))", e.BadInput);
            }
        }
    }
}
