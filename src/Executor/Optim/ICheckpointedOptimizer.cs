using Planner.Executor.Torch;

namespace Planner.Executor.Optim;

/// <summary>One stepped tensor's optimizer state: its step count (AdamW's bias correction; 0 for an optimizer that
/// counts none) and its state tensors (<see cref="ICheckpointedOptimizer.SlotNames"/>), each shaped as the tensor.</summary>
public sealed record TensorState(long Step, IReadOnlyList<Tensor> Slots);

/// <summary>
/// An optimizer whose state a checkpoint saves and restores, tensor by tensor of those it steps. Only element-wise
/// state is here (each slot shaped as its tensor), so that a slot can be cut and joined again like the parameter it
/// belongs to when a checkpoint is resumed on another layout. Adafactor's factored statistics and 8-bit Adam's
/// block-quantized moments are not element-wise: those optimizers are not checkpointed (the run refuses them).
/// </summary>
public interface ICheckpointedOptimizer : IOptimizer
{
    /// <summary>The names of a tensor's state slots (AdamW: exp_avg, exp_avg_sq).</summary>
    IReadOnlyList<string> SlotNames { get; }

    /// <summary>Tensor <paramref name="tensor"/>'s state (views of the optimizer's own tensors, which the caller's dispose
    /// scope frees and which must not be disposed otherwise), or null before it has any.</summary>
    TensorState? State(int tensor);

    /// <summary>Replaces tensor <paramref name="tensor"/>'s state with copies of <paramref name="state"/>'s (fp32
    /// tensors on the tensor's device; converted to the optimizer's type).</summary>
    void Restore(int tensor, TensorState state);
}
