using System.Globalization;
using Planner.CostModel.Specs;
using Planner.Executor.Torch;

namespace Planner.Cli.Commands;

/// <summary>
/// run's <c>--device</c>: where the ranks train. <c>auto</c> (null type) takes CUDA when the libtorch shim sees
/// devices, else the CPU; <c>cuda</c> gives each rank of the machine its own device (its local index, or the
/// scheduler's local rank); <c>cuda:N</c> names one device (what the launcher hands each rank process).
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
    /// The device type for <paramref name="localRanks"/> ranks of this machine (one rank under a scheduler, whose local
    /// rank picks the device), checked against the devices the shim sees.
    /// </summary>
    /// <param name="cudaDevices">CUDA devices visible (default: asks the shim, which loads libtorch).</param>
    /// <exception cref="InputException">CUDA asked for where there is none, or fewer devices than ranks.</exception>
    public DeviceChoice Resolve(int localRanks, bool scheduled, Func<int>? cudaDevices = null)
    {
        if (Type == DeviceType.Cpu)
            return this;
        int count = (cudaDevices ?? (() => TorchRuntime.CudaDevices))();
        if (Type is null)
            return count > 0 && (scheduled ? SchedulerLocalRank() < count : localRanks <= count) ? new DeviceChoice(DeviceType.Cuda) : new DeviceChoice(DeviceType.Cpu);
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
        int needed = scheduled ? SchedulerLocalRank() + 1 : localRanks;
        if (needed > count)
            throw new InputException(scheduled
                ? $"--device cuda: this task's local rank is {needed - 1} but the shim sees {count} CUDA device(s)"
                : $"--device cuda: {localRanks} ranks on this machine but the shim sees {count} CUDA device(s) (one device per rank)");
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
