using System.Diagnostics;
using System.Text.Json;
using Planner.Executor.Distributed;
using Planner.CostModel.Specs;
using Planner.Executor.Torch;

namespace Planner.Cli.Profiling;

/// <summary>
/// One rank of <c>profile</c>: the ranks run the compute sweeps at the same time (as training ranks share the
/// machine's memory bandwidth), then time collectives between them; rank 0 prints the measurements as JSON.
/// </summary>
public sealed partial class ProfileRank
{
    /// <summary>The device this rank measures (the CPU, or its CUDA device).</summary>
    private readonly Device _device;

    /// <summary>The sizes it measures at.</summary>
    private readonly ProfileSizes _sizes;

    /// <summary>The rendezvous store of the profile's ranks.</summary>
    private readonly Store _store;

    private readonly int _rank, _world;

    /// <summary>How long a process group waits for its peers.</summary>
    private readonly TimeSpan _timeout;

    /// <summary>The interface Gloo binds to (null: the host name's address).</summary>
    private readonly string? _iface;

    /// <summary>Where rank 0 reports how far it is.</summary>
    private readonly TextWriter? _progress;

    private ProfileRank(Device device, ProfileSizes sizes, Store store, int rank, int world, TimeSpan timeout, string? iface, TextWriter? progress)
    {
        _device = device;
        _sizes = sizes;
        _store = store;
        _rank = rank;
        _world = world;
        _timeout = timeout;
        _iface = iface;
        _progress = progress;
    }

    private bool Cuda => _device.Type == DeviceType.Cuda;

    /// <summary>Waits for the device's queued work before a clock is read (CUDA runs asynchronously; nothing on the CPU,
    /// whose ops are done when they return).</summary>
    private static void Sync(Device device)
    {
        if (device.Type == DeviceType.Cuda)
            TorchRuntime.Synchronize(device);
    }

    private void Sync() => Sync(_device);

    /// <summary>The tensor on the rank's device: itself on the CPU; on CUDA a copy, the host's freed.</summary>
    private Tensor D(Tensor t)
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
    private ProcessGroup NewGroup(Store store, string name, int rank, int size, TimeSpan timeout, string? iface) =>
        Cuda ? ProcessGroup.Nccl(store, name, rank, size, timeout) : ProcessGroup.Gloo(store, name, rank, size, timeout, iface);

    /// <summary>Median seconds of <paramref name="op"/> after one warm-up call, over at least <paramref name="minRuns"/>
    /// runs and <paramref name="budget"/> seconds. On CUDA each run is a batch of calls (about a millisecond's worth)
    /// between two synchronisations, divided by its calls: a kernel's own time, as training queues kernels back to back,
    /// not the round trip of a synchronisation.</summary>
    /// <param name="device">The device <paramref name="op"/> runs on.</param>
    public static double Median(Action op, double budget, Device device, int minRuns = 3)
    {
        op();
        Sync(device);
        int reps = 1;
        if (device.Type == DeviceType.Cuda)
        {
            var once = Stopwatch.StartNew();
            op();
            Sync(device);
            reps = (int)Math.Clamp(1e-3 / Math.Max(once.Elapsed.TotalSeconds, 1e-7), 1, 1000);
        }
        var times = new List<double>();
        var total = Stopwatch.StartNew();
        while (times.Count < minRuns || total.Elapsed.TotalSeconds < budget)
        {
            var w = Stopwatch.StartNew();
            for (int r = 0; r < reps; r++)
                op();
            Sync(device);
            times.Add(w.Elapsed.TotalSeconds / reps);
            if (times.Count > 10_000)
                break;
        }
        return Fitting.Median(times);
    }

    private double Median(Action op, double budget) => Median(op, budget, _device);

    /// <summary>A progress line: the share done (0 to 1) and what is being measured.</summary>
    public const string ProgressPrefix = "progress ";

    /// <summary>How long the rendezvous and a collective may be waited for, and a rank may go without a heartbeat.</summary>
    public static readonly TimeSpan Timeout = TimeSpan.FromMinutes(2);

    /// <summary>Rank 0 reports how far it is: the share done (0 to 1) and what is being measured.</summary>
    private void Progress(double done, string what)
    {
        if (_rank == 0)
            _progress?.WriteLine(FormattableString.Invariant($"{ProgressPrefix}{done:R} {what}"));
    }

    /// <summary>Runs the rank; returns the exit code.</summary>
    /// <param name="progress">Where rank 0 reports how far it is (lines starting with <see cref="ProgressPrefix"/>).</param>
    /// <param name="node">The machine the rank runs on, as its launcher names it: ranks naming the same one share a node.</param>
    /// <param name="loopback">Every rank on this machine's loopback (else Gloo binds to the host name's address).</param>
    /// <param name="device">The device measured: the CPU (Gloo groups) or this rank's CUDA device (NCCL groups).</param>
    /// <param name="precision">The GEMMs', blocks' and steps' precision on CUDA (the CPU measures fp32).</param>
    public static int Run(int rank, int world, string host, int port, TextWriter stdout, TextWriter? progress = null, string node = "0", bool loopback = true,
        Device device = default, Precision precision = Precision.Fp32)
    {
        var sizes = ProfileSizes.For(device.Type == DeviceType.Cuda ? "cuda" : "cpu", precision);
        TorchRuntime.Threads = 1;
        TorchRuntime.SetDevice(device);
        var timeout = Timeout;
        string? iface = loopback ? "127.0.0.1" : null;
        using var store = Store.Tcp(host, port, world, rank == 0, timeout);
        DeviceClash.Check(store, rank, world, RankDevice.Of(device, rank));
        var profile = new ProfileRank(device, sizes, store, rank, world, timeout, iface, progress);
        using var pg = profile.NewGroup(store, "profile", rank, world, timeout, iface);
        using var scope = DisposeScope.Begin();
        var nodes = Nodes(store, rank, world, node);
        pg.Barrier();
        profile.Measure(pg, nodes, stdout);
        pg.Barrier();
        return 0;
    }

    /// <summary>Every measurement in turn; rank 0 prints them.</summary>
    private void Measure(ProcessGroup pg, NodeMap nodes, TextWriter stdout)
    {
        // The runtime's share of a rank: resident memory once training's kernels have run once on small tensors (their
        // code is paged in; BLAS keeps per-thread work buffers after its first GEMM), read before the sweeps below,
        // whose large tensors the rank's allocator would keep for reuse and which are no part of it.
        Progress(0, "warming up");
        WarmUp();
        // On CUDA the caching allocator's bytes: the runtime's share (the context, NCCL's buffers) is not among them and
        // stays the cluster spec's.
        var (rss, _) = TorchRuntime.Memory(_device);
        TorchRuntime.ResetPeakMemory(_device);
        // Training steps first, while the allocator holds nothing but the runtime's: the memory they add is theirs.
        Progress(0.02, "training steps of a small GPT");
        double stepCompute = MeasureStep(pg, _store, _sizes.Step, StepRuns);
        // What the steps added: on the CPU the resident set's growth (pages the allocator keeps), on CUDA the
        // allocator's peak over the steps.
        var (stepRss, stepPeak) = TorchRuntime.Memory(_device);
        var memory = new MemoryBytes(rss, (Cuda ? stepPeak : stepRss) - rss, stepRss);
        // Steps of a tiny GPT, whose compute is mostly its kernels' calls: with the steps above, the fit parts the
        // price of a call from that of the work.
        double smallStepCompute = MeasureStep(pg, _store, _sizes.SmallStep, SmallStepRuns);
        var kernels = MeasureKernels(pg, nodes);
        Progress(0.62, "collectives");
        var collectives = MeasureCollectives(pg, nodes);
        Progress(0.92, "the backward beside its all-reduces");
        var overlap = MeasureOverlap(pg, _timeout);
        // The training steps again, a minute after the first: each keeps its faster median (a spell of the machine
        // running slow lasts seconds; seen here: one step's median 17 % above another's minutes apart, which every
        // prediction from the profile would inherit).
        Progress(0.97, "training steps again");
        stepCompute = Math.Min(stepCompute, MeasureStep(pg, _store, _sizes.Step, StepRuns));
        smallStepCompute = Math.Min(smallStepCompute, MeasureStep(pg, _store, _sizes.SmallStep, SmallStepRuns));
        Progress(1, "done");
        if (_rank == 0)
            stdout.WriteLine(Json(nodes, memory, new StepSeconds(stepCompute, smallStepCompute), kernels, collectives, overlap));
    }

    /// <summary>Bytes: the runtime's resident set before the sweeps, what the training steps added, the resident set after them.</summary>
    private sealed record MemoryBytes(long Rss, long StepAdded, long StepRss);

    /// <summary>The compute seconds of a step of the small GPT and of the tiny one.</summary>
    private sealed record StepSeconds(double Step, double SmallStep);

    /// <summary>What <see cref="MeasureKernels"/> measures.</summary>
    private sealed record KernelTimes(List<GemmTime> Gemm, double Add, double Gelu, Dictionary<string, OpRate> Ops, List<LinearTimes> Linear,
        BlockTimes Block, SplitBlockTimes? BlockTp, SplitBlockTimes? BlockEp, SplitBlockTimes? BlockCp, double OptimizerNs);

    /// <summary>GEMMs, elementwise ops, memory-bound ops and the loss, linear layers, the block (whole, split over
    /// tensor-parallel ranks, a MoE block split over expert-parallel ranks, the block over
    /// context-parallel ranks) and the optimizer.</summary>
    private KernelTimes MeasureKernels(ProcessGroup pg, NodeMap nodes)
    {
        Progress(0.12, "GEMMs");
        var gemm = MeasureGemms(pg);
        var (add, gelu) = MeasureElementwise(pg);
        Progress(0.30, "memory-bound ops and the loss");
        var ops = MeasureOps();
        Progress(0.36, "linear layers");
        var linear = MeasureLinear();
        Progress(0.42, "the transformer block and its head");
        var block = MeasureBlock();
        Progress(0.52, "the block split over tensor-parallel ranks");
        // Tensor parallelism stays inside a node: the first two ranks of rank 0's node (not ranks 0 and 1, which a
        // scheduler's cyclic placement puts on different machines); with one rank per node there is no pair.
        var blockTp = nodes.RanksPerNode >= 2 ? MeasureTpBlock(_store, _rank, nodes.Ranks(0)[..2], _timeout, _iface) : null;
        Progress(0.55, "a mixture-of-experts block split over expert-parallel ranks");
        var blockEp = nodes.RanksPerNode >= 2 ? MeasureEpBlock(_store, _rank, nodes.Ranks(0)[..2], _timeout, _iface) : null;
        Progress(0.56, "the block split over context-parallel ranks");
        var blockCp = nodes.RanksPerNode >= 2 ? MeasureCpBlock(_store, _rank, nodes.Ranks(0)[..2], _timeout, _iface) : null;
        Progress(0.58, "the optimizer");
        double optimizerNs = MeasureOptimizer();
        return new KernelTimes(gemm, add, gelu, ops, linear, block, blockTp, blockEp, blockCp, optimizerNs);
    }

    /// <summary>Each GEMM shape's median seconds.</summary>
    private List<GemmTime> MeasureGemms(ProcessGroup pg)
    {
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
        return shapes.Select((g, i) => new GemmTime(g.M, g.N, g.K, times[i])).ToList();
    }

    /// <summary>Median seconds of an add and of a tanh GELU over <see cref="ProfileSizes.ElementwiseElements"/>.</summary>
    private (double Add, double Gelu) MeasureElementwise(ProcessGroup pg)
    {
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
        return (add, gelu);
    }

    /// <summary>The measurements as the JSON object rank 0 prints.</summary>
    private string Json(NodeMap nodes, MemoryBytes memory, StepSeconds steps, KernelTimes kernels, CollectiveTimes collectives, OverlapTimes overlap)
    {
        var (machine, cpu) = CalibrationFile.ThisMachine();
        long elements = _sizes.ElementwiseElements;
        return JsonSerializer.Serialize(new
        {
            host = machine,
            cpu,
            device = _sizes.Device,
            device_name = Cuda ? TorchRuntime.CudaDeviceName(_device.Index) : null,
            precision = _sizes.Precision.Name(),
            rss_bytes = Cuda ? (long?)null : memory.Rss,
            step_added_bytes = memory.StepAdded,
            world = _world,
            nodes = nodes.Count,
            ranks_per_node = nodes.RanksPerNode,
            node_all_reduce_loaded = collectives.NodeLoaded.Select(x => x.ToJson()),
            send_recv_inter = collectives.SendRecvInter.Select(x => x.ToJson()),
            gemm = kernels.Gemm.Select(g => g.ToJson()),
            add_seconds = kernels.Add,
            add_bytes = 3 * 4 * elements,
            gelu_seconds = kernels.Gelu,
            gelu_elements = elements,
            small_op_seconds = collectives.Small,
            ops = kernels.Ops.ToDictionary(kv => kv.Key, kv => OpRateJson.ToJson(kv.Value)),
            linear = kernels.Linear.Select(l => l.ToJson()),
            block = kernels.Block.ToJson(),
            block_tp = kernels.BlockTp?.ToJson(),
            block_ep = kernels.BlockEp?.ToJson(),
            block_cp = kernels.BlockCp?.ToJson(),
            optimizer_ns_per_param = kernels.OptimizerNs,
            all_reduce = collectives.AllReduce.Select(x => x.ToJson()),
            all_reduce_loaded = collectives.Loaded.Select(x => x.ToJson()),
            overlap = overlap.ToJson(),
            step_compute_seconds = steps.Step,
            small_step_compute_seconds = steps.SmallStep,
            step_rss_bytes = memory.StepRss,
            send_recv = collectives.SendRecv.Select(x => x.ToJson()),
            all_gather = collectives.AllGather.Select(x => x.ToJson()),
            reduce_scatter = collectives.ReduceScatter.Select(x => x.ToJson()),
            all_to_all = collectives.AllToAll.Select(x => x.ToJson()),
            all_reduce_by_group = collectives.ByGroup.Select(x => x.ToJson()),
            send_recv_loaded = collectives.SendRecvLoaded.Select(x => x.ToJson()),
            torch = TorchRuntime.Version,
        });
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
