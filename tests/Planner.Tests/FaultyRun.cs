using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Planner.Cli.Tests;

/// <summary>
/// One `planner` process with the PLANNER_FAULT test hook set, watched through /proc while it runs: the rank processes
/// it started, when rank 1 stopped (SIGSTOP) or vanished, and after its exit which of them are left and whether the
/// rendezvous port is free again.
/// </summary>
/// <param name="Ranks">Every rank process seen (pids).</param>
/// <param name="FaultToExit">From rank 1's first process stopping or ending to the launcher's exit; null if it never did.</param>
/// <param name="Left">Rank processes still there (not zombies) a moment after the launcher's exit.</param>
/// <param name="Port">The rendezvous port of the last attempt the ranks were given (0: none seen).</param>
internal sealed record FaultyRun(int Code, string Output, string Error, IReadOnlyList<int> Ranks, TimeSpan? FaultToExit, IReadOnlyList<int> Left, int Port, bool PortFree)
{
    /// <summary>Runs <c>planner ARGS</c> with <c>PLANNER_FAULT=fault</c> (none: null) and watches it.</summary>
    public static FaultyRun Start(string[] args, string? fault)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "planner.dll"));
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        if (fault is not null)
            psi.Environment["PLANNER_FAULT"] = fault;
        using var p = Process.Start(psi)!;
        var output = p.StandardOutput.ReadToEndAsync();
        var error = p.StandardError.ReadToEndAsync();
        var clock = Stopwatch.StartNew();
        var ranks = new Dictionary<int, string[]>();
        int? victim = null;
        TimeSpan? faultAt = null;
        while (!p.HasExited && clock.Elapsed < TimeSpan.FromMinutes(3))
        {
            foreach (int pid in Descendants(p.Id))
                if (!ranks.ContainsKey(pid) && CommandLine(pid) is { } cmd && cmd.Contains("rank"))
                    ranks[pid] = cmd;
            victim ??= ranks.FirstOrDefault(r => Flag(r.Value, "--rank") == "1").Key is int v and > 0 ? v : null;
            if (victim is int pid1 && faultAt is null && State(pid1) is null or 'T' or 'Z')
                faultAt = clock.Elapsed;
            Thread.Sleep(50);
        }
        if (!p.WaitForExit(TimeSpan.FromSeconds(1)))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"planner {string.Join(' ', args)} did not finish in 3 minutes");
        }
        var exit = clock.Elapsed;
        Thread.Sleep(500);
        var left = ranks.Keys.Where(pid => State(pid) is { } s && s != 'Z' && CommandLine(pid)?.SequenceEqual(ranks[pid]) == true).ToList();
        int port = ranks.Values.Select(c => int.TryParse(Flag(c, "--master-port"), out int x) ? x : 0).LastOrDefault();
        return new FaultyRun(p.ExitCode, output.Result, error.Result, ranks.Keys.ToList(), faultAt is null ? null : exit - faultAt, left, port, port == 0 || IsFree(port));
    }

    private static string? Flag(string[] cmd, string flag) => Array.IndexOf(cmd, flag) is int i and >= 0 && i + 1 < cmd.Length ? cmd[i + 1] : null;

    private static bool IsFree(int port)
    {
        try
        {
            var l = new TcpListener(IPAddress.Loopback, port);
            l.Start();
            l.Stop();
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    /// <summary>A process's arguments, or null once it is gone.</summary>
    internal static string[]? CommandLine(int pid)
    {
        try
        {
            return File.ReadAllText($"/proc/{pid}/cmdline").Split('\0', StringSplitOptions.RemoveEmptyEntries);
        }
        catch (IOException)
        {
            return null;
        }
    }

    /// <summary>A process's state letter (R, S, T stopped, Z zombie...), or null once it is gone.</summary>
    internal static char? State(int pid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            return stat[(stat.LastIndexOf(')') + 2)..][0];
        }
        catch (IOException)
        {
            return null;
        }
    }

    /// <summary>Every process below <paramref name="root"/>.</summary>
    internal static List<int> Descendants(int root)
    {
        var parent = new Dictionary<int, int>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
            if (int.TryParse(Path.GetFileName(dir), out int pid))
            {
                try
                {
                    string stat = File.ReadAllText(Path.Combine(dir, "stat"));
                    parent[pid] = int.Parse(stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[1]);
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                }
            }
        var found = new List<int>();
        var frontier = new Queue<int>([root]);
        while (frontier.Count > 0)
        {
            int at = frontier.Dequeue();
            foreach (var (pid, ppid) in parent)
                if (ppid == at)
                {
                    found.Add(pid);
                    frontier.Enqueue(pid);
                }
        }
        return found;
    }
}
