using System.Globalization;
using Planner.CostModel.Specs;
using Planner.Executor.Torch;

namespace Planner.Cli.Commands;

/// <summary>
/// run's <c>--device</c>: where the ranks train. <c>auto</c> (null type) takes CUDA when the libtorch shim sees
/// devices, else the CPU; <c>cuda</c> gives each rank of the machine its own device (its local index, or the
/// scheduler's local rank; a scheduled task that sees a single device takes it, as when one GPU is bound to each task;
/// tasks that all see the same single GPU are refused by the ranks before NCCL starts, see
/// <see cref="Planner.Executor.Distributed.DeviceClash"/>); <c>cuda:N</c> names one device (what the launcher hands
/// each rank process).
/// </summary>
public sealed record DeviceChoice(DeviceType? Type, int? Index = null)
{
    /// <summary>Reads a --device value.</summary>
    /// <exception cref="InputException">Not auto, cpu, cuda or cuda:N.</exception>
    public static DeviceChoice Parse(string value)
    {
        string v = value.Trim().ToLowerInvariant();
        if (v == "auto")
            return new DeviceChoice(Type: null);
        if (v == "cpu")
            return new DeviceChoice(DeviceType.Cpu);
        if (v == "cuda")
            return new DeviceChoice(DeviceType.Cuda);
        if (v.StartsWith("cuda:", StringComparison.Ordinal)
            && int.TryParse(v[5..], NumberStyles.None, CultureInfo.InvariantCulture, out int index) && index < 1024)
            return new DeviceChoice(DeviceType.Cuda, index);
        throw new InputException($"--device: '{value}' must be auto, cpu, cuda or cuda:N");
    }

    /// <summary>
    /// The device for <paramref name="localRanks"/> ranks of this machine, checked against the devices the shim sees.
    /// Under a scheduler this process is one rank: its local rank picks the device when it sees one per task of the
    /// machine; when it sees a single device (the scheduler bound one GPU to each task) that one is its own.
    /// </summary>
    /// <param name="cudaDevices">CUDA devices visible (default: asks the shim, which loads libtorch).</param>
    /// <param name="localRank">The scheduler's local rank of this task (default: <see cref="SchedulerLocalRank"/>).</param>
    /// <exception cref="InputException">CUDA asked for where there is none, or fewer devices than ranks.</exception>
    public DeviceChoice Resolve(int localRanks, bool scheduled, Func<int>? cudaDevices = null, Func<int>? localRank = null)
    {
        if (Type == DeviceType.Cpu)
            return this;
        int count = (cudaDevices ?? (() => TorchRuntime.CudaDevices))();
        int local = scheduled ? (localRank ?? SchedulerLocalRank)() : 0;
        // The scheduled task's device: its own when it sees only one, else the one its local rank indexes.
        int? task = !scheduled || count == 0 ? null : count == 1 ? 0 : local < count ? local : null;
        if (Type is null)
        {
            if (scheduled)
                return task is int t ? new DeviceChoice(DeviceType.Cuda, t) : new DeviceChoice(DeviceType.Cpu);
            return count > 0 && localRanks <= count ? new DeviceChoice(DeviceType.Cuda) : new DeviceChoice(DeviceType.Cpu);
        }
        string name = Index is int i ? $"cuda:{i}" : "cuda";
        if (count == 0)
            throw new InputException($"--device {name}: the libtorch shim sees no CUDA device (a CPU-only build: build it against a CUDA libtorch with -DPLANNER_WITH_CUDA=ON, README 'Training on GPUs')");
        if (Index is int named)
        {
            if (localRanks > 1)
                throw new InputException($"--device {name} names one device for {localRanks} ranks of this machine: use --device cuda to give each its own");
            if (named >= count)
                throw new InputException($"--device {name}: the shim sees {count} CUDA device(s), 0 to {count - 1}");
            return this;
        }
        if (scheduled)
            return task is int t ? new DeviceChoice(DeviceType.Cuda, t)
                : throw new InputException($"--device cuda: this task's local rank is {local} but the shim sees {count} CUDA device(s) (bind one GPU per task, or let each task see all of the machine's)");
        if (localRanks > count)
            throw new InputException($"--device cuda: {localRanks} ranks on this machine but the shim sees {count} CUDA device(s) (one device per rank)");
        return this;
    }

    /// <summary>The device of the rank with local index <paramref name="local"/> (auto: the CPU, unresolved).</summary>
    public Device Of(int local) => Type == DeviceType.Cuda ? Device.Cuda(Index ?? local) : Device.Cpu;

    /// <summary>The --device argument for the rank process with local index <paramref name="local"/>.</summary>
    public string RankArgument(int local) => Of(local).ToString();

    /// <summary>This task's rank on its machine under Slurm or Open MPI (0 without either).</summary>
    public static int SchedulerLocalRank()
    {
        foreach (var name in new[] { "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK", "LOCAL_RANK" })
            if (Environment.GetEnvironmentVariable(name) is { } v)
                return int.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out int local)
                    ? local : throw new InputException($"environment variable {name}: '{v}' is not a non-negative integer");
        return 0;
    }
}
