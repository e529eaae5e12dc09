using System.Runtime.InteropServices;

namespace Planner.Executor.Torch;

/// <summary>An error reported by libtorch or the shim, with the native message.</summary>
public sealed class TorchException(string message) : Exception(message);

/// <summary>Base of the shim's opaque handles: freed exactly once by the matching free function.</summary>
public abstract class NativeHandle : SafeHandle
{
    // Static: one count of the native handles alive in the process (the leak tests read it), changed only through
    // Interlocked by every handle's constructor and release.
    private static long _live;

    /// <summary>Handles of every kind alive in this process (for leak tests).</summary>
    public static long Live => Interlocked.Read(ref _live);

    /// <summary>Wraps a handle the shim returned (zero is invalid).</summary>
    protected NativeHandle(IntPtr handle) : base(IntPtr.Zero, ownsHandle: true)
    {
        SetHandle(handle);
        if (handle != IntPtr.Zero)
            Interlocked.Increment(ref _live);
    }

    /// <inheritdoc />
    public override bool IsInvalid => handle == IntPtr.Zero;

    /// <inheritdoc />
    protected sealed override bool ReleaseHandle()
    {
        Interlocked.Decrement(ref _live);
        return Free(handle) == 0;
    }

    /// <summary>Calls the shim's free function.</summary>
    protected abstract int Free(IntPtr h);
}

/// <summary>A libtorch tensor.</summary>
public sealed class TensorHandle : NativeHandle
{
    /// <summary>Needed by the marshaller.</summary>
    public TensorHandle() : base(IntPtr.Zero) { }

    internal TensorHandle(IntPtr h) : base(h) { }

    /// <inheritdoc />
    protected override int Free(IntPtr h) => Native.pt_tensor_free(h);
}

/// <summary>An AdamW optimizer.</summary>
public sealed class OptimizerHandle : NativeHandle
{
    /// <summary>Needed by the marshaller.</summary>
    public OptimizerHandle() : base(IntPtr.Zero) { }

    internal OptimizerHandle(IntPtr h) : base(h) { }

    /// <inheritdoc />
    protected override int Free(IntPtr h) => Native.pt_optim_free(h);
}

/// <summary>A c10d store.</summary>
public sealed class StoreHandle : NativeHandle
{
    /// <summary>Needed by the marshaller.</summary>
    public StoreHandle() : base(IntPtr.Zero) { }

    internal StoreHandle(IntPtr h) : base(h) { }

    /// <inheritdoc />
    protected override int Free(IntPtr h) => Native.pt_store_free(h);
}

/// <summary>A c10d process group.</summary>
public sealed class ProcessGroupHandle : NativeHandle
{
    /// <summary>Needed by the marshaller.</summary>
    public ProcessGroupHandle() : base(IntPtr.Zero) { }

    internal ProcessGroupHandle(IntPtr h) : base(h) { }

    /// <inheritdoc />
    protected override int Free(IntPtr h) => Native.pt_pg_free(h);
}

/// <summary>An asynchronous c10d operation.</summary>
public sealed class WorkHandle : NativeHandle
{
    /// <summary>Needed by the marshaller.</summary>
    public WorkHandle() : base(IntPtr.Zero) { }

    internal WorkHandle(IntPtr h) : base(h) { }

    /// <inheritdoc />
    protected override int Free(IntPtr h) => Native.pt_work_free(h);
}
