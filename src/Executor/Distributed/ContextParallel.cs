using Planner.Executor.Torch;

namespace Planner.Executor.Distributed;

/// <summary>Context parallelism's communication: causal ring attention over a CP group (native, <c>ring_attention.cpp</c>).</summary>
public static class ContextParallel
{
    /// <summary>
    /// Causal attention of this CP rank's queries q [batch, heads, 2c, head_dim] over the whole sequence, whose keys and
    /// values k, v [batch, kv_heads, 2c, head_dim] are spread over <paramref name="g"/>: each rank holds chunks rank and
    /// 2·cp-1-rank of 2·cp chunks of c tokens. K and V go around the ring in the forward; in the backward again, with
    /// their gradients.
    /// </summary>
    public static Tensor RingAttention(ProcessGroup g, Tensor q, Tensor k, Tensor v) =>
        Tensor.From(Native.pt_ring_attention(g.HandleForOps, q.Handle, k.Handle, v.Handle, out var h), h);

    /// <summary>Seconds this process spent in the ring's transfers (posting them, and waiting for what the compute did
    /// not hide) since the last call (then reset).</summary>
    public static double TakeCommSeconds() => Native.pt_cp_comm_ns_take() / 1e9;

    /// <summary>
    /// The positions in a sequence of <paramref name="seq"/> tokens of the seq / cp tokens CP rank <paramref name="rank"/>
    /// of <paramref name="cp"/> holds: chunks rank and 2·cp-1-rank of 2·cp (Megatron-Core's causal load balance: an
    /// early and a late chunk, so that every rank attends over as many keys).
    /// </summary>
    public static long[] Positions(long seq, int cp, int rank)
    {
        if (seq % (2 * cp) != 0)
            throw new ArgumentException($"context parallelism needs the sequence ({seq}) divisible by 2·cp = {2 * cp}", nameof(seq));
        long c = seq / (2 * cp);
        var p = new long[2 * c];
        for (long i = 0; i < c; i++)
        {
            p[i] = rank * c + i;
            p[c + i] = (2L * cp - 1 - rank) * c + i;
        }
        return p;
    }
}
