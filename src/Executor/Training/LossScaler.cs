using Planner.Executor.Torch;

namespace Planner.Executor.Training;

/// <summary>What a checkpoint keeps of a <see cref="LossScaler"/>: the scale, the steps skipped, the clean steps in a row.</summary>
public sealed record LossScalerState(double Scale, int SkippedSteps, int CleanSteps);

/// <summary>
/// Dynamic loss scaling for fp16 training: the loss is multiplied by <see cref="Scale"/> before the backward pass so
/// that small gradients survive fp16's narrow range; the gradients are divided by it before the optimizer step. A step
/// whose gradients overflowed (any inf or NaN on any rank) is skipped and the scale halved; after
/// <see cref="GrowthInterval"/> clean steps in a row the scale doubles.
/// </summary>
public sealed class LossScaler
{
    /// <summary>Creates a scaler.</summary>
    /// <param name="initialScale">The first scale (2^16 as in PyTorch's GradScaler).</param>
    /// <param name="growthInterval">Clean steps in a row before the scale doubles.</param>
    public LossScaler(double initialScale = 65536, int growthInterval = 2000)
    {
        if (!(initialScale > 0) || double.IsInfinity(initialScale))
            throw new ArgumentOutOfRangeException(nameof(initialScale), initialScale, "the loss scale must be a positive finite number");
        if (growthInterval < 1)
            throw new ArgumentOutOfRangeException(nameof(growthInterval), growthInterval, "the growth interval must be at least 1");
        Scale = initialScale;
        GrowthInterval = growthInterval;
    }

    /// <summary>The factor the loss is multiplied by.</summary>
    public double Scale { get; private set; }

    /// <summary>Clean steps in a row before the scale doubles.</summary>
    public int GrowthInterval { get; }

    /// <summary>Steps skipped because their gradients overflowed.</summary>
    public int SkippedSteps { get; private set; }

    private int _clean;

    /// <summary>The scaler's state, for checkpoints.</summary>
    public LossScalerState State => new(Scale, SkippedSteps, _clean);

    /// <summary>Continues from a checkpoint's state.</summary>
    public void Restore(LossScalerState state) => (Scale, SkippedSteps, _clean) = (state.Scale, state.SkippedSteps, state.CleanSteps);

    /// <summary>True when every gradient is finite (a sum over a tensor is inf or NaN when any element is).</summary>
    public static bool AllFinite(IEnumerable<Tensor?> gradients)
    {
        using var scope = DisposeScope.Begin();
        foreach (var g in gradients)
            if (g is not null && !double.IsFinite(g.To(DType.Float32).Sum().Item()))
                return false;
        return true;
    }

    /// <summary>
    /// Records the outcome of a step whose gradients were (on every rank) finite or not. Returns true when the
    /// optimizer may step; false when the step must be skipped (the scale was halved).
    /// </summary>
    public bool Update(bool finite)
    {
        if (!finite)
        {
            Scale /= 2;
            SkippedSteps++;
            _clean = 0;
            return false;
        }
        if (++_clean >= GrowthInterval)
        {
            Scale *= 2;
            _clean = 0;
        }
        return true;
    }
}
