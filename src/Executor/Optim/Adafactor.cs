using Planner.Executor.Distributed;
using Planner.Executor.Torch;

namespace Planner.Executor.Optim;

/// <summary>
/// Adafactor (Shazeer and Stern 2018, Algorithms 4 and 5, without a first moment): a matrix's second moment kept as
/// the decayed row and column sums of G² + ε₁, its estimate R·Cᵀ / ΣR; a vector's kept whole. The decay at step t is
/// 1 − t^−0.8; the update G / √V̂ clipped to an RMS of at most d = 1; the step lr · max(ε₂, RMS(W)) (the relative
/// step's parameter scale, lr the relative step); weight decay decoupled (W ← W − lr·λ·W). Row and column sums and the
/// RMS are of the whole weight: a rank holding a piece (<see cref="HeldWeights"/>) sums its part with the ranks that hold
/// the rest, so that every layout steps each weight as one process does. Its state is the sums (fp32, whole on every
/// holder) and the vectors' second moments (held elements only).
/// </summary>
public sealed class Adafactor : IOptimizer
{
    private const double Eps1 = 1e-30, Eps2 = 1e-3, ClipThreshold = 1, DecayExponent = -0.8;
    private readonly HeldWeights _held;
    private readonly double _weightDecay;
    private readonly Tensor?[] _rows, _cols; // per weight (matrices): decayed row and column sums
    private readonly Dictionary<WeightPiece, Tensor> _vectors = []; // per held piece of a vector: its second moment
    private double _lr;
    private int _t;

    /// <summary>Adafactor over <paramref name="held"/> with relative step <paramref name="lr"/>.</summary>
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
        using var noGrad = TorchRuntime.NoGrad();
        using var scope = DisposeScope.Begin();
        _t++;
        double beta = 1 - Math.Pow(_t, DecayExponent);
        var weights = _held.Weights;
        var pieces = _held.All.Where(x => x.Tensor.Grad is not null).ToList();
        var like = _held.Tensors[0];
        // Round 1: the whole weights' row and column sums of G² + ε₁ and Σ W² (last element of each weight's statistics).
        var stats = weights.Select(w => Tensor.Zeros([(w.Matrix ? w.Rows + w.Cols : 0) + 1], device: like.Device)).ToList();
        var held = new List<(WeightPiece Piece, Tensor W, Tensor G, Tensor G2)>();
        foreach (var (tensor, piece) in pieces)
        {
            var w = weights[piece.Weight];
            var g = tensor.Grad!.View(-1).Narrow(0, piece.At, piece.Length).To(DType.Float32);
            var theta = tensor.Data().View(-1).Narrow(0, piece.At, piece.Length);
            var g2 = g.Square() + Eps1;
            var s = stats[piece.Weight];
            if (w.Matrix)
            {
                Indexing.IndexAdd(s, piece.Index(like, w.Cols, PiecePosition.Row), g2);
                Indexing.IndexAdd(s, piece.Index(like, w.Cols, PiecePosition.Column, shift: w.Rows), g2);
            }
            Indexing.IndexAdd(s, Tensor.Full([1], w.Matrix ? w.Rows + w.Cols : 0, DType.Int64).On(like.Device), theta.To(DType.Float32).Square().Sum().View(1));
            held.Add((piece, theta, g, g2));
        }
        _held.Reduce(stats, ReduceOp.Sum);
        for (int i = 0; i < weights.Count; i++)
            if (weights[i].Matrix)
            {
                Decay(ref _rows[i], stats[i].Narrow(0, 0, weights[i].Rows), beta);
                Decay(ref _cols[i], stats[i].Narrow(0, weights[i].Rows, weights[i].Cols), beta);
            }
        // Round 2: the unclipped updates and the whole weights' Σ U².
        var squares = weights.Select(_ => Tensor.Zeros([1], device: like.Device)).ToList();
        var updates = new List<Tensor>();
        foreach (var (piece, _, g, g2) in held)
        {
            var w = weights[piece.Weight];
            Tensor v;
            if (w.Matrix)
            {
                var r = _rows[piece.Weight]!;
                v = r.Gather(0, piece.Index(like, w.Cols, PiecePosition.Row)) * _cols[piece.Weight]!.Gather(0, piece.Index(like, w.Cols, PiecePosition.Column)) / r.Sum();
            }
            else
            {
                var second = _vectors.TryGetValue(piece, out var kept) ? kept : null;
                Decay(ref second, g2, beta);
                _vectors[piece] = second!;
                v = second!;
            }
            var u = g / v.Sqrt();
            squares[piece.Weight].CopyFrom(squares[piece.Weight] + u.Square().Sum().View(1));
            updates.Add(u);
        }
        _held.Reduce(squares, ReduceOp.Sum);
        for (int i = 0; i < held.Count; i++)
        {
            var (piece, theta, _, _) = held[i];
            var w = weights[piece.Weight];
            var s = stats[piece.Weight];
            var rmsU = (squares[piece.Weight] / w.Numel).Sqrt();
            var rmsW = (s.Narrow(0, s.Numel - 1, 1) / w.Numel).Sqrt();
            var clip = (rmsU / ClipThreshold - 1).Relu() + 1; // max(1, RMS(U) / d)
            var alpha = (rmsW - Eps2).Relu() + Eps2; // max(ε₂, RMS(W))
            theta.CopyFrom(theta * (1 - _lr * _weightDecay) - updates[i] / clip * alpha * _lr);
        }
    }

    /// <summary>state ← β·state + (1 − β)·value (the value itself at the first step, β = 0).</summary>
    private static void Decay(ref Tensor? state, Tensor value, double beta)
    {
        if (state is null)
        {
            state = (value * (1 - beta)).Clone();
            DisposeScope.Untrack(state);
            return;
        }
        state.CopyFrom(state * beta + value * (1 - beta));
    }

    /// <inheritdoc />
    public void ZeroGrad()
    {
        foreach (var t in _held.Tensors)
            t.ZeroGrad();
    }

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
