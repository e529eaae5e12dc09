namespace Planner.Executor.Training;

/// <summary>
/// A rank process's heartbeat to its launcher: a line <c>heartbeat STEP</c> on standard error every second, from a
/// thread of its own, and as each step starts (STEP: the step it is in, -1 before the first). A rank stopped by a signal
/// falls silent, and its launcher ends the run once it has been silent for --timeout; a rank deadlocked inside a
/// collective keeps beating, and the collective's own timeout ends it. The thread also ends the rank when the launcher
/// that started it is gone (never an orphan), and the step hook injects a test's <see cref="RankFault"/>.
/// </summary>
public static class RankLiveness
{
    /// <summary>What a heartbeat line starts with (followed by the step).</summary>
    public const string Prefix = "heartbeat ";

    /// <summary>The environment variable by which a launcher gives its process id to the ranks it starts.</summary>
    public const string LauncherVariable = "PLANNER_LAUNCHER_PID";

    private static readonly TimeSpan Period = TimeSpan.FromSeconds(1);
    private static readonly Lock Gate = new();
    private static TextWriter? _error;
    private static RankFault? _fault;
    private static int _rank, _attempt, _step = -1;

    /// <summary>Starts beating on <paramref name="error"/> for rank <paramref name="rank"/>, and reads the test hook's
    /// fault and the attempt from the environment.</summary>
    /// <exception cref="Planner.CostModel.Specs.InputException">The fault or attempt variable is malformed.</exception>
    public static void Start(TextWriter error, int rank)
    {
        var fault = RankFault.FromEnvironment();
        int attempt = RankFault.AttemptFromEnvironment();
        int? launcher = int.TryParse(Environment.GetEnvironmentVariable(LauncherVariable), out int pid) ? pid : null;
        lock (Gate)
        {
            if (_error is not null)
                return;
            (_error, _fault, _rank, _attempt) = (error, fault, rank, attempt);
        }
        Beat();
        new Thread(() =>
        {
            while (true)
            {
                Thread.Sleep(Period);
                // Reparented: the launcher died without ending its ranks (SIGKILL); this rank ends itself.
                if (launcher is { } l && OperatingSystem.IsLinux() && ProcessSignals.ParentId() != l)
                    ProcessSignals.ToSelf(ProcessSignals.Kill);
                Beat();
            }
        })
        { IsBackground = true, Name = "heartbeat" }.Start();
    }

    /// <summary>The rank starts <paramref name="step"/>: beats with it, then strikes the test hook's fault if it is this step's.</summary>
    public static void Reached(int step)
    {
        Volatile.Write(ref _step, step);
        if (_error is null)
            return;
        Beat();
        if (_fault is { } f && f.Strikes(_rank, step, _attempt))
            f.Strike(_error);
    }

    private static void Beat()
    {
        var error = _error!;
        lock (Gate)
        {
            error.WriteLine(Prefix + Volatile.Read(ref _step));
            error.Flush();
        }
    }
}
