namespace Planner.Executor.Training;

/// <summary>
/// A rank process's heartbeat to its launcher: a line <c>heartbeat STEP</c> on standard error every second, from a
/// thread of its own, and as each step starts (STEP: the step it is in, -1 before the first). A rank stopped by a signal
/// falls silent, and its launcher ends the run once it has been silent for --timeout; a rank deadlocked inside a
/// collective keeps beating, and the collective's own timeout ends it. The thread also ends the rank when the launcher
/// that started it is gone (never an orphan), and the step hook injects a test's <see cref="RankFault"/>.
/// </summary>
public sealed class RankLiveness
{
    /// <summary>What a heartbeat line starts with (followed by the step).</summary>
    public const string Prefix = "heartbeat ";

    /// <summary>The environment variable by which a launcher gives its process id to the ranks it starts.</summary>
    public const string LauncherVariable = "PLANNER_LAUNCHER_PID";

    private static readonly TimeSpan Period = TimeSpan.FromSeconds(1);
    private readonly Lock _gate = new();
    private readonly TextWriter _error;
    private readonly RankFault? _fault;
    private readonly int _rank, _attempt;
    private int _step = -1;

    private RankLiveness(TextWriter error, int rank)
    {
        _error = error;
        _rank = rank;
        _fault = RankFault.FromEnvironment();
        _attempt = RankFault.AttemptFromEnvironment();
    }

    /// <summary>Starts beating on <paramref name="error"/> for rank <paramref name="rank"/>, and reads the test hook's
    /// fault and the attempt from the environment.</summary>
    /// <exception cref="Planner.CostModel.Specs.InputException">The fault or attempt variable is malformed.</exception>
    public static RankLiveness Start(TextWriter error, int rank)
    {
        var liveness = new RankLiveness(error, rank);
        int? launcher = int.TryParse(Environment.GetEnvironmentVariable(LauncherVariable), out int pid) ? pid : null;
        liveness.Beat();
        new Thread(() =>
        {
            while (true)
            {
                Thread.Sleep(Period);
                // Reparented: the launcher died without ending its ranks (SIGKILL); this rank ends itself.
                if (launcher is { } l && OperatingSystem.IsLinux() && ProcessSignals.ParentId() != l)
                    ProcessSignals.ToSelf(ProcessSignals.Kill);
                liveness.Beat();
            }
        })
        { IsBackground = true, Name = "heartbeat" }.Start();
        return liveness;
    }

    /// <summary>The rank starts <paramref name="step"/>: beats with it, then strikes the test hook's fault if it is this step's.</summary>
    public void Reached(int step)
    {
        Volatile.Write(ref _step, step);
        Beat();
        if (_fault is { } f && f.Strikes(_rank, step, _attempt))
            f.Strike(_error);
    }

    private void Beat()
    {
        lock (_gate)
        {
            _error.WriteLine(Prefix + Volatile.Read(ref _step));
            _error.Flush();
        }
    }
}
