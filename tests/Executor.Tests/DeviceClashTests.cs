using System.Net;
using System.Net.Sockets;
using Planner.Executor.Distributed;
using Xunit;

namespace Planner.Executor.Tests;

/// <summary>
/// Ranks that would share a GPU, or train on different kinds of device, are refused before any process group exists:
/// the check over the ranks' devices, and their exchange through a real TCPStore (one store per rank, as rank processes
/// hold them). Every run's ranks go through the exchange (CPU ranks too), so the parity suite runs it as well.
/// </summary>
public class DeviceClashTests
{
    private static RankDevice Gpu(string host, int index, string uuid) => new("cuda", uuid, $"{host} cuda:{index}");

    private static RankDevice Cpu(string host, int rank) => new("cpu", $"cpu rank {rank}", $"{host} cpu");

    [Fact]
    public void Problem_names_two_ranks_on_one_gpu_and_ranks_on_different_kinds_of_device()
    {
        Assert.Null(DeviceClash.Problem([Gpu("n0", 0, "GPU-a"), Gpu("n0", 1, "GPU-b"), Gpu("n1", 0, "GPU-c"), Gpu("n1", 1, "GPU-d")]));
        Assert.Null(DeviceClash.Problem([Cpu("n0", 0), Cpu("n0", 1), Cpu("n0", 2)]));
        // Each task sees one device, the same one: rank 2 is the first to repeat rank 0's.
        Assert.StartsWith("ranks 0 and 2 would both use GPU-a (n0 cuda:0; n0 cuda:0)",
            DeviceClash.Problem([Gpu("n0", 0, "GPU-a"), Gpu("n0", 0, "GPU-b"), Gpu("n0", 0, "GPU-a"), Gpu("n0", 0, "GPU-a")]));
        // The same index on two machines is two devices; a UUID seen on two machines (a container's host name) is one.
        Assert.Null(DeviceClash.Problem([Gpu("n0", 0, "GPU-a"), Gpu("n1", 0, "GPU-b")]));
        Assert.StartsWith("ranks 0 and 1 would both use GPU-a", DeviceClash.Problem([Gpu("c0", 0, "GPU-a"), Gpu("c1", 0, "GPU-a")]));
        // A task that fell back to the CPU among CUDA ranks.
        Assert.StartsWith("rank 0 trains on n0 cuda:0 but rank 3 on n1 cpu",
            DeviceClash.Problem([Gpu("n0", 0, "GPU-a"), Gpu("n0", 1, "GPU-b"), Gpu("n1", 0, "GPU-c"), Cpu("n1", 3)]));
    }

    public static TheoryData<string[], string?> Exchanges() => new()
    {
        { ["cuda GPU-a", "cuda GPU-b", "cuda GPU-c"], null },
        { ["cuda GPU-a", "cuda GPU-b", "cuda GPU-a"], "ranks 0 and 2 would both use GPU-a" },
        { ["cpu", "cpu", "cpu"], null },
        { ["cuda GPU-a", "cpu", "cuda GPU-c"], "rank 0 trains on n0 cuda:0 but rank 1 on n0 cpu" },
    };

    [Theory]
    [MemberData(nameof(Exchanges))]
    public async Task Every_rank_learns_the_others_devices_through_the_store_and_all_refuse_the_same_layouts(string[] devices, string? problem)
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        int world = devices.Length;
        using var done = new Barrier(world);
        string? Rank(int rank)
        {
            var parts = devices[rank].Split(' ');
            var device = parts[0] == "cuda" ? Gpu("n0", 0, parts[1]) : Cpu("n0", rank);
            using var store = Store.Tcp("127.0.0.1", port, world, rank == 0, TimeSpan.FromSeconds(30));
            try
            {
                DeviceClash.Check(store, rank, world, device);
                return null;
            }
            catch (NotSupportedException e)
            {
                return e.Message;
            }
            finally
            {
                done.SignalAndWait(TimeSpan.FromSeconds(30)); // rank 0's store serves the others until all have read
            }
        }
        var results = await Task.WhenAll(Enumerable.Range(0, world).Select(r => Task.Run(() => Rank(r))));
        foreach (var message in results)
        {
            if (problem is null)
                Assert.Null(message);
            else
                Assert.StartsWith(problem, message);
        }
    }
}
