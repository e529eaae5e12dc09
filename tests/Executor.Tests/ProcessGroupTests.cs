using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Xunit;

namespace Planner.Executor.Tests;

/// <summary>
/// Real rank processes on loopback (RankWorker, one process per rank, a TCPStore rendezvous, Gloo): every collective
/// is checked by each rank against the values it must produce.
/// </summary>
public class ProcessGroupTests
{
    internal static int FreePort()
    {
        var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        int port = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return port;
    }

    private static (int Code, string Output)[] RunRanks(string test, int world, TimeSpan limit)
    {
        int port = FreePort();
        string worker = Path.Combine(AppContext.BaseDirectory, "RankWorker.dll");
        var processes = Enumerable.Range(0, world).Select(r =>
        {
            var psi = new ProcessStartInfo("dotnet", [worker, test, r.ToString(), world.ToString(), port.ToString()])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            return Process.Start(psi)!;
        }).ToList();
        var outputs = processes.Select(p => (Out: p.StandardOutput.ReadToEndAsync(), Err: p.StandardError.ReadToEndAsync())).ToList();
        var deadline = DateTime.UtcNow + limit;
        var results = new (int, string)[world];
        for (int r = 0; r < world; r++)
        {
            var p = processes[r];
            if (!p.WaitForExit((int)Math.Max(0, (deadline - DateTime.UtcNow).TotalMilliseconds)))
            {
                foreach (var q in processes.Where(q => !q.HasExited))
                    q.Kill(entireProcessTree: true);
                Assert.Fail($"{test}: rank {r} still running after {limit.TotalSeconds} s (a hang)");
            }
            results[r] = (p.ExitCode, outputs[r].Out.Result + outputs[r].Err.Result);
        }
        return results;
    }

    [Theory]
    [InlineData("allreduce", 2)]
    [InlineData("allreduce", 4)]
    [InlineData("allgather", 2)]
    [InlineData("allgather", 4)]
    [InlineData("reduce_scatter", 2)]
    [InlineData("reduce_scatter", 4)]
    [InlineData("alltoall", 2)]
    [InlineData("alltoall", 4)]
    [InlineData("broadcast", 4)]
    [InlineData("sendrecv", 2)]
    [InlineData("sendrecv", 4)]
    [InlineData("subgroups", 4)]
    [InlineData("sharded_reduce", 2)]
    [InlineData("sharded_reduce", 4)]
    public void Collective_values_are_right_on_every_rank(string test, int world)
    {
        var results = RunRanks(test, world, TimeSpan.FromSeconds(90));
        for (int r = 0; r < world; r++)
            Assert.True(results[r].Code == 0, $"{test} on {world} ranks, rank {r} exited {results[r].Code}: {results[r].Output}");
    }

    [Fact]
    public void A_missing_peer_surfaces_as_an_error_not_a_hang()
    {
        var results = RunRanks("timeout", 2, TimeSpan.FromSeconds(60));
        Assert.True(results[0].Code == 0, $"rank 0 exited {results[0].Code}: {results[0].Output}");
        Assert.Contains("timed out as expected", results[0].Output);
    }
}
