using Planner.Executor.Distributed;
using Planner.Executor.Model;
using Planner.Executor.Torch;
using Xunit;

namespace Planner.Executor.Tests;

/// <summary>
/// The ring attention of context parallelism against plain causal attention over the whole sequence, in one process:
/// each CP rank a thread with its own Gloo group member, holding its two chunks of the sequence. Its output and the
/// gradients of its q, k and v must be the matching chunks of the plain attention's.
/// </summary>
public class RingAttentionTests
{
    private const int Batch = 2, Heads = 4, Seq = 24, HeadDim = 8;

    /// <summary>Chunks rank and 2·cp-1-rank of dim 2 (the sequence) of t: what CP rank <paramref name="rank"/> holds.</summary>
    private static Tensor Local(Tensor t, int cp, int rank)
    {
        long c = t.Shape[2] / (2 * cp);
        return Tensor.Cat([t.Narrow(2, rank * c, c), t.Narrow(2, (2 * cp - 1 - rank) * c, c)], 2);
    }

    /// <summary>A leaf copy of <paramref name="t"/> in <paramref name="dtype"/> that requires grad.</summary>
    private static Tensor Leaf(Tensor t, DType dtype)
    {
        var leaf = t.To(dtype).Detach().Clone();
        leaf.RequiresGrad = true;
        return leaf;
    }

    private static void Close(string what, Tensor expected, Tensor actual, double tolerance)
    {
        var e = expected.To(DType.Float32).ToFloatArray();
        var a = actual.To(DType.Float32).ToFloatArray();
        Assert.Equal(e.Length, a.Length);
        double scale = Math.Max(1, e.Max(Math.Abs));
        double worst = e.Zip(a, (x, y) => Math.Abs(x - y)).Max();
        Assert.True(worst <= tolerance * scale, $"{what}: differs from plain attention's by {worst:E2} (scale {scale:F2})");
    }

    [Theory]
    [InlineData(2, 2, "fp32")]
    [InlineData(3, 2, "fp32")]
    [InlineData(2, 4, "fp32")]
    [InlineData(2, 1, "fp32")]
    [InlineData(2, 2, "bf16")]
    public void Output_and_gradients_match_plain_causal_attention(int cp, int kvHeads, string precision)
    {
        using var scope = DisposeScope.Begin();
        var dtype = precision == "bf16" ? DType.BFloat16 : DType.Float32;
        // Inputs rounded to the training precision; the reference runs on them in fp32 (bf16's own kernels would add
        // their rounding to the comparison).
        var q = Tensor.Normal([Batch, Heads, Seq, HeadDim], 0, 1, 11, dtype).To(DType.Float32);
        var k = Tensor.Normal([Batch, kvHeads, Seq, HeadDim], 0, 1, 12, dtype).To(DType.Float32);
        var v = Tensor.Normal([Batch, kvHeads, Seq, HeadDim], 0, 1, 13, dtype).To(DType.Float32);
        var upstream = Tensor.Normal([Batch, Heads, Seq, HeadDim], 0, 1, 14);
        var (rq, rk, rv) = (Leaf(q, DType.Float32), Leaf(k, DType.Float32), Leaf(v, DType.Float32));
        var reference = ContextHooks.Plain.Attention(rq, rk, rv, recompute: false);
        (reference * upstream).Sum().Backward();
        double tolerance = dtype == DType.Float32 ? 1e-5 : 2e-2;

        RankThreads.Run(cp, "cp", (rank, group) =>
        {
            var (lq, lk, lv) = (Leaf(Local(q, cp, rank), dtype), Leaf(Local(k, cp, rank), dtype), Leaf(Local(v, cp, rank), dtype));
            var output = ContextParallel.RingAttention(group, lq, lk, lv);
            Assert.Equal(dtype, output.DType);
            (output.To(DType.Float32) * Local(upstream, cp, rank)).Sum().Backward();
            Close($"rank {rank} output", Local(reference, cp, rank), output, tolerance);
            Close($"rank {rank} dq", Local(rq.Grad!, cp, rank), lq.Grad!, tolerance);
            Close($"rank {rank} dk", Local(rk.Grad!, cp, rank), lk.Grad!, tolerance);
            Close($"rank {rank} dv", Local(rv.Grad!, cp, rank), lv.Grad!, tolerance);
            Assert.Equal(dtype, lk.Grad!.DType);
        });
        Assert.True(ContextParallel.TakeCommSeconds() > 0, "the ring's transfers were not timed");
    }

    [Fact]
    public void Each_rank_holds_an_early_and_a_late_chunk()
    {
        Assert.Equal([0, 1, 6, 7], ContextParallel.Positions(8, 2, 0));
        Assert.Equal([2, 3, 4, 5], ContextParallel.Positions(8, 2, 1));
        // Every position held once over the ranks.
        var all = Enumerable.Range(0, 3).SelectMany(r => ContextParallel.Positions(24, 3, r)).Order().ToArray();
        Assert.Equal(Enumerable.Range(0, 24).Select(i => (long)i), all);
        Assert.Throws<ArgumentException>(() => ContextParallel.Positions(10, 3, 0));
    }
}
