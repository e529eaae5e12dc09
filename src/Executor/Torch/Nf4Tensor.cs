namespace Planner.Executor.Torch;

/// <summary>
/// A frozen weight stored in NF4, QLoRA's 4-bit NormalFloat (Dettmers et al. 2023, section 3): the whole weight's
/// row-major flattening is cut into blocks of <see cref="BlockSize"/> values, each block divided by its largest absolute
/// value (its absmax) and each quotient stored as the index of the nearest of the 16 <see cref="Levels"/> (a tie goes
/// to the lower index). This process may hold only a shard of the weight: its codes, packed two per byte (uint8, the
/// lower nibble first), and the absmax of the blocks it touches, one per run of its values (in its own row-major order)
/// that lie in one block, with each run's length unless all runs are equally long. The blocks are always the whole
/// weight's, so that every shard dequantizes exactly the values one process does. No double quantization: the absmax
/// are fp32 (4 bytes per 64 weights, 0.5625 bytes per weight in all, where QLoRA's 8-bit absmax make 0.516).
/// </summary>
public sealed class Nf4Tensor : IDisposable
{
    /// <summary>Values per block of one absmax (QLoRA's 64).</summary>
    public const int BlockSize = CostModel.Plans.FineTuning.Nf4Block;

    /// <summary>The 16 levels, ascending: the normal-float quantiles QLoRA publishes (its appendix E), −1 and 1 at the ends
    /// and an exact 0 (the shim holds the same table as fp32).</summary>
    public static IReadOnlyList<double> Levels { get; } =
    [
        -1, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334,
        -0.09105003625154495, 0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
        0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1,
    ];

    private Nf4Tensor(Tensor packed, Tensor absmax, Tensor? runs, long[] shape)
    {
        Packed = packed;
        Absmax = absmax;
        Runs = runs;
        Shape = shape;
        foreach (var t in new[] { packed, absmax, runs })
            if (t is not null)
                DisposeScope.Untrack(t);
    }

    /// <summary>
    /// Quantizes the whole weight <paramref name="whole"/> and keeps the part <paramref name="shard"/> cuts of it (the
    /// whole weight when null): a function that cuts any tensor of the weight's shape as this process's shard is cut.
    /// </summary>
    public static Nf4Tensor Quantize(Tensor whole, Func<Tensor, Tensor>? shard = null)
    {
        IntPtr packed, absmax, runs;
        long[] shape;
        using (DisposeScope.Begin())
        {
            Native.EnsureLoaded();
            Native.Check(Native.pt_nf4_quantize(whole.Handle, BlockSize, out var c, out var b, out var a));
            Tensor codes = new(c), blocks = new(b), blockAbsmax = new(a);
            var codeShard = shard is null ? codes : shard(codes);
            var blockShard = shard is null ? blocks : shard(blocks);
            shape = codeShard.Shape;
            Native.Check(Native.pt_nf4_pack(codeShard.Handle, blockShard.Handle, blockAbsmax.Handle, out packed, out absmax, out runs));
        }
        return new Nf4Tensor(new Tensor(packed), new Tensor(absmax), runs == IntPtr.Zero ? null : new Tensor(runs), shape);
    }

    /// <summary>The codes, two per byte (uint8; the lower nibble holds the even position).</summary>
    public Tensor Packed { get; }

    /// <summary>The absmax of each run of values in one block (fp32).</summary>
    public Tensor Absmax { get; }

    /// <summary>The runs' lengths (int64), or null when every run holds the same number of values.</summary>
    public Tensor? Runs { get; }

    /// <summary>The shape of the values held (this process's shard).</summary>
    public long[] Shape { get; }

    /// <summary>Bytes of memory the codes, the absmax and the runs' lengths hold.</summary>
    public long StorageBytes => Packed.StorageBytes + Absmax.StorageBytes + (Runs?.StorageBytes ?? 0);

    /// <summary>The values, code → level × absmax computed in fp32 and converted to <paramref name="dtype"/>; with
    /// <paramref name="tensorOps"/> by libtorch's ops rather than the shim's loop over the codes (the same values).</summary>
    public Tensor Dequantize(DType dtype = DType.Float32, bool tensorOps = false) =>
        WithRuns(runs => (Native.pt_nf4_dequantize(Packed.Handle, Absmax.Handle, runs, Shape, Shape.Length, (int)dtype, tensorOps ? 1 : 0, out var h), h));

    /// <summary>
    /// y = x·Wᵀ with this [out, in] weight, dequantized to <paramref name="x"/>'s dtype for the product and again in
    /// the backward for x's gradient (the weight gets none): no dequantized copy outlives either.
    /// </summary>
    public Tensor Linear(Tensor x) =>
        WithRuns(runs => (Native.pt_nf4_linear(x.Handle, Packed.Handle, Absmax.Handle, runs, Shape, Shape.Length, out var h), h));

    /// <summary>A copy on <paramref name="device"/> (this one stays; the caller disposes it).</summary>
    public Nf4Tensor To(Device device) => new(Packed.To(device), Absmax.To(device), Runs?.To(device), Shape);

    // The optional runs cross the boundary as a raw pointer: kept referenced for the call.
    private Tensor WithRuns(Func<IntPtr, (int Status, IntPtr Handle)> call)
    {
        bool added = false;
        try
        {
            Runs?.Handle.DangerousAddRef(ref added);
            var (status, handle) = call(Runs?.Handle.DangerousGetHandle() ?? IntPtr.Zero);
            return Tensor.From(status, handle);
        }
        finally
        {
            if (added)
                Runs!.Handle.DangerousRelease();
        }
    }

    /// <summary>Frees the codes, the absmax and the runs' lengths.</summary>
    public void Dispose()
    {
        Packed.Dispose();
        Absmax.Dispose();
        Runs?.Dispose();
    }
}
