using Planner.Executor.Distributed;
using Planner.Executor.Torch;

namespace Planner.Executor.Optim;

/// <summary>A whole weight as a matrix (a vector as one column), and whether tensor parallelism splits it.</summary>
/// <param name="Rows">The whole weight's rows (a vector's length).</param>
/// <param name="Cols">The whole weight's columns (1 for a vector).</param>
/// <param name="SplitByTp">True when the other ranks of the TP group hold other parts of it.</param>
public sealed record WholeWeight(long Rows, long Cols, bool SplitByTp)
{
    /// <summary>True for a matrix (two dimensions of more than one element), false for a vector.</summary>
    public bool Matrix => Rows > 1 && Cols > 1;

    /// <summary>Elements of the whole weight.</summary>
    public long Numel => Rows * Cols;
}

/// <summary>
/// A piece of a weight that an optimizer tensor holds: the tensor-parallel shard it belongs to (where that shard sits
/// in the whole weight, its row length) and the range of the shard's elements held, at <paramref name="At"/> in the
/// optimizer's flattened tensor (a ZeRO slice holds part of a shard; without ZeRO a piece is the whole shard at 0).
/// </summary>
/// <param name="Weight">The weight's index in <see cref="HeldWeights.Weights"/>.</param>
/// <param name="LocalCols">The TP shard's columns.</param>
/// <param name="RowOffset">The TP shard's first row in the whole weight.</param>
/// <param name="ColOffset">The TP shard's first column in the whole weight.</param>
/// <param name="Start">The first held element of the shard (row-major).</param>
/// <param name="Length">Elements held.</param>
/// <param name="At">Where they sit in the optimizer's flattened tensor.</param>
public sealed record WeightPiece(int Weight, long LocalCols, long RowOffset, long ColOffset, long Start, long Length, long At)
{
    /// <summary>Where each held element sits in the whole weight of <paramref name="cols"/> columns, floor-divided by
    /// <paramref name="divisor"/>, plus <paramref name="shift"/> (int64, on <paramref name="like"/>'s device).</summary>
    public Tensor Index(Tensor like, long cols, PiecePosition position, long divisor = 1, long shift = 0) =>
        Indexing.PieceIndex(like, Start, Length, LocalCols, RowOffset, ColOffset, cols, position, divisor, shift);
}

/// <summary>
/// The tensors an optimizer steps on one rank, the pieces of weights each holds, every weight those pieces belong to
/// (the same list, in the same order, on every rank of the groups below, whether or not a rank holds part of each), and
/// the groups that hold the other pieces: the DP group when ZeRO slices the weights, the TP group for the weights
/// tensor parallelism splits. Statistics of a whole weight (Adafactor's row and column sums, 8-bit Adam's block maxima)
/// are summed or maximised over those groups, so that every layout steps each weight as one process steps it.
/// </summary>
/// <param name="Tensors">The tensors stepped (parameters, or a ZeRO master slice).</param>
/// <param name="Pieces">Per tensor, the pieces it holds.</param>
/// <param name="Weights">The whole weights.</param>
/// <param name="Shards">The DP group whose ranks hold the other ZeRO slices, or null.</param>
/// <param name="Tp">The TP group, or null.</param>
public sealed record HeldWeights(IReadOnlyList<Tensor> Tensors, IReadOnlyList<IReadOnlyList<WeightPiece>> Pieces, IReadOnlyList<WholeWeight> Weights,
    ProcessGroup? Shards, ProcessGroup? Tp)
{
    /// <summary>Every tensor a whole weight of its own on one rank (one process, tests).</summary>
    public static HeldWeights Whole(IReadOnlyList<Tensor> tensors) => new(tensors,
        tensors.Select((t, i) => (IReadOnlyList<WeightPiece>)[new WeightPiece(i, Cols(t.Shape), 0, 0, 0, t.Numel, 0)]).ToList(),
        tensors.Select(t => new WholeWeight(t.Shape[0], Cols(t.Shape), false)).ToList(), null, null);

    /// <summary>A shape's elements per row (1 for a vector).</summary>
    public static long Cols(long[] shape) => shape.Skip(1).Aggregate(1L, (a, b) => a * b);

    /// <summary>Every piece with its tensor.</summary>
    public IEnumerable<(Tensor Tensor, WeightPiece Piece)> All => Tensors.SelectMany((t, i) => Pieces[i].Select(p => (t, p)));

    /// <summary>The pieces whose tensor has a gradient this step, with their tensors.</summary>
    public List<(Tensor Tensor, WeightPiece Piece)> WithGradients => All.Where(x => x.Tensor.Grad is not null).ToList();

    /// <summary>
    /// Reduces per-weight statistics (<paramref name="stats"/>[w] for weight w, this rank's partial values, zeros where
    /// it holds nothing) in place over the ZeRO group and, for weights TP splits, the TP group: one collective per
    /// group over the concatenated statistics.
    /// </summary>
    public void Reduce(IReadOnlyList<Tensor> stats, ReduceOp op)
    {
        foreach (bool split in new[] { false, true })
        {
            if (Shards is null && (!split || Tp is null))
                continue;
            var mine = Enumerable.Range(0, Weights.Count).Where(w => Weights[w].SplitByTp == split).ToList();
            if (mine.Count == 0)
                continue;
            using var scope = DisposeScope.Begin();
            var flat = Tensor.Cat(mine.Select(w => stats[w].View(-1)).ToList(), 0);
            Shards?.AllReduce(flat, op);
            if (split)
                Tp?.AllReduce(flat, op);
            long offset = 0;
            foreach (int w in mine)
            {
                stats[w].CopyFrom(flat.Narrow(0, offset, stats[w].Numel).View(stats[w].Shape));
                offset += stats[w].Numel;
            }
        }
    }
}
