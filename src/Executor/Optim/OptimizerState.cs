using Planner.Executor.Torch;

namespace Planner.Executor.Optim;

/// <summary>The long-lived state tensors of the optimizers written here: made at their first value (out of any dispose
/// scope), written in place after that.</summary>
internal static class OptimizerState
{
    /// <summary>state ← value (a long-lived copy the first time).</summary>
    public static void Set(ref Tensor? state, Tensor value)
    {
        if (state is null)
        {
            state = value.Clone();
            DisposeScope.Untrack(state);
            return;
        }
        state.CopyFrom(value);
    }

    /// <summary>state ← β·state + (1 − β)·value, from zero: (1 − β)·value the first time.</summary>
    public static void Blend(ref Tensor? state, Tensor value, double beta)
    {
        if (state is null)
            Set(ref state, value * (1 - beta));
        else
            state.CopyFrom(state * beta + value * (1 - beta));
    }

    /// <summary>Clears the gradients of <paramref name="tensors"/>.</summary>
    public static void ZeroGrad(IEnumerable<Tensor> tensors)
    {
        foreach (var t in tensors)
            t.ZeroGrad();
    }
}
