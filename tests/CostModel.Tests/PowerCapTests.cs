using Xunit;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;
using Planner.CostModel.Training;

namespace Planner.CostModel.Tests;

/// <summary>A GPU power limit (cluster key <c>power.cap_w</c>, docs/run-level.md): the arithmetic slows, the links do
/// not, the busy draw is the cap, and a cap the GPU could not run under is refused naming the key.</summary>
public class PowerCapTests
{
    private static ClusterSpec Cluster(string power = "") =>
        RunFixture.Cluster("carbon_kg_per_kwh: 0.4\n" + power, gpu: "h100-sxm", intraGbs: 450, interGbs: 50);

    [Fact]
    public void ClockFallsWithTheCapAndNotAboveTheGpusOwnPower()
    {
        Assert.Equal(1, PowerCap.ClockFraction(700, 0.3, 700));
        Assert.Equal(1, PowerCap.ClockFraction(700, 0.3, 1000));
        double previous = 1;
        foreach (double cap in new[] { 650.0, 550, 450, 350, 250 })
        {
            double f = PowerCap.ClockFraction(700, 0.3, cap);
            Assert.InRange(f, 0, previous - 1e-9);
            // The busy draw at that clock is the cap: the waiting draw plus the dynamic part at the clock's cube.
            Assert.Equal(cap, 210 + 490 * f * f * f, 9);
            previous = f;
        }
    }

    [Fact]
    public void CapSlowsTheKernelsButNotTheLinks()
    {
        var free = Pricer.Price(RunFixture.Model, Cluster(), RunFixture.Plan);
        var capped = Pricer.Price(RunFixture.Model, Cluster("power: {cap_w: 450}\n"), RunFixture.Plan);
        double f = PowerCap.ClockFraction(700, OperationsSpec.DefaultWaitFraction, 450);
        Assert.True(capped.StepTimeSeconds > free.StepTimeSeconds);
        // Kernels mix compute-bound GEMMs (slowed by 1/f) and memory-bound ones (not slowed).
        Assert.InRange(capped.Breakdown.Compute / free.Breakdown.Compute, 1.05, 1 / f + 1e-9);
        Assert.Equal(free.PeakMemoryGib, capped.PeakMemoryGib, 9);
        // MFU is counted against the spec sheet's peak: a slower step has a lower MFU.
        Assert.Equal(free.Mfu * free.StepTimeSeconds / capped.StepTimeSeconds, capped.Mfu, 9);
    }

    [Fact]
    public void CappedRunTakesLongerAndDrawsAtMostTheCap()
    {
        var req = new TrainingRequest(1e11);
        var free = RunFixture.Run(Cluster(), req);
        var capped = RunFixture.Run(Cluster("power: {cap_w: 450}\n"), req);
        Assert.True(capped.Days > free.Days);
        Assert.InRange(capped.MeanGpuWatts!.Value, 0.3 * 700, 450);
        Assert.True(free.MeanGpuWatts!.Value > capped.MeanGpuWatts!.Value);
        Assert.Equal(450.0, capped.Inputs["cap_w"]);
    }

    [Fact]
    public void ApplyingTheCapTwiceChangesNothing()
    {
        var c = Cluster("power: {cap_w: 500}\n");
        Assert.InRange(c.Gpu.ClockFraction, 0.5, 0.999);
        Assert.Equal(c.Gpu.ClockFraction, PowerCap.Apply(c).Gpu.ClockFraction);
        Assert.Equal(1, Cluster().Gpu.ClockFraction);
    }

    [Theory]
    [InlineData("power: {cap_w: 200}\n", "power.cap_w")] // below an H100's waiting draw, 0.3 × 700 W
    [InlineData("power: {cap_w: 300, wait_fraction: 0.5}\n", "power.cap_w")]
    [InlineData("power: {cap_w: -5}\n", "cap_w")]
    public void CapTheGpuCannotRunUnderIsRefusedNamingTheKey(string power, string key)
    {
        var e = Assert.Throws<InputException>(() => Cluster(power));
        Assert.Contains(key, e.Message);
    }

    [Fact]
    public void MixedClusterDrawsEachStagesOwnGpuPower()
    {
        // Stage 0 on A100 (400 W), stage 1 on H100 (700 W): the plan's GPUs draw 550 W at most on average.
        var c = ClusterLoader.Parse("name: mixed\ngroups:\n  - {gpu: a100-80g, nodes: 8}\n  - {gpu: h100-sxm, nodes: 8}\ngpus_per_node: 8\n" +
                                    "intra_node: {bandwidth_gbs: 300, latency_us: 3}\ninter_node: {bandwidth_gbs: 25, latency_us: 6}\n", "mixed.yaml");
        // Llama 2 7B's 32 blocks, 16 per stage, stage s on group s; each group holds dp 32 × tp 2 = 64 GPUs.
        var plan = RunFixture.Plan with { Stages = new StagePlan([16, 16], [Recompute.None, Recompute.None], [0, 1]) };
        var run = TrainingEstimate.Estimate(Pricer.Price(RunFixture.Model, c, plan), c, new TrainingRequest(1e10), q => Pricer.Price(RunFixture.Model, c, q));
        Assert.Equal(550.0, run.Inputs["gpu_w"]);
        Assert.InRange(run.MeanGpuWatts!.Value, 0.3 * 550, 550);
        Assert.Contains(run.Defaults, d => d.Contains("mean over the plan's stages"));
    }
}
