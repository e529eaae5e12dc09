using System.Runtime.InteropServices;

namespace Planner.Executor.Torch;

/// <summary>Process-wide settings and measurements of the libtorch runtime.</summary>
public static class TorchRuntime
{
    /// <summary>The libtorch version the shim was built against.</summary>
    public static string Version
    {
        get
        {
            Native.EnsureLoaded();
            return Marshal.PtrToStringUTF8(Native.pt_torch_version()) ?? "?";
        }
    }

    /// <summary>Seeds libtorch's default generators (dropout, and anything not given its own seed).</summary>
    public static void Seed(ulong seed)
    {
        Native.EnsureLoaded();
        Native.Check(Native.pt_manual_seed(seed));
    }

    /// <summary>Intra-op threads.</summary>
    public static int Threads
    {
        get
        {
            Native.EnsureLoaded();
            return Native.pt_get_num_threads();
        }
        set
        {
            Native.EnsureLoaded();
            Native.Check(Native.pt_set_num_threads(value));
        }
    }

    /// <summary>Tensors alive in the shim (created and not freed), for leak tests.</summary>
    public static long LiveTensors
    {
        get
        {
            Native.EnsureLoaded();
            return Native.pt_live_tensors();
        }
    }

    /// <summary>A monotonic clock, nanoseconds.</summary>
    public static long NowNanoseconds()
    {
        Native.EnsureLoaded();
        return Native.pt_now_ns();
    }

    /// <summary>CUDA devices visible (0 in a CPU build).</summary>
    public static int CudaDevices
    {
        get
        {
            Native.EnsureLoaded();
            return Native.pt_cuda_device_count();
        }
    }

    /// <summary>The name of CUDA device <paramref name="index"/> (as nvidia-smi gives it).</summary>
    /// <exception cref="TorchException">A CPU build of the shim, or no such device.</exception>
    public static string CudaDeviceName(int index) => NativeString(index, Native.pt_cuda_device_name);

    /// <summary>The UUID of CUDA device <paramref name="index"/> (GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, as
    /// nvidia-smi -L gives it; a MIG slice has its own).</summary>
    /// <exception cref="TorchException">A CPU build of the shim, or no such device.</exception>
    public static string CudaDeviceUuid(int index) => NativeString(index, Native.pt_cuda_device_uuid);

    private static string NativeString(int index, Func<int, byte[], int, int> call)
    {
        Native.EnsureLoaded();
        var buffer = new byte[256];
        Native.Check(call(index, buffer, buffer.Length));
        int end = Array.IndexOf(buffer, (byte)0);
        return System.Text.Encoding.UTF8.GetString(buffer, 0, end < 0 ? buffer.Length : end);
    }

    /// <summary>Makes a CUDA device the process's current one (NCCL's communicators and stream go there); nothing on
    /// the CPU.</summary>
    public static void SetDevice(Device device)
    {
        if (device.Type != DeviceType.Cuda)
            return;
        Native.EnsureLoaded();
        Native.Check(Native.pt_cuda_set_device(device.Index));
    }

    /// <summary>Waits for the work queued on <paramref name="device"/> (nothing to wait for on the CPU).</summary>
    public static void Synchronize(Device device)
    {
        Native.EnsureLoaded();
        Native.Check(Native.pt_synchronize((int)device.Type, device.Index));
    }

    /// <summary>
    /// Current and peak memory, bytes: on the CPU the process's resident set (current from /proc/self/statm, peak
    /// from getrusage), on CUDA the caching allocator's allocated bytes.
    /// </summary>
    public static (long Current, long Peak) Memory(Device device)
    {
        Native.EnsureLoaded();
        Native.Check(Native.pt_memory((int)device.Type, device.Index, out long current, out long peak));
        return (current, peak);
    }

    /// <summary>Resets the peak statistic (CUDA; the CPU's peak resident set cannot be reset).</summary>
    public static void ResetPeakMemory(Device device)
    {
        Native.EnsureLoaded();
        Native.Check(Native.pt_reset_peak_memory((int)device.Type, device.Index));
    }

    /// <summary>Records no autograd history until disposed (on this thread).</summary>
    public static IDisposable NoGrad()
    {
        Native.EnsureLoaded();
        Native.Check(Native.pt_no_grad_enter(out var guard));
        return new NoGradScope(guard);
    }

    private sealed class NoGradScope(IntPtr guard) : IDisposable
    {
        private IntPtr _guard = guard;

        public void Dispose()
        {
            if (_guard == IntPtr.Zero)
                return;
            Native.Check(Native.pt_no_grad_exit(_guard));
            _guard = IntPtr.Zero;
        }
    }
}

/// <summary>An optimizer over a parameter list: libtorch's AdamW or SGD with momentum, or Lion (the shim's).</summary>
public sealed partial class Optimizer : Optim.IOptimizer
{
    private readonly OptimizerHandle _handle;
    private readonly int _kind;
    private readonly DType[] _dtypes; // each parameter's: its state tensors' type

    private Optimizer(int kind, IReadOnlyList<Tensor> parameters, double lr, double beta1, double beta2, double eps, double weightDecay)
    {
        _kind = kind;
        _dtypes = parameters.Select(p => p.DType).ToArray();
        Native.EnsureLoaded();
        var added = new bool[parameters.Count];
        var handles = new IntPtr[parameters.Count];
        IntPtr h;
        try
        {
            for (int i = 0; i < parameters.Count; i++)
            {
                parameters[i].Handle.DangerousAddRef(ref added[i]);
                handles[i] = parameters[i].Handle.DangerousGetHandle();
            }
            Native.Check(Native.pt_optim_new(kind, handles, handles.Length, lr, beta1, beta2, eps, weightDecay, out h));
        }
        finally
        {
            for (int i = 0; i < parameters.Count; i++)
                if (added[i])
                    parameters[i].Handle.DangerousRelease();
        }
        _handle = new OptimizerHandle(h);
    }

    /// <summary>AdamW (libtorch's); the parameters must stay alive while it is used.</summary>
    public static Optimizer AdamW(IReadOnlyList<Tensor> parameters, double lr, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 0.01) =>
        new(0, parameters, lr, beta1, beta2, eps, weightDecay);

    /// <summary>SGD with momentum (libtorch's: the buffer is momentum · buffer + gradient, the step lr · buffer).</summary>
    public static Optimizer Sgd(IReadOnlyList<Tensor> parameters, double lr, double momentum = 0.9, double weightDecay = 0) =>
        new(1, parameters, lr, momentum, 0, 0, weightDecay);

    /// <summary>Lion (Chen et al. 2023): the step lr · sign(β1 · m + (1 − β1) · g), then m ← β2 · m + (1 − β2) · g;
    /// decoupled weight decay.</summary>
    public static Optimizer Lion(IReadOnlyList<Tensor> parameters, double lr, double beta1 = 0.9, double beta2 = 0.99, double weightDecay = 0) =>
        new(2, parameters, lr, beta1, beta2, 0, weightDecay);

    /// <summary>One update from the parameters' gradients.</summary>
    public void Step() => Native.Check(Native.pt_optim_step(_handle));

    /// <summary>Clears the parameters' gradients.</summary>
    public void ZeroGrad() => Native.Check(Native.pt_optim_zero_grad(_handle));

    /// <summary>Sets the learning rate.</summary>
    public void SetLearningRate(double lr) => Native.Check(Native.pt_optim_set_lr(_handle, lr));

    /// <summary>Bytes of the optimizer's state tensors now (made at the first step).</summary>
    public long StateBytes
    {
        get
        {
            Native.Check(Native.pt_optim_state_bytes(_handle, out long bytes));
            return bytes;
        }
    }

    /// <summary>Frees the optimizer and its state.</summary>
    public void Dispose() => _handle.Dispose();
}
