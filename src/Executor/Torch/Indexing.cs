namespace Planner.Executor.Torch;

/// <summary>Which position of a held element in its whole weight <see cref="Indexing.PieceIndex"/> gives.</summary>
public enum PiecePosition
{
    /// <summary>The element's row in the whole weight.</summary>
    Row = 0,
    /// <summary>The element's column in the whole weight.</summary>
    Column = 1,
    /// <summary>The element's row-major index in the whole weight.</summary>
    Flat = 2,
}

/// <summary>
/// Index ops for optimizers whose statistics span a whole weight while a rank holds a piece of it (indexing.cpp):
/// where the held elements sit in the whole weight, and the 1-D scatters that sum or maximise over those positions.
/// </summary>
public static class Indexing
{
    /// <summary>
    /// The positions in a whole [*, <paramref name="cols"/>] weight of the held elements [<paramref name="start"/>,
    /// start + <paramref name="length"/>) of a shard [*, <paramref name="localCols"/>] whose first element sits at
    /// (<paramref name="rowOffset"/>, <paramref name="colOffset"/>), floor-divided by <paramref name="divisor"/>, plus
    /// <paramref name="shift"/>: int64 on <paramref name="like"/>'s device.
    /// </summary>
    public static Tensor PieceIndex(Tensor like, long start, long length, long localCols, long rowOffset, long colOffset, long cols, PiecePosition position,
        long divisor = 1, long shift = 0) =>
        Tensor.From(Native.pt_piece_index(like.Handle, start, length, localCols, rowOffset, colOffset, cols, (int)position, divisor, shift, out var h), h);

    /// <summary>target[index[i]] += src[i], in place (1-D).</summary>
    public static void IndexAdd(Tensor target, Tensor index, Tensor src) => Native.Check(Native.pt_index_add_(target.Handle, index.Handle, src.Handle));

    /// <summary>target[index[i]] = max(target[index[i]], src[i]), in place (1-D).</summary>
    public static void ScatterMax(Tensor target, Tensor index, Tensor src) => Native.Check(Native.pt_scatter_amax_(target.Handle, index.Handle, src.Handle));

    /// <summary>For each value the index of the first of the sorted <paramref name="boundaries"/> not below it (int64).</summary>
    public static Tensor Bucketize(Tensor values, Tensor boundaries) =>
        Tensor.From(Native.pt_bucketize(values.Handle, boundaries.Handle, out var h), h);
}
