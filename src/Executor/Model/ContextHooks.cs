using Planner.Executor.Torch;

namespace Planner.Executor.Model;

/// <summary>
/// Where context parallelism acts on the model (as torchtitan's context parallel replaces the attention call and
/// buffers): the global positions of the tokens a process holds, and the causal attention core over them. The plain
/// model's: positions 0..seq-1 and attention over the whole sequence.
/// </summary>
public class ContextHooks
{
    /// <summary>The hooks of a model that holds whole sequences.</summary>
    public static ContextHooks Plain { get; } = new();

    /// <summary>The positions in the whole sequence of the <paramref name="local"/> tokens of each sample held here.</summary>
    public virtual long[] Positions(long local)
    {
        var p = new long[local];
        for (long i = 0; i < local; i++)
            p[i] = i;
        return p;
    }

    /// <summary>
    /// Causal attention of q [batch, heads, tokens, head_dim] over k and v [batch, kv_heads, tokens, head_dim]
    /// (grouped-query: each key/value head serves heads / kv_heads query heads);
    /// <paramref name="recompute"/>: keep only the inputs, redo the scores in the backward (selective recompute).
    /// </summary>
    public virtual Tensor Attention(Tensor q, Tensor k, Tensor v, bool recompute)
    {
        long heads = q.Shape[1], kv = k.Shape[1];
        if (kv < heads)
        {
            k = RepeatHeads(k, heads / kv);
            v = RepeatHeads(v, heads / kv);
        }
        return recompute ? F.CausalAttentionRecompute(q, k, v) : F.CausalAttention(q, k, v);
    }

    /// <summary>Each key/value head repeated for the <paramref name="rep"/> query heads that share it, in order.</summary>
    private static Tensor RepeatHeads(Tensor t, long rep)
    {
        long b = t.Shape[0], kv = t.Shape[1], s = t.Shape[2], d = t.Shape[3];
        var expanded = t.View(b, kv, 1, s, d);
        return Tensor.Cat(Enumerable.Repeat(expanded, (int)rep).ToList(), 2).Reshape(b, kv * rep, s, d);
    }
}
