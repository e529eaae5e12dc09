using Planner.Executor.Distributed;
using Planner.Executor.Torch;

namespace Planner.Executor.Optim;

/// <summary>
/// Adafactor (Shazeer and Stern 2018, Algorithms 4 and 5, without a first moment): a matrix's second moment kept as
/// the decayed row and column sums of G² + ε₁, its estimate R·Cᵀ / ΣR; a vector's kept whole. The decay at step t is
/// 1 − t^−0.8; the update G / √V̂ clipped to an RMS of at most d = 1; the step lr times that (without the relative
/// step's parameter scale: the fine-tuning recipe, under which zero-initialized LoRA B can move); weight decay decoupled
/// (W ← W − lr·λ·W). Row and column sums and the update's RMS are of the whole weight: a rank holding a piece
/// (<see cref="HeldWeights"/>) sums its part with the ranks that hold the rest, so that every layout steps each weight as
/// one process does. Its state is every weight's sums (fp32, kept whole on every rank of the groups) and the vectors'
/// second moments (held elements only). Each piece's temporaries are freed before the next piece's are made.
/// </summary>
public sealed class Adafactor : IOptimizer
{
    private const double Eps1 = 1e-30, ClipThreshold = 1, DecayExponent = -0.8;
    private readonly HeldWeights _held;
    private readonly double _weightDecay;
    private readonly Tensor?[] _rows, _cols; // per weight (matrices): decayed row and column sums
    private readonly Dictionary<WeightPiece, Tensor> _vectors = []; // per held piece of a vector: its second moment
    private double _lr;
    private int _t;

    /// <summary>Adafactor over <paramref name="held"/> with learning rate <paramref name="lr"/>.</summary>
    public Adafactor(HeldWeights held, double lr, double weightDecay = 0)
    {
        _held = held;
        _lr = lr;
        _weightDecay = weightDecay;
        _rows = new Tensor?[held.Weights.Count];
        _cols = new Tensor?[held.Weights.Count];
    }

    /// <inheritdoc />
    public void Step()
    {
        if (_held.Weights.Count == 0)
            return;
        using var noGrad = TorchRuntime.NoGrad();
        using var step = DisposeScope.Begin();
        _t++;
        double beta = 1 - Math.Pow(_t, DecayExponent);
        var weights = _held.Weights;
        var device = _held.Tensors[0].Device;
        var pieces = _held.WithGradients;
        // Round 1: the matrices' row and column sums of G² + ε₁, summed with the ranks holding the rest of each.
        var sums = weights.Select(w => Tensor.Zeros([w.Matrix ? w.Rows + w.Cols : 1], device: device)).ToList();
        foreach (var (tensor, piece) in pieces.Where(x => weights[x.Piece.Weight].Matrix))
        {
            using var scope = DisposeScope.Begin(); // each piece's temporaries go before the next's are made
            var w = weights[piece.Weight];
            var g2 = Gradient(tensor, piece).Square() + Eps1;
            Indexing.IndexAdd(sums[piece.Weight], piece.Index(tensor, w.Cols, PiecePosition.Row), g2);
            Indexing.IndexAdd(sums[piece.Weight], piece.Index(tensor, w.Cols, PiecePosition.Column, shift: w.Rows), g2);
        }
        _held.Reduce(sums, ReduceOp.Sum);
        for (int i = 0; i < weights.Count; i++)
            if (weights[i].Matrix)
            {
                OptimizerState.Blend(ref _rows[i], sums[i].Narrow(0, 0, weights[i].Rows), beta);
                OptimizerState.Blend(ref _cols[i], sums[i].Narrow(0, weights[i].Rows, weights[i].Cols), beta);
            }
        // Round 2: the whole weights' Σ U² (the vectors' second moments decayed here).
        var squares = weights.Select(_ => Tensor.Zeros([1], device: device)).ToList();
        foreach (var (tensor, piece) in pieces)
        {
            using var scope = DisposeScope.Begin();
            squares[piece.Weight].CopyFrom(squares[piece.Weight] + Unclipped(tensor, piece, beta).Square().Sum().View(1));
        }
        _held.Reduce(squares, ReduceOp.Sum);
        // Round 3: the clipped step.
        foreach (var (tensor, piece) in pieces)
        {
            using var scope = DisposeScope.Begin();
            var clip = ((squares[piece.Weight] / weights[piece.Weight].Numel).Sqrt() / ClipThreshold - 1).Relu() + 1; // max(1, RMS(U) / d)
            var theta = tensor.Data().View(-1).Narrow(0, piece.At, piece.Length);
            theta.CopyFrom(theta * (1 - _lr * _weightDecay) - Unclipped(tensor, piece, beta: null) / clip * _lr);
        }
    }

    /// <summary>A piece's gradient (fp32, flat).</summary>
    private static Tensor Gradient(Tensor tensor, WeightPiece piece) => tensor.Grad!.View(-1).Narrow(0, piece.At, piece.Length).To(DType.Float32);

    /// <summary>A piece's unclipped update G / √V̂; a vector's second moment is decayed first when <paramref name="beta"/>
    /// is given (once a step).</summary>
    private Tensor Unclipped(Tensor tensor, WeightPiece piece, double? beta)
    {
        var w = _held.Weights[piece.Weight];
        var g = Gradient(tensor, piece);
        if (w.Matrix)
        {
            var r = _rows[piece.Weight]!;
            // R / ΣR first: R·C of a zero gradient's sums (ε₁² · rows · cols) would underflow fp32 to 0, and 0 / 0.
            var v = r.Gather(0, piece.Index(tensor, w.Cols, PiecePosition.Row)) / r.Sum() * _cols[piece.Weight]!.Gather(0, piece.Index(tensor, w.Cols, PiecePosition.Column));
            return g / v.Sqrt();
        }
        var second = _vectors.TryGetValue(piece, out var kept) ? kept : null;
        if (beta is { } b)
        {
            OptimizerState.Blend(ref second, g.Square() + Eps1, b);
            _vectors[piece] = second!;
        }
        return g / second!.Sqrt();
    }

    /// <inheritdoc />
    public void ZeroGrad() => OptimizerState.ZeroGrad(_held.Tensors);

    /// <inheritdoc />
    public void SetLearningRate(double lr) => _lr = lr;

    /// <inheritdoc />
    public long StateBytes => _rows.Concat(_cols).Concat(_vectors.Values).Sum(t => t is null ? 0 : t.Numel * 4L);

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var t in _rows.Concat(_cols).Concat(_vectors.Values))
            t?.Dispose();
    }
}
