using Planner.Executor.Torch;

namespace Planner.Executor.Optim;

/// <summary>
/// Sophia (Liu et al. 2023, SophiaG): a first moment m and a diagonal curvature estimate h, both element-wise fp32. The
/// step clips m / (ρ·B·h + ε) to [−1, 1] (B the tokens of a step), so that where the curvature is small the step is
/// the sign of the momentum; weight decay decoupled. h is refreshed every k steps (<see cref="UpdateCurvature"/>) from
/// the squared gradient of a pass whose labels were drawn from the model's own outputs (the Gauss-Newton-Bartlett
/// estimator): h ← β₂·h + (1 − β₂)·ĝ². Defaults as the authors' GPT-2 runs: β (0.965, 0.99), ρ 0.04.
/// </summary>
public sealed class Sophia : ICheckpointedOptimizer
{
    private readonly IReadOnlyList<Tensor> _params;
    private readonly double _beta1, _beta2, _rho, _eps, _weightDecay, _tokens;
    private readonly Tensor?[] _m, _h;
    private double _lr;

    /// <summary>Sophia over <paramref name="parameters"/>; <paramref name="tokens"/> is B, the tokens of one step.</summary>
    public Sophia(IReadOnlyList<Tensor> parameters, double lr, double tokens, double beta1 = 0.965, double beta2 = 0.99, double rho = 0.04,
        double eps = 1e-15, double weightDecay = 0)
    {
        _params = parameters;
        (_lr, _tokens, _beta1, _beta2, _rho, _eps, _weightDecay) = (lr, tokens, beta1, beta2, rho, eps, weightDecay);
        _m = new Tensor?[parameters.Count];
        _h = new Tensor?[parameters.Count];
    }

    /// <summary>Steps Sophia refreshes its curvature every this many (the cost model's interval, k = 10).</summary>
    public const int CurvatureInterval = CostModel.Plans.FineTuning.SophiaHessianInterval;

    /// <inheritdoc />
    public void Step()
    {
        using var noGrad = TorchRuntime.NoGrad();
        for (int i = 0; i < _params.Count; i++)
        {
            using var scope = DisposeScope.Begin(); // each parameter's temporaries go before the next's are made
            if (_params[i].Grad is not { } grad)
                continue;
            var g = grad.To(DType.Float32);
            var theta = _params[i].Data();
            OptimizerState.Blend(ref _m[i], g, _beta1);
            var h = _h[i] ?? Tensor.Zeros(theta.Shape, device: theta.Device);
            var ratio = _m[i]! / (h * (_rho * _tokens) + _eps);
            theta.CopyFrom(theta * (1 - _lr * _weightDecay) - ClampToOne(ratio) * _lr);
        }
    }

    /// <summary>max(−1, min(x, 1)), exactly (where h ≈ 0 the ratio is huge: its sign must survive).</summary>
    private static Tensor ClampToOne(Tensor x)
    {
        var minusOne = Tensor.Full([1], -1).On(x.Device);
        var atMostOne = -(-x).Maximum(minusOne); // −max(−x, −1) = min(x, 1)
        return atMostOne.Maximum(minusOne);
    }

    /// <summary>Refreshes the curvature from the parameters' gradients, which must be those of a pass on sampled labels.</summary>
    public void UpdateCurvature()
    {
        using var noGrad = TorchRuntime.NoGrad();
        for (int i = 0; i < _params.Count; i++)
        {
            using var scope = DisposeScope.Begin();
            if (_params[i].Grad is { } grad)
                OptimizerState.Blend(ref _h[i], grad.To(DType.Float32).Square(), _beta2);
        }
    }

    /// <inheritdoc />
    public void ZeroGrad() => OptimizerState.ZeroGrad(_params);

    /// <inheritdoc />
    public void SetLearningRate(double lr) => _lr = lr;

    /// <inheritdoc />
    public IReadOnlyList<string> SlotNames => ["m", "h"];

    /// <inheritdoc />
    /// <remarks>A slot not made yet is zeros: blending into zeros gives what blending from nothing gives, bit for bit.</remarks>
    public TensorState? State(int tensor)
    {
        if (_m[tensor] is null && _h[tensor] is null)
            return null;
        var shape = (_m[tensor] ?? _h[tensor])!.Shape;
        var device = (_m[tensor] ?? _h[tensor])!.Device;
        return new TensorState(0, [_m[tensor] ?? Tensor.Zeros(shape, device: device), _h[tensor] ?? Tensor.Zeros(shape, device: device)]);
    }

    /// <inheritdoc />
    public void Restore(int tensor, TensorState state)
    {
        OptimizerState.Set(ref _m[tensor], state.Slots[0].To(DType.Float32));
        OptimizerState.Set(ref _h[tensor], state.Slots[1].To(DType.Float32));
    }

    /// <inheritdoc />
    public long StateBytes => _m.Concat(_h).Sum(t => t is null ? 0 : t.Numel * 4L);

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var t in _m.Concat(_h))
            t?.Dispose();
    }
}
