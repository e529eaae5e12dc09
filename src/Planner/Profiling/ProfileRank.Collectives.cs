using System.Diagnostics;
using Planner.Executor.Distributed;
using Planner.Executor.Torch;

namespace Planner.Cli.Profiling;

/// <summary>The rank's measurements of collectives: over the world, over smaller groups, inside and across nodes.</summary>
public sealed partial class ProfileRank
{
    /// <summary>GEMMs of 512x512x512 (about 3 ms each with every rank busy) between the loaded collectives: the gap
    /// between a tensor-parallel block's collectives in a small model.</summary>
    private const int GapKernels = 2;

    /// <summary>Timed loaded collectives per message size.</summary>
    private const int LoadedRuns = 80;

    /// <summary>Median of exactly <paramref name="runs"/> timed calls: every rank makes the same calls, as collectives require.</summary>
    private double MedianOf(Action op, int runs)
    {
        op();
        Sync();
        var times = new double[runs];
        for (int i = 0; i < runs; i++)
        {
            var w = Stopwatch.StartNew();
            op();
            Sync();
            times[i] = w.Elapsed.TotalSeconds;
        }
        Array.Sort(times);
        return times[runs / 2];
    }

    /// <summary>Mean seconds of <paramref name="op"/> timed alone, each call right after <paramref name="before"/>
    /// (untimed) on every rank.</summary>
    private double MeanAfter(Action before, Action op, int runs)
    {
        before();
        op();
        double sum = 0;
        for (int i = 0; i < runs; i++)
        {
            before();
            Sync();
            var w = Stopwatch.StartNew();
            op();
            Sync();
            sum += w.Elapsed.TotalSeconds;
        }
        return sum / runs;
    }

    /// <summary>Timed runs of a collective on <paramref name="bytes"/>: about 16 MB in all, 5 to 50 runs.</summary>
    private static int RunsFor(long bytes) => (int)Math.Clamp((16L << 20) / bytes, 5, 50);

    /// <summary>One round trip of <paramref name="t"/> between rank 0 and <paramref name="peer"/> (the others do nothing).</summary>
    private static void PingPongWith(ProcessGroup pg, Tensor t, int rank, int peer)
    {
        if (rank == 0)
        {
            pg.Send(t, peer);
            pg.Recv(t, peer);
        }
        else if (rank == peer)
        {
            pg.Recv(t, 0);
            pg.Send(t, 0);
        }
    }

    /// <summary>
    /// Seconds of collectives by message size (the all-reduce by group also by its ranks), the "loaded" ones right after
    /// a gap's work on every rank; and of a one-element add (a kernel call's floor).
    /// </summary>
    private sealed class CollectiveTimes
    {
        public double Small;
        public readonly List<MessageTime> AllReduce = [], Loaded = [], SendRecv = [], SendRecvLoaded = [], AllGather = [], ReduceScatter = [], AllToAll = [],
            NodeLoaded = [], SendRecvInter = [];

        public readonly List<GroupTime> ByGroup = [];
    }

    /// <summary>Every collective measurement.</summary>
    private CollectiveTimes MeasureCollectives(ProcessGroup pg, NodeMap nodes)
    {
        var times = new CollectiveTimes();
        var s1 = D(Tensor.Full([1], 1));
        var s2 = D(Tensor.Full([1], 1));
        times.Small = Median(() => (s1 + s2).Dispose(), 0.2);
        // Training runs its collectives between kernels: a few milliseconds of work on every rank, then the collective.
        // With ranks sharing cores (and on virtual machines, whose idle cores sleep), a collective then also waits for
        // the peers to arrive and for their communication threads to wake: the "loaded" columns time each collective
        // right after such work, as run's timers do, and take the mean (the step pays the slow ones too).
        var wa = D(Tensor.Normal([512, 512], 0, 1, seed: 3));
        var wb = D(Tensor.Normal([512, 512], 0, 1, seed: 4));
        void Work() => wa.MatMul(wb).Dispose();
        void Gap()
        {
            for (int i = 0; i < GapKernels; i++)
                Work();
        }
        pg.Barrier();
        // The work timed alone (not reported; its runs warm the gap's GEMM up).
        _ = MedianOf(Work, 20);
        MeasureWorld(pg, times, Gap);
        MeasureByGroup(pg, times);
        MeasureAcrossNodes(pg, nodes, times, Gap);
        return times;
    }

    /// <summary>The world's collectives at each message size, alone and loaded.</summary>
    private void MeasureWorld(ProcessGroup pg, CollectiveTimes times, Action gap)
    {
        var messages = _sizes.MessageBytes;
        foreach (long bytes in messages)
        {
            Progress(0.62 + 0.28 * Array.IndexOf(messages, bytes) / messages.Length, FormattableString.Invariant($"collectives of {bytes:N0} bytes"));
            var t = Tensor.Zeros([bytes / 4], DType.Float32, _device);
            pg.Barrier();
            int runs = RunsFor(bytes);
            times.AllReduce.Add(new MessageTime(bytes, MedianOf(() => pg.AllReduce(t), runs)));
            pg.Barrier();
            times.Loaded.Add(new MessageTime(bytes, MeanAfter(gap, () => pg.AllReduce(t), LoadedRuns)));
            pg.Barrier();
            // Ping-pong between ranks 0 and 1: half the round trip is one transfer.
            void PingPong() => PingPongWith(pg, t, _rank, 1);
            times.SendRecv.Add(new MessageTime(bytes, MedianOf(PingPong, runs) / 2));
            pg.Barrier();
            times.SendRecvLoaded.Add(new MessageTime(bytes, MeanAfter(gap, PingPong, LoadedRuns) / 2));
            pg.Barrier();
            // The other collectives over the same total bytes S (nccl-tests' sizes): all-gather of S/n per rank into S,
            // reduce-scatter of S into S/n, all-to-all of S per rank.
            long per = bytes / 4 / _world;
            using (var part = Tensor.Zeros([per], DType.Float32, _device))
                times.AllGather.Add(new MessageTime(per * _world * 4, MedianOf(() => pg.AllGather(part).Dispose(), runs)));
            pg.Barrier();
            using (var whole = Tensor.Zeros([per * _world], DType.Float32, _device))
            {
                times.ReduceScatter.Add(new MessageTime(per * _world * 4, MedianOf(() => pg.ReduceScatter(whole).Dispose(), runs)));
                pg.Barrier();
                // As expert parallelism dispatches routed rows: the executor's all-to-all with explicit splits.
                var splits = Enumerable.Repeat(per, _world).ToArray();
                times.AllToAll.Add(new MessageTime(per * _world * 4, MedianOf(() => ExpertParallel.AllToAll(pg, whole, splits, splits).Dispose(), runs)));
            }
            pg.Barrier();
            t.Dispose();
        }
    }

    /// <summary>The all-reduce over smaller groups of the ranks (2, 4, ... below the world), each as its members alone
    /// run it.</summary>
    private void MeasureByGroup(ProcessGroup pg, CollectiveTimes times)
    {
        for (int size = 2; size < _world; size *= 2)
        {
            if (_rank < size)
            {
                using var sub = NewGroup(_store, $"profile-group-{size}", _rank, size, _timeout, _iface);
                foreach (long bytes in _sizes.MessageBytes)
                {
                    using var t = Tensor.Zeros([bytes / 4], DType.Float32, _device);
                    sub.Barrier();
                    times.ByGroup.Add(new GroupTime(size, bytes, MedianOf(() => sub.AllReduce(t), RunsFor(bytes))));
                }
            }
            pg.Barrier();
        }
    }

    /// <summary>
    /// Several nodes: the world's collectives above cross the network; the all-reduce inside each node (every node's
    /// group at once, as a data-parallel step runs them) prices the intra-node tier, and a ping-pong between the first
    /// ranks of nodes 0 and 1 the network's point-to-point transfer. Neither on one node.
    /// </summary>
    private void MeasureAcrossNodes(ProcessGroup pg, NodeMap nodes, CollectiveTimes times, Action gap)
    {
        if (nodes.Count <= 1)
            return;
        Progress(0.88, "collectives inside each node and across nodes");
        ProcessGroup? local = null;
        for (int n = 0; n < nodes.Count; n++)
        {
            var members = nodes.Ranks(n);
            int index = Array.IndexOf(members, _rank);
            if (index >= 0 && members.Length > 1)
                local = NewGroup(_store, $"profile-node-{n}", index, members.Length, _timeout, _iface);
        }
        int peer = nodes.Ranks(1)[0];
        foreach (long bytes in _sizes.MessageBytes)
        {
            using var t = Tensor.Zeros([bytes / 4], DType.Float32, _device);
            pg.Barrier();
            if (local is not null)
                times.NodeLoaded.Add(new MessageTime(bytes, MeanAfter(gap, () => local.AllReduce(t), LoadedRuns)));
            pg.Barrier();
            times.SendRecvInter.Add(new MessageTime(bytes, MedianOf(() => PingPongWith(pg, t, _rank, peer), RunsFor(bytes)) / 2));
        }
        pg.Barrier();
        local?.Dispose();
    }
}
