using Xunit;

namespace Planner.Cli.Tests;

/// <summary>Parity under context parallelism: each CP rank trains two chunks of each sequence (of 4 chunks of 8
/// tokens at seq 32, cp 2) through the ring attention, with their global positions, and the dense gradients are reduced
/// over the dp·cp ranks.</summary>
public sealed partial class ExecutorParityTests
{
    public static TheoryData<string, string, int, int, int, int, string, bool> CpLayouts() => new()
    {
        // Learned positions looked up at the chunks' global positions; the embedding tied to the head.
        { "gpt", "cp2", 1, 1, 1, 0, "none", false },
        // Rotary positions at the global positions; grouped-query attention (2 query heads per key/value head): K and V
        // travel unrepeated, their gradients summed over the heads that share them.
        { "llama", "cp2", 1, 1, 1, 0, "none", false },
        // The stages send seq / cp tokens; the tied embedding summed between the first and last stage of each CP rank.
        { "gpt", "cp2-pp2", 1, 2, 1, 0, "none", false },
        // One key/value head per TP rank; sequence parallelism splits each CP rank's 16 tokens over TP.
        { "llama", "cp2-tp2-sp", 2, 1, 1, 0, "none", true },
        // The ring runs again in the recomputed blocks' backward.
        { "gpt", "cp2-full-recompute", 1, 1, 1, 0, "full", false },
        { "llama", "cp2-selective-recompute", 1, 1, 1, 0, "selective", false },
        // ZeRO shards over the dp·cp ranks that hold the same weights (here the two CP ranks).
        { "gpt", "zero1-cp2", 1, 1, 1, 1, "none", false },
        { "llama", "zero2-cp2", 1, 1, 1, 2, "none", false },
        { "gpt", "zero3-cp2", 1, 1, 1, 3, "none", false },
        // Four ranks: gradients averaged over the dp·cp group (the DP ranks read different samples), ZeRO-1 sharded over it.
        { "gpt", "zero1-dp2-cp2", 1, 1, 2, 1, "none", false },
        { "llama", "dp2-cp2", 1, 1, 2, 0, "none", false },
    };

    [Theory]
    [MemberData(nameof(CpLayouts))]
    public void Cp_layout_reproduces_the_single_process_run(string model, string name, int tp, int pp, int dp, int zero, string recompute, bool sp)
    {
        var single = _ref.Single(model);
        var (loss, _) = _ref.Run(model, name, tp, pp, dp, zero, 1, recompute, sp, 3, cp: 2);
        Assert.Equal(single.Loss.Length, loss.Length);
        for (int s = 0; s < loss.Length; s++)
            Assert.True(Math.Abs(loss[s] - single.Loss[s]) <= LossTolerance, $"{model} {name} step {s}: loss {loss[s]:R} against {single.Loss[s]:R}");
        // The ring's transfers are timed, and priced where the local cluster holds the layout (two ranks); none in one process.
        var (measured, predicted) = _ref.CpComm[name + model + 0.001];
        Assert.True(measured > 0, $"{name}: measured cp_comm {measured}");
        Assert.True(tp * pp * dp > 1 || predicted > 0, $"{name}: predicted cp_comm {predicted}");
        Assert.Equal(0, _ref.CpComm["single" + model + 0.001].Measured);
        var one = _ref.Single(model, steps: 1);
        var (_, afterOne) = _ref.Run(model, name + "-1", tp, pp, dp, zero, 1, recompute, sp, 1, cp: 2);
        Assert.Equal(tp * pp * dp * 2, afterOne.Length);
        CheckSlices(model, name, tp, one.Params, afterOne, _ref.Coordinates[name + "-1" + model + 0.001], ParamTolerance);
    }

    /// <summary>Sophia's curvature pass under CP: each token's sampled label is keyed by its place in the run (its
    /// sample and global position), so the CP ranks draw what one process draws; LoRA's adapters train over the ring.</summary>
    [Theory]
    [InlineData("sophia", "gpt")]
    [InlineData("lora", "llama")]
    public void Cp_fine_tuning_reproduces_the_single_process_losses(string tuning, string model)
    {
        string keys = Tunings[tuning];
        var (singleLoss, _) = _ref.SingleWithKeys(model, tuning, keys);
        var (loss, _) = _ref.Run(model, $"cp2-{tuning}", 1, 1, 1, 0, 1, "none", false, 3, keys: keys, cp: 2);
        for (int s = 0; s < loss.Length; s++)
            Assert.True(Math.Abs(loss[s] - singleLoss[s]) <= LossTolerance, $"{model} cp2 {tuning} step {s}: loss {loss[s]:R} against {singleLoss[s]:R}");
    }
}
