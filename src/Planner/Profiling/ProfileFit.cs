using System.CommandLine;
using System.Diagnostics;
using System.Text.Json.Nodes;
using Planner.Cli.Commands;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;
using Spectre.Console;
using Cal = Planner.CostModel.Calibration.Calibration;

namespace Planner.Cli.Profiling;

/// <summary>The calibration fitted from a profile's measurements, and the report of what was measured.</summary>
public static partial class ProfileFit
{
    /// <summary>The stack the executor's measurements are priced with (what <c>run</c> prices).</summary>
    private static PricingOptions Executor => StackLoader.Options(PricingOptions.ExecutorStack);

    /// <summary>The measurements <see cref="Fit"/> cannot do without.</summary>
    public static readonly string[] RequiredMeasurements =
    [
        "gemm", "add_seconds", "add_bytes", "gelu_seconds", "gelu_elements", "small_op_seconds", "ops", "linear", "block", "optimizer_ns_per_param",
        "all_reduce", "all_reduce_loaded", "overlap", "step_compute_seconds", "send_recv", "all_gather", "reduce_scatter", "all_to_all",
        "all_reduce_by_group", "torch",
    ];

    /// <summary>A collective's measured [bytes, seconds] rows under <paramref name="key"/>.</summary>
    private static List<(double, double)> Pairs(JsonObject m, string key) =>
        m[key]!.AsArray().Select(x => x!.AsArray()).Select(a => ((double)a[0]!, (double)a[1]!)).ToList();

    /// <summary>A network tier's fit: latency per ring step, bytes per second per rank, the peers' arrival a collective
    /// after compute pays once (0: folded into the latency), and what it comes from.</summary>
    public sealed record LinkFit(double LatencySeconds, double BytesPerSecond, string Source, double ArrivalSeconds = 0);

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
        static LinkFit Ring(List<(double Bytes, double Seconds)> rows, int n, string source)
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
        var (alpha, _) = Fitting.AlphaBeta(Pairs(m, "send_recv").Select(x => (1.0, x.Item1, x.Item2)).ToList());
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
        var curve = GemmCurve.Fit(m, cluster.Gpu.PeakFlops(precision));
        var rates = KernelRates.Of(m);
        // The backward with its gradients' all-reduces started block by block, as training overlaps them.
        var ov = m["overlap"]!.AsArray().Select(v => (double)v!).ToArray();
        double slowdown = Fitting.OverlapSlowdown(ov[0], ov[1], ov[2], (int)ov[3]);
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
        var cal = new Cal(cluster.Name, host, cpu, precision.Name(), curve.Peak / 1e12, curve.Eff, curve.Half, callSeconds * 1e6, rates.Bandwidth / 1e9,
            reservedGib, intra.BytesPerSecond / 1e9, intra.LatencySeconds * 1e6, inter.BytesPerSecond / 1e9, inter.LatencySeconds * 1e6,
            new Dictionary<string, string>
            {
                ["libtorch"] = (string)m["torch"]!,
                ["dotnet"] = Environment.Version.ToString(),
                ["date"] = DateTime.UtcNow.ToString("yyyy-MM-dd"),
                ["ranks"] = $"{(int?)m["nodes"] ?? 1} node(s) x {(int?)m["ranks_per_node"] ?? n} rank(s)",
                ["device"] = cuda ? $"cuda ({(string?)m["device_name"] ?? "unnamed"}), {precision.Name()}" : "cpu",
            },
            rates.ElementRate / 1e9, slowdown,
            curve.Rows.Select(x => GemmResidual.Of(x.Item1, x.Item2, x.Item3, x.Item4 / curve.Seconds(x.Item1, x.Item2, x.Item3))).ToList(),
            new ProfiledCorrections(rates.Ops, rates.OptimizerNs, P2pLatencyUs: p2pUs, ArrivalUs: arrivalUs));
        var pieces = FitPieces(cluster, m, sizes, precision, cuda, ref cal);
        report = console =>
        {
            ReportPieces(console, cal, m, sizes, precision, cuda, curve, rates, reservedGib, pieces);
            ReportCollectives(console, m, n, rows, intra, inter, p2pAccount, ov, slowdown);
        };
        return cal;
    }

    /// <summary>The GEMM curve fitted to the measured shapes: rows [m, n, k, seconds], the peak (FLOP/s) it is fitted
    /// under, the efficiency, half dimension and per-call overhead (s) it finds, and its relative rms error.</summary>
    private sealed record GemmCurve(List<(double M, double N, double K, double Seconds)> Rows, double Peak, double Eff, double Half, double Overhead, double Rms)
    {
        public static GemmCurve Fit(JsonObject m, double peak)
        {
            var rows = m["gemm"]!.AsArray().Select(x => x!.AsArray()).Select(a => ((double)a[0]!, (double)a[1]!, (double)a[2]!, (double)a[3]!)).ToList();
            var (eff, half, overhead, rms) = Fitting.Gemm(rows, peak);
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
            m["ops"]!.AsObject().ToDictionary(kv => kv.Key, kv => new OpRate((double)kv.Value![0]!, (double)kv.Value![1]!)),
            (double)m["optimizer_ns_per_param"]!);
    }

    /// <summary>The world's collectives as measured, rows of [bytes, seconds] (the all-reduce by group: [ranks, bytes,
    /// seconds]).</summary>
    private sealed record CollectiveRows(List<(double, double)> AllReduce, List<(double, double)> SendRecv, List<(double, double)> Loaded,
        List<(double, double)> AllGather, List<(double, double)> ReduceScatter, List<(double, double)> AllToAll, List<(int, double, double)> ByGroup)
    {
        public static CollectiveRows Of(JsonObject m) => new(Pairs(m, "all_reduce"), Pairs(m, "send_recv"), Pairs(m, "all_reduce_loaded"),
            Pairs(m, "all_gather"), Pairs(m, "reduce_scatter"), Pairs(m, "all_to_all"),
            m["all_reduce_by_group"]!.AsArray().Select(x => x!.AsArray()).Select(a => ((int)(double)a[0]!, (double)a[1]!, (double)a[2]!)).ToList());
    }

    /// <summary>What the fit of the measured pieces found, measured against priced: linear layers (shape and the two
    /// ratios), the block's measurements and the kernel call's cost they give, the block and head, the block split over
    /// two tensor-parallel ranks and its collectives (null: one rank), the training steps, and the memory they added.</summary>
    private sealed record PiecesFit(List<(double[] Shape, double Forward, double Backward)> LinearRows, double[] Block, double? BlockCallUs,
        double BlockKeptUs, double[] BlockRow, double[]? TpBlockRow, double[]? TpCommRow, StepFit Step, double[] MemoryRow,
        (double[] Exchange, double[] Passes)? MoeRows = null, double[]? RingRow = null);

    /// <summary>Corrects <paramref name="cal"/> with the pieces timed as the executor runs them: a kernel call's cost,
    /// linear layers, the block and head, the tensor-parallel block, whole steps and their memory.</summary>
    private static PiecesFit FitPieces(ClusterSpec cluster, JsonObject m, ProfileSizes sizes, Precision precision, bool cuda, ref Cal cal)
    {
        // What a kernel call costs as the block runs it (autograd's bookkeeping and the binding, beyond the bare call):
        // the block over 4 sequences of 128 tokens and over one of 32 makes the same calls on a sixteenth of the tokens. With the price linear in
        // the per-call cost, P(o) = A + o B, and one factor f on both, T4 / T1 = P4(o) / P1(o) gives o.
        var measured = m["block"]!.AsArray().Select(v => (double)v!).ToArray();
        double? blockCallUs = FitBlockCall(cluster, sizes, precision, cuda, measured, ref cal);
        double blockKeptUs = cal.KernelOverheadUs;
        // Linear layers as training runs them, against what the GEMM curve (and its residuals) prices for the same
        // GEMMs: the median ratio, forward and backward, corrects every GEMM of a pass.
        var linearRows = FitLinear(cluster, m, precision, ref cal);
        var (blockRow, tpBlockRow, tpCommRow) = FitBlocks(cluster, m, sizes, precision, measured, ref cal);
        var moeRows = FitMoeBlock(cluster, m, sizes, precision, ref cal);
        var ringRow = FitRing(cluster, m, sizes, precision, ref cal);
        // Whole training steps of a small GPT on every rank at once, against their price with all of the above; and of a
        // tiny one, whose compute is mostly calls.
        var step = FitSteps(cluster, m, sizes, cuda, ref cal);
        // The memory the first steps added to the rank against what the memory model allocates for them: the allocator's share.
        var stepStage = Pricer.Price(sizes.StepModel(sizes.Step), cal.Apply(cluster) with { Nodes = 1, GpusPerNode = 1 }, sizes.StepPlan(sizes.Step), Executor).PeakStage;
        double added = m["step_added_bytes"] is { } addedNode ? (double)addedNode : (double)m["step_rss_bytes"]! - (double)m["rss_bytes"]!;
        double[] memoryRow = [added, stepStage.Total - stepStage.Overhead];
        cal = cal with { Profiled = cal.Profiled! with { MemoryFactor = memoryRow[0] / memoryRow[1] } };
        return new PiecesFit(linearRows, measured, blockCallUs, blockKeptUs, blockRow, tpBlockRow, tpCommRow, step, memoryRow, moeRows, ringRow);
    }

    /// <summary>A kernel call's cost as the block runs it, us (null: the two sizes do not give one); on the CPU it
    /// becomes <paramref name="cal"/>'s when it is above the fitted overhead.</summary>
    private static double? FitBlockCall(ClusterSpec cluster, ProfileSizes sizes, Precision precision, bool cuda, double[] measured, ref Cal cal)
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
        double t4 = measured[0] + measured[1], t1 = measured[4] + measured[5];
        double o = Fitting.CallCost(t4, (a4, b4), t1, (a1, b1));
        if (double.IsFinite(o))
            blockCallUs = o;
        // Not on CUDA, where the host queues calls while the device runs earlier kernels: a call's cost shows only
        // where the kernels are shorter than their launch, and the two sizes are no longer one price plus o calls.
        if (!cuda && o > cal.KernelOverheadUs && o < 1000)
            cal = cal with { KernelOverheadUs = o };
        return blockCallUs;
    }

    /// <summary>Linear layers against the GEMM curve's price: each shape's ratios, their medians into <paramref name="cal"/>.</summary>
    private static List<(double[] Shape, double Forward, double Backward)> FitLinear(ClusterSpec cluster, JsonObject m, Precision precision, ref Cal cal)
    {
        var linear = m["linear"]!.AsArray().Select(x => x!.AsArray().Select(v => (double)v!).ToArray()).ToList();
        var timer = new Planner.CostModel.Compute.KernelTimer(cal.Apply(cluster).Gpu, precision);
        var linearRows = linear.Select(l =>
        {
            double t = l[0], i = l[1], outs = l[2];
            double f = timer.Gemm(new Planner.CostModel.Compute.GemmShape(t, outs, i));
            double b = timer.Gemm(new Planner.CostModel.Compute.GemmShape(t, i, outs)) + timer.Gemm(new Planner.CostModel.Compute.GemmShape(i, outs, t));
            return (Shape: l, Forward: l[3] / f, Backward: l[4] / b);
        }).ToList();
        cal = cal with { Profiled = cal.Profiled! with { LinearForward = Fitting.Median(linearRows.Select(r => r.Forward)), LinearBackward = Fitting.Median(linearRows.Select(r => r.Backward)) } };
        return linearRows;
    }

    /// <summary>The report of the rates, the GEMM curve and the pieces' fit.</summary>
    private static void ReportPieces(IAnsiConsole console, Cal cal, JsonObject m, ProfileSizes sizes, Precision precision, bool cuda, GemmCurve curve,
        KernelRates rates, double reservedGib, PiecesFit pieces)
    {
        console.WriteLine($"measured on {cal.Host} ({cal.Cpu}): {(cuda ? cal.Versions["device"] : "its CPU cores, fp32")}, {cal.Versions["ranks"]}");
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
        foreach (var (shape, f, b) in pieces.LinearRows)
            console.WriteLine($"linear {shape[0]}x{shape[1]}->{shape[2]}: forward {shape[3] * 1e3:F2} ms ({f:F2}x the GEMM price), backward {shape[4] * 1e3:F2} ms ({b:F2}x)");
        if (pieces.BlockCallUs is double callUs)
            console.WriteLine($"the block over 1 x {sizes.SmallSeq} tokens: forward {pieces.Block[4] * 1e3:F2} ms, backward {pieces.Block[5] * 1e3:F2} ms; a kernel call as the block runs it: {callUs:F1} us (kept: {pieces.BlockKeptUs:F1} us)");
        console.WriteLine($"linear-layer factors: forward {cal.Profiled!.LinearForward:F2}, backward {cal.Profiled.LinearBackward:F2}");
        var br = pieces.BlockRow;
        console.WriteLine($"GPT-2 block (hidden {sizes.BlockModel().Hidden}, {sizes.BlockMbs} x {sizes.BlockSeq} tokens): forward {br[0] * 1e3:F1} ms against {br[1] * 1e3:F1} priced ({cal.Profiled!.BlockForward:F2}x), backward {br[2] * 1e3:F1} ms against {br[3] * 1e3:F1} ({cal.Profiled.BlockBackward:F2}x)");
        if (pieces.TpBlockRow is { } tr)
            console.WriteLine($"the block split over 2 tensor-parallel ranks (collectives left out): forward {tr[0] * 1e3:F1} ms against {tr[1] * 1e3:F1} priced ({cal.Profiled!.TpBlockForward:F2}x), backward {tr[2] * 1e3:F1} ms against {tr[3] * 1e3:F1} ({cal.Profiled.TpBlockBackward:F2}x)");
        console.WriteLine($"its head (norm, tied LM head, loss): forward {br[4] * 1e3:F1} ms against {br[5] * 1e3:F1} priced ({cal.Profiled!.HeadForward:F2}x), backward {br[6] * 1e3:F1} ms against {br[7] * 1e3:F1} ({cal.Profiled.HeadBackward:F2}x)");
        if (pieces.TpCommRow is { } tc)
            console.WriteLine($"its collectives (2 all-reduces per pass) as training runs them: {tc[0] * 1e3:F2} ms per forward and backward against {tc[1] * 1e3:F2} priced ({cal.Profiled!.TpComm:F2}x)");
        if (pieces.MoeRows is var (ec, mp))
        {
            console.WriteLine($"a MoE block's expert-parallel all-to-alls (ep 2: counts, dispatch and combine) as training runs them: {ec[0] * 1e3:F2} ms per forward and backward against {ec[1] * 1e3:F2} priced ({cal.Profiled!.EpComm:F2}x)");
            console.WriteLine($"its passes without them: {mp[0] * 1e3:F2} ms per forward and backward against {mp[1] * 1e3:F2} for its kernels: {cal.Profiled!.MoeExpertOverheadUs:F0} us per local expert and pass (routing, each expert's calls)");
        }
        if (pieces.RingRow is { } rr)
            console.WriteLine($"the block's ring attention over 2 context-parallel ranks, its transfers as training runs them: {rr[0] * 1e3:F2} ms per forward and backward against {rr[1] * 1e3:F2} priced ({cal.Profiled!.CpComm:F2}x); its passes {cal.Profiled!.CpBlockForward:F2}x and {cal.Profiled!.CpBlockBackward:F2}x their kernels");
        console.WriteLine($"training steps of a {pieces.Step.Describe} on every rank at once: compute {pieces.Step.Large[0] * 1e3:F1} ms against {pieces.Step.Large[1] * 1e3:F1} priced from the pieces");
        if (pieces.Step.Small is { } small)
            console.WriteLine($"  of a {pieces.Step.SmallDescribe}: {small[0] * 1e3:F2} ms against {small[1] * 1e3:F2}");
        console.WriteLine($"  {pieces.Step.Account}: compute factor {cal.Profiled!.StepCompute:F2}x, a kernel call {cal.KernelOverheadUs:F1} us");
        console.WriteLine($"  its memory: the rank grew by {pieces.MemoryRow[0] / Units.GiB * 1024:F1} MiB where the memory model allocates {pieces.MemoryRow[1] / Units.GiB * 1024:F1} MiB ({cal.Profiled!.MemoryFactor:F2}x)");
        console.WriteLine($"optimizer step (AdamW and clearing the gradients): {rates.OptimizerNs:F2} ns per parameter");
    }

    /// <summary>The report of the collectives, the links fitted to them and the overlap.</summary>
    private static void ReportCollectives(IAnsiConsole console, JsonObject m, int n, CollectiveRows rows, LinkFit intra, LinkFit inter, string p2pAccount,
        double[] ov, double slowdown)
    {
        List<(double, double)> Pairs(string key) => ProfileFit.Pairs(m, key);
        var (ar, sr, loaded, ag, rs, a2a, byGroup) = rows;
        int overlapBlocks = (int)ov[3];
        var c = new Table().Border(TableBorder.Rounded).Title($"collectives, {n} ranks (nccl-tests: algbw = S/t; all-reduce busbw = algbw x 2(n-1)/n)")
            .AddColumn("bytes").AddColumn(new TableColumn("all-reduce us").RightAligned()).AddColumn(new TableColumn("loaded us").RightAligned()).AddColumn(new TableColumn("algbw GB/s").RightAligned())
            .AddColumn(new TableColumn("busbw GB/s").RightAligned()).AddColumn(new TableColumn("send/recv us").RightAligned()).AddColumn(new TableColumn("GB/s").RightAligned());
        for (int i = 0; i < ar.Count; i++)
        {
            double algbw = ar[i].Item1 / ar[i].Item2 / 1e9;
            c.AddRow($"{ar[i].Item1:N0}", $"{ar[i].Item2 * 1e6:F0}", $"{loaded[i].Item2 * 1e6:F0}", $"{algbw:F2}", $"{algbw * 2 * (n - 1) / n:F2}", $"{sr[i].Item2 * 1e6:F0}", $"{sr[i].Item1 / sr[i].Item2 / 1e9:F2}");
        }
        console.Write(c);
        var o = new Table().Border(TableBorder.Rounded).Title($"more collectives, {n} ranks (S: the whole buffer; busbw = algbw x (n-1)/n; Gloo's reduce-scatter is an all-reduce and a slice)")
            .AddColumn("bytes S").AddColumn(new TableColumn("all-gather us").RightAligned()).AddColumn(new TableColumn("busbw GB/s").RightAligned())
            .AddColumn(new TableColumn("reduce-scatter us").RightAligned()).AddColumn(new TableColumn("busbw GB/s").RightAligned())
            .AddColumn(new TableColumn("all-to-all us").RightAligned()).AddColumn(new TableColumn("busbw GB/s").RightAligned())
            .AddColumn(new TableColumn("priced us").RightAligned());
        string Bus((double Bytes, double Seconds) x) => $"{x.Bytes / x.Seconds / 1e9 * (n - 1) / n:F2}";
        // The all-to-all (expert parallelism's dispatch, through the executor's op) as the fitted link prices it: one
        // latency and arrival, (n-1)/n of each rank's S bytes through its link.
        double Priced(double bytes) => intra.LatencySeconds + intra.ArrivalSeconds + bytes * (n - 1) / n / intra.BytesPerSecond;
        for (int i = 0; i < ag.Count; i++)
            o.AddRow($"{ag[i].Item1:N0}", $"{ag[i].Item2 * 1e6:F0}", Bus(ag[i]), $"{rs[i].Item2 * 1e6:F0}", Bus(rs[i]), $"{a2a[i].Item2 * 1e6:F0}", Bus(a2a[i]),
                $"{Priced(a2a[i].Item1) * 1e6:F0}");
        console.Write(o);
        if (byGroup.Count > 0)
        {
            var gt = new Table().Border(TableBorder.Rounded).Title("all-reduce by group size (busbw = algbw x 2(g-1)/g)")
                .AddColumn("group").AddColumn("bytes").AddColumn(new TableColumn("us").RightAligned()).AddColumn(new TableColumn("busbw GB/s").RightAligned());
            foreach (var (size, bytes, seconds) in byGroup)
                gt.AddRow($"{size}", $"{bytes:N0}", $"{seconds * 1e6:F0}", $"{bytes / seconds / 1e9 * 2 * (size - 1) / size:F2}");
            for (int i = 0; i < ar.Count; i++)
                gt.AddRow($"{n}", $"{ar[i].Item1:N0}", $"{ar[i].Item2 * 1e6:F0}", $"{ar[i].Item1 / ar[i].Item2 / 1e9 * 2 * (n - 1) / n:F2}");
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
                string nodeUs = i < nodeRows.Count ? $"{nodeRows[i].Item2 * 1e6:F0}" : "-";
                string nodeBus = i < nodeRows.Count ? $"{nodeRows[i].Item1 / nodeRows[i].Item2 / 1e9 * 2 * (per - 1) / per:F2}" : "-";
                nt.AddRow($"{interRows[i].Item1:N0}", nodeUs, nodeBus, $"{interRows[i].Item2 * 1e6:F0}", $"{interRows[i].Item1 / interRows[i].Item2 / 1e9:F2}");
            }
            console.Write(nt);
        }
        foreach (var (tier, link) in new[] { ("intra-node", intra), ("inter-node", inter) })
            console.WriteLine($"{tier} fit: latency {link.LatencySeconds * 1e6:F1} us per step{(link.ArrivalSeconds > 0 ? $" (idle ranks) and {link.ArrivalSeconds * 1e6:F0} us a collective for the peers' arrival after compute" : "")}, bandwidth {link.BytesPerSecond / 1e9:F2} GB/s per rank ({link.Source})");
        console.WriteLine(p2pAccount);
        console.WriteLine($"overlap: {overlapBlocks} block backwards {ov[0] * 1e3:F1} ms alone, their gradients' all-reduces {ov[1] * 1e3:F1} ms alone, " +
                          $"each started behind its block {ov[2] * 1e3:F1} ms: the backward slows by {slowdown:P0} of the overlapped all-reduces' time");
    }


    /// <summary>What the training steps measured and how the fit read them.</summary>
    /// <param name="Describe">The larger step's model.</param>
    /// <param name="Large">Its compute, measured and priced from the pieces (before the step's fit).</param>
    /// <param name="SmallDescribe">The tiny step's model.</param>
    /// <param name="Small">Its compute, measured and priced (null: not measured, an older profile).</param>
    /// <param name="Account">How the factor and the call's cost came out.</param>
    public sealed record StepFit(string Describe, double[] Large, string SmallDescribe, double[]? Small, string Account);

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
            Pricer.Price(sizes.StepModel(shape), (c with { KernelOverheadUs = callUs }).Apply(cluster) with { Nodes = 1, GpusPerNode = 1 },
                sizes.StepPlan(shape), Executor) is var p ? p.Breakdown.Compute + p.Breakdown.Recompute : 0;
        double tLarge = (double)m["step_compute_seconds"]!;
        double kept = cal.KernelOverheadUs;
        double[] large = [tLarge, Price(sizes.Step, kept)];
        string describe = sizes.Step.Describe(sizes.StepModel(sizes.Step)), smallDescribe = sizes.SmallStep.Describe(sizes.StepModel(sizes.SmallStep));
        if (m["small_step_compute_seconds"] is not { } smallNode)
        {
            cal = cal with { Profiled = cal.Profiled! with { StepCompute = large[0] / large[1] } };
            return new StepFit(describe, large, smallDescribe, null, "no tiny step measured: the factor from the larger step");
        }
        double tSmall = (double)smallNode;
        double[] small = [tSmall, Price(sizes.SmallStep, kept)];
        double aL = Price(sizes.Step, 0), bL = Price(sizes.Step, 1) - aL, aS = Price(sizes.SmallStep, 0), bS = Price(sizes.SmallStep, 1) - aS;
        double o = Fitting.CallCost(tLarge, (aL, bL), tSmall, (aS, bS));
        string account;
        if (!cuda && double.IsFinite(o) && o > 0 && o < 1000)
        {
            cal = cal with { KernelOverheadUs = o, Profiled = cal.Profiled! with { StepCompute = tLarge / (aL + o * bL) } };
            account = $"the two steps part a call's cost (was {kept:F1} us from the block) from the work";
        }
        else
        {
            cal = cal with { Profiled = cal.Profiled! with { StepCompute = large[0] / large[1] } };
            account = cuda
                ? $"on CUDA the call's cost stays the block's (the host queues calls ahead of the device; the tiny step alone would give {tSmall / small[1]:F2}x)"
                : $"the two steps do not part a call's cost (it would be {o:F1} us): the factor from the larger step";
        }
        return new StepFit(describe, large, smallDescribe, small, account);
    }
}
