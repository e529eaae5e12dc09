using System.Text;

namespace Planner.Executor.Distributed;

/// <summary>
/// Ranks that would drive the same GPU. Tasks of a scheduler that each see a single device take it as their own, which
/// is right when the scheduler bound one GPU to each task and wrong when every task sees the same one; NCCL then fails
/// only inside its first collective, naming neither rank. So before any communicator exists each rank publishes where it
/// runs (host name and the device's PCI address) in the rendezvous store, reads every other rank's, and refuses a layout
/// in which two ranks share a device.
/// </summary>
public static class DeviceClash
{
    private const string Key = "planner/device/";

    /// <summary>The first two ranks (by rank) whose identities are equal, or null when every rank has its own.</summary>
    public static (int First, int Second)? Find(IReadOnlyList<string> identities)
    {
        var seen = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int rank = 0; rank < identities.Count; rank++)
        {
            if (seen.TryGetValue(identities[rank], out int first))
                return (first, rank);
            seen[identities[rank]] = rank;
        }
        return null;
    }

    /// <summary>
    /// Publishes this rank's <paramref name="identity"/> (e.g. "node7 GPU 00000000:3b:00.0"), waits for every other
    /// rank's and throws when two ranks share one. Every rank of the world must call it.
    /// </summary>
    /// <exception cref="NotSupportedException">Two ranks would use the same device.</exception>
    public static void Check(Store store, int rank, int world, string identity)
    {
        store.Set(Key + rank, Encoding.UTF8.GetBytes(identity));
        var all = Enumerable.Range(0, world).Select(r => r == rank ? identity : Encoding.UTF8.GetString(store.Get(Key + r))).ToList();
        if (Find(all) is (int a, int b))
            throw new NotSupportedException(
                $"ranks {a} and {b} would both use {all[a]} (each task sees the same single device): bind one GPU to each task (srun --gpus-per-task=1, or CUDA_VISIBLE_DEVICES per task), or let every task see all of its machine's GPUs");
    }
}
