using Planner.Executor.Distributed;
using Planner.Executor.Torch;

namespace Planner.Executor.Optim;

/// <summary>
/// 8-bit AdamW (Dettmers et al. 2022): both moments stored as 8-bit codes of <see cref="DynamicMap"/> with an fp32
/// absolute maximum per block of <see cref="Block"/> consecutive values of the whole weight (row-major), the blocking
/// of one process. Each step dequantizes the moments, updates them in fp32 with the gradient, steps the weight with
/// them as AdamW does (bias-corrected, decoupled weight decay) and quantizes them again under their new block maxima;
/// a rank holding a piece of a weight (<see cref="HeldWeights"/>) maximises its blocks with the ranks that hold the rest,
/// so that every layout codes each value as one process does. The moments are computed twice (for the maxima, then for
/// the step), one piece at a time, so that only one piece's fp32 moments exist at once.
/// </summary>
public sealed class Adam8bit : IOptimizer
{
    /// <summary>Values per quantization block (the cost model's <c>FineTuning.Adam8bitBlock</c>).</summary>
    public const long Block = CostModel.Plans.FineTuning.Adam8bitBlock;

    private readonly HeldWeights _held;
    private readonly double _beta1, _beta2, _eps, _weightDecay;
    private readonly Tensor _signedMap, _signedBounds, _unsignedMap, _unsignedBounds;
    private readonly Dictionary<WeightPiece, (Tensor M, Tensor V)> _codes = []; // per held piece
    private readonly Tensor?[] _mMax, _vMax; // per weight: the blocks' absolute maxima
    private double _lr;
    private int _t;

    /// <summary>8-bit AdamW over <paramref name="held"/>.</summary>
    public Adam8bit(HeldWeights held, double lr, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 0.01)
    {
        _held = held;
        (_lr, _beta1, _beta2, _eps, _weightDecay) = (lr, beta1, beta2, eps, weightDecay);
        var device = held.Tensors.Count > 0 ? held.Tensors[0].Device : default;
        using (var scope = DisposeScope.Begin())
        {
            (_signedMap, _signedBounds) = DynamicMap.Tensors(signed: true, device);
            (_unsignedMap, _unsignedBounds) = DynamicMap.Tensors(signed: false, device);
            foreach (var t in new[] { _signedMap, _signedBounds, _unsignedMap, _unsignedBounds })
                DisposeScope.Untrack(t);
        }
        _mMax = new Tensor?[held.Weights.Count];
        _vMax = new Tensor?[held.Weights.Count];
    }

    private static long Blocks(WholeWeight w) => (w.Numel + Block - 1) / Block;

    /// <inheritdoc />
    public void Step()
    {
        if (_held.Weights.Count == 0)
            return;
        using var noGrad = TorchRuntime.NoGrad();
        using var step = DisposeScope.Begin();
        _t++;
        var weights = _held.Weights;
        var device = _held.Tensors[0].Device;
        var pieces = _held.WithGradients;
        // Pass 1: the updated moments' block maxima, maximised with the ranks holding the rest of each weight.
        var maxima = weights.Select(w => Tensor.Zeros([2 * Blocks(w)], device: device)).ToList();
        foreach (var (tensor, piece) in pieces)
        {
            using var scope = DisposeScope.Begin(); // each piece's temporaries go before the next's are made
            var (block, m, v) = Moments(tensor, piece);
            Indexing.ScatterMax(maxima[piece.Weight], block, m.Abs());
            Indexing.ScatterMax(maxima[piece.Weight], piece.Index(tensor, weights[piece.Weight].Cols, PiecePosition.Flat, Block, shift: Blocks(weights[piece.Weight])), v);
        }
        _held.Reduce(maxima, ReduceOp.Max);
        // Pass 2: the same moments again (from the old codes), the step, and the moments coded under the new maxima.
        double c1 = 1 - Math.Pow(_beta1, _t), c2 = 1 - Math.Pow(_beta2, _t);
        var coded = new List<(WeightPiece Piece, Tensor M, Tensor V)>();
        foreach (var (tensor, piece) in pieces)
        {
            using var scope = DisposeScope.Begin();
            var (block, m, v) = Moments(tensor, piece);
            var theta = tensor.Data().View(-1).Narrow(0, piece.At, piece.Length);
            theta.CopyFrom(theta * (1 - _lr * _weightDecay) - m / c1 / ((v / c2).Sqrt() + _eps) * _lr);
            long blocks = Blocks(weights[piece.Weight]);
            coded.Add((piece, scope.Keep(Quantize(m, _signedBounds, maxima[piece.Weight].Narrow(0, 0, blocks), block)),
                scope.Keep(Quantize(v, _unsignedBounds, maxima[piece.Weight].Narrow(0, blocks, blocks), block))));
        }
        for (int i = 0; i < weights.Count; i++)
        {
            OptimizerState.Set(ref _mMax[i], maxima[i].Narrow(0, 0, Blocks(weights[i])));
            OptimizerState.Set(ref _vMax[i], maxima[i].Narrow(0, Blocks(weights[i]), Blocks(weights[i])));
        }
        foreach (var (piece, m8, v8) in coded)
            if (_codes.TryGetValue(piece, out var old))
            {
                old.M.CopyFrom(m8);
                old.V.CopyFrom(v8);
            }
            else
            {
                DisposeScope.Untrack(m8);
                DisposeScope.Untrack(v8);
                _codes[piece] = (m8, v8);
            }
    }

    /// <summary>A piece's block indices and its moments updated with this step's gradient (fp32), from the stored codes
    /// under the stored maxima (zeros at the first step).</summary>
    private (Tensor Block, Tensor M, Tensor V) Moments(Tensor tensor, WeightPiece piece)
    {
        var w = _held.Weights[piece.Weight];
        var g = tensor.Grad!.View(-1).Narrow(0, piece.At, piece.Length).To(DType.Float32);
        var block = piece.Index(tensor, w.Cols, PiecePosition.Flat, Block);
        var (m, v) = _codes.TryGetValue(piece, out var codes)
            ? (Dequantize(codes.M, _signedMap, _mMax[piece.Weight]!, block), Dequantize(codes.V, _unsignedMap, _vMax[piece.Weight]!, block))
            : (Tensor.Zeros([piece.Length], device: tensor.Device), Tensor.Zeros([piece.Length], device: tensor.Device));
        return (block, m * _beta1 + g * (1 - _beta1), v * _beta2 + g.Square() * (1 - _beta2));
    }

    /// <summary>Codes → values: the map's value times the block's maximum.</summary>
    private static Tensor Dequantize(Tensor codes, Tensor map, Tensor maxima, Tensor block) =>
        map.Gather(0, codes.To(DType.Int64)) * maxima.Gather(0, block);

    /// <summary>Values → the codes of the nearest map values after normalizing by the block's maximum (an all-zero block
    /// codes zeros).</summary>
    private static Tensor Quantize(Tensor values, Tensor bounds, Tensor maxima, Tensor block)
    {
        var scale = maxima.Gather(0, block);
        var normalized = values / (scale + 1e-30); // the tiny term only guards a zero maximum (whose values are zeros)
        return Indexing.Bucketize(normalized, bounds).To(DType.UInt8);
    }

    /// <inheritdoc />
    public void ZeroGrad() => OptimizerState.ZeroGrad(_held.Tensors);

    /// <inheritdoc />
    public void SetLearningRate(double lr) => _lr = lr;

    /// <inheritdoc />
    public long StateBytes => _codes.Values.Sum(c => c.M.Numel + c.V.Numel) + _mMax.Concat(_vMax).Sum(t => t is null ? 0 : t.Numel * 4L);

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var (m, v) in _codes.Values)
        {
            m.Dispose();
            v.Dispose();
        }
        foreach (var t in _mMax.Concat(_vMax).Append(_signedMap).Append(_signedBounds).Append(_unsignedMap).Append(_unsignedBounds))
            t?.Dispose();
    }
}
