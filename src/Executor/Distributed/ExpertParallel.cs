using Planner.Executor.Torch;

namespace Planner.Executor.Distributed;

/// <summary>The expert-parallel exchange of routed rows, an autograd op whose backward sends the gradients back.</summary>
public static class ExpertParallel
{
    /// <summary>
    /// Rows of <paramref name="x"/> sent to each rank of <paramref name="g"/> (<paramref name="send"/>[j] to rank j,
    /// in rank order) and received from each (<paramref name="recv"/>[j] from rank j, in rank order).
    /// </summary>
    public static Tensor AllToAll(ProcessGroup g, Tensor x, long[] send, long[] recv) =>
        Tensor.From(Native.pt_expert_alltoall(g.HandleForOps, x.Handle, send, recv, g.Size, out var h), h);

    /// <summary>Seconds this process spent in expert all-to-alls since the last call (then reset).</summary>
    public static double TakeCommSeconds() => Native.pt_ep_comm_ns_take() / 1e9;
}
