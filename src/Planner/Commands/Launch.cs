using System.Globalization;
using Planner.CostModel.Specs;

namespace Planner.Cli.Commands;

/// <summary>How this process takes part: all ranks of one machine, some of several, or one rank from Slurm/MPI.</summary>
/// <param name="LocalRanks">The ranks this process starts.</param>
/// <param name="Scheduled">One rank per task of a scheduler (Slurm, MPI), which binds tasks to cores itself.</param>
internal sealed record Launch(int[] LocalRanks, string MasterAddr, int MasterPort, bool Scheduled)
{
    /// <summary>
    /// This process's rank variable and its step's task count when srun started it as one task of a job step, else null.
    /// A batch script (sbatch) also sees <c>SLURM_PROCID=0</c> and the job's <c>SLURM_NTASKS</c>, but it is one process,
    /// not one task per rank: only srun sets <c>SLURM_STEP_NUM_TASKS</c> (the step's tasks, which may be fewer than the
    /// job's), so a command run straight from the batch script starts its ranks itself, as on a machine of its own.
    /// </summary>
    private static (string Rank, string Tasks, string TasksName)? SlurmTask() =>
        Environment.GetEnvironmentVariable("SLURM_PROCID") is { } rank && Environment.GetEnvironmentVariable("SLURM_STEP_NUM_TASKS") is { } tasks
            ? (rank, tasks, "SLURM_STEP_NUM_TASKS") : null;

    /// <summary>Inside a Slurm job's batch script (not a task of an srun step): what run and profile print, once.</summary>
    public static string? SlurmBatchNote() =>
        SlurmTask() is null && Environment.GetEnvironmentVariable("SLURM_JOB_ID") is { } job
        && (Environment.GetEnvironmentVariable("SLURM_NTASKS") is { } n && n != "1" || Environment.GetEnvironmentVariable("SLURM_JOB_NUM_NODES") is { } nodes && nodes != "1")
            ? $"planner: in Slurm job {job}'s batch script, not an srun step: starting the ranks on this machine only (use srun to start one task per rank across the job's nodes)"
            : null;

    /// <summary>The number of tasks a scheduler (Slurm, Open MPI) started, or null outside one.</summary>
    public static int? SchedulerWorld()
    {
        if (SlurmTask() is { } slurm)
            return Variable(slurm.TasksName, slurm.Tasks);
        if (Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_RANK") is not null && Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_SIZE") is { } os)
            return Variable("OMPI_COMM_WORLD_SIZE", os);
        return null;
    }

    /// <summary>Some ranks run elsewhere: rank 0 gathers every rank's lines to report the whole run.</summary>
    public bool Distributed(int world) => LocalRanks.Length < world;

    public static Launch From(int nnodes, int nodeRank, string addr, int? port, int world, string what = "the plan")
    {
        // Ranks from a scheduler: this process is one rank (as torchrun reads them).
        if (SlurmTask() is { } slurm)
            return FromScheduler(Variable("SLURM_PROCID", slurm.Rank), Variable(slurm.TasksName, slurm.Tasks), FirstSlurmHost() ?? addr, port, world, what);
        if (Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_RANK") is { } or && Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_SIZE") is { } os)
            return FromScheduler(Variable("OMPI_COMM_WORLD_RANK", or), Variable("OMPI_COMM_WORLD_SIZE", os), addr, port, world, what);
        if (SlurmBatchNote() is { } note)
            Console.Error.WriteLine(note);
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
        // The step's nodes (srun -N may use fewer than the job's), like "node[01-04],other": take the first host.
        var list = new[] { "SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST" }
            .Select(Environment.GetEnvironmentVariable).FirstOrDefault(v => !string.IsNullOrEmpty(v));
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
