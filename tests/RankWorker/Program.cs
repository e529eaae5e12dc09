using Planner.CostModel.Comm;
using Planner.CostModel.Plans;
using Planner.CostModel.Specs;
using Planner.Executor.Distributed;
using Planner.Executor.Torch;

namespace Planner.RankWorker;

/// <summary>
/// One rank of the process-group tests: `RankWorker CASE RANK WORLD PORT`. Checks the collective's values itself and
/// exits 0, or prints what differed and exits 1 (3 when an expected error did not happen).
/// </summary>
public static class Program
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    public static int Main(string[] args)
    {
        string test = args[0];
        int rank = int.Parse(args[1]), world = int.Parse(args[2]), port = int.Parse(args[3]);
        try
        {
            TorchRuntime.Threads = 1;
            var timeout = test == "timeout" ? TimeSpan.FromSeconds(3) : Timeout;
            using var store = Store.Tcp("127.0.0.1", port, world, rank == 0, Timeout);
            using var pg = ProcessGroup.Gloo(store, "world", rank, world, timeout);
            using var scope = DisposeScope.Begin();
            Run(test, pg, store, rank, world);
            Console.WriteLine($"rank {rank}: ok");
            return 0;
        }
        catch (CheckFailed e)
        {
            Console.Error.WriteLine($"rank {rank}: {e.Message}");
            return 1;
        }
    }

    private sealed class CheckFailed(string message) : Exception(message);

    private static void Expect(IReadOnlyList<float> expected, IReadOnlyList<float> actual, string what)
    {
        if (expected.Count != actual.Count || expected.Where((v, i) => Math.Abs(v - actual[i]) > 1e-6).Any())
            throw new CheckFailed($"{what}: expected [{string.Join(", ", expected)}], got [{string.Join(", ", actual)}]");
    }

    private static float[] Values(int rank, int n) => Enumerable.Range(0, n).Select(i => (float)(rank * 10 + i)).ToArray();

    private static void Run(string test, ProcessGroup pg, Store store, int rank, int world)
    {
        switch (test)
        {
            case "allreduce":
                {
                    var t = Tensor.From(Values(rank, 4), 4);
                    pg.AllReduce(t);
                    Expect(Enumerable.Range(0, 4).Select(i => (float)Enumerable.Range(0, world).Sum(r => r * 10 + i)).ToArray(), t.ToFloatArray(), "sum");
                    var m = Tensor.From(Values(rank, 4), 4);
                    pg.AllReduce(m, ReduceOp.Max);
                    Expect(Values(world - 1, 4), m.ToFloatArray(), "max");
                    var a = Tensor.From(Values(rank, 4), 4);
                    using (var w = pg.AllReduceAsync(a))
                        w.Wait(Timeout);
                    Expect(t.ToFloatArray(), a.ToFloatArray(), "async sum");
                    break;
                }
            case "allgather":
                {
                    var g = pg.AllGather(Tensor.From(Values(rank, 3), 3));
                    Expect(Enumerable.Range(0, world).SelectMany(r => Values(r, 3)).ToArray(), g.ToFloatArray(), "allgather");
                    if (!g.Shape.SequenceEqual(new long[] { world, 3 }))
                        throw new CheckFailed($"allgather shape [{string.Join(", ", g.Shape)}]");
                    break;
                }
            case "reduce_scatter":
                {
                    var full = Tensor.From(Values(rank, 2 * world), 2 * world);
                    var mine = pg.ReduceScatter(full);
                    var expected = Enumerable.Range(2 * rank, 2).Select(i => (float)Enumerable.Range(0, world).Sum(r => r * 10 + i)).ToArray();
                    Expect(expected, mine.ToFloatArray(), "reduce_scatter");
                    break;
                }
            case "alltoall":
                {
                    // Chunk j of each rank (2 values) goes to rank j; rank i gets chunk i of every rank j, at position j.
                    var got = pg.AllToAll(Tensor.From(Values(rank, 2 * world), 2 * world));
                    var expected = Enumerable.Range(0, world).SelectMany(j => new[] { (float)(j * 10 + 2 * rank), (float)(j * 10 + 2 * rank + 1) }).ToArray();
                    Expect(expected, got.ToFloatArray(), "alltoall");
                    break;
                }
            case "broadcast":
                {
                    var t = Tensor.From(Values(rank, 5), 5);
                    pg.Broadcast(t, root: world - 1);
                    Expect(Values(world - 1, 5), t.ToFloatArray(), "broadcast");
                    pg.Barrier();
                    break;
                }
            case "sendrecv":
                {
                    // A ring, three messages each way in order: every rank sends to the next and receives from the previous.
                    int next = (rank + 1) % world, prev = (rank + world - 1) % world;
                    for (int k = 0; k < 3; k++)
                    {
                        var outgoing = Tensor.From(Values(rank * 100 + k, 2), 2);
                        var incoming = Tensor.Zeros([2]);
                        using var s = pg.SendAsync(outgoing, next, tag: k);
                        using var r = pg.RecvAsync(incoming, prev, tag: k);
                        r.Wait(Timeout);
                        s.Wait(Timeout);
                        Expect(Values(prev * 100 + k, 2), incoming.ToFloatArray(), $"message {k} from rank {prev}");
                    }
                    // Blocking send/recv between ranks 0 and 1.
                    if (rank == 0)
                        pg.Send(Tensor.From([7f, 8f], 2), 1, tag: 9);
                    else if (rank == 1)
                    {
                        var t = Tensor.Zeros([2]);
                        pg.Recv(t, 0, tag: 9);
                        Expect([7f, 8f], t.ToFloatArray(), "blocking recv");
                    }
                    pg.Barrier();
                    break;
                }
            case "subgroups":
                {
                    // The executor's layout for tp=2 × dp=world/2: each TP and DP group all-reduces its members' ranks.
                    var plan = new ParallelPlan(2, 1, world / 2, 1, 0, 1, world / 2, 16, 1, Recompute.None, false, Precision.Fp32);
                    var layout = new ProcessGroupLayout(plan);
                    foreach (var axis in new[] { Axis.Tp, Axis.Dp })
                    {
                        var members = layout.GroupOf(axis, rank);
                        string name = $"{axis}-{members[0]}";
                        using var group = ProcessGroup.Gloo(store, name, Array.IndexOf(members, rank), members.Length, Timeout);
                        var t = Tensor.From([(float)rank], 1);
                        group.AllReduce(t);
                        Expect([(float)members.Sum()], t.ToFloatArray(), $"{axis} group [{string.Join(",", members)}]");
                    }
                    pg.Barrier();
                    break;
                }
            case "sharded_reduce":
                {
                    // Three groups of 3, 5 and 2 elements, each padded to a multiple of the world and sharded over the
                    // ranks: groups 1 and 0 reduced asynchronously (started in that order, finished after group 2's
                    // synchronous reduction), then averaged into the master shard's gradient.
                    int[][] sizes = [[3], [2, 3], [2]];
                    var groups = sizes.Select(g => (IReadOnlyList<Tensor>)g.Select(n =>
                    {
                        var p = Tensor.Zeros([n]);
                        p.RequiresGrad = true;
                        return p;
                    }).ToList()).ToList();
                    using var shards = new Planner.Executor.Parallelize.ShardedParameters(groups, pg);
                    static float Grad(int r, int g, int i) => r * 100 + g * 10 + i;
                    for (int g = 0; g < groups.Count; g++)
                    {
                        int i = 0;
                        foreach (var p in groups[g])
                        {
                            int n = (int)p.Numel, first = i;
                            p.SetGrad(Tensor.From(Enumerable.Range(first, n).Select(k => Grad(rank, g, k)).ToArray(), n));
                            i += n;
                        }
                    }
                    var started = new[] { shards.StartReduce(1), shards.StartReduce(0) };
                    shards.ReduceGradients(2);
                    foreach (var reduction in started)
                        shards.FinishReduce(reduction);
                    if (groups.SelectMany(g => g).Any(p => p.Grad is not null))
                        throw new CheckFailed("the reduced groups' parameters kept their gradients");
                    shards.AverageGradients();
                    var expected = new List<float>();
                    for (int g = 0; g < groups.Count; g++)
                    {
                        int total = sizes[g].Sum(), shard = (total + world - 1) / world;
                        for (int k = rank * shard; k < (rank + 1) * shard; k++)
                            expected.Add(k < total ? (float)Enumerable.Range(0, world).Average(r => Grad(r, g, k)) : 0);
                    }
                    Expect(expected, shards.Master.Grad!.ToFloatArray(), "sharded gradient mean");
                    break;
                }
            case "timeout":
                {
                    // Rank 0 waits for an all-reduce that rank 1 never joins: it must fail within the group's timeout.
                    if (rank == 0)
                    {
                        try
                        {
                            pg.AllReduce(Tensor.Zeros([4]));
                        }
                        catch (TorchException e)
                        {
                            Console.WriteLine($"rank 0: timed out as expected: {e.Message.Split('\n')[0]}");
                            return;
                        }
                        Console.Error.WriteLine("rank 0: the all-reduce returned without its peer");
                        Environment.Exit(3);
                    }
                    Thread.Sleep(TimeSpan.FromSeconds(8));
                    break;
                }
            default:
                throw new CheckFailed($"unknown test '{test}'");
        }
    }
}
