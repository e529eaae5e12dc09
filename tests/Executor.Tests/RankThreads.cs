using Planner.Executor.Distributed;
using Planner.Executor.Torch;
using Xunit;

namespace Planner.Executor.Tests;

/// <summary>Ranks of one process group as threads of the test process: each joins a Gloo group over a shared store.</summary>
public static class RankThreads
{
    /// <summary>Runs <paramref name="body"/> on <paramref name="ranks"/> threads, each with its rank and its member of
    /// the group <paramref name="name"/> (in a dispose scope of its own); a rank's failure fails the test.</summary>
    public static void Run(int ranks, string name, Action<int, ProcessGroup> body)
    {
        int port = ProcessGroupTests.FreePort();
        using var server = Store.Tcp("127.0.0.1", port, ranks, true, TimeSpan.FromSeconds(60));
        var failures = new Exception?[ranks];
        var threads = Enumerable.Range(0, ranks).Select(rank => new Thread(() =>
        {
            try
            {
                using var scope = DisposeScope.Begin();
                using var store = Store.Tcp("127.0.0.1", port, ranks, false, TimeSpan.FromSeconds(60));
                using var group = ProcessGroup.Gloo(store, name, rank, ranks, TimeSpan.FromSeconds(60));
                body(rank, group);
            }
            catch (Exception e)
            {
                failures[rank] = e;
            }
        })).ToList();
        threads.ForEach(t => t.Start());
        foreach (var t in threads)
            Assert.True(t.Join(TimeSpan.FromMinutes(2)), $"a {name} rank's thread hung");
        foreach (var f in failures)
            if (f is not null)
                throw new Xunit.Sdk.XunitException(f.ToString());
    }
}
