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
    /// checkpoints resumes from the latest this run wrote after its own start, training the steps left of the run's total
    /// (<paramref name="args"/>: its first step and steps); otherwise the run starts as it first did.</summary>
    internal ((string Folder, CheckpointManifest Manifest)? From, RunArguments Args) Resume(int attempt, string runId,
        (string Folder, CheckpointManifest Manifest)? resumed, RunArguments args)
    {
        if (attempt == 0 || CheckpointDir is not { } dir || CheckpointFolders.Latest(dir) is not { } folder)
            return (resumed, args);
        var manifest = CheckpointManifest.Read(folder);
        int end = args.FirstStep + args.Steps;
        if (manifest.RunId != runId || manifest.Step <= args.FirstStep || manifest.Step >= end)
            return (resumed, args);
        return ((folder, manifest), args with { FirstStep = manifest.Step, Steps = end - manifest.Step });
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
            catch (RankFailedException e) when (failures.Count < Restarts)
            {
                failures.Add(e.Message);
                error.WriteLine($"planner: {e.Message}; starting every rank again (restart {failures.Count} of {Restarts})");
            }
            catch (RankFailedException e) when (failures.Count > 0)
            {
                throw new RankFailedException($"{e.Message} (after {failures.Count} restart(s))");
            }
        }
    }
}
