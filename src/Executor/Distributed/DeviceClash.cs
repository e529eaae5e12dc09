using Planner.Executor.Torch;

namespace Planner.Executor.Distributed;

/// <summary>Where a rank trains, as the other ranks must know it.</summary>
/// <param name="Kind">"cuda" or "cpu".</param>
/// <param name="Identity">What two ranks must not share: a CUDA device's UUID (unique across machines, a MIG slice
/// its own); a CPU rank's own name (CPU ranks share cores by design).</param>
/// <param name="Label">Where it is, for messages: host name and device.</param>
public readonly record struct RankDevice(string Kind, string Identity, string Label)
{
    /// <summary>The device of <paramref name="rank"/> on this machine.</summary>
    public static RankDevice Of(Device device, int rank) => device.Type == DeviceType.Cuda
        ? new("cuda", TorchRuntime.CudaDeviceUuid(device.Index), $"{Environment.MachineName} cuda:{device.Index}")
        : new("cpu", $"cpu rank {rank}", $"{Environment.MachineName} cpu");
}

/// <summary>
/// Ranks that would drive the same GPU, or train on different kinds of device. Tasks of a scheduler that each see a
/// single device take it as their own, which is right when the scheduler bound one GPU to each task and wrong when
/// every task sees the same one; NCCL then fails only inside its first collective, naming neither rank. A task that
/// sees fewer devices than its machine's ranks falls back to the CPU under --device auto, and the others would wait for
/// it in an NCCL group it never joins. So before any process group exists each rank publishes its device in the
/// rendezvous store, reads every other rank's, and all refuse such a layout with the same message.
/// </summary>
public static class DeviceClash
{
    private const string Key = "planner/device/";

    /// <summary>What is wrong with the ranks' devices (indexed by rank), or null when nothing is.</summary>
    public static string? Problem(IReadOnlyList<RankDevice> devices)
    {
        for (int b = 1; b < devices.Count; b++)
            if (devices[b].Kind != devices[0].Kind)
                return $"rank 0 trains on {devices[0].Label} but rank {b} on {devices[b].Label}: every rank must train on the same kind of device (under --device auto a task that sees fewer CUDA devices than its machine's ranks takes the CPU; --device cuda says why)";
        var seen = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int rank = 0; rank < devices.Count; rank++)
        {
            if (seen.TryGetValue(devices[rank].Identity, out int first))
                return $"ranks {first} and {rank} would both use {devices[rank].Identity} ({devices[first].Label}; {devices[rank].Label}): bind one GPU to each task (srun --gpus-per-task=1, or CUDA_VISIBLE_DEVICES per task), or let every task see all of its machine's GPUs";
            seen[devices[rank].Identity] = rank;
        }
        return null;
    }

    /// <summary>
    /// Publishes this rank's device, waits for every other rank's and throws when <see cref="Problem"/> finds one.
    /// Every rank of the world must call it, before it joins any process group.
    /// </summary>
    /// <exception cref="NotSupportedException">Two ranks would share a GPU, or the ranks' kinds of device differ.</exception>
    public static void Check(Store store, int rank, int world, RankDevice device)
    {
        var all = store.AllGather(Key, rank, world, $"{device.Kind}\n{device.Identity}\n{device.Label}")
            .Select(text => text.Split('\n')).Select(parts => new RankDevice(parts[0], parts[1], parts[2])).ToList();
        if (Problem(all) is { } problem)
            throw new NotSupportedException(problem);
    }
}
