using System.Globalization;
using Planner.CostModel.Specs;

namespace Planner.Cli.Commands;

/// <summary>How this process takes part: all ranks of one machine, some of several, or one rank from Slurm/MPI.</summary>
/// <param name="LocalRanks">The ranks this process starts.</param>
/// <param name="Scheduled">One rank per task of a scheduler (Slurm, MPI), which binds tasks to cores itself.</param>
internal sealed record Launch(int[] LocalRanks, string MasterAddr, int MasterPort, bool Scheduled)
{
    /// <summary>The number of tasks a scheduler (Slurm, Open MPI) started, or null outside one.</summary>
    public static int? SchedulerWorld()
    {
        if (Environment.GetEnvironmentVariable("SLURM_PROCID") is not null && Environment.GetEnvironmentVariable("SLURM_NTASKS") is { } sn)
            return Variable("SLURM_NTASKS", sn);
        if (Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_RANK") is not null && Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_SIZE") is { } os)
            return Variable("OMPI_COMM_WORLD_SIZE", os);
        return null;
    }

    /// <summary>Some ranks run elsewhere: rank 0 gathers every rank's lines to report the whole run.</summary>
    public bool Distributed(int world) => LocalRanks.Length < world;

    public static Launch From(int nnodes, int nodeRank, string addr, int? port, int world, string what = "the plan")
    {
        // Ranks from a scheduler: this process is one rank (as torchrun reads them).
        if (Environment.GetEnvironmentVariable("SLURM_PROCID") is { } sp && Environment.GetEnvironmentVariable("SLURM_NTASKS") is { } sn)
            return FromScheduler(Variable("SLURM_PROCID", sp), Variable("SLURM_NTASKS", sn), FirstSlurmHost() ?? addr, port, world, what);
        if (Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_RANK") is { } or && Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_SIZE") is { } os)
            return FromScheduler(Variable("OMPI_COMM_WORLD_RANK", or), Variable("OMPI_COMM_WORLD_SIZE", os), addr, port, world, what);
        if (nnodes < 1 || world % nnodes != 0)
            throw new InputException($"--nnodes: {nnodes} must divide {what}'s {world} ranks");
        if (nodeRank < 0 || nodeRank >= nnodes)
            throw new InputException($"--node-rank: {nodeRank} must be from 0 to {nnodes - 1}");
        int perNode = world / nnodes;
        return new Launch(Enumerable.Range(nodeRank * perNode, perNode).ToArray(), addr, port ?? (nnodes > 1 ? 29500 : RankProcesses.FreePort()), false);
    }

    private static int Variable(string name, string value) =>
        int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out int v)
            ? v : throw new InputException($"environment variable {name}: '{value}' is not a non-negative integer");

    private static Launch FromScheduler(int rank, int size, string addr, int? port, int world, string what)
    {
        if (size != world)
            throw new InputException($"the scheduler started {size} tasks but {what} has {world} ranks");
        if (rank >= size)
            throw new InputException($"the scheduler's rank {rank} is not below its {size} tasks");
        return new Launch([rank], addr, port ?? 29500, true);
    }

    private static string? FirstSlurmHost()
    {
        // SLURM_NODELIST like "node[01-04],other": take the first host.
        var list = Environment.GetEnvironmentVariable("SLURM_NODELIST");
        if (string.IsNullOrEmpty(list))
            return null;
        int bracket = list.IndexOf('[');
        int comma = list.IndexOf(',');
        if (bracket < 0 || (comma >= 0 && comma < bracket))
            return comma >= 0 ? list[..comma] : list;
        string prefix = list[..bracket];
        string first = list[(bracket + 1)..].Split(',', '-', ']')[0];
        return prefix + first;
    }
}
