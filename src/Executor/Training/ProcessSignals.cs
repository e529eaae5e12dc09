using System.Runtime.InteropServices;

namespace Planner.Executor.Training;

/// <summary>The few POSIX process calls a rank makes on itself (Linux's libc).</summary>
internal static partial class ProcessSignals
{
    /// <summary>SIGKILL: ends a process at once, stopped or not.</summary>
    public const int Kill = 9;

    /// <summary>SIGSTOP: stops every thread of a process.</summary>
    public const int Stop = 19;

    /// <summary>Sends <paramref name="signal"/> to this process.</summary>
    public static void ToSelf(int signal) => Send(Environment.ProcessId, signal);

    [LibraryImport("libc.so.6", EntryPoint = "kill")]
    private static partial int Send(int pid, int signal);

    /// <summary>The parent's process id (1 or a subreaper's once the parent is gone).</summary>
    [LibraryImport("libc.so.6", EntryPoint = "getppid")]
    public static partial int ParentId();
}
