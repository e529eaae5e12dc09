using Planner.Cli.Profiling;
using Planner.CostModel.Calibration;
using Planner.CostModel.Specs;
using Xunit;
using Cal = Planner.CostModel.Calibration.Calibration;

namespace Planner.Cli.Tests;

public sealed class ProfilingTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), $"planner-cal-{Guid.NewGuid():N}");

    public ProfilingTests() => Directory.CreateDirectory(_dir);

    public void Dispose()
    {
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    [Trait("Category", "Slow")]
    [Fact]
    public void Profile_measures_this_machine_and_writes_a_calibration_run_uses()
    {
        // The whole verb with real rank processes: every collective of the issue in the report, the calibration file
        // with the measured corrections, and the file accepted by run's prediction.
        string path = Path.Combine(_dir, "local.csv");
        string kept = Path.Combine(_dir, "measurements.json");
        var (code, output, error) = ExecutorParityTests.Planner(["profile", "--cluster", "local-cpu", "--out", path, "--keep-measurements", kept]);
        Assert.True(code == 0, error);
        foreach (var heading in new[] { "all-reduce us", "send/recv us", "all-gather us", "reduce-scatter us", "all-to-all us", "busbw GB/s",
                     "training steps of a ", "a kernel call as the block runs it", "its collectives (2 all-reduces per pass)",
                     "a MoE block's expert-parallel all-to-alls", "ring attention over 2 context-parallel ranks", "priced us" })
            Assert.Contains(heading, output);
        Assert.DoesNotContain("progress ", error); // progress lines feed the bar, not the errors
        var cal = CalibrationFile.Read(path);
        Assert.Equal("local-cpu", cal.Machine.Cluster);
        var p = cal.Profiled!;
        // Every correction measured; the MoE overhead beyond the kernels may be none.
        foreach (var (key, get, _) in ProfiledCorrections.Scalars)
            Assert.True(get(p) is double v && double.IsFinite(v) && (v > 0 || (key == "moe_expert_overhead_us" && v == 0)), $"{key} not measured");
        Assert.True(cal.Intra.BandwidthGbs > 0 && cal.Intra.LatencyUs > 0);
        var applied = CalibrationFile.Apply(ClusterLoader.Load("local-cpu"), path, force: false);
        Assert.Equal(cal.Gemm.Efficiency, applied.Gpu.GemmEfficiency);

        // The kept measurements fit again, measuring nothing, to the same calibration.
        string refitPath = Path.Combine(_dir, "refit.csv");
        var (refitCode, refitOutput, refitError) = ExecutorParityTests.Planner(["profile", "--cluster", "local-cpu", "--from-measurements", kept, "--out", refitPath]);
        Assert.True(refitCode == 0, refitError);
        Assert.Contains($"fitted from {kept}", refitOutput);
        var refit = CalibrationFile.Read(refitPath);
        Assert.Equal(cal.Machine.Host, refit.Machine.Host);
        foreach (var (name, a, b) in new[]
                 {
                     ("gemm efficiency", cal.Gemm.Efficiency, refit.Gemm.Efficiency), ("half dimension", cal.Gemm.HalfDim, refit.Gemm.HalfDim),
                     ("kernel overhead", cal.Kernels.OverheadUs, refit.Kernels.OverheadUs), ("reserved", cal.Memory.ReservedGib, refit.Memory.ReservedGib),
                     ("intra bandwidth", cal.Intra.BandwidthGbs, refit.Intra.BandwidthGbs), ("step factor", p.StepCompute!.Value, refit.Profiled!.StepCompute!.Value),
                     ("memory factor", p.MemoryFactor!.Value, refit.Profiled!.MemoryFactor!.Value),
                     ("ep comm factor", p.EpComm!.Value, refit.Profiled!.EpComm!.Value), ("cp comm factor", p.CpComm!.Value, refit.Profiled!.CpComm!.Value),
                     ("cp block factor", p.CpBlockForward!.Value, refit.Profiled!.CpBlockForward!.Value),
                     ("cp block backward factor", p.CpBlockBackward!.Value, refit.Profiled!.CpBlockBackward!.Value),
                     ("moe overhead", p.MoeExpertOverheadUs!.Value, refit.Profiled!.MoeExpertOverheadUs!.Value),
                 })
            Assert.True(a == b, $"{name}: {a} measured, {b} refitted");
        AssertCudaMeasurementsFitTheGpuCluster(kept);
    }

    /// <summary>
    /// The fit of a CUDA profile, from measurements shaped as its ranks write them (this profile's, relabelled: this
    /// machine has no GPU): the calibration is the cluster's training precision, the runtime's memory stays the spec's
    /// (CUDA's allocator does not see the context), and the corrections are priced at the CUDA sizes.
    /// </summary>
    private static void AssertCudaMeasurementsFitTheGpuCluster(string kept)
    {
        System.Text.Json.Nodes.JsonObject Measurements() => System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(kept))!.AsObject();
        var m = Measurements();
        m["device"] = "cuda";
        m["precision"] = "bf16";
        m["rss_bytes"] = null;
        m["host"] = "gpu-node-7";
        m["device_name"] = "NVIDIA H100 80GB HBM3";
        var spec = ClusterLoader.Load("dgx-h100");
        var cal = Planner.Cli.Commands.ProfileCommand.FitSaved(spec, m, "gpu-measurements.json", out var report);
        // Kept in a precision the cluster's devices have no rate for: named as bad input.
        var fp8Less = ClusterLoader.Load("dgx-a100-80g");
        var m8 = Measurements();
        m8["device"] = "cuda";
        m8["precision"] = "fp8";
        Assert.Contains("fp8", Assert.Throws<InputException>(() => Planner.Cli.Commands.ProfileCommand.FitSaved(fp8Less, m8, "m8.json", out _)).Message);
        Assert.Equal("bf16", cal.Gemm.Precision);
        Assert.Equal("gpu-node-7", cal.Machine.Host);
        Assert.Equal("cuda (NVIDIA H100 80GB HBM3), bf16", cal.Versions["device"]);
        Assert.Equal(spec.Gpu.ReservedGib, cal.Memory.ReservedGib);
        Assert.Equal(spec.Gpu.PeakTflops[Precision.Bf16], cal.Gemm.PeakTflops, 1e-9);
        var applied = cal.Apply(spec);
        Assert.Equal(cal.Gemm.PeakTflops, applied.Gpu.PeakTflops[Precision.Bf16]);
        var console = new StringWriter();
        report(Planner.Cli.Rendering.Tables.Console(console));
        Assert.Contains("GEMM (bf16", console.ToString());
        // The corrections were priced at the CUDA sizes the ranks measured at.
        var sizes = ProfileSizes.Cuda(Precision.Bf16);
        Assert.Contains($"GPT-2 block (hidden {sizes.BlockModel().Hidden}, {sizes.BlockMbs} x {sizes.BlockSeq} tokens)", console.ToString());
        Assert.Contains($"training steps of a {sizes.Step.Describe(sizes.StepModel(sizes.Step))}", console.ToString());
        Assert.Contains("measured on gpu-node-7", console.ToString());
        Assert.Equal("fp32", Planner.Cli.Profiling.ProfileFit.Fit(ClusterLoader.Load("local-cpu"), Measurements(), out _).Gemm.Precision);
    }

    [Theory]
    [InlineData("local-cpu", "auto", 4, 2, "cpu")]
    [InlineData("local-cpu", "cpu", 0, 2, "cpu")]
    [InlineData("dgx-h100", "auto", 8, 8, "cuda")]
    [InlineData("dgx-h100", "cuda", 8, 2, "cuda")]
    [InlineData("dgx-h100", "auto", 0, 2, "--cluster dgx-h100")]
    [InlineData("dgx-h100", "cpu", 8, 2, "--device cpu")]
    [InlineData("local-cpu", "cuda", 2, 2, "CPU cores")]
    [InlineData("dgx-h100", "cuda", 4, 8, "8 ranks")]
    public void Profile_measures_the_clusters_kind_of_device(string cluster, string device, int visible, int ranks, string expected)
    {
        // expected: the device measured, or a part of the refusal's message.
        var spec = ClusterLoader.Load(cluster);
        Commands.DeviceChoice Measured() => Commands.ProfileCommand.MeasuredDevice(spec, Commands.DeviceChoice.Parse(device), ranks, scheduled: false, () => visible);
        if (expected is "cpu" or "cuda")
        {
            Assert.Equal(expected, Measured().Type == Planner.Executor.Torch.DeviceType.Cuda ? "cuda" : "cpu");
            Assert.Equal(expected == "cuda" ? Precision.Bf16 : Precision.Fp32, ProfileSizes.PrecisionFor(spec, expected == "cuda"));
        }
        else
            Assert.Contains(expected, Assert.Throws<InputException>(Measured).Message);
    }

    [Fact]
    public void Gemm_fit_recovers_known_parameters_from_synthetic_timings()
    {
        const double peak = 1e14, eff = 0.62, half = 96, overhead = 7e-6;
        var samples = ProfileSizes.Cpu.GemmShapes.Select(s =>
        {
            double t = 2.0 * s.M * s.N * s.K / (peak * eff) * (s.M + half) / s.M * (s.N + half) / s.N * (s.K + half) / s.K + overhead;
            return ((double)s.M, (double)s.N, (double)s.K, t);
        }).ToList();
        var (e, h, o, rms) = Fitting.Gemm(samples, peak);
        Assert.Equal(eff, e, 3);
        Assert.Equal(half, h, 0);
        Assert.Equal(overhead, o, 8);
        Assert.True(rms < 1e-6);
    }

    [Theory]
    [InlineData(0.3, 4)]
    [InlineData(0.9, 4)]
    [InlineData(1.1, 4)]
    [InlineData(1.8, 8)]
    [InlineData(0.4, 1)]
    public void Overlap_fit_recovers_the_slowdown_the_pricer_applies(double slowdown, int buckets)
    {
        // Synthetic measurement from the cost model itself: the overlapped buckets through GpuSpec.Overlapped, the last
        // one exposed after the backward (as the pricer does); the fit must give back the slowdown.
        var gpu = ClusterLoader.LoadGpu("local-cpu") with { OverlapSlowdown = slowdown };
        double backward = 0.1, comm = 0.03;
        double overlapped = buckets > 1 ? comm * (buckets - 1) / buckets : comm;
        double together = gpu.Overlapped(backward, overlapped) + (comm - overlapped);
        Assert.Equal(slowdown, Fitting.OverlapSlowdown(backward, comm, together, buckets), 9);
        // Beyond the range: clamped.
        Assert.Equal(GpuSpec.MaxOverlapSlowdown, Fitting.OverlapSlowdown(backward, comm, backward + 10 * comm, buckets));
        Assert.Equal(0, Fitting.OverlapSlowdown(backward, comm, backward * 0.5, buckets));
    }

    [Theory]
    [InlineData(40.0, 1.1)]
    [InlineData(2.0, 0.9)]
    public void Call_cost_fit_recovers_the_cost_of_a_call_from_two_sizes(double callUs, double factor)
    {
        // The reference block's price at 4 sequences and at 1 as the profile computes it (kernels, and per microsecond
        // of call cost), and times made from a known call cost and factor: the fit gives the call cost back.
        var gpu = ClusterLoader.LoadGpu("local-cpu");
        var model = ProfileSizes.Cpu.BlockModel();
        (double A, double B) Price(Planner.CostModel.Plans.ParallelPlan plan)
        {
            var ops = new Planner.CostModel.Compute.TransformerOps(model, plan, flashAttention: false);
            double P(double us)
            {
                var t = new Planner.CostModel.Compute.KernelTimer(gpu with { KernelOverheadUs = us }, Precision.Fp32);
                return t.Forward(ops.Block) + t.Backward(ops.Block);
            }
            return (P(0), P(1) - P(0));
        }
        var large = Price(ProfileSizes.Cpu.BlockPlan());
        var small = Price(ProfileSizes.Cpu.SmallPlan());
        Assert.True(large.A > 3 * small.A && large.B > 0, $"{large} {small}");
        Assert.Equal(large.B, small.B, 9); // the same calls
        double tLarge = factor * (large.A + callUs * large.B), tSmall = factor * (small.A + callUs * small.B);
        Assert.Equal(callUs, Fitting.CallCost(tLarge, large, tSmall, small), 6);
        // Sizes whose times scale like their work alone: no call cost.
        Assert.Equal(0, Fitting.CallCost(factor * large.A, large, factor * small.A, small), 6);
    }

    [Fact]
    public void Alpha_beta_fit_recovers_latency_and_bandwidth()
    {
        const double alpha = 30e-6, bandwidth = 2.5e9;
        var rng = new Random(7);
        var samples = ProfileSizes.Cpu.MessageBytes.SelectMany(b => new[] { (2.0, (double)b), (1.0, (double)b) })
            .Select(x => (x.Item1, x.Item2, (x.Item1 * alpha + x.Item2 / bandwidth) * (1 + 0.001 * (rng.NextDouble() - 0.5)))).ToList();
        var (a, b) = Fitting.AlphaBeta(samples);
        Assert.InRange(a, alpha * 0.97, alpha * 1.03);
        Assert.InRange(b, bandwidth * 0.99, bandwidth * 1.01);
    }

    /// <summary>Rows of [bytes, seconds] for a loaded all-reduce over <paramref name="n"/> ranks, as a ring of
    /// latency <paramref name="alpha"/> per step and <paramref name="bandwidth"/> bytes/s per rank would take.</summary>
    private static System.Text.Json.Nodes.JsonArray RingRows(int n, double alpha, double bandwidth) =>
        new(ProfileSizes.Cpu.MessageBytes.Select(b => (System.Text.Json.Nodes.JsonNode)new System.Text.Json.Nodes.JsonArray(
            (double)b, 2.0 * (n - 1) * alpha + 2.0 * (n - 1) / n * b / bandwidth)).ToArray());

    [Theory]
    [InlineData(1, 4)]
    [InlineData(2, 2)]
    [InlineData(4, 2)]
    [InlineData(2, 1)]
    public void Link_fit_recovers_each_tier_and_prices_the_measurements_back(int nodes, int perNode)
    {
        // A machine's own links (inside a node) and a slower network between nodes.
        const double intraAlpha = 15e-6, intraBw = 6e9, interAlpha = 80e-6, interBw = 1.5e9, idleAlpha = 4e-6;
        int world = nodes * perNode;
        var cluster = ClusterLoader.Load("local-cpu");
        var m = new System.Text.Json.Nodes.JsonObject
        {
            ["world"] = world,
            ["nodes"] = nodes,
            ["ranks_per_node"] = perNode,
            // One node: the world's all-reduce runs on the machine's links; several: it crosses the network.
            ["all_reduce_loaded"] = nodes == 1 ? RingRows(world, intraAlpha, intraBw) : RingRows(world, interAlpha, interBw),
            ["node_all_reduce_loaded"] = nodes > 1 && perNode > 1 ? RingRows(perNode, intraAlpha, intraBw) : new System.Text.Json.Nodes.JsonArray(),
            // The world's all-reduce between idle ranks: on one machine it parts the latency from the peers' arrival.
            ["all_reduce"] = RingRows(world, idleAlpha, intraBw),
        };
        var (intra, inter) = Planner.Cli.Profiling.ProfileFit.FitLinks(m, cluster);
        if (nodes > 1 && perNode == 1)
        {
            // No two ranks share a node: the intra-node tier is the cluster spec's, and the report says so.
            Assert.Equal(cluster.IntraNode.LatencySeconds, intra.LatencySeconds);
            Assert.Equal(cluster.IntraNode.EffectiveBytesPerSecond, intra.BytesPerSecond);
            Assert.Contains("not measured", intra.Source);
        }
        else if (nodes == 1)
        {
            // One machine: the idle ranks' latency per step, and the rest of the loaded one's, once per collective.
            Assert.Equal(idleAlpha, intra.LatencySeconds, 1e-9);
            Assert.Equal(2.0 * (world - 1) * (intraAlpha - idleAlpha), intra.ArrivalSeconds, 1e-9);
            Assert.Equal(intraBw, intra.BytesPerSecond, intraBw * 1e-6);
        }
        else
        {
            Assert.Equal(intraAlpha, intra.LatencySeconds, 1e-9);
            Assert.Equal(0, intra.ArrivalSeconds);
            Assert.Equal(intraBw, intra.BytesPerSecond, intraBw * 1e-6);
        }
        Assert.Equal(nodes == 1 ? idleAlpha : interAlpha, inter.LatencySeconds, 1e-9);
        Assert.Equal(nodes == 1 ? intraBw : interBw, inter.BytesPerSecond, interBw * 1e-6);
        // The cost model, given the fitted tiers, prices the world's all-reduce (a ring spanning the nodes) and a node's
        // as they were measured.
        var fitted = cluster with
        {
            Nodes = nodes,
            GpusPerNode = perNode,
            IntraNode = new LinkSpec(intra.BytesPerSecond / 1e9, intra.LatencySeconds * 1e6, 1, ArrivalUs: intra.ArrivalSeconds * 1e6),
            InterNode = new LinkSpec(inter.BytesPerSecond / 1e9, inter.LatencySeconds * 1e6, 1, ArrivalUs: inter.ArrivalSeconds * 1e6),
        };
        foreach (var row in m["all_reduce_loaded"]!.AsArray().Select(x => x!.AsArray()))
            Assert.Equal((double)row[1]!, Planner.CostModel.Comm.CollectiveModel.Seconds(Planner.CostModel.Comm.Collective.AllReduce, (double)row[0]!, world, perNode, fitted), 1e-9);
        foreach (var row in m["node_all_reduce_loaded"]!.AsArray().Select(x => x!.AsArray()))
            Assert.Equal((double)row[1]!, Planner.CostModel.Comm.CollectiveModel.Seconds(Planner.CostModel.Comm.Collective.AllReduce, (double)row[0]!, perNode, perNode, fitted), 1e-9);
    }

    [Trait("Category", "Slow")]
    [Fact]
    public async Task Profile_across_two_emulated_nodes_fits_the_network_from_the_collectives_between_them()
    {
        // Two "machines" on this one (each its own launcher, --nnodes 2, one rank each, rendezvous on loopback):
        // node 1's launcher measures with node 0's and leaves the calibration to it; node 0 fits the inter-node tier
        // from the all-reduce between the nodes and keeps the spec's intra-node tier (no two ranks share a node).
        string path = Path.Combine(_dir, "two-nodes.csv");
        int port = Planner.Cli.Commands.RankProcesses.FreePort();
        string[] Args(int node) => ["profile", "--cluster", "local-cpu", "--out", path, "--nnodes", "2", "--node-rank", node.ToString(), "--ranks", "1", "--master-port", port.ToString()];
        var other = Task.Run(() => ExecutorParityTests.Planner(Args(1)));
        var (code, output, error) = ExecutorParityTests.Planner(Args(0));
        var (code1, output1, error1) = await other;
        Assert.True(code == 0, error);
        Assert.True(code1 == 0, error1);
        Assert.Contains("ranks 1-1 of 2 measured; the calibration is written where rank 0 runs", output1);
        Assert.Contains("inter-node send/recv us", output);
        Assert.Contains("inter-node fit", output);
        Assert.Contains("(all-reduce over 2 ranks on 2 nodes)", output);
        var cal = CalibrationFile.Read(path);
        var spec = ClusterLoader.Load("local-cpu");
        Assert.Equal("2 node(s) x 1 rank(s)", cal.Versions["ranks"]);
        Assert.Equal(spec.IntraNode.LatencyUs, cal.Intra.LatencyUs, 1e-9);
        Assert.Equal(spec.IntraNode.EffectiveBytesPerSecond / 1e9, cal.Intra.BandwidthGbs, 1e-9);
        Assert.True(cal.Inter.LatencyUs > 0 && double.IsFinite(cal.Inter.LatencyUs));
        Assert.True(cal.Inter.BandwidthGbs > 0 && double.IsFinite(cal.Inter.BandwidthGbs));
        // No tensor-parallel pair inside a node: the TP corrections were not measured, and the calibration leaves them out.
        Assert.Null(cal.Profiled!.TpComm);
    }

    internal static Cal Sample(string host, string cpu) => new(new MeasuredMachine("local-cpu", host, cpu),
        new MeasuredGemm("fp32", 0.096, 0.8, 16, [GemmResidual.Of(128, 8192, 256, 1.5)]), new MeasuredKernels(3, ElementRateG: 0.3, OverlapSlowdown: 0.6),
        new MeasuredMemory(9, 0.2), new MeasuredLink(1.3, 25), new MeasuredLink(1.3, 25), new Dictionary<string, string> { ["libtorch"] = "1.13" },
        Profiled: new(new Dictionary<string, OpRate> { ["cross_entropy"] = new(0.9, 0.8) }, OptimizerNsPerParam: 1.6,
            LinearForward: 1.04, LinearBackward: 1.07, BlockForward: 1.1, BlockBackward: 1.2, HeadForward: 1.3, HeadBackward: 1.4,
            TpBlockForward: 1.5, TpBlockBackward: 1.6, StepCompute: 1.7, TpComm: 1.8));

    [Fact]
    public void Calibration_round_trips_and_applies_to_the_cluster()
    {
        var (host, cpu) = CalibrationFile.ThisMachine();
        string path = Path.Combine(_dir, "mine.csv");
        CalibrationFile.Write(path, Sample(host, cpu));
        var read = CalibrationFile.Read(path);
        Assert.Equal(0.8, read.Gemm.Efficiency);
        Assert.Equal("1.13", read.Versions["libtorch"]);
        var c = CalibrationFile.Apply(ClusterLoader.Load("local-cpu"), path, force: false);
        Assert.Equal(0.8, c.Gpu.GemmEfficiency);
        Assert.Equal(9, c.Gpu.MemoryBandwidthGbs);
        Assert.Equal(1.3, c.IntraNode.BandwidthGbs);
        Assert.Equal(25, c.InterNode.LatencyUs);
        Assert.Equal(0.3, c.Gpu.ElementRateG);
        Assert.Equal(0.6, c.Gpu.OverlapSlowdown);
        Assert.Equal([new GemmResidual(8192, 256, 128, 1.5)], c.Gpu.GemmResiduals!);
        var p = c.Gpu.Profiled!;
        Assert.Equal(new OpRate(0.9, 0.8), p.OpRates!["cross_entropy"]);
        Assert.Equal(1.6, p.OptimizerNsPerParam);
        Assert.Equal(1.04, p.LinearForward);
        Assert.Equal(1.07, p.LinearBackward);
        Assert.Equal((1.1, 1.2, 1.3, 1.4), (p.BlockForward, p.BlockBackward, p.HeadForward, p.HeadBackward));
        Assert.Equal((1.5, 1.6), (p.TpBlockForward, p.TpBlockBackward));
        Assert.Equal((1.7, 1.8), (p.StepCompute, p.TpComm));
        // A file from before these keys reads as "not measured": the cluster keeps its own values.
        File.WriteAllLines(path, File.ReadAllLines(path).Where(l => !l.StartsWith("element_rate_g") && !l.StartsWith("overlap_slowdown") && !l.StartsWith("gemm_residual")));
        var old = CalibrationFile.Apply(ClusterLoader.Load("local-cpu"), path, force: false);
        Assert.Equal(ClusterLoader.Load("local-cpu").Gpu.ElementRateG, old.Gpu.ElementRateG);
        Assert.Empty(old.Gpu.GemmResiduals!);
        // A broken residual row is named.
        File.AppendAllText(path, "gemm_residual.0,128 256 x\n");
        var e = Assert.Throws<InputException>(() => CalibrationFile.Read(path));
        Assert.Contains("gemm_residual.0", e.Message);
        // So is a broken op rate.
        File.WriteAllLines(path, File.ReadAllLines(path).Where(l => !l.StartsWith("gemm_residual")).Append("op.cross_entropy,0.9"));
        var op = Assert.Throws<InputException>(() => CalibrationFile.Read(path));
        Assert.Contains("op.cross_entropy", op.Message);
    }

    [Fact]
    public void Corrections_a_profile_lacks_keep_the_clusters_own()
    {
        var (host, cpu) = CalibrationFile.ThisMachine();
        string path = Path.Combine(_dir, "partial.csv");
        CalibrationFile.Write(path, Sample(host, cpu));
        File.WriteAllLines(path, File.ReadAllLines(path).Where(l => !l.StartsWith("block_") && !l.StartsWith("op.") && !l.StartsWith("optimizer_ns")));
        var read = CalibrationFile.Read(path);
        Assert.Null(read.Profiled!.BlockForward);
        Assert.Null(read.Profiled.OptimizerNsPerParam);
        var local = ClusterLoader.Load("local-cpu");
        var own = new ProfiledCorrections(new Dictionary<string, OpRate> { ["softmax"] = new(5, 6) }, OptimizerNsPerParam: 9, BlockForward: 2, LinearForward: 3);
        var applied = read.Apply(local with { Gpu = local.Gpu with { Profiled = own } }).Gpu.Profiled!;
        // Measured in the file: the file's; missing from it: the cluster's.
        Assert.Equal(1.04, applied.LinearForward);
        Assert.Equal(1.3, applied.HeadForward);
        Assert.Equal(2, applied.BlockForward);
        Assert.Null(applied.BlockBackward);
        Assert.Equal(9, applied.OptimizerNsPerParam);
        Assert.Equal(new OpRate(5, 6), applied.OpRates!["softmax"]);
    }

    [Fact]
    public void A_calibration_from_another_machine_is_refused_unless_forced()
    {
        string path = Path.Combine(_dir, "other.csv");
        CalibrationFile.Write(path, Sample("elsewhere", "Some Other CPU x64"));
        var e = Assert.Throws<InputException>(() => CalibrationFile.Apply(ClusterLoader.Load("local-cpu"), path, force: false));
        Assert.Contains("--force-calibration", e.Message);
        Assert.Contains("elsewhere", e.Message);
        var forced = CalibrationFile.Apply(ClusterLoader.Load("local-cpu"), path, force: true);
        Assert.Equal(0.8, forced.Gpu.GemmEfficiency);
    }

    [Fact]
    public void A_broken_calibration_file_names_the_key()
    {
        string path = Path.Combine(_dir, "broken.csv");
        File.WriteAllText(path, "Key,Value\ncluster,local-cpu\nhost,x\n");
        var e = Assert.Throws<InputException>(() => CalibrationFile.Read(path));
        Assert.Contains("cpu", e.Message);
    }
}

public class KendallTauTests
{
    [Fact]
    public void Kendall_tau_matches_hand_counts()
    {
        // Same order: +1; reversed: −1; one swapped pair of four: (5 concordant − 1 discordant) / 6.
        Assert.Equal(1.0, Profiling.RunHistory.KendallTau([1, 2, 3, 4], [10, 20, 30, 40]), 12);
        Assert.Equal(-1.0, Profiling.RunHistory.KendallTau([1, 2, 3, 4], [4, 3, 2, 1]), 12);
        Assert.Equal(4.0 / 6, Profiling.RunHistory.KendallTau([1, 2, 3, 4], [1, 3, 2, 4]), 12);
    }

    [Fact]
    public void History_round_trips_through_the_csv()
    {
        string path = Path.Combine(Path.GetTempPath(), $"planner-history-{Guid.NewGuid():N}.csv");
        try
        {
            for (int i = 1; i <= 3; i++)
                Profiling.RunHistory.Append(path, new Profiling.HistoryRow { Plan = $"p{i}", PredictedStepTime = i, MeasuredStepTime = i * 1.1, PredictedMemory = 1, MeasuredMemory = 1.2 });
            var rows = Profiling.RunHistory.Read(path);
            Assert.Equal(["p1", "p2", "p3"], rows.Select(r => r.Plan));
            Assert.Equal(3.3, rows[2].MeasuredStepTime, 12);
            var (code, output, _) = ExecutorParityTests.Planner(["validate", "--executed", path]);
            Assert.Equal(0, code);
            Assert.Contains("Kendall tau 1.00", output);
            // Two more runs of p1, one slow (2.0 s) and one at 1.0 s: p1 counts once, by its median (1.1 s), so the
            // order and the mean error stay those of three plans measured 1.1x their predictions.
            Profiling.RunHistory.Append(path, new Profiling.HistoryRow { Plan = "p1", PredictedStepTime = 1, MeasuredStepTime = 2.0, PredictedMemory = 1, MeasuredMemory = 1.2 });
            Profiling.RunHistory.Append(path, new Profiling.HistoryRow { Plan = "p1", PredictedStepTime = 1, MeasuredStepTime = 1.0, PredictedMemory = 1, MeasuredMemory = 1.2 });
            (code, output, _) = ExecutorParityTests.Planner(["validate", "--executed", path, "--json"]);
            Assert.Equal(0, code);
            var o = System.Text.Json.Nodes.JsonNode.Parse(output)!;
            Assert.Equal(3, o["runs"]!.AsArray().Count);
            Assert.Equal(3, (int)o["runs"]![0]!["runs"]!);
            Assert.Equal(1.1, (double)o["runs"]![0]!["measured_step_time_s"]!, 9);
            Assert.Equal(1.0, (double)o["kendall_tau"]!, 9);
            Assert.Equal(100 * (1 - 1 / 1.1), (double)o["mape_pct"]!, 6);
        }
        finally
        {
            File.Delete(path);
        }
    }
}
