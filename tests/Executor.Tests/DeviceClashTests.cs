using System.Net;
using System.Net.Sockets;
using Planner.Executor.Distributed;
using Xunit;

namespace Planner.Executor.Tests;

/// <summary>
/// Ranks that would share a GPU are refused before NCCL sees them: the search over the identities, and the exchange of
/// identities through a real TCPStore (one store per rank, as rank processes hold them).
/// </summary>
public class DeviceClashTests
{
    [Fact]
    public void Find_names_the_first_two_ranks_with_the_same_device()
    {
        Assert.Null(DeviceClash.Find(["n0 GPU 0", "n0 GPU 1", "n1 GPU 0", "n1 GPU 1"]));
        Assert.Equal((0, 2), DeviceClash.Find(["n0 GPU 0", "n0 GPU 1", "n0 GPU 0", "n0 GPU 0"]));
        Assert.Equal((1, 3), DeviceClash.Find(["n0 GPU 0", "n0 GPU 1", "n1 GPU 1", "n0 GPU 1"]));
        Assert.Null(DeviceClash.Find(["n0 GPU 0"]));
    }

    [Theory]
    [InlineData(new[] { "n0 GPU 00000000:3b:00.0", "n0 GPU 00000000:5e:00.0", "n1 GPU 00000000:3b:00.0" }, null)]
    [InlineData(new[] { "n0 GPU 00000000:3b:00.0", "n0 GPU 00000000:5e:00.0", "n0 GPU 00000000:3b:00.0" }, "ranks 0 and 2 would both use n0 GPU 00000000:3b:00.0")]
    public async Task Every_rank_learns_the_others_devices_through_the_store_and_all_refuse_a_shared_one(string[] identities, string? clash)
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        int world = identities.Length;
        using var done = new Barrier(world);
        string? Rank(int rank)
        {
            using var store = Store.Tcp("127.0.0.1", port, world, rank == 0, TimeSpan.FromSeconds(30));
            try
            {
                DeviceClash.Check(store, rank, world, identities[rank]);
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
            if (clash is null)
                Assert.Null(message);
            else
                Assert.StartsWith(clash, message);
        }
    }
}
