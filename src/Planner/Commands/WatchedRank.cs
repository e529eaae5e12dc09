using System.Diagnostics;
using System.Globalization;
using System.Text;
using Planner.Executor.Training;

namespace Planner.Cli.Commands;

/// <summary>How a launcher watches its ranks: the heartbeat timeout (run --timeout) and the attempt they belong to
/// (0: the first run, n: the n-th restart).</summary>
public sealed record RankWatch(TimeSpan Heartbeat, int Attempt = 0)
{
    /// <summary>Ten minutes, no restart.</summary>
    public static RankWatch Default { get; } = new(TimeSpan.FromSeconds(TrainOptions.DefaultTimeoutSeconds));
}

/// <summary>
/// One rank process as its launcher watches it: its output, its errors without the heartbeat and progress lines, when
/// it was last heard from and at which step (<see cref="RankLiveness"/>), and the line that says how it failed.
/// </summary>
internal sealed class WatchedRank
{
    private readonly StringBuilder _errors = new();
    private long _heard = Stopwatch.GetTimestamp();
    private int _step = -1;

    public WatchedRank(int rank, Process process, Action<int, string>? progress)
    {
        Rank = rank;
        Process = process;
        Output = process.StandardOutput.ReadToEndAsync();
        Errors = ReadErrors(progress);
    }

    public int Rank { get; }

    public Process Process { get; }

    /// <summary>The rank's standard output, whole once it exits.</summary>
    public Task<string> Output { get; }

    /// <summary>Completes when the rank's standard error closes.</summary>
    private Task Errors { get; }

    /// <summary>Time since the rank's last heartbeat (since its start before the first).</summary>
    public TimeSpan Silence => Stopwatch.GetElapsedTime(Interlocked.Read(ref _heard));

    private string Where => Volatile.Read(ref _step) is int s and >= 0 ? $"at step {s}" : "before its first step";

    /// <summary>The line of a rank silent for longer than <paramref name="heartbeat"/>.</summary>
    public string Hung(TimeSpan heartbeat) =>
        $"rank {Rank} hung {Where}: no heartbeat for {Silence.TotalSeconds:F0} s (--timeout {heartbeat.TotalSeconds.ToString("G", CultureInfo.InvariantCulture)} s)";

    /// <summary>The line of a rank that exited non-zero: its signal or exit code, and its last error line.</summary>
    public string Died()
    {
        Errors.Wait(TimeSpan.FromSeconds(5));
        string last;
        lock (_errors)
            last = _errors.ToString().Split('\n').LastOrDefault(l => l.Trim().Length > 0)?.Trim() ?? "";
        int code = Process.ExitCode;
        // .NET reports a process ended by signal N as exit code 128 + N, as shells do.
        string how = code is > 128 and <= 128 + 64
            ? $"died with signal {code - 128}{(Signals.TryGetValue(code - 128, out var name) ? $" ({name})" : "")}"
            : $"failed (exit code {code})";
        return $"rank {Rank} {how} {Where}" + (last.Length > 0 ? $": {last}" : "");
    }

    private static readonly Dictionary<int, string> Signals = new()
    {
        [1] = "SIGHUP",
        [2] = "SIGINT",
        [4] = "SIGILL",
        [6] = "SIGABRT",
        [7] = "SIGBUS",
        [8] = "SIGFPE",
        [9] = "SIGKILL",
        [11] = "SIGSEGV",
        [15] = "SIGTERM",
    };

    /// <summary>Reads the rank's standard error: heartbeats are noted, progress lines handed to
    /// <paramref name="progress"/>, the rest kept as its errors.</summary>
    private async Task ReadErrors(Action<int, string>? progress)
    {
        while (await Process.StandardError.ReadLineAsync() is { } line)
        {
            if (line.StartsWith(RankLiveness.Prefix, StringComparison.Ordinal))
            {
                if (int.TryParse(line.AsSpan(RankLiveness.Prefix.Length), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int step))
                    Volatile.Write(ref _step, step);
                Interlocked.Exchange(ref _heard, Stopwatch.GetTimestamp());
            }
            else if (line.StartsWith(Profiling.ProfileRank.ProgressPrefix, StringComparison.Ordinal))
                progress?.Invoke(Rank, line[Profiling.ProfileRank.ProgressPrefix.Length..]);
            else
                lock (_errors)
                    _errors.AppendLine(line);
        }
    }
}
