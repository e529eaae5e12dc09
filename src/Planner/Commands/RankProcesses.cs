using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Planner.Executor.Training;

namespace Planner.Cli.Commands;

/// <summary>
/// Starts rank processes of this planner (`dotnet planner.dll VERB ...`, one core each), waits for all, ends the
/// others as soon as one fails or falls silent (no heartbeat, <see cref="RankLiveness"/>), leaves no orphan on any exit
/// path, and reports the rank that failed first.
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

    /// <summary>Runs one process per (rank, arguments); returns each rank's standard output, in the given order.</summary>
    /// <param name="pin">Pin each process to its own cores (round-robin by rank); not where a scheduler binds the task.</param>
    /// <param name="watch">How long a rank may go without a heartbeat, and the attempt the ranks belong to.</param>
    /// <exception cref="RankFailedException">A rank exited non-zero, fell silent for the watch's heartbeat timeout or
    /// outlived <paramref name="limit"/>; every rank has been ended.</exception>
    /// <param name="progress">Given each line a rank writes to its standard error that starts with
    /// <see cref="Profiling.ProfileRank.ProgressPrefix"/> (without it), as it comes; such lines are no part of an error.</param>
    public static List<(int Rank, string Output)> Run(IReadOnlyList<(int Rank, IEnumerable<string> Args)> ranks, int threads, TimeSpan limit, bool pin = true,
        Action<int, string>? progress = null, RankWatch? watch = null)
    {
        watch ??= RankWatch.Default;
        string self = typeof(RankProcesses).Assembly.Location;
        var processes = new List<WatchedRank>();
        string? failure = null;
        bool badInput = false;
        try
        {
            foreach (var (rank, args) in ranks)
            {
                var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
                psi.ArgumentList.Add(self);
                foreach (var a in args)
                    psi.ArgumentList.Add(a);
                Configure(psi, rank, threads, pin, watch.Attempt);
                var p = Process.Start(psi) ?? throw new InvalidOperationException("cannot start a rank process");
                processes.Add(new WatchedRank(rank, p, progress));
            }
            failure = Supervise(processes, watch.Heartbeat, DateTime.UtcNow + limit, limit, out badInput);
        }
        finally
        {
            foreach (var x in processes)
                Kill(x.Process);
            // Ended, not only signalled: no rank outlives the launcher's answer (nor holds the rendezvous port).
            foreach (var x in processes)
                x.Process.WaitForExit(TimeSpan.FromSeconds(10));
        }
        if (failure is not null)
            throw new RankFailedException(failure, badInput);
        return processes.Select(x => (x.Rank, x.Output.Result)).ToList();
    }

    /// <summary>A rank process's environment: threads, allocator, cores, and what its heartbeat and test hook need.</summary>
    private static void Configure(ProcessStartInfo psi, int rank, int threads, bool pin, int attempt)
    {
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
        psi.Environment[RankLiveness.LauncherVariable] = Environment.ProcessId.ToString();
        psi.Environment[RankFault.AttemptVariable] = attempt.ToString();
    }

    /// <summary>
    /// Waits for every rank; returns null when all exited 0, else the line that names the rank that failed first (a
    /// rank that exited non-zero or one silent for <paramref name="heartbeat"/>) once it has ended the others.
    /// </summary>
    private static string? Supervise(List<WatchedRank> processes, TimeSpan heartbeat, DateTime deadline, TimeSpan limit, out bool badInput)
    {
        badInput = false;
        var remaining = processes.ToList();
        while (remaining.Count > 0)
        {
            if (DateTime.UtcNow > deadline)
                return $"rank {remaining[0].Rank} did not finish in {limit.TotalMinutes:F0} minutes";
            var silent = remaining.Where(x => !x.Process.HasExited).MaxBy(x => x.Silence);
            if (silent is not null && silent.Silence > heartbeat)
                return silent.Hung(heartbeat);
            var done = remaining.FirstOrDefault(x => x.Process.HasExited);
            if (done is null)
            {
                Thread.Sleep(20);
                continue;
            }
            remaining.Remove(done);
            if (done.Process.ExitCode != 0)
            {
                // A peer that stopped beating well before is the cause of this rank's failed collective, not this rank.
                var quiet = TimeSpan.FromTicks(Math.Max(heartbeat.Ticks / 2, TimeSpan.FromSeconds(3).Ticks));
                var hung = remaining.Where(x => !x.Process.HasExited && x.Silence > quiet).MaxBy(x => x.Silence);
                if (hung is not null)
                    return hung.Hung(heartbeat);
                // A rank that refused its input (exit 2, one line) fails every attempt alike: no restart helps.
                badInput = done.Process.ExitCode == 2;
                return done.Died();
            }
        }
        return null;
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
