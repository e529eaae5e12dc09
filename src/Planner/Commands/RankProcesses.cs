using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Planner.Cli.Commands;

/// <summary>
/// Starts rank processes of this planner (`dotnet planner.dll VERB ...`, one core each), waits for all, ends the
/// others as soon as one fails, leaves no orphan on any exit path, and reports the rank that failed first.
/// Shared by <c>run</c> and <c>profile</c>.
/// </summary>
public static class RankProcesses
{
    /// <summary>A free TCP port on loopback for the rendezvous.</summary>
    public static int FreePort()
    {
        var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        int port = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return port;
    }

    /// <summary>
    /// The memory allocator settings of every rank process (unless the caller's environment sets them). Training
    /// allocates and frees the same activation and gradient sizes every micro-batch; an allocator that hands freed
    /// pages back to the system (or places a block on pages never touched) makes each large tensor fault its pages in
    /// again, which on a virtual machine costs a third of a step and makes it vary by 2x between runs. jemalloc that
    /// never returns freed pages (as PyTorch CPU training preloads it) removes the faults; without it, glibc malloc
    /// set to keep freed memory removes most of them.
    /// </summary>
    public static IReadOnlyList<(string Key, string Value)> AllocatorSettings { get; } = Allocator();

    private static List<(string Key, string Value)> Allocator()
    {
        string[] jemallocPaths =
        [
            "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2", "/usr/lib64/libjemalloc.so.2", "/usr/lib/libjemalloc.so.2",
        ];
        if (OperatingSystem.IsLinux() && jemallocPaths.FirstOrDefault(File.Exists) is { } jemalloc)
            return [("LD_PRELOAD", jemalloc), ("MALLOC_CONF", "dirty_decay_ms:-1,muzzy_decay_ms:-1")];
        return
        [
            ("MALLOC_MMAP_THRESHOLD_", "33554432"), // 32 MiB, glibc's largest accepted value; also stops the dynamic threshold
            ("MALLOC_TRIM_THRESHOLD_", "4294967296"),
            ("MALLOC_TOP_PAD_", "268435456"),
        ];
    }

    /// <summary>A rank's standard error, its progress lines handed to <paramref name="progress"/> and left out.</summary>
    private static async Task<string> ReadErrors(Process p, int rank, Action<int, string>? progress)
    {
        var text = new System.Text.StringBuilder();
        while (await p.StandardError.ReadLineAsync() is { } line)
        {
            if (line.StartsWith(Profiling.ProfileRank.ProgressPrefix, StringComparison.Ordinal))
                progress?.Invoke(rank, line[Profiling.ProfileRank.ProgressPrefix.Length..]);
            else
                text.AppendLine(line);
        }
        return text.ToString();
    }

    /// <summary>Runs one process per (rank, arguments); returns each rank's standard output, in the given order.</summary>
    /// <param name="pin">Pin each process to its own cores (round-robin by rank); not where a scheduler binds the task.</param>
    /// <exception cref="RankFailedException">A rank exited non-zero or outlived <paramref name="limit"/>.</exception>
    /// <param name="progress">Given each line a rank writes to its standard error that starts with
    /// <see cref="Profiling.ProfileRank.ProgressPrefix"/> (without it), as it comes; such lines are no part of an error.</param>
    public static List<(int Rank, string Output)> Run(IReadOnlyList<(int Rank, IEnumerable<string> Args)> ranks, int threads, TimeSpan limit, bool pin = true,
        Action<int, string>? progress = null)
    {
        string self = typeof(RankProcesses).Assembly.Location;
        var processes = new List<(int Rank, Process P, Task<string> Out, Task<string> Err)>();
        var failures = new List<(int Rank, DateTime At, string Error)>();
        var deadline = DateTime.UtcNow + limit;
        try
        {
            for (int index = 0; index < ranks.Count; index++)
            {
                var (rank, args) = ranks[index];
                var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
                psi.ArgumentList.Add(self);
                foreach (var a in args)
                    psi.ArgumentList.Add(a);
                // One core per rank: OpenBLAS and OpenMP would otherwise start a thread per core in every rank.
                psi.Environment["OPENBLAS_NUM_THREADS"] = threads.ToString();
                psi.Environment["OMP_NUM_THREADS"] = threads.ToString();
                foreach (var (key, value) in AllocatorSettings)
                    if (Environment.GetEnvironmentVariable(key) is null)
                        psi.Environment[key] = value;
                // By the global rank: ranks of several "nodes" emulated on one machine then take different cores, and on
                // a real node the ranks still go round its cores.
                if (pin)
                    psi.Environment[CpuAffinity.Variable] = string.Join(',', CpuAffinity.CoresOf(rank, threads, Environment.ProcessorCount));
                var p = Process.Start(psi) ?? throw new InvalidOperationException("cannot start a rank process");
                processes.Add((rank, p, p.StandardOutput.ReadToEndAsync(), ReadErrors(p, rank, progress)));
            }
            var remaining = processes.ToList();
            while (remaining.Count > 0)
            {
                if (DateTime.UtcNow > deadline)
                    throw new RankFailedException($"rank {remaining[0].Rank} did not finish in {limit.TotalMinutes:F0} minutes");
                var done = remaining.FirstOrDefault(x => x.P.HasExited);
                if (done.P is null)
                {
                    Thread.Sleep(20);
                    continue;
                }
                remaining.Remove(done);
                if (done.P.ExitCode != 0)
                {
                    string err = done.Err.Result.Trim();
                    failures.Add((done.Rank, done.P.ExitTime, err.Length == 0 ? $"exit code {done.P.ExitCode}" : err.Split('\n').Last(l => l.Trim().Length > 0).Trim()));
                    foreach (var other in remaining)
                        Kill(other.P);
                }
            }
        }
        finally
        {
            foreach (var x in processes)
                Kill(x.P);
        }
        // The rank that failed first is the cause; the others were ended or lost their peers.
        if (failures.Count > 0)
        {
            var first = failures.MinBy(x => x.At);
            throw new RankFailedException($"rank {first.Rank} failed: {first.Error}");
        }
        return processes.Select(x => (x.Rank, x.Out.Result)).ToList();
    }

    private static void Kill(Process p)
    {
        try
        {
            if (!p.HasExited)
                p.Kill(entireProcessTree: true);
        }
        catch (InvalidOperationException)
        {
        }
    }
}
