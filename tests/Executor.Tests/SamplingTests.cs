using Planner.Executor.Torch;
using Xunit;

namespace Planner.Executor.Tests;

/// <summary>Labels drawn from a model's outputs (Sophia's curvature pass): the Gumbel-max draw is keyed, split-invariant
/// and follows the softmax.</summary>
public sealed class SamplingTests
{
    private static Tensor Logits(int n, int v) =>
        Tensor.From(Enumerable.Range(0, n * v).Select(i => (float)(1.5 * Math.Sin(0.37 * i) + 0.2 * (i % v))).ToArray(), n, v);

    [Fact]
    public void A_vocabulary_split_in_two_draws_what_the_whole_draws()
    {
        using var scope = DisposeScope.Begin();
        const int n = 40, v = 16;
        var logits = Logits(n, v);
        long[] keys = Enumerable.Range(1000, n).Select(i => (long)i).ToArray();
        var whole = Sampling.GumbelArgmax(logits, keys, 7, 0);
        var halves = logits.Chunk(2, 1);
        var (lv, li) = Sampling.GumbelArgmax(halves[0].Contiguous(), keys, 7, 0);
        var (rv, ri) = Sampling.GumbelArgmax(halves[1].Contiguous(), keys, 7, v / 2);
        var (l, r, lid, rid) = (lv.ToDoubleArray(), rv.ToDoubleArray(), li.ToLongArray(), ri.ToLongArray());
        var ids = whole.Ids.ToLongArray();
        for (int i = 0; i < n; i++)
            Assert.Equal(ids[i], l[i] > r[i] ? lid[i] : rid[i]);
        // Another seed or other keys draw differently.
        Assert.NotEqual(ids, Sampling.GumbelArgmax(logits, keys, 8, 0).Ids.ToLongArray());
        Assert.NotEqual(ids, Sampling.GumbelArgmax(logits, keys.Select(k => k + n).ToArray(), 7, 0).Ids.ToLongArray());
    }

    [Fact]
    public void Draws_follow_the_softmax_of_the_logits()
    {
        // One row of logits repeated over 20,000 keys: each id's frequency within 4 standard errors of its probability.
        using var scope = DisposeScope.Begin();
        float[] row = [2.0f, 1.0f, 0.5f, 0f, -1f, -3f];
        const int n = 20000;
        var logits = Tensor.From(Enumerable.Range(0, n).SelectMany(_ => row).ToArray(), n, row.Length);
        var ids = Sampling.GumbelArgmax(logits, Enumerable.Range(0, n).Select(i => (long)i).ToArray(), 3, 0).Ids.ToLongArray();
        double z = row.Sum(x => Math.Exp(x));
        for (int j = 0; j < row.Length; j++)
        {
            double p = Math.Exp(row[j]) / z, seen = ids.Count(id => id == j) / (double)n;
            Assert.True(Math.Abs(seen - p) <= 4 * Math.Sqrt(p * (1 - p) / n), $"id {j}: drawn {seen:F4}, softmax {p:F4}");
        }
    }
}
