using System.Diagnostics;
using Xunit;

namespace Planner.Cli.Tests;

/// <summary>Processes started together (the launchers of one multi-machine job) and waited for together.</summary>
internal static class Launched
{
    /// <summary>
    /// Reads each process's output as it comes, waits for all of them within <paramref name="limit"/> in all, then
    /// ends any still running (a launcher waiting for a peer that failed) and returns each one's exit code, output and
    /// error.
    /// </summary>
    public static (int Code, string Output, string Error)[] WaitAll(IReadOnlyList<Process> processes, TimeSpan limit)
    {
        var started = processes.Select(p => (P: p, Out: p.StandardOutput.ReadToEndAsync(), Err: p.StandardError.ReadToEndAsync())).ToList();
        try
        {
            var deadline = DateTime.UtcNow + limit;
            foreach (var s in started)
                Assert.True(s.P.WaitForExit(TimeSpan.FromMilliseconds(Math.Max(0, (deadline - DateTime.UtcNow).TotalMilliseconds))),
                    $"a launcher did not finish in {limit.TotalMinutes:G} minutes");
            return started.Select(s => (s.P.ExitCode, s.Out.Result, s.Err.Result)).ToArray();
        }
        finally
        {
            foreach (var s in started)
            {
                if (!s.P.HasExited)
                    s.P.Kill(entireProcessTree: true);
                s.P.Dispose();
            }
        }
    }
}
