using System.Diagnostics;
using System.Text.Json;
using Planner.Executor.Distributed;
using Planner.CostModel.Plans;
using Planner.CostModel.Specs;
using Planner.Executor.Torch;
using Planner.Executor.Training;

namespace Planner.Cli.Profiling;

/// <summary>
/// One rank of <c>profile</c>: the ranks run the compute sweeps at the same time (as training ranks share the
/// machine's memory bandwidth), then time collectives between them; rank 0 prints the measurements as JSON.
/// </summary>
public static partial class ProfileRank
{
    /// <summary>The device this rank measures (the CPU, or its CUDA device).</summary>
    private static Device _device = Device.Cpu;

    /// <summary>The sizes it measures at.</summary>
    private static ProfileSizes _sizes = ProfileSizes.Cpu;

    private static bool Cuda => _device.Type == DeviceType.Cuda;

    /// <summary>Waits for the device's queued work before a clock is read (CUDA runs asynchronously; nothing on the CPU,
    /// whose ops are done when they return).</summary>
    private static void Sync()
    {
        if (Cuda)
            TorchRuntime.Synchronize(_device);
    }

    /// <summary>The tensor on the rank's device: itself on the CPU; on CUDA a copy, the host's freed.</summary>
    private static Tensor D(Tensor t)
    {
        if (!Cuda)
            return t;
        var on = t.To(_device);
        t.Dispose();
        return on;
    }

    /// <summary><paramref name="t"/> on <paramref name="like"/>'s device and of its type.</summary>
    private static Tensor Like(Tensor like, Tensor t)
    {
        var on = t.On(like.Device);
        return on.DType == like.DType ? on : on.To(like.DType);
    }

    /// <summary>A process group of the rank's backend: NCCL between CUDA devices, Gloo between CPUs.</summary>
    private static ProcessGroup NewGroup(Store store, string name, int rank, int size, TimeSpan timeout, string? iface) =>
        Cuda ? ProcessGroup.Nccl(store, name, rank, size, timeout) : ProcessGroup.Gloo(store, name, rank, size, timeout, iface);

    /// <summary>Median of exactly <paramref name="runs"/> timed calls: every rank makes the same calls, as collectives require.</summary>
    private static double MedianOf(Action op, int runs)
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

    /// <summary>GEMMs of 512x512x512 (about 3 ms each with every rank busy) between the loaded collectives: the gap
    /// between a tensor-parallel block's collectives in a small model.</summary>
    private const int GapKernels = 2;

    /// <summary>Timed loaded collectives per message size.</summary>
    private const int LoadedRuns = 80;

    /// <summary>Mean seconds of <paramref name="op"/> timed alone, each call right after <paramref name="before"/>
    /// (untimed) on every rank.</summary>
    private static double MeanAfter(Action before, Action op, int runs)
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

    /// <summary>Median seconds of <paramref name="op"/> after one warm-up call, over at least <paramref name="minRuns"/>
    /// runs and <paramref name="budget"/> seconds. On CUDA each run is a batch of calls (about a millisecond's worth)
    /// between two synchronisations, divided by its calls: a kernel's own time, as training queues kernels back to back,
    /// not the round trip of a synchronisation.</summary>
    public static double Median(Action op, double budget, int minRuns = 3)
    {
        op();
        Sync();
        int reps = 1;
        if (Cuda)
        {
            var once = Stopwatch.StartNew();
            op();
            Sync();
            reps = (int)Math.Clamp(1e-3 / Math.Max(once.Elapsed.TotalSeconds, 1e-7), 1, 1000);
        }
        var times = new List<double>();
        var total = Stopwatch.StartNew();
        while (times.Count < minRuns || total.Elapsed.TotalSeconds < budget)
        {
            var w = Stopwatch.StartNew();
            for (int r = 0; r < reps; r++)
                op();
            Sync();
            times.Add(w.Elapsed.TotalSeconds / reps);
            if (times.Count > 10_000)
                break;
        }
        return Fitting.Median(times);
    }

    /// <summary>A progress line: the share done (0 to 1) and what is being measured.</summary>
    public const string ProgressPrefix = "progress ";

    /// <summary>Runs the rank; returns the exit code.</summary>
    /// <param name="progress">Where rank 0 reports how far it is (lines starting with <see cref="ProgressPrefix"/>).</param>
    /// <param name="node">The machine the rank runs on, as its launcher names it: ranks naming the same one share a node.</param>
    /// <param name="loopback">Every rank on this machine's loopback (else Gloo binds to the host name's address).</param>
    /// <param name="device">The device measured: the CPU (Gloo groups) or this rank's CUDA device (NCCL groups).</param>
    /// <param name="precision">The GEMMs', blocks' and steps' precision on CUDA (the CPU measures fp32).</param>
    public static int Run(int rank, int world, string host, int port, TextWriter stdout, TextWriter? progress = null, string node = "0", bool loopback = true,
        Device device = default, Precision precision = Precision.Fp32)
    {
        _device = device;
        _sizes = ProfileSizes.For(device.Type == DeviceType.Cuda ? "cuda" : "cpu", precision);
        TorchRuntime.Threads = 1;
        TorchRuntime.SetDevice(device);
        var timeout = TimeSpan.FromMinutes(2);
        string? iface = loopback ? "127.0.0.1" : null;
        using var store = Store.Tcp(host, port, world, rank == 0, timeout);
        DeviceClash.Check(store, rank, world, RankDevice.Of(_device, rank));
        using var pg = NewGroup(store, "profile", rank, world, timeout, iface);
        using var scope = DisposeScope.Begin();
        var nodes = Nodes(store, rank, world, node);
        pg.Barrier();
        // The runtime's share of a rank: resident memory once training's kernels have run once on small tensors (their
        // code is paged in; BLAS keeps per-thread work buffers after its first GEMM), read before the sweeps below,
        // whose large tensors the rank's allocator would keep for reuse and which are no part of it.
        void Progress(double done, string what)
        {
            if (rank == 0)
                progress?.WriteLine(FormattableString.Invariant($"{ProgressPrefix}{done:R} {what}"));
        }
        Progress(0, "warming up");
        WarmUp();
        // On CUDA the caching allocator's bytes: the runtime's share (the context, NCCL's buffers) is not among them and
        // stays the cluster spec's.
        var (rss, _) = TorchRuntime.Memory(_device);
        TorchRuntime.ResetPeakMemory(_device);
        // Training steps first, while the allocator holds nothing but the runtime's: the memory they add is theirs.
        Progress(0.02, "training steps of a small GPT");
        double stepCompute = MeasureStep(pg, store, _sizes.Step, StepRuns);
        // What the steps added: on the CPU the resident set's growth (pages the allocator keeps), on CUDA the
        // allocator's peak over the steps.
        var (stepRss, stepPeak) = TorchRuntime.Memory(_device);
        long stepAdded = (Cuda ? stepPeak : stepRss) - rss;
        // Steps of a tiny GPT, whose compute is mostly its kernels' calls: with the steps above, the fit parts the
        // price of a call from that of the work.
        double smallStepCompute = MeasureStep(pg, store, _sizes.SmallStep, SmallStepRuns);
        Progress(0.12, "GEMMs");
        // Two passes over the shapes, the second in reverse order, each shape keeping its faster median: a spell of
        // the machine running slow (other work on the host) lasts seconds and would otherwise land on a run of shapes,
        // whose residuals then misprice every GEMM near them (seen once: four shapes at 2.3x their time).
        var shapes = _sizes.GemmShapes;
        var times = new double[shapes.Length];
        Array.Fill(times, double.MaxValue);
        // On CUDA each shape's operands are made once for both passes (the host makes them, up to 8192 x 16384, on one
        // thread); on the CPU, as before, for each pass.
        var operands = new Dictionary<int, (Tensor A, Tensor B)>();
        foreach (int i in Enumerable.Range(0, shapes.Length).Concat(Enumerable.Range(0, shapes.Length).Reverse()))
        {
            var (m, n, k) = shapes[i];
            if (!operands.TryGetValue(i, out var ab))
            {
                ab = (D(Tensor.Normal([m, k], 0, 1, seed: 1, _sizes.DType)), D(Tensor.Normal([k, n], 0, 1, seed: 2, _sizes.DType)));
                if (Cuda)
                    operands[i] = ab;
            }
            var (a, b) = ab;
            pg.Barrier();
            times[i] = Math.Min(times[i], Median(() => a.MatMul(b).Dispose(), 0.15));
            if (!Cuda)
            {
                a.Dispose();
                b.Dispose();
            }
        }
        foreach (var (a, b) in operands.Values)
        {
            a.Dispose();
            b.Dispose();
        }
        var gemm = shapes.Select((g, i) => new double[] { g.M, g.N, g.K, times[i] }).ToList();
        long elements = _sizes.ElementwiseElements;
        var x = D(Tensor.Full([elements], 1));
        var y = D(Tensor.Full([elements], 2));
        pg.Barrier();
        double add = Median(() => (x + y).Dispose(), 0.3);
        // Elementwise transcendental functions (the MLP's tanh GELU; exp in softmax and the loss): elements per second.
        // In the precision training runs it in (fp32 on the CPU; on CUDA the blocks' bf16 or fp16).
        var xg = x.DType == _sizes.DType ? x : x.To(_sizes.DType);
        double gelu = Median(() => xg.Gelu(tanhApproximation: true).Dispose(), 0.3);
        // Freed before the sweeps below (on CUDA 64M elements each, a quarter of a GB and more).
        if (xg != x)
            xg.Dispose();
        x.Dispose();
        y.Dispose();
        Progress(0.30, "memory-bound ops and the loss");
        var ops = MeasureOps();
        Progress(0.36, "linear layers");
        var linear = MeasureLinear();
        Progress(0.42, "the transformer block and its head");
        var block = MeasureBlock();
        Progress(0.52, "the block split over tensor-parallel ranks");
        // Tensor parallelism stays inside a node: the first two ranks of rank 0's node (not ranks 0 and 1, which a
        // scheduler's cyclic placement puts on different machines); with one rank per node there is no pair.
        var blockTp = nodes.RanksPerNode >= 2 ? MeasureTpBlock(store, rank, nodes.Ranks(0)[..2], timeout, iface) : null;
        Progress(0.58, "the optimizer");
        double optimizerNs = MeasureOptimizer();
        Progress(0.62, "collectives");
        var s1 = D(Tensor.Full([1], 1));
        var s2 = D(Tensor.Full([1], 1));
        double small = Median(() => (s1 + s2).Dispose(), 0.2);
        var allReduce = new List<double[]>();
        var loaded = new List<double[]>();
        var sendRecv = new List<double[]>();
        var sendRecvLoaded = new List<double[]>();
        var allGather = new List<double[]>();
        var reduceScatter = new List<double[]>();
        var allToAll = new List<double[]>();
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
        double workAlone = MedianOf(Work, 20);
        var messages = _sizes.MessageBytes;
        foreach (long bytes in messages)
        {
            Progress(0.62 + 0.28 * Array.IndexOf(messages, bytes) / messages.Length, FormattableString.Invariant($"collectives of {bytes:N0} bytes"));
            var t = Tensor.Zeros([bytes / 4], DType.Float32, _device);
            pg.Barrier();
            int runs = RunsFor(bytes);
            allReduce.Add([bytes, MedianOf(() => pg.AllReduce(t), runs)]);
            pg.Barrier();
            loaded.Add([bytes, MeanAfter(Gap, () => pg.AllReduce(t), LoadedRuns)]);
            pg.Barrier();
            // Ping-pong between ranks 0 and 1: half the round trip is one transfer.
            void PingPong() => PingPongWith(pg, t, rank, 1);
            sendRecv.Add([bytes, MedianOf(PingPong, runs) / 2]);
            pg.Barrier();
            sendRecvLoaded.Add([bytes, MeanAfter(Gap, PingPong, LoadedRuns) / 2]);
            pg.Barrier();
            // The other collectives over the same total bytes S (nccl-tests' sizes): all-gather of S/n per rank into S,
            // reduce-scatter of S into S/n, all-to-all of S per rank.
            long per = bytes / 4 / world;
            using (var part = Tensor.Zeros([per], DType.Float32, _device))
                allGather.Add([per * world * 4, MedianOf(() => pg.AllGather(part).Dispose(), runs)]);
            pg.Barrier();
            using (var whole = Tensor.Zeros([per * world], DType.Float32, _device))
            {
                reduceScatter.Add([per * world * 4, MedianOf(() => pg.ReduceScatter(whole).Dispose(), runs)]);
                pg.Barrier();
                allToAll.Add([per * world * 4, MedianOf(() => pg.AllToAll(whole).Dispose(), runs)]);
            }
            pg.Barrier();
            t.Dispose();
        }
        // The all-reduce over smaller groups of the ranks (2, 4, ... below the world), each as its members alone run it.
        var byGroup = new List<double[]>();
        for (int size = 2; size < world; size *= 2)
        {
            if (rank < size)
            {
                using var sub = NewGroup(store, $"profile-group-{size}", rank, size, timeout, iface);
                foreach (long bytes in messages)
                {
                    using var t = Tensor.Zeros([bytes / 4], DType.Float32, _device);
                    sub.Barrier();
                    byGroup.Add([size, bytes, MedianOf(() => sub.AllReduce(t), RunsFor(bytes))]);
                }
            }
            pg.Barrier();
        }
        // Several nodes: the world's collectives above cross the network; the all-reduce inside each node (every node's
        // group at once, as a data-parallel step runs them) prices the intra-node tier, and a ping-pong between the first
        // ranks of nodes 0 and 1 the network's point-to-point transfer.
        var nodeLoaded = new List<double[]>();
        var sendRecvInter = new List<double[]>();
        if (nodes.Count > 1)
        {
            Progress(0.88, "collectives inside each node and across nodes");
            ProcessGroup? local = null;
            for (int n = 0; n < nodes.Count; n++)
            {
                var members = nodes.Ranks(n);
                int index = Array.IndexOf(members, rank);
                if (index >= 0 && members.Length > 1)
                    local = NewGroup(store, $"profile-node-{n}", index, members.Length, timeout, iface);
            }
            int peer = nodes.Ranks(1)[0];
            foreach (long bytes in messages)
            {
                using var t = Tensor.Zeros([bytes / 4], DType.Float32, _device);
                pg.Barrier();
                if (local is not null)
                    nodeLoaded.Add([bytes, MeanAfter(Gap, () => local.AllReduce(t), LoadedRuns)]);
                pg.Barrier();
                sendRecvInter.Add([bytes, MedianOf(() => PingPongWith(pg, t, rank, peer), RunsFor(bytes)) / 2]);
            }
            pg.Barrier();
            local?.Dispose();
        }
        Progress(0.92, "the backward beside its all-reduces");
        var overlap = MeasureOverlap(pg, timeout);
        // The training steps again, a minute after the first: each keeps its faster median (a spell of the machine
        // running slow lasts seconds; seen here: one step's median 17 % above another's minutes apart, which every
        // prediction from the profile would inherit).
        Progress(0.97, "training steps again");
        stepCompute = Math.Min(stepCompute, MeasureStep(pg, store, _sizes.Step, StepRuns));
        smallStepCompute = Math.Min(smallStepCompute, MeasureStep(pg, store, _sizes.SmallStep, SmallStepRuns));
        Progress(1, "done");
        var (machine, cpu) = CalibrationFile.ThisMachine();
        if (rank == 0)
            stdout.WriteLine(JsonSerializer.Serialize(new
            {
                host = machine,
                cpu,
                device = _sizes.Device,
                device_name = Cuda ? TorchRuntime.CudaDeviceName(_device.Index) : null,
                precision = _sizes.Precision.Name(),
                rss_bytes = Cuda ? (long?)null : rss,
                step_added_bytes = stepAdded,
                world,
                nodes = nodes.Count,
                ranks_per_node = nodes.RanksPerNode,
                node_all_reduce_loaded = nodeLoaded,
                send_recv_inter = sendRecvInter,
                gemm,
                add_seconds = add,
                add_bytes = 3 * 4 * elements,
                gelu_seconds = gelu,
                gelu_elements = elements,
                small_op_seconds = small,
                ops,
                linear,
                block,
                block_tp = blockTp,
                optimizer_ns_per_param = optimizerNs,
                all_reduce = allReduce,
                all_reduce_loaded = loaded,
                overlap,
                step_compute_seconds = stepCompute,
                small_step_compute_seconds = smallStepCompute,
                step_rss_bytes = stepRss,
                send_recv = sendRecv,
                all_gather = allGather,
                reduce_scatter = reduceScatter,
                all_to_all = allToAll,
                all_reduce_by_group = byGroup,
                send_recv_loaded = sendRecvLoaded,
                torch = TorchRuntime.Version,
            }));
        pg.Barrier();
        return 0;
    }

    /// <summary>The machines of a profile's ranks, numbered by their lowest rank.</summary>
    /// <param name="Of">Each rank's node.</param>
    public sealed record NodeMap(int[] Of)
    {
        /// <summary>Nodes.</summary>
        public int Count => Of.Max() + 1;

        /// <summary>The ranks of node <paramref name="node"/>, ascending.</summary>
        public int[] Ranks(int node) => Enumerable.Range(0, Of.Length).Where(r => Of[r] == node).ToArray();

        /// <summary>Ranks on the smallest node (every node has as many when the launcher started them evenly).</summary>
        public int RanksPerNode => Enumerable.Range(0, Count).Min(n => Ranks(n).Length);

        /// <summary>Numbers the nodes named by the ranks, in the order of their lowest rank.</summary>
        public static NodeMap FromNames(IReadOnlyList<string> names)
        {
            var order = names.Distinct().ToList();
            return new NodeMap(names.Select(n => order.IndexOf(n)).ToArray());
        }
    }

    /// <summary>Every rank's node, from the names the ranks publish in the rendezvous store.</summary>
    private static NodeMap Nodes(Store store, int rank, int world, string node) =>
        NodeMap.FromNames(store.AllGather("profile-node-of-", rank, world, node));
}
