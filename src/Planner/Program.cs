using Planner.Cli.Commands;

namespace Planner.Cli;

/// <summary>Entry point: parse, dispatch, and map failures to the exit codes of CONTRACTS.md.</summary>
public static class Program
{
    /// <summary>Runs the CLI; returns 0 on success, 2 on bad input, 1 on an internal error.</summary>
    public static int Main(string[] args)
    {
        CpuAffinity.ApplyFromEnvironment();
        return Commands.Cli.Run(args, Console.Out, Console.Error);
    }
}
