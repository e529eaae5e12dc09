using Planner.Executor.Torch;

namespace Planner.Executor.Distributed;

/// <summary>
/// Megatron-LM's communication primitives, each a forward and its backward, on a tensor-parallel group. With no
/// group (tp = 1) every one is the identity, so the same model code runs sharded and unsharded.
/// </summary>
public static class TensorParallel
{
    private static Tensor Op(ProcessGroup? g, Tensor x, int kind, long dim) =>
        g is null || g.Size == 1 ? x : Tensor.From(Native.pt_tp_op(g.HandleForOps, x.Handle, kind, dim, out var h), h);

    /// <summary>Seconds this process spent in tensor-parallel collectives since the last call (then reset).</summary>
    public static double TakeCommSeconds() => Native.pt_tp_comm_ns_take() / 1e9;

    /// <summary>Identity forward, all-reduce backward: the input of a column-parallel layer.</summary>
    public static Tensor Copy(ProcessGroup? g, Tensor x) => Op(g, x, 0, 0);

    /// <summary>All-reduce forward, identity backward: the output of a row-parallel layer.</summary>
    public static Tensor Reduce(ProcessGroup? g, Tensor x) => Op(g, x, 1, 0);

    /// <summary>All-gather along <paramref name="dim"/> forward, reduce-scatter backward: into a TP region under sequence parallelism.</summary>
    public static Tensor Gather(ProcessGroup? g, Tensor x, long dim) => Op(g, x, 2, dim);

    /// <summary>Keep this rank's chunk along <paramref name="dim"/> forward, all-gather backward.</summary>
    public static Tensor Scatter(ProcessGroup? g, Tensor x, long dim) => Op(g, x, 3, dim);

    /// <summary>All-gather along <paramref name="dim"/> forward, keep this rank's chunk of the gradient backward: the
    /// parts of a replicated tensor that each rank computed put together (every rank's gradient of it is the same).</summary>
    public static Tensor GatherParts(ProcessGroup? g, Tensor x, long dim) => Op(g, x, 5, dim);

    /// <summary>Reduce-scatter along <paramref name="dim"/> forward, all-gather backward: out of a row-parallel layer under sequence parallelism.</summary>
    public static Tensor ReduceScatter(ProcessGroup? g, Tensor x, long dim) => Op(g, x, 4, dim);
}
