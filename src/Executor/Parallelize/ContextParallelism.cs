using Planner.Executor.Distributed;
using Planner.Executor.Model;
using Planner.Executor.Torch;

namespace Planner.Executor.Parallelize;

/// <summary>
/// Context parallelism on a plain <see cref="GptModel"/>: the rank holds two chunks of each sample's sequence
/// (<see cref="ContextParallel.Positions"/>), its positions (learned or rotary) are those tokens' global ones, and its
/// attention core is the causal ring attention over the CP group. Parameters are whole on every CP rank; their
/// gradients are reduced over the data- and context-parallel ranks together (<see cref="RankGroups.Dp"/>).
/// </summary>
public sealed class ContextParallelism : ContextHooks
{
    private readonly ProcessGroup _group;

    private ContextParallelism(ProcessGroup group) => _group = group;

    /// <summary>Sets the model's context hooks for <paramref name="group"/> (this process its member at the group's
    /// rank); with no group (cp = 1) leaves the model as it is.</summary>
    public static void Apply(GptModel model, ProcessGroup? group)
    {
        if (group is { Size: > 1 })
            model.Context = new ContextParallelism(group);
    }

    /// <inheritdoc />
    public override long[] Positions(long local) => ContextParallel.Positions(local * _group.Size, _group.Size, _group.Rank);

    /// <summary>Ring attention over the CP group; it keeps only q, k, v, the output and the log-sum-exp and redoes the
    /// scores in its backward, so selective recompute has nothing more to drop.</summary>
    public override Tensor Attention(Tensor q, Tensor k, Tensor v, bool recompute) => ContextParallel.RingAttention(_group, q, k, v);
}
