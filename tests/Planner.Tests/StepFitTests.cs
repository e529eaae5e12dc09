using Planner.Cli.Profiling;
using Planner.CostModel.Calibration;
using Planner.CostModel.Specs;
using Xunit;
using Cal = Planner.CostModel.Calibration.Calibration;

namespace Planner.Cli.Tests;

/// <summary>The profile's fits of whole training steps and of point-to-point transfers.</summary>
public sealed class StepFitTests
{
    /// <summary>
    /// The two training steps part a kernel call's cost from the work: steps measured as exactly f·(A + o·B) at a call
    /// cost o and factor f give back o and f; without the tiny step (an older profile), or on CUDA, the call's cost stays
    /// and the factor comes from the larger step alone.
    /// </summary>
    [Theory]
    [InlineData(37.0, 1.13)]
    [InlineData(9.0, 0.95)]
    public void The_step_fit_parts_the_cost_of_a_call_from_the_work(double callUs, double factor)
    {
        var cluster = ClusterLoader.Load("local-cpu");
        var sizes = ProfileSizes.Cpu;
        var cal = new Cal(new MeasuredMachine("local-cpu", "h", "c"), new MeasuredGemm("fp32", 0.1, 1.0, 4), new MeasuredKernels(14, 0.4, 0.5),
            new MeasuredMemory(30, 0.2), new MeasuredLink(1.4, 1000), new MeasuredLink(1.4, 1000),
            new Dictionary<string, string>(), new ProfiledCorrections(BlockForward: 1.05, BlockBackward: 0.97));
        double Price(StepShape shape, double us)
        {
            var p = Planner.CostModel.Pricing.Pricer.Price(sizes.StepModel(shape), cal.WithKernelOverheadUs(us).Apply(cluster) with { Nodes = 1, GpusPerNode = 1 },
                sizes.StepPlan(shape), Planner.CostModel.Pricing.ExecutorSoftware.Options);
            return p.Breakdown.Compute + p.Breakdown.Recompute;
        }
        double tLarge = factor * Price(sizes.Step, callUs), tSmall = factor * Price(sizes.SmallStep, callUs);
        var m = new System.Text.Json.Nodes.JsonObject { ["step_compute_seconds"] = tLarge, ["small_step_compute_seconds"] = tSmall };
        var fitted = cal;
        Planner.Cli.Profiling.ProfileFit.FitSteps(cluster, m, sizes, cuda: false, ref fitted);
        Assert.Equal(callUs, fitted.Kernels.OverheadUs, 6);
        Assert.Equal(factor, fitted.Profiled!.StepCompute!.Value, 6);
        // The tiny step is the calls': priced with the block's call cost it would be off by far more than the factor.
        Assert.True(Math.Abs(tSmall / Price(sizes.SmallStep, 14) - factor) > 0.05 * factor);

        foreach (var (cuda, withSmall) in new[] { (true, true), (false, false) })
        {
            var m2 = new System.Text.Json.Nodes.JsonObject { ["step_compute_seconds"] = tLarge };
            if (withSmall)
                m2["small_step_compute_seconds"] = tSmall;
            var kept = cal;
            var fit = Planner.Cli.Profiling.ProfileFit.FitSteps(cluster, m2, sizes, cuda, ref kept);
            Assert.Equal(cal.Kernels.OverheadUs, kept.Kernels.OverheadUs);
            Assert.Equal(tLarge / Price(sizes.Step, cal.Kernels.OverheadUs), kept.Profiled!.StepCompute!.Value, 9);
            Assert.Equal(withSmall, fit.Small is not null);
        }
    }

    [Fact]
    public void The_point_to_point_latency_is_the_ping_pongs_intercept_on_one_machine_and_none_on_several()
    {
        // Transfers of alpha + bytes / beta: the fit gives alpha back; on several machines no latency is parted.
        const double alpha = 40e-6, beta = 3e9;
        var rows = new System.Text.Json.Nodes.JsonArray(ProfileSizes.Cpu.MessageBytes
            .Select(b => (System.Text.Json.Nodes.JsonNode)new System.Text.Json.Nodes.JsonArray((double)b, alpha + b / beta)).ToArray());
        var one = new System.Text.Json.Nodes.JsonObject { ["nodes"] = 1, ["send_recv"] = rows };
        var (us, account) = Planner.Cli.Profiling.ProfileFit.FitP2pLatencyUs(one);
        Assert.Equal(alpha * 1e6, us!.Value, 6);
        Assert.Contains("ping-pong", account);
        var several = new System.Text.Json.Nodes.JsonObject { ["nodes"] = 2, ["send_recv"] = rows.DeepClone() };
        var (none, why) = Planner.Cli.Profiling.ProfileFit.FitP2pLatencyUs(several);
        Assert.Null(none);
        Assert.Contains("several machines", why);
        // A calibration carrying it hands it to both links' transfers, and the arrival to their collectives.
        var cal = new Cal(new MeasuredMachine("local-cpu", "h", "c"), new MeasuredGemm("fp32", 0.1, 1.0, 4), new MeasuredKernels(14),
            new MeasuredMemory(30, 0.2), new MeasuredLink(1.4, 70), new MeasuredLink(1.4, 70), new Dictionary<string, string>(),
            Profiled: new ProfiledCorrections(P2pLatencyUs: 40, ArrivalUs: 1800));
        var applied = cal.Apply(ClusterLoader.Load("local-cpu"));
        foreach (var link in new[] { applied.IntraNode, applied.InterNode })
        {
            Assert.Equal(40e-6, link.P2pLatencySeconds, 12);
            Assert.Equal(1800e-6, link.ArrivalSeconds, 12);
            Assert.Equal(70e-6, link.LatencySeconds, 12);
        }
    }
}
