using System.CommandLine;
using System.Diagnostics;
using System.Text.Json.Nodes;
using Planner.Cli.Commands;
using Planner.CostModel.Calibration;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;
using Spectre.Console;
using Cal = Planner.CostModel.Calibration.Calibration;

namespace Planner.Cli.Profiling;

/// <summary>The calibration fitted from a profile's measurements, and the report of what was measured.</summary>
public static partial class ProfileFit
{
    /// <summary>The measurements <see cref="Fit"/> cannot do without.</summary>
    public static readonly string[] RequiredMeasurements =
    [
        "gemm", "add_seconds", "add_bytes", "gelu_seconds", "gelu_elements", "small_op_seconds", "ops", "linear", "block", "optimizer_ns_per_param",
        "all_reduce", "all_reduce_loaded", "overlap", "step_compute_seconds", "send_recv", "all_gather", "reduce_scatter", "all_to_all",
        "all_reduce_by_group", "torch",
    ];

    /// <summary>A collective's measured messages under <paramref name="key"/>.</summary>
    private static List<MessageTime> Pairs(JsonObject m, string key) => m[key]!.AsArray().Select(x => MessageTime.Of(x!)).ToList();

    /// <summary>A network tier's fit: latency per ring step, bytes per second per rank, the peers' arrival a collective
    /// after compute pays once (0: folded into the latency), and what it comes from.</summary>
    public sealed record LinkFit(double LatencySeconds, double BytesPerSecond, string Source, double ArrivalSeconds = 0)
    {
        /// <summary>The tier as a calibration holds it.</summary>
        public MeasuredLink Measured => new(BytesPerSecond / 1e9, LatencySeconds * 1e6);
    }

    /// <summary>
    /// The two tiers of the network from the loaded all-reduces (right after a kernel on every rank, as training runs
    /// them: on shared cores that adds the wait for the peers' threads), each as a ring of n ranks: 2(n−1) latency
    /// steps, 2(n−1)/n of the buffer through each rank (the cost model's ring). One machine: both tiers from the
    /// world's all-reduce, its latency parted: the idle ranks' all-reduces give the latency per step, and what the
    /// loaded ones take beyond it, 2(n−1) times the difference, is the peers' arrival, paid once per collective (a burst
    /// of buckets pays it once). Several: the world's crosses the network (the inter-node tier, a flat ring as the cost
    /// model prices a group spanning nodes) and each node's own group gives the intra-node tier; with one rank per node
    /// that tier is not measured and keeps the cluster spec's; the arrival stays in the latency. Gloo's point-to-point
    /// transfers are faster per byte (see the tables), so pipeline transfers come out priced on the safe side.
    /// </summary>
    public static (LinkFit Intra, LinkFit Inter) FitLinks(JsonObject m, ClusterSpec cluster)
    {
        static LinkFit Ring(List<MessageTime> rows, int n, string source)
        {
            var (alpha, beta) = Fitting.AlphaBeta(rows.Select(x => (2.0 * (n - 1), x.Bytes * 2.0 * (n - 1) / n, x.Seconds)).ToList());
            return new LinkFit(alpha, beta, source);
        }
        int world = m["world"] is { } w ? (int)w : 2;
        int nodes = (int?)m["nodes"] ?? 1;
        int perNode = (int?)m["ranks_per_node"] ?? world;
        if (nodes <= 1)
        {
            var one = Ring(Pairs(m, "all_reduce_loaded"), world, $"all-reduce over {world} ranks of one machine");
            var idle = m["all_reduce"] is JsonArray { Count: > 0 } ? Ring(Pairs(m, "all_reduce"), world, "idle") : one;
            if (idle.LatencySeconds > 0 && idle.LatencySeconds < one.LatencySeconds)
                one = one with { LatencySeconds = idle.LatencySeconds, ArrivalSeconds = 2.0 * (world - 1) * (one.LatencySeconds - idle.LatencySeconds) };
            else
                one = one with { Source = one.Source + "; the idle ranks' latency is not below it: no arrival parted" };
            return (one, one);
        }
        var inter = Ring(Pairs(m, "all_reduce_loaded"), world, $"all-reduce over {world} ranks on {nodes} nodes");
        var intra = perNode >= 2
            ? Ring(Pairs(m, "node_all_reduce_loaded"), perNode, $"all-reduce over the {perNode} ranks of each node")
            : new LinkFit(cluster.IntraNode.LatencySeconds, cluster.IntraNode.EffectiveBytesPerSecond, $"not measured with one rank per node: cluster '{cluster.Name}''s spec");
        return (intra, inter);
    }

    /// <summary>
    /// A point-to-point transfer's latency, microseconds: the intercept of the ping-pong's alpha-beta fit (idle ranks;
    /// in a pipeline the wait for a peer still computing is the simulator's, not the transfer's). One machine only: on
    /// several the two ranks may sit on either tier, and the links keep their collective latency (null).
    /// </summary>
    public static (double? Us, string Account) FitP2pLatencyUs(JsonObject m)
    {
        if (((int?)m["nodes"] ?? 1) > 1)
            return (null, "point-to-point transfers: the links' collective latency (on several machines the ping-pong's two ranks may sit on either tier)");
        var (alpha, _) = Fitting.AlphaBeta(Pairs(m, "send_recv").Select(x => (1.0, x.Bytes, x.Seconds)).ToList());
        return alpha > 0
            ? (alpha * 1e6, $"point-to-point transfers (pipeline stages, ring attention): latency {alpha * 1e6:F1} us (ping-pong between idle ranks)")
            : (null, "point-to-point transfers: the links' collective latency (the ping-pong's fit gave no positive latency)");
    }

    /// <summary>Fits the calibration from rank 0's measurements.</summary>
    public static Cal Fit(ClusterSpec cluster, JsonObject m, out Action<IAnsiConsole> report)
    {
        // What the ranks measured at: the device and precision they name (older measurements: the CPU's).
        string device = (string?)m["device"] ?? "cpu";
        bool cuda = device == "cuda";
        var precision = cuda && m["precision"] is { } mp && PrecisionInfo.TryParse((string)mp!) is { } named ? named : ProfileSizes.PrecisionFor(cluster, cuda);
        var sizes = ProfileSizes.For(device, precision);
        var curve = GemmCurve.Fit(m, cluster.Gpu.SpecPeakFlops(precision));
        var rates = KernelRates.Of(m);
        // The backward with its gradients' all-reduces started block by block, as training overlaps them.
        var overlap = OverlapTimes.Of(m["overlap"]!);
        double slowdown = Fitting.OverlapSlowdown(overlap.Backward, overlap.Comm, overlap.Together, overlap.Blocks);
        var rows = CollectiveRows.Of(m);
        int n = m["world"] is { } w ? (int)w : 2;
        var (intra, inter) = FitLinks(m, cluster);
        var (p2pUs, p2pAccount) = FitP2pLatencyUs(m);
        double? arrivalUs = intra.ArrivalSeconds > 0 ? intra.ArrivalSeconds * 1e6 : null;
        // The machine measured (kept measurements may be fitted on another).
        var (thisHost, thisCpu) = CalibrationFile.ThisMachine();
        string host = (string?)m["host"] ?? thisHost, cpu = (string?)m["cpu"] ?? thisCpu;
        // A kernel call costs at least what the smallest op costs through the binding.
        double callSeconds = Math.Max(curve.Overhead, rates.SmallOpSeconds);
        // The runtime's memory: a CPU rank's resident set before training; on CUDA (whose context and NCCL buffers are
        // outside the allocator's statistics) the cluster spec's.
        double reservedGib = m["rss_bytes"] is { } rssNode ? (double)rssNode / Units.GiB : cluster.Gpu.ReservedGib;
        var cal = new Cal(
            new MeasuredMachine(cluster.Name, host, cpu),
            new MeasuredGemm(precision.Name(), curve.Peak / 1e12, curve.Eff, curve.Half,
                curve.Rows.Select(x => GemmResidual.Of(x.M, x.N, x.K, x.Seconds / curve.Seconds(x.M, x.N, x.K))).ToList()),
            new MeasuredKernels(callSeconds * 1e6, rates.ElementRate / 1e9, slowdown),
            new MeasuredMemory(rates.Bandwidth / 1e9, reservedGib),
            intra.Measured, inter.Measured,
            new Dictionary<string, string>
            {
                ["libtorch"] = (string)m["torch"]!,
                ["dotnet"] = Environment.Version.ToString(),
                ["date"] = DateTime.UtcNow.ToString("yyyy-MM-dd"),
                ["ranks"] = $"{(int?)m["nodes"] ?? 1} node(s) x {(int?)m["ranks_per_node"] ?? n} rank(s)",
                ["device"] = cuda ? $"cuda ({(string?)m["device_name"] ?? "unnamed"}), {precision.Name()}" : "cpu",
            },
            new ProfiledCorrections(rates.Ops, rates.OptimizerNs, P2pLatencyUs: p2pUs, ArrivalUs: arrivalUs));
        var pieces = FitPieces(cluster, m, sizes, precision, cuda, ref cal);
        report = console =>
        {
            ReportPieces(console, cal, m, sizes, precision, cuda, curve, rates, reservedGib, pieces);
            ReportCollectives(console, m, n, rows, intra, inter, p2pAccount, overlap, slowdown);
        };
        return cal;
    }

    /// <summary>The GEMM curve fitted to the measured shapes: their times, the peak (FLOP/s) it is fitted
    /// under, the efficiency, half dimension and per-call overhead (s) it finds, and its relative rms error.</summary>
    private sealed record GemmCurve(List<GemmTime> Rows, double Peak, double Eff, double Half, double Overhead, double Rms)
    {
        public static GemmCurve Fit(JsonObject m, double peak)
        {
            var rows = m["gemm"]!.AsArray().Select(x => GemmTime.Of(x!)).ToList();
            var (eff, half, overhead, rms) = Fitting.Gemm(rows.Select(r => (r.M, r.N, r.K, r.Seconds)).ToList(), peak);
            return new GemmCurve(rows, peak, eff, half, overhead, rms);
        }

        /// <summary>The curve's seconds for an m x n x k GEMM.</summary>
        public double Seconds(double mm, double nn, double kk) =>
            2 * mm * nn * kk / (Peak * Eff) * (mm + Half) / mm * (nn + Half) / nn * (kk + Half) / kk + Overhead;
    }

    /// <summary>Rates measured directly: the memory-bound add's bytes/s, the tanh GELU's elements/s, a one-element op's
    /// seconds, the named ops' ns per logit and the optimizer's ns per parameter.</summary>
    private sealed record KernelRates(double Bandwidth, double ElementRate, double SmallOpSeconds, Dictionary<string, OpRate> Ops, double OptimizerNs)
    {
        public static KernelRates Of(JsonObject m) => new(
            (double)m["add_bytes"]! / (double)m["add_seconds"]!,
            (double)m["gelu_elements"]! / (double)m["gelu_seconds"]!,
            (double)m["small_op_seconds"]!,
            m["ops"]!.AsObject().ToDictionary(kv => kv.Key, kv => OpRateJson.Of(kv.Value!)),
            (double)m["optimizer_ns_per_param"]!);
    }

    /// <summary>The world's collectives as measured, bytes and seconds (the all-reduce by group also its ranks).</summary>
    private sealed record CollectiveRows(List<MessageTime> AllReduce, List<MessageTime> SendRecv, List<MessageTime> Loaded, List<MessageTime> AllGather,
        List<MessageTime> ReduceScatter, List<MessageTime> AllToAll, List<GroupTime> ByGroup)
    {
        public static CollectiveRows Of(JsonObject m) => new(Pairs(m, "all_reduce"), Pairs(m, "send_recv"), Pairs(m, "all_reduce_loaded"),
            Pairs(m, "all_gather"), Pairs(m, "reduce_scatter"), Pairs(m, "all_to_all"),
            m["all_reduce_by_group"]!.AsArray().Select(x => GroupTime.Of(x!)).ToList());
    }

    /// <summary>What the fit of the measured pieces found, measured against priced: linear layers (shape and the two
    /// ratios), the block's measurements and the kernel call's cost they give, the block and head, the block split over
    /// two tensor-parallel ranks and its collectives (null: one rank), the training steps, and the memory they added.</summary>
    private sealed record PiecesFit(List<LinearFit> LinearRows, BlockTimes Block, double? BlockCallUs,
        double BlockKeptUs, BlocksFit Blocks, StepFit Step, MeasuredAgainstPriced Memory, MoeFit? Moe = null, MeasuredAgainstPriced? Ring = null);

    /// <summary>Corrects <paramref name="cal"/> with the pieces timed as the executor runs them: a kernel call's cost,
    /// linear layers, the block and head, the tensor-parallel block, whole steps and their memory.</summary>
    private static PiecesFit FitPieces(ClusterSpec cluster, JsonObject m, ProfileSizes sizes, Precision precision, bool cuda, ref Cal cal)
    {
        // What a kernel call costs as the block runs it (autograd's bookkeeping and the binding, beyond the bare call):
        // the block over 4 sequences of 128 tokens and over one of 32 makes the same calls on a sixteenth of the tokens. With the price linear in
        // the per-call cost, P(o) = A + o B, and one factor f on both, T4 / T1 = P4(o) / P1(o) gives o.
        var measured = BlockTimes.Of(m["block"]!);
        double? blockCallUs = FitBlockCall(cluster, sizes, precision, cuda, measured, ref cal);
        double blockKeptUs = cal.Kernels.OverheadUs;
        // Linear layers as training runs them, against what the GEMM curve (and its residuals) prices for the same
        // GEMMs: the median ratio, forward and backward, corrects every GEMM of a pass.
        var linearRows = FitLinear(cluster, m, precision, ref cal);
        var blocks = FitBlocks(cluster, m, sizes, precision, measured, ref cal);
        var moe = FitMoeBlock(cluster, m, sizes, precision, ref cal);
        var ring = FitRing(cluster, m, sizes, precision, ref cal);
        // Whole training steps of a small GPT on every rank at once, against their price with all of the above; and of a
        // tiny one, whose compute is mostly calls.
        var step = FitSteps(cluster, m, sizes, cuda, ref cal);
        // The memory the first steps added to the rank against what the memory model allocates for them: the allocator's share.
        var stepStage = Pricer.Price(sizes.StepModel(sizes.Step), cal.Apply(cluster) with { Nodes = 1, GpusPerNode = 1 }, sizes.StepPlan(sizes.Step), ExecutorSoftware.Options).PeakStage;
        double added = m["step_added_bytes"] is { } addedNode ? (double)addedNode : (double)m["step_rss_bytes"]! - (double)m["rss_bytes"]!;
        var memory = new MeasuredAgainstPriced(added, stepStage.Total - stepStage.Overhead);
        cal = cal with { Profiled = cal.Profiled! with { MemoryFactor = memory.Ratio } };
        return new PiecesFit(linearRows, measured, blockCallUs, blockKeptUs, blocks, step, memory, moe, ring);
    }

    /// <summary>A kernel call's cost as the block runs it, us (null: the two sizes do not give one); on the CPU it
    /// becomes <paramref name="cal"/>'s when it is above the fitted overhead.</summary>
    private static double? FitBlockCall(ClusterSpec cluster, ProfileSizes sizes, Precision precision, bool cuda, BlockTimes measured, ref Cal cal)
    {
        double? blockCallUs = null;
        var gpu0 = cal.Apply(cluster).Gpu;
        var ops4 = new Planner.CostModel.Compute.TransformerOps(sizes.BlockModel(), sizes.BlockPlan(), flashAttention: false);
        var ops1 = new Planner.CostModel.Compute.TransformerOps(sizes.BlockModel(), sizes.SmallPlan(), flashAttention: false);
        double Price(double us, Planner.CostModel.Compute.TransformerOps ops)
        {
            var t = new Planner.CostModel.Compute.KernelTimer(gpu0 with { KernelOverheadUs = us }, precision);
            return t.Forward(ops.Block) + t.Backward(ops.Block);
        }
        double a4 = Price(0, ops4), b4 = Price(1, ops4) - a4, a1 = Price(0, ops1), b1 = Price(1, ops1) - a1;
        double t4 = measured.Block.Total, t1 = measured.SmallBlock.Total;
        double o = Fitting.CallCost(t4, (a4, b4), t1, (a1, b1));
        if (double.IsFinite(o))
            blockCallUs = o;
        // Not on CUDA, where the host queues calls while the device runs earlier kernels: a call's cost shows only
        // where the kernels are shorter than their launch, and the two sizes are no longer one price plus o calls.
        if (!cuda && o > cal.Kernels.OverheadUs && o < 1000)
            cal = cal.WithKernelOverheadUs(o);
        return blockCallUs;
    }

    /// <summary>Linear layers against the GEMM curve's price: each shape's ratios, their medians into <paramref name="cal"/>.</summary>
    private static List<LinearFit> FitLinear(ClusterSpec cluster, JsonObject m, Precision precision, ref Cal cal)
    {
        var linear = m["linear"]!.AsArray().Select(x => LinearTimes.Of(x!)).ToList();
        var timer = new Planner.CostModel.Compute.KernelTimer(cal.Apply(cluster).Gpu, precision);
        var linearRows = linear.Select(l =>
        {
            double t = l.Tokens, i = l.In, outs = l.Out;
            double f = timer.Gemm(new Planner.CostModel.Compute.GemmShape(t, outs, i));
            double b = timer.Gemm(new Planner.CostModel.Compute.GemmShape(t, i, outs)) + timer.Gemm(new Planner.CostModel.Compute.GemmShape(i, outs, t));
            return new LinearFit(l, new PassAgainstPriced(new(l.Times.Forward, f), new(l.Times.Backward, b)));
        }).ToList();
        cal = cal with { Profiled = cal.Profiled! with { LinearForward = Fitting.Median(linearRows.Select(r => r.Fit.Forward.Ratio)), LinearBackward = Fitting.Median(linearRows.Select(r => r.Fit.Backward.Ratio)) } };
        return linearRows;
    }

    /// <summary>The report of the rates, the GEMM curve and the pieces' fit.</summary>
    private static void ReportPieces(IAnsiConsole console, Cal cal, JsonObject m, ProfileSizes sizes, Precision precision, bool cuda, GemmCurve curve,
        KernelRates rates, double reservedGib, PiecesFit pieces)
    {
        console.WriteLine($"measured on {cal.Machine.Host} ({cal.Machine.Cpu}): {(cuda ? cal.Versions["device"] : "its CPU cores, fp32")}, {cal.Versions["ranks"]}");
        var g = new Table().Border(TableBorder.Rounded).Title($"GEMM ({precision.Name()}, per rank, every rank busy)")
            .AddColumn("m x n x k").AddColumn(new TableColumn("ms").RightAligned()).AddColumn(new TableColumn("GFLOP/s").RightAligned()).AddColumn(new TableColumn("fit ms").RightAligned());
        foreach (var (mm, nn, kk, t) in curve.Rows)
        {
            double fit = curve.Seconds(mm, nn, kk);
            g.AddRow($"{mm}x{nn}x{kk}", $"{t * 1e3:F3}", $"{2 * mm * nn * kk / t / 1e9:F1}", $"{fit * 1e3:F3}");
        }
        console.Write(g);
        console.WriteLine($"fit: efficiency {curve.Eff:F3} of {curve.Peak / 1e12:F3} TFLOP/s, half dimension {curve.Half:F0}, overhead {curve.Overhead * 1e6:F1} us per call (relative rms {curve.Rms:P1})");
        string runtime = m["rss_bytes"] is null ? $"the runtime's memory (outside the CUDA allocator's statistics): the spec's {reservedGib:F2} GiB" : $"rank resident memory before the sweeps {reservedGib:F2} GiB";
        console.WriteLine($"memory-bound add: {rates.Bandwidth / 1e9:F2} GB/s per rank; tanh GELU {rates.ElementRate / 1e9:F3} G elements/s; 1-element op {rates.SmallOpSeconds * 1e6:F2} us; {runtime}");
        foreach (var (name, rate) in rates.Ops)
            console.WriteLine($"{name} ({sizes.LossTokens} tokens): {rate.ForwardNs:F2} ns per logit forward, {rate.BackwardNs:F2} backward");
        foreach (var (l, fit) in pieces.LinearRows)
            console.WriteLine($"linear {l.Tokens}x{l.In}->{l.Out}: forward {l.Times.Forward * 1e3:F2} ms ({fit.Forward.Ratio:F2}x the GEMM price), backward {l.Times.Backward * 1e3:F2} ms ({fit.Backward.Ratio:F2}x)");
        if (pieces.BlockCallUs is double callUs)
            console.WriteLine($"the block over 1 x {sizes.SmallSeq} tokens: forward {pieces.Block.SmallBlock.Forward * 1e3:F2} ms, backward {pieces.Block.SmallBlock.Backward * 1e3:F2} ms; a kernel call as the block runs it: {callUs:F1} us (kept: {pieces.BlockKeptUs:F1} us)");
        console.WriteLine($"linear-layer factors: forward {cal.Profiled!.LinearForward:F2}, backward {cal.Profiled.LinearBackward:F2}");
        var (block, head, tpBlock, tpComm) = pieces.Blocks;
        console.WriteLine($"GPT-2 block (hidden {sizes.BlockModel().Hidden}, {sizes.BlockMbs} x {sizes.BlockSeq} tokens): {Against(block, cal.Profiled!.BlockForward, cal.Profiled.BlockBackward)}");
        if (tpBlock is not null)
            console.WriteLine($"the block split over 2 tensor-parallel ranks (collectives left out): {Against(tpBlock, cal.Profiled!.TpBlockForward, cal.Profiled.TpBlockBackward)}");
        console.WriteLine($"its head (norm, tied LM head, loss): {Against(head, cal.Profiled!.HeadForward, cal.Profiled.HeadBackward)}");
        if (tpComm is not null)
            console.WriteLine($"its collectives (2 all-reduces per pass) as training runs them: {tpComm.Measured * 1e3:F2} ms per forward and backward against {tpComm.Priced * 1e3:F2} priced ({cal.Profiled!.TpComm:F2}x)");
        if (pieces.Moe is var (ec, mp))
        {
            console.WriteLine($"a MoE block's expert-parallel all-to-alls (ep 2: counts, dispatch and combine) as training runs them: {ec.Measured * 1e3:F2} ms per forward and backward against {ec.Priced * 1e3:F2} priced ({cal.Profiled!.EpComm:F2}x)");
            console.WriteLine($"its passes without them: {mp.Measured * 1e3:F2} ms per forward and backward against {mp.Priced * 1e3:F2} for its kernels: {cal.Profiled!.MoeExpertOverheadUs:F0} us per local expert and pass (routing, each expert's calls)");
        }
        if (pieces.Ring is { } rr)
            console.WriteLine($"the block's ring attention over 2 context-parallel ranks, its transfers as training runs them: {rr.Measured * 1e3:F2} ms per forward and backward against {rr.Priced * 1e3:F2} priced ({cal.Profiled!.CpComm:F2}x); its passes {cal.Profiled!.CpBlockForward:F2}x and {cal.Profiled!.CpBlockBackward:F2}x their kernels");
        console.WriteLine($"training steps of a {pieces.Step.Describe} on every rank at once: compute {pieces.Step.Large.Measured * 1e3:F1} ms against {pieces.Step.Large.Priced * 1e3:F1} priced from the pieces");
        if (pieces.Step.Small is { } small)
            console.WriteLine($"  of a {pieces.Step.SmallDescribe}: {small.Measured * 1e3:F2} ms against {small.Priced * 1e3:F2}");
        console.WriteLine($"  {pieces.Step.Account}: compute factor {cal.Profiled!.StepCompute:F2}x, a kernel call {cal.Kernels.OverheadUs:F1} us");
        console.WriteLine($"  its memory: the rank grew by {pieces.Memory.Measured / Units.GiB * 1024:F1} MiB where the memory model allocates {pieces.Memory.Priced / Units.GiB * 1024:F1} MiB ({cal.Profiled!.MemoryFactor:F2}x)");
        console.WriteLine($"optimizer step (AdamW and clearing the gradients): {rates.OptimizerNs:F2} ns per parameter");
    }

    /// <summary>A pass's measured and priced milliseconds, forward and backward, with the factors they gave.</summary>
    private static string Against(PassAgainstPriced pass, double? forwardFactor, double? backwardFactor) =>
        $"forward {pass.Forward.Measured * 1e3:F1} ms against {pass.Forward.Priced * 1e3:F1} priced ({forwardFactor:F2}x), backward {pass.Backward.Measured * 1e3:F1} ms against {pass.Backward.Priced * 1e3:F1} ({backwardFactor:F2}x)";

    /// <summary>The report of the collectives, the links fitted to them and the overlap.</summary>
    private static void ReportCollectives(IAnsiConsole console, JsonObject m, int n, CollectiveRows rows, LinkFit intra, LinkFit inter, string p2pAccount,
        OverlapTimes overlap, double slowdown)
    {
        List<MessageTime> Pairs(string key) => ProfileFit.Pairs(m, key);
        var (ar, sr, loaded, ag, rs, a2a, byGroup) = rows;
        var c = new Table().Border(TableBorder.Rounded).Title($"collectives, {n} ranks (nccl-tests: algbw = S/t; all-reduce busbw = algbw x 2(n-1)/n)")
            .AddColumn("bytes").AddColumn(new TableColumn("all-reduce us").RightAligned()).AddColumn(new TableColumn("loaded us").RightAligned()).AddColumn(new TableColumn("algbw GB/s").RightAligned())
            .AddColumn(new TableColumn("busbw GB/s").RightAligned()).AddColumn(new TableColumn("send/recv us").RightAligned()).AddColumn(new TableColumn("GB/s").RightAligned());
        for (int i = 0; i < ar.Count; i++)
        {
            double algbw = ar[i].Bytes / ar[i].Seconds / 1e9;
            c.AddRow($"{ar[i].Bytes:N0}", $"{ar[i].Seconds * 1e6:F0}", $"{loaded[i].Seconds * 1e6:F0}", $"{algbw:F2}", $"{algbw * 2 * (n - 1) / n:F2}", $"{sr[i].Seconds * 1e6:F0}", $"{sr[i].Bytes / sr[i].Seconds / 1e9:F2}");
        }
        console.Write(c);
        var o = new Table().Border(TableBorder.Rounded).Title($"more collectives, {n} ranks (S: the whole buffer; busbw = algbw x (n-1)/n; Gloo's reduce-scatter is an all-reduce and a slice)")
            .AddColumn("bytes S").AddColumn(new TableColumn("all-gather us").RightAligned()).AddColumn(new TableColumn("busbw GB/s").RightAligned())
            .AddColumn(new TableColumn("reduce-scatter us").RightAligned()).AddColumn(new TableColumn("busbw GB/s").RightAligned())
            .AddColumn(new TableColumn("all-to-all us").RightAligned()).AddColumn(new TableColumn("busbw GB/s").RightAligned())
            .AddColumn(new TableColumn("priced us").RightAligned());
        string Bus(MessageTime x) => $"{x.Bytes / x.Seconds / 1e9 * (n - 1) / n:F2}";
        // The all-to-all (expert parallelism's dispatch, through the executor's op) as the fitted link prices it: one
        // latency and arrival, (n-1)/n of each rank's S bytes through its link.
        double Priced(double bytes) => intra.LatencySeconds + intra.ArrivalSeconds + bytes * (n - 1) / n / intra.BytesPerSecond;
        for (int i = 0; i < ag.Count; i++)
            o.AddRow($"{ag[i].Bytes:N0}", $"{ag[i].Seconds * 1e6:F0}", Bus(ag[i]), $"{rs[i].Seconds * 1e6:F0}", Bus(rs[i]), $"{a2a[i].Seconds * 1e6:F0}", Bus(a2a[i]),
                $"{Priced(a2a[i].Bytes) * 1e6:F0}");
        console.Write(o);
        if (byGroup.Count > 0)
        {
            var gt = new Table().Border(TableBorder.Rounded).Title("all-reduce by group size (busbw = algbw x 2(g-1)/g)")
                .AddColumn("group").AddColumn("bytes").AddColumn(new TableColumn("us").RightAligned()).AddColumn(new TableColumn("busbw GB/s").RightAligned());
            foreach (var (size, bytes, seconds) in byGroup)
                gt.AddRow($"{size}", $"{bytes:N0}", $"{seconds * 1e6:F0}", $"{bytes / seconds / 1e9 * 2 * (size - 1) / size:F2}");
            for (int i = 0; i < ar.Count; i++)
                gt.AddRow($"{n}", $"{ar[i].Bytes:N0}", $"{ar[i].Seconds * 1e6:F0}", $"{ar[i].Bytes / ar[i].Seconds / 1e9 * 2 * (n - 1) / n:F2}");
            console.Write(gt);
        }
        if (m["node_all_reduce_loaded"] is JsonArray { Count: > 0 } || m["send_recv_inter"] is JsonArray { Count: > 0 })
        {
            var nodeRows = m["node_all_reduce_loaded"] is JsonArray { Count: > 0 } ? Pairs("node_all_reduce_loaded") : [];
            var interRows = Pairs("send_recv_inter");
            int per = (int?)m["ranks_per_node"] ?? n;
            var nt = new Table().Border(TableBorder.Rounded).Title($"inside a node ({per} ranks, every node at once) and across nodes (first ranks of nodes 0 and 1)")
                .AddColumn("bytes").AddColumn(new TableColumn("node all-reduce loaded us").RightAligned()).AddColumn(new TableColumn("busbw GB/s").RightAligned())
                .AddColumn(new TableColumn("inter-node send/recv us").RightAligned()).AddColumn(new TableColumn("GB/s").RightAligned());
            for (int i = 0; i < interRows.Count; i++)
            {
                string nodeUs = i < nodeRows.Count ? $"{nodeRows[i].Seconds * 1e6:F0}" : "-";
                string nodeBus = i < nodeRows.Count ? $"{nodeRows[i].Bytes / nodeRows[i].Seconds / 1e9 * 2 * (per - 1) / per:F2}" : "-";
                nt.AddRow($"{interRows[i].Bytes:N0}", nodeUs, nodeBus, $"{interRows[i].Seconds * 1e6:F0}", $"{interRows[i].Bytes / interRows[i].Seconds / 1e9:F2}");
            }
            console.Write(nt);
        }
        foreach (var (tier, link) in new[] { ("intra-node", intra), ("inter-node", inter) })
            console.WriteLine($"{tier} fit: latency {link.LatencySeconds * 1e6:F1} us per step{(link.ArrivalSeconds > 0 ? $" (idle ranks) and {link.ArrivalSeconds * 1e6:F0} us a collective for the peers' arrival after compute" : "")}, bandwidth {link.BytesPerSecond / 1e9:F2} GB/s per rank ({link.Source})");
        console.WriteLine(p2pAccount);
        console.WriteLine($"overlap: {overlap.Blocks} block backwards {overlap.Backward * 1e3:F1} ms alone, their gradients' all-reduces {overlap.Comm * 1e3:F1} ms alone, " +
                          $"each started behind its block {overlap.Together * 1e3:F1} ms: the backward slows by {slowdown:P0} of the overlapped all-reduces' time");
    }


    /// <summary>What the training steps measured and how the fit read them.</summary>
    /// <param name="Describe">The larger step's model.</param>
    /// <param name="Large">Its compute, measured and priced from the pieces (before the step's fit).</param>
    /// <param name="SmallDescribe">The tiny step's model.</param>
    /// <param name="Small">Its compute, measured and priced (null: not measured, an older profile).</param>
    /// <param name="Account">How the factor and the call's cost came out.</param>
    public sealed record StepFit(string Describe, MeasuredAgainstPriced Large, string SmallDescribe, MeasuredAgainstPriced? Small, string Account);

    /// <summary>
    /// The compute of whole training steps against its price from the pieces. Priced with a kernel call costing o,
    /// a step's compute is A + o·B; one factor f on both steps, f·(A + o·B), the larger (its work) and the tiny one (its
    /// calls) give o and f: what a call costs as a training step pays it (autograd, the executor's hooks), and what
    /// training adds to the work (activations held beyond the caches, ranks sharing the memory system). On CUDA, where
    /// the host queues calls ahead of the device, or where the two steps do not part (an older profile, a measurement
    /// out of bounds), the call's cost stays and f comes from the larger step alone.
    /// </summary>
    public static StepFit FitSteps(ClusterSpec cluster, JsonObject m, ProfileSizes sizes, bool cuda, ref Cal cal)
    {
        var c = cal;
        double Price(StepShape shape, double callUs) =>
            Pricer.Price(sizes.StepModel(shape), c.WithKernelOverheadUs(callUs).Apply(cluster) with { Nodes = 1, GpusPerNode = 1 },
                sizes.StepPlan(shape), ExecutorSoftware.Options) is var p ? p.Breakdown.Compute + p.Breakdown.Recompute : 0;
        double tLarge = (double)m["step_compute_seconds"]!;
        double kept = cal.Kernels.OverheadUs;
        var large = new MeasuredAgainstPriced(tLarge, Price(sizes.Step, kept));
        string describe = sizes.Step.Describe(sizes.StepModel(sizes.Step)), smallDescribe = sizes.SmallStep.Describe(sizes.StepModel(sizes.SmallStep));
        if (m["small_step_compute_seconds"] is not { } smallNode)
        {
            cal = cal with { Profiled = cal.Profiled! with { StepCompute = large.Ratio } };
            return new StepFit(describe, large, smallDescribe, null, "no tiny step measured: the factor from the larger step");
        }
        double tSmall = (double)smallNode;
        var small = new MeasuredAgainstPriced(tSmall, Price(sizes.SmallStep, kept));
        double aL = Price(sizes.Step, 0), bL = Price(sizes.Step, 1) - aL, aS = Price(sizes.SmallStep, 0), bS = Price(sizes.SmallStep, 1) - aS;
        double o = Fitting.CallCost(tLarge, (aL, bL), tSmall, (aS, bS));
        string account;
        if (!cuda && double.IsFinite(o) && o > 0 && o < 1000)
        {
            cal = cal.WithKernelOverheadUs(o) with { Profiled = cal.Profiled! with { StepCompute = tLarge / (aL + o * bL) } };
            account = $"the two steps part a call's cost (was {kept:F1} us from the block) from the work";
        }
        else
        {
            cal = cal with { Profiled = cal.Profiled! with { StepCompute = large.Ratio } };
            account = cuda
                ? $"on CUDA the call's cost stays the block's (the host queues calls ahead of the device; the tiny step alone would give {small.Ratio:F2}x)"
                : $"the two steps do not part a call's cost (it would be {o:F1} us): the factor from the larger step";
        }
        return new StepFit(describe, large, smallDescribe, small, account);
    }
}
