namespace Planner.Executor.Model;

/// <summary>
/// Where a micro-batch's tokens go in a mixture-of-experts block: each token's top-k experts by router probability,
/// a tie won by the lower expert index (a stable order, so that every layout routes alike); each expert's tokens in
/// token order (dropless: all are computed); and where each (token, slot) sits in the experts' outputs laid end to end,
/// expert by expert.
/// </summary>
public sealed class MoeRouting
{
    /// <summary>Routes <paramref name="tokens"/> tokens by their probabilities [tokens, experts] (row-major).</summary>
    public MoeRouting(float[] probs, long tokens, int experts, int topK)
    {
        if (topK < 1 || topK > experts)
            throw new ArgumentOutOfRangeException(nameof(topK), $"top-k {topK} must be within 1..{experts}");
        Experts = experts;
        TopK = topK;
        Choice = new long[tokens * topK];
        var lists = Enumerable.Range(0, experts).Select(_ => new List<(long Token, int Slot)>()).ToArray();
        var order = new int[experts];
        for (long t = 0; t < tokens; t++)
        {
            for (int e = 0; e < experts; e++)
                order[e] = e;
            long row = t * experts;
            // Descending probability, then ascending index: a sort by (−p, e) is total, so ties resolve the same way.
            Array.Sort(order, (a, b) => probs[row + a] != probs[row + b] ? probs[row + b].CompareTo(probs[row + a]) : a.CompareTo(b));
            for (int j = 0; j < topK; j++)
            {
                Choice[t * topK + j] = order[j];
                lists[order[j]].Add((t, j));
            }
        }
        TokensOf = lists.Select(l => l.Select(x => x.Token).ToArray()).ToArray();
        Order = TokensOf.SelectMany(t => t).ToArray();
        Counts = TokensOf.Select(t => (long)t.Length).ToArray();
        Position = new long[topK][];
        for (int j = 0; j < topK; j++)
            Position[j] = new long[tokens];
        long offset = 0;
        foreach (var list in lists)
        {
            foreach (var (token, slot) in list)
                Position[slot][token] = offset++;
        }
    }

    /// <summary>The number of routed experts.</summary>
    public int Experts { get; }

    /// <summary>The experts each token is sent to.</summary>
    public int TopK { get; }

    /// <summary>Each token's chosen experts [tokens, topK], row-major, best first.</summary>
    public long[] Choice { get; }

    /// <summary>Each expert's tokens, in token order.</summary>
    public long[][] TokensOf { get; }

    /// <summary>The experts' tokens laid end to end, expert by expert (the rows the experts compute, in order).</summary>
    public long[] Order { get; }

    /// <summary>The number of tokens each expert computes.</summary>
    public long[] Counts { get; }

    /// <summary>For each slot j, each token's row in the experts' outputs laid end to end.</summary>
    public long[][] Position { get; }

    /// <summary>The share of the (token, slot) assignments each expert receives (f_e of the load-balancing loss; they
    /// sum to 1).</summary>
    public float[] Load()
    {
        long all = TokensOf.Sum(t => (long)t.Length);
        return TokensOf.Select(t => (float)((double)t.Length / all)).ToArray();
    }
}
