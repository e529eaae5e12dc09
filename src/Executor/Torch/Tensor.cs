namespace Planner.Executor.Torch;

/// <summary>Element types (codes shared with the shim).</summary>
public enum DType { Float32 = 0, Float64 = 1, BFloat16 = 2, Float16 = 3, Int64 = 4, Int32 = 5, Bool = 6, UInt8 = 7 }

/// <summary>Where a tensor lives.</summary>
public enum DeviceType { Cpu = 0, Cuda = 1 }

/// <summary>A device: the CPU, or CUDA device N.</summary>
public readonly record struct Device(DeviceType Type, int Index = 0)
{
    /// <summary>The CPU.</summary>
    public static Device Cpu => new(DeviceType.Cpu);

    /// <summary>CUDA device <paramref name="index"/>.</summary>
    public static Device Cuda(int index = 0) => new(DeviceType.Cuda, index);

    /// <summary>"cpu" or "cuda:N".</summary>
    public override string ToString() => Type == DeviceType.Cpu ? "cpu" : $"cuda:{Index}";
}

/// <summary>
/// A libtorch tensor owned by managed code. Disposing frees the native tensor (its storage is freed when no other
/// tensor views it); tensors created inside a <see cref="DisposeScope"/> are disposed with it.
/// </summary>
public sealed class Tensor : IDisposable
{
    internal readonly TensorHandle Handle;

    internal Tensor(IntPtr handle)
    {
        Handle = new TensorHandle(handle);
        DisposeScope.Track(this);
    }

    /// <summary>Wraps the handle a shim call returned, after checking its status.</summary>
    internal static Tensor From(int status, IntPtr handle)
    {
        Native.Check(status);
        return new Tensor(handle);
    }

    /// <summary>Frees the native tensor.</summary>
    public void Dispose() => Handle.Dispose();

    /// <summary>True once disposed.</summary>
    public bool IsDisposed => Handle.IsClosed;

    // ---- creation -------------------------------------------------------------------------------------------

    /// <summary>A tensor holding a copy of <paramref name="data"/>.</summary>
    public static unsafe Tensor From(float[] data, params long[] shape)
    {
        Native.EnsureLoaded();
        CheckCount(data.Length, shape);
        fixed (float* p = data)
            return From(Native.pt_tensor_from_data(p, (int)DType.Float32, shape, shape.Length, out var h), h);
    }

    /// <summary>A tensor holding a copy of <paramref name="data"/>.</summary>
    public static unsafe Tensor From(double[] data, params long[] shape)
    {
        Native.EnsureLoaded();
        CheckCount(data.Length, shape);
        fixed (double* p = data)
            return From(Native.pt_tensor_from_data(p, (int)DType.Float64, shape, shape.Length, out var h), h);
    }

    /// <summary>A tensor holding a copy of <paramref name="data"/>.</summary>
    public static unsafe Tensor From(long[] data, params long[] shape)
    {
        Native.EnsureLoaded();
        CheckCount(data.Length, shape);
        fixed (long* p = data)
            return From(Native.pt_tensor_from_data(p, (int)DType.Int64, shape, shape.Length, out var h), h);
    }

    private static void CheckCount(int length, long[] shape)
    {
        long n = 1;
        foreach (long d in shape)
            n *= d;
        if (n != length)
            throw new ArgumentException($"{length} values do not fill shape [{string.Join(", ", shape)}]");
    }

    /// <summary>Zeros, allocated on <paramref name="device"/> (default: the CPU).</summary>
    public static Tensor Zeros(long[] shape, DType dtype = DType.Float32, Device device = default)
    {
        Native.EnsureLoaded();
        return From(Native.pt_zeros(shape, shape.Length, (int)dtype, (int)device.Type, device.Index, out var h), h);
    }

    /// <summary>A constant.</summary>
    public static Tensor Full(long[] shape, double value, DType dtype = DType.Float32)
    {
        Native.EnsureLoaded();
        return From(Native.pt_full(shape, shape.Length, value, (int)dtype, out var h), h);
    }

    /// <summary>Normal(mean, std) from a generator seeded with <paramref name="seed"/> (same seed, same values).</summary>
    public static Tensor Normal(long[] shape, double mean, double std, ulong seed, DType dtype = DType.Float32)
    {
        Native.EnsureLoaded();
        return From(Native.pt_normal(shape, shape.Length, mean, std, seed, (int)dtype, out var h), h);
    }

    /// <summary>start, start + step, ... below end.</summary>
    public static Tensor Arange(double start, double end, double step = 1, DType dtype = DType.Float32)
    {
        Native.EnsureLoaded();
        return From(Native.pt_arange(start, end, step, (int)dtype, out var h), h);
    }

    // ---- properties -----------------------------------------------------------------------------------------

    /// <summary>The sizes of each dimension.</summary>
    public long[] Shape
    {
        get
        {
            Native.Check(Native.pt_ndim(Handle, out int n));
            var shape = new long[n];
            Native.Check(Native.pt_shape(Handle, shape, n));
            return shape;
        }
    }

    /// <summary>Number of elements.</summary>
    public long Numel
    {
        get
        {
            Native.Check(Native.pt_numel(Handle, out long n));
            return n;
        }
    }

    /// <summary>Element type.</summary>
    public DType DType
    {
        get
        {
            Native.Check(Native.pt_dtype(Handle, out int d));
            return (DType)d;
        }
    }

    /// <summary>Device.</summary>
    public Device Device
    {
        get
        {
            Native.Check(Native.pt_device(Handle, out int type, out int index));
            return new Device((DeviceType)type, index);
        }
    }

    // ---- moves, shapes and views ----------------------------------------------------------------------------

    /// <summary>Converted to another element type.</summary>
    public Tensor To(DType dtype) => From(Native.pt_to_dtype(Handle, (int)dtype, out var h), h);

    /// <summary>This tensor where it is already on <paramref name="device"/>, else its copy there.</summary>
    public Tensor On(Device device) => device == Device ? this : To(device);

    /// <summary>Moved to another device.</summary>
    public Tensor To(Device device) => From(Native.pt_to_device(Handle, (int)device.Type, device.Index, out var h), h);

    /// <summary>A view with another shape (no copy; the layout must allow it).</summary>
    public Tensor View(params long[] shape) => From(Native.pt_view(Handle, shape, shape.Length, out var h), h);

    /// <summary>Another shape (a view when possible, else a copy).</summary>
    public Tensor Reshape(params long[] shape) => From(Native.pt_reshape(Handle, shape, shape.Length, out var h), h);

    /// <summary>Dimensions <paramref name="d0"/> and <paramref name="d1"/> swapped (a view).</summary>
    public Tensor Transpose(long d0, long d1) => From(Native.pt_transpose(Handle, d0, d1, out var h), h);

    /// <summary>Elements start..start+length of a dimension (a view).</summary>
    public Tensor Narrow(long dim, long start, long length) => From(Native.pt_narrow(Handle, dim, start, length, out var h), h);

    /// <summary>A contiguous copy unless already contiguous.</summary>
    public Tensor Contiguous() => From(Native.pt_contiguous(Handle, out var h), h);

    /// <summary>A copy.</summary>
    public Tensor Clone() => From(Native.pt_clone(Handle, out var h), h);

    /// <summary>Split into <paramref name="chunks"/> pieces along a dimension (views).</summary>
    public Tensor[] Chunk(long chunks, long dim)
    {
        var outs = new IntPtr[chunks];
        Native.Check(Native.pt_chunk(Handle, chunks, dim, outs, (int)chunks, out int count));
        var result = new Tensor[count];
        for (int i = 0; i < count; i++)
            result[i] = new Tensor(outs[i]);
        return result;
    }

    /// <summary>Concatenation along a dimension.</summary>
    public static Tensor Cat(IReadOnlyList<Tensor> items, long dim)
    {
        var handles = new IntPtr[items.Count];
        bool[] added = new bool[items.Count];
        try
        {
            for (int i = 0; i < items.Count; i++)
            {
                items[i].Handle.DangerousAddRef(ref added[i]);
                handles[i] = items[i].Handle.DangerousGetHandle();
            }
            return From(Native.pt_cat(handles, handles.Length, dim, out var h), h);
        }
        finally
        {
            for (int i = 0; i < items.Count; i++)
                if (added[i])
                    items[i].Handle.DangerousRelease();
        }
    }

    // ---- copies to and from managed memory ------------------------------------------------------------------

    /// <summary>The elements as float32, row-major.</summary>
    public unsafe float[] ToFloatArray()
    {
        var data = new float[Numel];
        fixed (float* p = data)
            Native.Check(Native.pt_copy_to(Handle, (int)DType.Float32, p, data.Length));
        return data;
    }

    /// <summary>The elements as float64, row-major.</summary>
    public unsafe double[] ToDoubleArray()
    {
        var data = new double[Numel];
        fixed (double* p = data)
            Native.Check(Native.pt_copy_to(Handle, (int)DType.Float64, p, data.Length));
        return data;
    }

    /// <summary>The elements as int64, row-major.</summary>
    public unsafe long[] ToLongArray()
    {
        var data = new long[Numel];
        fixed (long* p = data)
            Native.Check(Native.pt_copy_to(Handle, (int)DType.Int64, p, data.Length));
        return data;
    }

    /// <summary>Overwrites the elements in place from managed memory (no autograd history).</summary>
    public unsafe void CopyFrom(float[] data)
    {
        fixed (float* p = data)
            Native.Check(Native.pt_copy_from(Handle, p, (int)DType.Float32, data.Length));
    }

    /// <summary>Overwrites the elements in place from another tensor (no autograd history).</summary>
    public void CopyFrom(Tensor other) => Native.Check(Native.pt_copy_(Handle, other.Handle));

    /// <summary>
    /// A tensor on the same storage outside autograd (Python's <c>.data</c>): writes through it do not count as
    /// in-place changes of this tensor, so graphs that saved this tensor stay valid when its values are restored.
    /// </summary>
    public Tensor Data() => From(Native.pt_data(Handle, out var h), h);

    /// <summary>Bytes of memory the tensor's storage holds now (0 after <see cref="FreeStorage"/>).</summary>
    public long StorageBytes
    {
        get
        {
            Native.Check(Native.pt_storage_nbytes(Handle, out long n));
            return n;
        }
    }

    /// <summary>
    /// Frees the memory of the tensor's storage; the tensor (and every tensor on the same storage, autograd's saved
    /// ones included) keeps its shape and identity but must not be read until <see cref="AllocateStorage"/>.
    /// </summary>
    public void FreeStorage() => Native.Check(Native.pt_storage_free(Handle));

    /// <summary>
    /// Gives a tensor whose storage was freed memory again (uninitialised: fill it through <see cref="Data"/>); a
    /// no-op while the storage holds the tensor's bytes.
    /// </summary>
    public void AllocateStorage() => Native.Check(Native.pt_storage_allocate(Handle));

    /// <summary>The value of a one-element tensor.</summary>
    public double Item()
    {
        Native.Check(Native.pt_item(Handle, out double v));
        return v;
    }

    // ---- arithmetic -----------------------------------------------------------------------------------------

    private Tensor Binary(Tensor b, int op) => From(Native.pt_binary(Handle, b.Handle, op, out var h), h);
    private Tensor Scalar(double s, int op) => From(Native.pt_binary_scalar(Handle, s, op, out var h), h);
    private Tensor Unary(int op) => From(Native.pt_unary(Handle, op, out var h), h);

    /// <summary>Elementwise sum (broadcasting).</summary>
    public static Tensor operator +(Tensor a, Tensor b) => a.Binary(b, 0);
    /// <summary>Elementwise difference.</summary>
    public static Tensor operator -(Tensor a, Tensor b) => a.Binary(b, 1);
    /// <summary>Elementwise product.</summary>
    public static Tensor operator *(Tensor a, Tensor b) => a.Binary(b, 2);
    /// <summary>Elementwise quotient.</summary>
    public static Tensor operator /(Tensor a, Tensor b) => a.Binary(b, 3);
    /// <summary>Adds a scalar.</summary>
    public static Tensor operator +(Tensor a, double s) => a.Scalar(s, 0);
    /// <summary>Subtracts a scalar.</summary>
    public static Tensor operator -(Tensor a, double s) => a.Scalar(s, 1);
    /// <summary>Scales.</summary>
    public static Tensor operator *(Tensor a, double s) => a.Scalar(s, 2);
    /// <summary>Scales.</summary>
    public static Tensor operator *(double s, Tensor a) => a.Scalar(s, 2);
    /// <summary>Divides by a scalar.</summary>
    public static Tensor operator /(Tensor a, double s) => a.Scalar(s, 3);
    /// <summary>s − a.</summary>
    public static Tensor operator -(double s, Tensor a) => a.Scalar(s, 5);
    /// <summary>Negation.</summary>
    public static Tensor operator -(Tensor a) => a.Unary(0);

    /// <summary>Elementwise maximum.</summary>
    public Tensor Maximum(Tensor b) => Binary(b, 4);
    /// <summary>Elementwise power.</summary>
    public Tensor Pow(double exponent) => Scalar(exponent, 4);
    /// <summary>eˣ.</summary>
    public Tensor Exp() => Unary(1);
    /// <summary>ln x.</summary>
    public Tensor Log() => Unary(2);
    /// <summary>√x.</summary>
    public Tensor Sqrt() => Unary(3);
    /// <summary>tanh.</summary>
    public Tensor Tanh() => Unary(4);
    /// <summary>max(x, 0).</summary>
    public Tensor Relu() => Unary(5);
    /// <summary>1/√x.</summary>
    public Tensor Rsqrt() => Unary(6);
    /// <summary>x².</summary>
    public Tensor Square() => Unary(7);
    /// <summary>|x|.</summary>
    public Tensor Abs() => Unary(8);
    /// <summary>σ(x).</summary>
    public Tensor Sigmoid() => Unary(9);

    private Tensor Reduce(int kind, long[] dims, bool keepDim) =>
        From(Native.pt_reduce(Handle, kind, dims, dims.Length, keepDim ? 1 : 0, out var h), h);

    /// <summary>Sum over all elements.</summary>
    public Tensor Sum() => Reduce(0, [], false);
    /// <summary>Sum over dimensions.</summary>
    public Tensor Sum(long[] dims, bool keepDim = false) => Reduce(0, dims, keepDim);
    /// <summary>Mean over all elements.</summary>
    public Tensor Mean() => Reduce(1, [], false);
    /// <summary>Mean over dimensions.</summary>
    public Tensor Mean(long[] dims, bool keepDim = false) => Reduce(1, dims, keepDim);
    /// <summary>Maximum over all elements.</summary>
    public Tensor Max() => Reduce(2, [], false);
    /// <summary>Maximum over one dimension (values).</summary>
    public Tensor Max(long dim, bool keepDim = false) => Reduce(2, [dim], keepDim);

    /// <summary>Elements picked along <paramref name="dim"/> by int64 <paramref name="index"/> (torch.gather).</summary>
    public Tensor Gather(long dim, Tensor index) => From(Native.pt_gather(Handle, dim, index.Handle, out var h), h);

    /// <summary>Matrix product (batched, broadcasting).</summary>
    public Tensor MatMul(Tensor b) => From(Native.pt_matmul(Handle, b.Handle, out var h), h);

    /// <summary>Softmax along a dimension.</summary>
    public Tensor Softmax(long dim) => From(Native.pt_softmax(Handle, dim, 0, out var h), h);

    /// <summary>Log-softmax along a dimension.</summary>
    public Tensor LogSoftmax(long dim) => From(Native.pt_softmax(Handle, dim, 1, out var h), h);

    /// <summary>GeLU, exact (erf) or with the tanh approximation.</summary>
    public Tensor Gelu(bool tanhApproximation = false) => From(Native.pt_gelu(Handle, tanhApproximation ? 1 : 0, out var h), h);

    /// <summary>SiLU (x·σ(x)).</summary>
    public Tensor Silu() => From(Native.pt_silu(Handle, out var h), h);

    // ---- autograd -------------------------------------------------------------------------------------------

    /// <summary>Whether operations on this tensor are recorded for gradients.</summary>
    public bool RequiresGrad
    {
        get
        {
            Native.Check(Native.pt_requires_grad(Handle, out int v));
            return v != 0;
        }
        set => Native.Check(Native.pt_set_requires_grad(Handle, value ? 1 : 0));
    }

    /// <summary>Back-propagates from this tensor; <paramref name="grad"/> is d(loss)/d(this) (null for a scalar loss).</summary>
    public void Backward(Tensor? grad = null, bool retainGraph = false)
    {
        bool added = false;
        try
        {
            grad?.Handle.DangerousAddRef(ref added);
            Native.Check(Native.pt_backward(Handle, grad?.Handle.DangerousGetHandle() ?? IntPtr.Zero, retainGraph ? 1 : 0));
        }
        finally
        {
            if (added)
                grad!.Handle.DangerousRelease();
        }
    }

    /// <summary>The accumulated gradient, or null.</summary>
    public Tensor? Grad
    {
        get
        {
            Native.Check(Native.pt_grad(Handle, out var h));
            return h == IntPtr.Zero ? null : new Tensor(h);
        }
    }

    /// <summary>Replaces the accumulated gradient (null clears it).</summary>
    public void SetGrad(Tensor? grad)
    {
        bool added = false;
        try
        {
            grad?.Handle.DangerousAddRef(ref added);
            Native.Check(Native.pt_set_grad(Handle, grad?.Handle.DangerousGetHandle() ?? IntPtr.Zero));
        }
        finally
        {
            if (added)
                grad!.Handle.DangerousRelease();
        }
    }

    /// <summary>Zeroes the accumulated gradient in place.</summary>
    public void ZeroGrad() => Native.Check(Native.pt_zero_grad(Handle));

    /// <summary>The same values without autograd history.</summary>
    public Tensor Detach() => From(Native.pt_detach(Handle, out var h), h);

    /// <summary>Shape and type, for debugging.</summary>
    public override string ToString() => IsDisposed ? "Tensor(disposed)" : $"Tensor([{string.Join(", ", Shape)}], {DType}, {Device})";
}
