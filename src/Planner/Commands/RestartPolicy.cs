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

    /// <summary>What the ranks of <paramref name="attempt"/> (0: the first run) add to their arguments: a restart of a
    /// run that keeps checkpoints resumes from them.</summary>
    public IReadOnlyList<string> ResumeArguments(int attempt) => attempt > 0 && CheckpointDir is { } dir ? ["--resume", dir] : [];

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
