using Planner.Executor.Optim;

namespace Planner.Executor.Torch;

/// <summary>The state of libtorch's AdamW and SGD and of the shim's Lion, read and replaced for checkpoints.</summary>
public sealed partial class Optimizer : ICheckpointedOptimizer
{
    /// <inheritdoc />
    public IReadOnlyList<string> SlotNames => _kind switch
    {
        0 => ["exp_avg", "exp_avg_sq"],
        1 => ["momentum_buffer"],
        _ => ["moment"],
    };

    /// <inheritdoc />
    public TensorState? State(int tensor)
    {
        var handles = new IntPtr[SlotNames.Count];
        int n = handles.Length;
        Native.Check(Native.pt_optim_state(_handle, tensor, out long step, handles, ref n));
        if (step < 0)
            return null;
        return new TensorState(step, handles.Take(n).Select(h => new Tensor(h)).ToList());
    }

    /// <inheritdoc />
    public void Restore(int tensor, TensorState state)
    {
        using var scope = DisposeScope.Begin();
        var typed = state.Slots.Select(s => s.To(_dtypes[tensor])).ToList();
        var handles = new IntPtr[typed.Count];
        var added = new bool[typed.Count];
        try
        {
            for (int i = 0; i < typed.Count; i++)
            {
                typed[i].Handle.DangerousAddRef(ref added[i]);
                handles[i] = typed[i].Handle.DangerousGetHandle();
            }
            Native.Check(Native.pt_optim_set_state(_handle, tensor, state.Step, handles, handles.Length));
        }
        finally
        {
            for (int i = 0; i < typed.Count; i++)
                if (added[i])
                    typed[i].Handle.DangerousRelease();
        }
    }
}
