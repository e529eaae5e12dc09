using System.Reflection;
using System.Runtime.InteropServices;

namespace Planner.Executor.Torch;

/// <summary>
/// The C ABI of <c>libplanner_torch.so</c> (src/Executor/native). Every call returns a status; a failure's message
/// is fetched from the shim's thread-local error and thrown as a <see cref="TorchException"/>.
/// </summary>
internal static partial class Native
{
    internal const string Library = "planner_torch";

    /// <summary>The ABI revision this managed code was written against (PT_ABI_VERSION in common.h).</summary>
    internal const int AbiVersion = 16;

    /// <summary>Environment variable naming the library file, overriding the search next to the assemblies.</summary>
    internal const string PathVariable = "PLANNER_TORCH_LIB";

    private static readonly Lazy<bool> Loaded = new(CheckAbi);

    static Native()
    {
        NativeLibrary.SetDllImportResolver(typeof(Native).Assembly, Resolve);
    }

    private static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? path)
    {
        if (name != Library)
            return IntPtr.Zero;
        var candidates = new List<string>();
        if (Environment.GetEnvironmentVariable(PathVariable) is { Length: > 0 } explicitPath)
            candidates.Add(explicitPath);
        candidates.Add(Path.Combine(AppContext.BaseDirectory, "libplanner_torch.so"));
        foreach (var c in candidates)
            if (File.Exists(c) && NativeLibrary.TryLoad(c, out var handle))
                return handle;
        return IntPtr.Zero;
    }

    private static bool CheckAbi()
    {
        int version;
        try
        {
            version = pt_abi_version();
        }
        catch (DllNotFoundException e)
        {
            throw new TorchException(
                "the libtorch shim libplanner_torch.so was not found next to the assemblies (or at $PLANNER_TORCH_LIB); " +
                "build it with ./test, or: cmake -S src/Executor/native -B src/Executor/native/build && cmake --build src/Executor/native/build (" + e.Message + ")");
        }
        if (version != AbiVersion)
            throw new TorchException($"libplanner_torch.so has ABI revision {version}, this planner needs {AbiVersion}: rebuild the shim (./test does)");
        return true;
    }

    /// <summary>Loads the library and checks its ABI revision once; throws a clear error when missing or stale.</summary>
    internal static void EnsureLoaded() => _ = Loaded.Value;

    /// <summary>Throws the shim's last error when a call failed.</summary>
    internal static void Check(int status)
    {
        if (status == 0)
            return;
        string message = "unknown error";
        if (pt_last_error(out IntPtr text) == 0 && text != IntPtr.Zero)
        {
            message = Marshal.PtrToStringUTF8(text) ?? message;
            pt_free(text);
        }
        throw new TorchException(message);
    }

    [LibraryImport(Library)] internal static partial int pt_abi_version();
    [LibraryImport(Library)] internal static partial int pt_last_error(out IntPtr text);
    [LibraryImport(Library)] internal static partial void pt_free(IntPtr p);
    [LibraryImport(Library)] internal static partial long pt_live_tensors();
    [LibraryImport(Library)] internal static partial IntPtr pt_torch_version();

    // tensor.cpp
    [LibraryImport(Library)] internal static partial int pt_tensor_free(IntPtr h);
    [LibraryImport(Library)] internal static unsafe partial int pt_tensor_from_data(void* data, int dtype, long[] shape, int ndim, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_zeros(long[] shape, int ndim, int dtype, int type, int index, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_full(long[] shape, int ndim, double value, int dtype, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_normal(long[] shape, int ndim, double mean, double std, ulong seed, int dtype, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_arange(double start, double end, double step, int dtype, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_to_dtype(TensorHandle a, int dtype, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_to_device(TensorHandle a, int type, int index, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_dtype(TensorHandle a, out int dtype);
    [LibraryImport(Library)] internal static partial int pt_device(TensorHandle a, out int type, out int index);
    [LibraryImport(Library)] internal static partial int pt_ndim(TensorHandle a, out int ndim);
    [LibraryImport(Library)] internal static partial int pt_shape(TensorHandle a, [Out] long[] shape, int capacity);
    [LibraryImport(Library)] internal static partial int pt_numel(TensorHandle a, out long numel);
    [LibraryImport(Library)] internal static partial int pt_view(TensorHandle a, long[] shape, int ndim, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_reshape(TensorHandle a, long[] shape, int ndim, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_transpose(TensorHandle a, long d0, long d1, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_narrow(TensorHandle a, long dim, long start, long length, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_contiguous(TensorHandle a, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_clone(TensorHandle a, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_chunk(TensorHandle a, long chunks, long dim, [Out] IntPtr[] outs, int capacity, out int count);
    [LibraryImport(Library)] internal static partial int pt_cat(IntPtr[] items, int n, long dim, out IntPtr result);
    [LibraryImport(Library)] internal static unsafe partial int pt_copy_to(TensorHandle a, int dtype, void* dst, long capacity);
    [LibraryImport(Library)] internal static unsafe partial int pt_copy_from(TensorHandle a, void* src, int dtype, long elements);
    [LibraryImport(Library)] internal static partial int pt_item(TensorHandle a, out double value);
    [LibraryImport(Library)] internal static partial int pt_copy_(TensorHandle a, TensorHandle b);
    [LibraryImport(Library)] internal static partial int pt_data(TensorHandle a, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_storage_nbytes(TensorHandle a, out long bytes);
    [LibraryImport(Library)] internal static partial int pt_storage_free(TensorHandle a);
    [LibraryImport(Library)] internal static partial int pt_storage_allocate(TensorHandle a);

    // indexing.cpp
    [LibraryImport(Library)] internal static partial int pt_piece_index(TensorHandle like, long start, long length, long localCols, long rowOffset, long colOffset, long cols, int kind, long divisor, long shift, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_index_add_(TensorHandle target, TensorHandle index, TensorHandle src);
    [LibraryImport(Library)] internal static partial int pt_scatter_amax_(TensorHandle target, TensorHandle index, TensorHandle src);
    [LibraryImport(Library)] internal static partial int pt_bucketize(TensorHandle values, TensorHandle boundaries, out IntPtr result);

    // sampling.cpp
    [LibraryImport(Library)] internal static partial int pt_gumbel_argmax(TensorHandle logits, long[] keys, long n, ulong seed, long vocabStart, out IntPtr values, out IntPtr ids);

    // ops.cpp
    [LibraryImport(Library)] internal static partial int pt_binary(TensorHandle a, TensorHandle b, int op, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_binary_scalar(TensorHandle a, double s, int op, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_unary(TensorHandle a, int op, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_reduce(TensorHandle a, int kind, long[] dims, int ndims, int keepdim, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_matmul(TensorHandle a, TensorHandle b, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_gather(TensorHandle x, long dim, TensorHandle index, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_linear(TensorHandle x, TensorHandle w, IntPtr b, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_embedding(TensorHandle weight, TensorHandle indices, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_layer_norm(TensorHandle x, IntPtr w, IntPtr b, double eps, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_rms_norm(TensorHandle x, IntPtr w, double eps, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_gelu(TensorHandle x, int approximate, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_silu(TensorHandle x, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_softmax(TensorHandle x, long dim, int log, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_causal_attention(TensorHandle q, TensorHandle k, TensorHandle v, double dropout, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_dropout(TensorHandle x, double p, int train, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_cross_entropy(TensorHandle logits, TensorHandle targets, long ignoreIndex, out IntPtr result);

    // moe.cpp
    [LibraryImport(Library)] internal static partial int pt_aux_loss_attach(TensorHandle output, TensorHandle aux, double scale, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_expert_alltoall(ProcessGroupHandle g, TensorHandle x, long[] send, long[] recv, int n, out IntPtr result);
    [LibraryImport(Library)] internal static partial long pt_ep_comm_ns_take();

    // autograd.cpp
    [LibraryImport(Library)] internal static partial int pt_set_requires_grad(TensorHandle a, int value);
    [LibraryImport(Library)] internal static partial int pt_requires_grad(TensorHandle a, out int value);
    [LibraryImport(Library)] internal static partial int pt_backward(TensorHandle a, IntPtr grad, int retainGraph);
    [LibraryImport(Library)] internal static partial int pt_grad(TensorHandle a, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_set_grad(TensorHandle a, IntPtr grad);
    [LibraryImport(Library)] internal static partial int pt_zero_grad(TensorHandle a);
    [LibraryImport(Library)] internal static partial int pt_detach(TensorHandle a, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_no_grad_enter(out IntPtr guard);
    [LibraryImport(Library)] internal static partial int pt_no_grad_exit(IntPtr guard);

    // optim.cpp
    [LibraryImport(Library)] internal static partial int pt_optim_new(int kind, IntPtr[] parameters, int n, double lr, double beta1, double beta2, double eps, double weightDecay, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_optim_step(OptimizerHandle o);
    [LibraryImport(Library)] internal static partial int pt_optim_zero_grad(OptimizerHandle o);
    [LibraryImport(Library)] internal static partial int pt_optim_set_lr(OptimizerHandle o, double lr);
    [LibraryImport(Library)] internal static partial int pt_optim_state_bytes(OptimizerHandle o, out long bytes);
    [LibraryImport(Library)] internal static partial int pt_optim_state(OptimizerHandle o, int i, out long step, [Out] IntPtr[] tensors, ref int n);
    [LibraryImport(Library)] internal static partial int pt_optim_set_state(OptimizerHandle o, int i, long step, IntPtr[] tensors, int n);
    [LibraryImport(Library)] internal static partial int pt_optim_free(IntPtr o);

    // c10d.cpp
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int pt_tcpstore_new(string host, int port, int worldSize, int isServer, long timeoutMs, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_store_free(IntPtr s);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int pt_store_set(StoreHandle s, string key, byte[] value, long length);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int pt_store_get(StoreHandle s, string key, out IntPtr value, out long length);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int pt_pg_gloo(StoreHandle s, string prefix, int rank, int size, long timeoutMs, string? interfaceHost, out IntPtr result);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int pt_pg_nccl(StoreHandle s, string prefix, int rank, int size, long timeoutMs, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_pg_free(IntPtr g);
    [LibraryImport(Library)] internal static partial int pt_allreduce(ProcessGroupHandle g, TensorHandle t, int op);
    [LibraryImport(Library)] internal static partial int pt_allreduce_async(ProcessGroupHandle g, TensorHandle t, int op, out IntPtr work);
    [LibraryImport(Library)] internal static partial int pt_allgather(ProcessGroupHandle g, TensorHandle t, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_reduce_scatter(ProcessGroupHandle g, TensorHandle t, int op, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_alltoall(ProcessGroupHandle g, TensorHandle t, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_broadcast(ProcessGroupHandle g, TensorHandle t, int root);
    [LibraryImport(Library)] internal static partial int pt_barrier(ProcessGroupHandle g);
    [LibraryImport(Library)] internal static partial int pt_send(ProcessGroupHandle g, TensorHandle t, int dst, int tag);
    [LibraryImport(Library)] internal static partial int pt_recv(ProcessGroupHandle g, TensorHandle t, int src, int tag);
    [LibraryImport(Library)] internal static partial int pt_send_async(ProcessGroupHandle g, TensorHandle t, int dst, int tag, out IntPtr work);
    [LibraryImport(Library)] internal static partial int pt_recv_async(ProcessGroupHandle g, TensorHandle t, int src, int tag, out IntPtr work);
    [LibraryImport(Library)] internal static partial int pt_work_wait(WorkHandle w, long timeoutMs);
    [LibraryImport(Library)] internal static partial int pt_work_free(IntPtr w);

    // parallel.cpp
    [LibraryImport(Library)] internal static partial int pt_tp_op(ProcessGroupHandle g, TensorHandle x, int kind, long dim, out IntPtr result);
    [LibraryImport(Library)] internal static partial long pt_tp_comm_ns_take();
    [LibraryImport(Library)] internal static partial int pt_causal_attention_recompute(TensorHandle q, TensorHandle k, TensorHandle v, out IntPtr result);

    // ring_attention.cpp
    [LibraryImport(Library)] internal static partial int pt_ring_attention(ProcessGroupHandle g, TensorHandle q, TensorHandle k, TensorHandle v, out IntPtr result);
    [LibraryImport(Library)] internal static partial long pt_cp_comm_ns_take();

    // quant.cpp
    [LibraryImport(Library)] internal static partial int pt_nf4_quantize(TensorHandle w, long block, out IntPtr codes, out IntPtr blocks, out IntPtr absmax);
    [LibraryImport(Library)] internal static partial int pt_nf4_pack(TensorHandle codes, TensorHandle blocks, TensorHandle absmax, out IntPtr packed, out IntPtr runAbsmax, out IntPtr runs);
    [LibraryImport(Library)] internal static partial int pt_nf4_dequantize(TensorHandle packed, TensorHandle absmax, IntPtr runs, long[] shape, int ndim, int dtype, int ops, out IntPtr result);
    [LibraryImport(Library)] internal static partial int pt_nf4_linear(TensorHandle x, TensorHandle packed, TensorHandle absmax, IntPtr runs, long[] shape, int ndim, out IntPtr result);

    // device.cpp
    [LibraryImport(Library)] internal static partial int pt_manual_seed(ulong seed);
    [LibraryImport(Library)] internal static partial int pt_set_num_threads(int n);
    [LibraryImport(Library)] internal static partial int pt_get_num_threads();
    [LibraryImport(Library)] internal static partial long pt_now_ns();
    [LibraryImport(Library)] internal static partial int pt_cuda_device_count();
    [LibraryImport(Library)] internal static partial int pt_synchronize(int type, int index);
    [LibraryImport(Library)] internal static partial int pt_cuda_set_device(int index);
    [LibraryImport(Library)] internal static partial int pt_cuda_device_name(int index, byte[] buffer, int length);
    [LibraryImport(Library)] internal static partial int pt_cuda_device_uuid(int index, byte[] buffer, int length);
    [LibraryImport(Library)] internal static partial int pt_memory(int type, int index, out long current, out long peak);
    [LibraryImport(Library)] internal static partial int pt_reset_peak_memory(int type, int index);
}
