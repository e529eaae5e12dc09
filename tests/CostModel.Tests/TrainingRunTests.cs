using Xunit;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;
using Planner.CostModel.Training;

namespace Planner.CostModel.Tests;

/// <summary>Whole-run pricing (docs/run-level.md): Young/Daly on hand-computed cases, the energy between the idle and the
/// busiest draw, carbon from energy, a ramp-up never faster than none, Megatron's ramp-up batches.</summary>
public class TrainingRunTests
{
    private static readonly ModelSpec Model = RunFixture.Model;
    private static readonly ParallelPlan Plan = RunFixture.Plan;

    private static ClusterSpec Cluster(string extra = "") => RunFixture.Cluster(extra);

    private const string Ops = "power: {node_w: 1000, pue: 1.2}\ncarbon_kg_per_kwh: 0.3\nmtbf_hours_per_node: 10000\nrestart_s: 600\nstorage: {checkpoint_gbs: 50}\n";

    private static TrainingRun Run(ClusterSpec c, TrainingRequest req) => RunFixture.Run(c, req);

    [Fact]
    public void YoungAndDalyMatchHandComputedIntervals()
    {
        // δ = 50 s, M = 10,000 s: Young sqrt(2·50·10^4) = 1000 s; Daly 1000·(1 + sqrt(0.0025)/3 + 0.0025/9) − 50 = 966.944.
        Assert.Equal(1000, Checkpointing.Young(50, 10_000), 9);
        Assert.Equal(966.944444, Checkpointing.Daly(50, 10_000), 6);
        Assert.Equal(10_000, Checkpointing.Daly(30_000, 10_000));
    }

    [Fact]
    public void WallTimeCountsPausesLostWorkAndRestarts()
    {
        // U = 1000, δ/τ = 0.1, (lost + restart)/M = 0.2: W = 1000 · 1.1 / 0.8.
        Assert.Equal(1375, Checkpointing.WallSeconds(1000, 10, 100, 150, 50, 1000), 9);
        Assert.Throws<InputException>(() => Checkpointing.WallSeconds(1000, 10, 100, 900, 100, 1000));
    }

    [Fact]
    public void RunFiguresFollowFromTheirInputs()
    {
        var c = Cluster(Ops);
        var t = Run(c, new TrainingRequest(2e11));
        double write = t.CheckpointBytes / 50e9;
        double mtbf = 10_000 * 3600.0 / 16;
        Assert.Equal(write, t.CheckpointWriteSeconds, 9);
        Assert.Equal(Checkpointing.Daly(write, mtbf), t.CheckpointIntervalSeconds, 6);
        Assert.InRange(t.CheckpointIntervalSeconds / Checkpointing.Young(write, mtbf), 0.75, 1.25);
        Assert.InRange(t.Goodput, 0.5, 1);
        Assert.Equal(t.WallSeconds / mtbf, t.ExpectedFailures, 9);
        // 7B parameters: bf16 weights, fp32 master and two moments, 14 bytes each.
        Assert.Equal(14 * Pricer.Price(Model, c, Plan).Parameters, t.CheckpointBytes, 0);
        // Energy between every GPU waiting and every GPU at its 400 W, plus the nodes, times the PUE.
        double hours = t.WallSeconds / 3600;
        double low = 1.2 * (t.Gpus * 0.3 * 400 + 16 * 1000) * hours / 1e6, high = 1.2 * (t.Gpus * 400 + 16 * 1000) * hours / 1e6;
        Assert.InRange(t.EnergyMwh!.Value, low, high);
        Assert.Equal(t.EnergyMwh!.Value * 0.3, t.Co2Tonnes!.Value, 9);
        Assert.Equal(2e11, t.Segments.Sum(s => s.Tokens), 0);
    }

    [Fact]
    public void MissingKeysOmitFiguresAndSayWhy()
    {
        var t = Run(Cluster(), new TrainingRequest(2e11));
        Assert.Null(t.Co2Tonnes);
        // No storage given: Llama 3's store, 2 TB/s for 16,384 GPUs, at the plan's 128 GPUs, and said so.
        Assert.Equal(t.CheckpointBytes / (2000e9 * 128 / 16384), t.CheckpointWriteSeconds, 6);
        Assert.Contains(t.Defaults, d => d.StartsWith("storage.checkpoint_gbs"));
        Assert.Null(t.Cost);
        Assert.NotNull(t.EnergyMwh);
        Assert.Contains(t.Omitted, o => o.StartsWith("co2_t"));
        Assert.Contains(t.Defaults, d => d.StartsWith("mtbf_hours_per_node"));
        Assert.Contains(t.Defaults, d => d.StartsWith("power.pue = 1"));
    }

    [Fact]
    public void RampUpAndWarmupNeverSaveTime()
    {
        var c = Cluster(Ops);
        var plain = Run(c, new TrainingRequest(2e11));
        var ramp = Run(c, new TrainingRequest(2e11, Rampup: new BatchRampup(64, 64, 2_000_000)));
        var warm = Run(c, new TrainingRequest(2e11, Warmup: new SeqWarmup(512, 5000)));
        Assert.True(ramp.UsefulSeconds >= plain.UsefulSeconds, $"{ramp.UsefulSeconds} < {plain.UsefulSeconds}");
        Assert.True(warm.Steps > plain.Steps);
        Assert.Equal(8, ramp.Segments.Count);
        Assert.Equal(2e11, ramp.Segments.Sum(s => s.Tokens), 0.01 * 2e11);
    }

    [Fact]
    public void RampUpFollowsMegatron()
    {
        // Megatron: 1536 from 32 by 16 over 4,882,812 samples (GPT-3): 94 increments of 51,944.8 samples each.
        var r = new BatchRampup(32, 16, 4_882_812);
        Assert.Equal(32, RunSchedule.BatchAt(1536, r, 0, out _));
        Assert.Equal(48, RunSchedule.BatchAt(1536, r, 51_945, out _));
        Assert.Equal(1520, RunSchedule.BatchAt(1536, r, 4_882_000, out _));
        Assert.Equal(1536, RunSchedule.BatchAt(1536, r, 4_882_812, out _));
    }

    [Fact]
    public void AsyncCheckpointsPauseLessThanTheyWrite()
    {
        var c = Cluster(Ops);
        var sync = Run(c, new TrainingRequest(2e11));
        var async = Run(c, new TrainingRequest(2e11, AsyncCheckpoint: true));
        Assert.True(async.CheckpointPauseSeconds < sync.CheckpointPauseSeconds);
        Assert.True(async.Goodput > sync.Goodput);
    }

    [Fact]
    public void BadClusterKeysAreInputErrors()
    {
        Assert.Throws<InputException>(() => Cluster("power: {pue: 0.5}\n"));
        Assert.Throws<InputException>(() => Cluster("storage: {bandwidth: 3}\n"));
        Assert.Throws<InputException>(() => Cluster("mtbf_hours_per_node: 0\n"));
    }
}
