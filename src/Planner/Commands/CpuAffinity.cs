using System.Runtime.InteropServices;

namespace Planner.Cli.Commands;

/// <summary>
/// Pins a rank process to its own cores (Linux): every thread that exists now, and through inheritance every thread
/// started later (the collectives' I/O threads, BLAS), runs on the cores given. Without it the scheduler may wake a
/// rank on its peer's core after a collective and leave both ranks sharing one core for a while, which makes step
/// times of the same plan differ by up to 2x from run to run.
/// </summary>
public static partial class CpuAffinity
{
    /// <summary>Environment variable through which <see cref="RankProcesses"/> hands a rank its cores ("0", "2,3").</summary>
    public const string Variable = "PLANNER_CPUS";

    /// <summary>The cores of the <paramref name="index"/>-th local process of <paramref name="threads"/> threads each,
    /// round-robin over this machine's cores.</summary>
    public static int[] CoresOf(int index, int threads, int cores) =>
        Enumerable.Range(0, threads).Select(j => (index * threads + j) % cores).Distinct().ToArray();

    /// <summary>Pins this process to the cores named in <see cref="Variable"/>, if it is set; silent where the OS
    /// refuses (the process then runs unpinned, as before).</summary>
    public static void ApplyFromEnvironment()
    {
        if (Environment.GetEnvironmentVariable(Variable) is not { Length: > 0 } spec)
            return;
        Pin(spec.Split(',', StringSplitOptions.RemoveEmptyEntries).Select(part => int.TryParse(part, out int cpu) ? cpu : -1));
    }

    /// <summary>Pins every thread of this process (and so every thread started later) to <paramref name="cores"/>;
    /// silent where the OS refuses or no core is valid.</summary>
    public static void Pin(IEnumerable<int> cores)
    {
        if (!OperatingSystem.IsLinux())
            return;
        ulong mask = 0;
        foreach (int cpu in cores)
            if (cpu is >= 0 and < 64)
                mask |= 1UL << cpu;
        if (mask == 0)
            return;
        try
        {
            foreach (var task in Directory.EnumerateDirectories("/proc/self/task"))
                if (int.TryParse(Path.GetFileName(task), out int tid))
                    _ = sched_setaffinity(tid, (nint)sizeof(ulong), ref mask);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int sched_setaffinity(int pid, nint cpusetsize, ref ulong mask);
}
