using Xunit;

namespace Planner.Cli.Tests;

/// <summary>Parity of a mixture-of-experts model (<see cref="MoeRunTests.Config"/>: a dense first block, then 4
/// experts of which each token takes 2, and a shared expert) under the layouts that need no expert parallelism.</summary>
public sealed partial class ExecutorParityTests
{
    public static TheoryData<string, int, int, int, int, string> MoeLayouts() => new()
    {
        // Each expert's gate and up split by rows, down by columns; the router whole on both ranks, scoring its half
        // of the sequence (split experts need sequence parallelism, as in Megatron-Core).
        { "tp2-sp", 2, 1, 1, 0, "none" },
        // Blocks 0-1 (the dense one and a MoE one) on stage 0, the load-balancing loss's gradient from both stages.
        { "pp2", 1, 2, 1, 0, "none" },
        { "zero1-dp2", 1, 1, 2, 1, "none" },
        { "zero2-dp2", 1, 1, 2, 2, "none" },
        // Recomputed blocks route again in the backward, and carry the load-balancing loss's gradient again.
        { "pp2-full-recompute", 1, 2, 1, 0, "full" },
        { "tp2-sp-pp2", 2, 2, 1, 0, "none" },
    };

    [Theory]
    [MemberData(nameof(MoeLayouts))]
    public void Moe_layout_reproduces_the_single_process_run(string name, int tp, int pp, int dp, int zero, string recompute)
    {
        // The executor splits the experts as the dense MLP (etp = tp): the plan says so, as the cost model prices it.
        string keys = $", \"etp\": {tp}";
        var single = _ref.Single("moe");
        var (loss, _) = _ref.Run("moe", name, tp, pp, dp, zero, 1, recompute, tp > 1, 3, keys: keys);
        for (int s = 0; s < loss.Length; s++)
            Assert.True(Math.Abs(loss[s] - single.Loss[s]) <= LossTolerance, $"moe {name} step {s}: loss {loss[s]:R} against {single.Loss[s]:R}");
        var one = _ref.Single("moe", steps: 1);
        var (_, afterOne) = _ref.Run("moe", name + "-1", tp, pp, dp, zero, 1, recompute, tp > 1, 1, keys: keys);
        CheckSlices("moe", name, tp, one.Params, afterOne, _ref.Coordinates[name + "-1" + "moe" + 0.001], ParamTolerance);
    }

    public static TheoryData<string, int, int, int, int, int, int> ExpertLayouts() => new()
    {
        // Experts 0-1 on one rank, 2-3 on the other; each rank dispatches its replica's tokens to both.
        { "ep2-dp2", 2, 1, 1, 1, 2, 0 },
        // No two ranks hold the same experts: ZeRO-1/2 shard the dense parameters only.
        { "ep2-dp2-zero1", 2, 1, 1, 1, 2, 1 },
        { "ep2-dp2-zero2", 2, 1, 1, 1, 2, 2 },
        // Two expert-data-parallel ranks hold each pair of experts and sum their gradients.
        { "ep2-dp4", 2, 1, 1, 1, 4, 0 },
        { "ep2-dp2-pp2", 2, 1, 1, 2, 2, 0 },
        // Stage 0 holds only the dense first block: no experts there, nothing to reduce over expert-DP.
        { "ep2-dp2-pp2-dense-stage", 2, 1, 1, 2, 2, 0 },
        // Experts split as the dense MLP (etp = tp); the EP group joins ranks of the same TP index.
        { "ep2-tp2-sp-dp2", 2, 2, 2, 1, 2, 0 },
        // Experts whole (etp 1, the cost model's default): each TP rank routes its part of the sequence, without expert
        // parallelism (both hold every expert, their gradients summed over TP) and with it (the EP group is the TP group,
        // and with dp 2 two expert-data-parallel ranks hold each pair).
        { "tp2-sp-etp1", 1, 1, 2, 1, 1, 0 },
        { "ep2-tp2-sp-etp1", 2, 1, 2, 1, 1, 0 },
        { "ep2-tp2-sp-etp1-dp2", 2, 1, 2, 1, 2, 0 },
        // Without sequence parallelism (which Megatron-Core requires for MoE at tp > 1; the plan check for split experts) experts held
        // whole still run: each TP rank routes its part of the sequence and the outputs are gathered.
        { "tp2-etp1", 1, 1, 2, 1, 1, 0 },
        { "ep2-tp2-etp1-dp2", 2, 1, 2, 1, 2, 0 },
    };

    [Theory]
    [MemberData(nameof(ExpertLayouts))]
    public void Expert_parallel_layout_reproduces_the_single_process_run(string name, int ep, int etp, int tp, int pp, int dp, int zero)
    {
        bool sp = name.Contains("-sp", StringComparison.Ordinal);
        string keys = $", \"ep\": {ep}, \"etp\": {etp}"
            + (name.EndsWith("-dense-stage", StringComparison.Ordinal) ? ", \"stages\": {\"layers\": [1, 3], \"recompute\": [\"none\", \"none\"]}" : "");
        var single = _ref.Single("moe");
        var (loss, _) = _ref.Run("moe", name, tp, pp, dp, zero, 1, "none", sp, 3, keys: keys);
        for (int s = 0; s < loss.Length; s++)
            Assert.True(Math.Abs(loss[s] - single.Loss[s]) <= LossTolerance, $"moe {name} step {s}: loss {loss[s]:R} against {single.Loss[s]:R}");
        var one = _ref.Single("moe", steps: 1);
        var (_, afterOne) = _ref.Run("moe", name + "-1", tp, pp, dp, zero, 1, "none", sp, 1, keys: keys);
        // Every rank holds only its experts (1/ep of its stage's); together the ranks hold every one.
        static bool Routed(string k) => k.Contains(".mlp.experts.", StringComparison.Ordinal);
        var coordinates = _ref.Coordinates[name + "-1" + "moe" + 0.001];
        Assert.Equal(one.Params.Keys.Count(Routed), afterOne.SelectMany(r => r.Keys).Where(Routed).Distinct().Count());
        for (int r = 0; r < afterOne.Length; r++)
        {
            var stage = afterOne.Where((_, i) => coordinates[i].Pp == coordinates[r].Pp).SelectMany(x => x.Keys).Where(Routed).Distinct().Count();
            Assert.True(afterOne[r].Keys.Count(Routed) * ep == stage, $"{name} rank {r}: holds {afterOne[r].Keys.Count(Routed)} of its stage's {stage} expert weights");
        }
        // Experts held whole (etp 1) are compared whole.
        CheckSlices("moe", name, tp, one.Params, afterOne, coordinates, ParamTolerance, whole: k => etp == 1 && Routed(k));
        // The trainable parameters counted whole (each rank's experts times ep), as one process counts them.
        Assert.Equal(_ref.TrainableParameters["single" + "moe" + 0.001].Measured, _ref.TrainableParameters[name + "moe" + 0.001].Measured);
    }
}
