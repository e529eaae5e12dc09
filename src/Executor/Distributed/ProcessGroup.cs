using System.Runtime.InteropServices;
using Planner.Executor.Torch;

namespace Planner.Executor.Distributed;

/// <summary>Reductions of the collectives.</summary>
public enum ReduceOp { Sum = 0, Avg = 1, Max = 2, Min = 3, Product = 4 }

/// <summary>
/// The rendezvous: a TCPStore served by rank 0 (host:port) that every rank connects to. Process groups (the world
/// and its sub-groups) are built on it.
/// </summary>
public sealed class Store : IDisposable
{
    internal readonly StoreHandle Handle;

    private Store(StoreHandle handle) => Handle = handle;

    /// <summary>A rendezvous address on this machine's loopback: every rank is local, and Gloo binds to loopback too
    /// (elsewhere it binds to the host name's address or GLOO_SOCKET_IFNAME's interface).</summary>
    public static bool IsLoopback(string host) => host is "127.0.0.1" or "localhost" or "::1";

    /// <summary>Connects (or, with <paramref name="isServer"/>, serves) a TCPStore.</summary>
    public static Store Tcp(string host, int port, int worldSize, bool isServer, TimeSpan timeout)
    {
        Native.EnsureLoaded();
        Native.Check(Native.pt_tcpstore_new(host, port, worldSize, isServer ? 1 : 0, (long)timeout.TotalMilliseconds, out var h));
        return new Store(new StoreHandle(h));
    }

    /// <summary>Sets a key.</summary>
    public void Set(string key, byte[] value) => Native.Check(Native.pt_store_set(Handle, key, value, value.Length));

    /// <summary>Gets a key, waiting for it up to the store's timeout.</summary>
    public byte[] Get(string key)
    {
        Native.Check(Native.pt_store_get(Handle, key, out var p, out long n));
        try
        {
            var bytes = new byte[n];
            Marshal.Copy(p, bytes, 0, (int)n);
            return bytes;
        }
        finally
        {
            Native.pt_free(p);
        }
    }

    /// <summary>
    /// Every rank's text, by rank: publishes <paramref name="value"/> under <paramref name="prefix"/> and this rank's
    /// number, then reads every other rank's (each read waits until that rank has published). Every rank of the world
    /// must call it with the same prefix.
    /// </summary>
    public IReadOnlyList<string> AllGather(string prefix, int rank, int world, string value)
    {
        Set(prefix + rank, System.Text.Encoding.UTF8.GetBytes(value));
        return Enumerable.Range(0, world).Select(r => r == rank ? value : System.Text.Encoding.UTF8.GetString(Get(prefix + r))).ToList();
    }

    /// <summary>Disconnects.</summary>
    public void Dispose() => Handle.Dispose();
}

/// <summary>An asynchronous collective or transfer; <see cref="Wait()"/> completes it or throws on error or timeout.</summary>
public sealed class Work : IDisposable
{
    private readonly WorkHandle _handle;
    private readonly TimeSpan _timeout;

    internal Work(IntPtr handle, TimeSpan timeout)
    {
        _handle = new WorkHandle(handle);
        _timeout = timeout;
    }

    /// <summary>Waits for completion at most the timeout of the group that started it.</summary>
    public void Wait() => Wait(_timeout);

    /// <summary>Waits for completion.</summary>
    public void Wait(TimeSpan timeout) => Native.Check(Native.pt_work_wait(_handle, (long)timeout.TotalMilliseconds));

    /// <summary>Frees the handle.</summary>
    public void Dispose() => _handle.Dispose();
}

/// <summary>
/// A c10d process group: Gloo on the CPU, NCCL on CUDA. Groups are passed to the code that uses them, never global.
/// Every blocking call waits at most the group's timeout and then throws a <see cref="TorchException"/>.
/// </summary>
public sealed class ProcessGroup : IDisposable
{
    private readonly ProcessGroupHandle _handle;

    private ProcessGroup(ProcessGroupHandle handle, int rank, int size, string name, TimeSpan timeout)
    {
        _handle = handle;
        Rank = rank;
        Size = size;
        Name = name;
        Timeout = timeout;
    }

    /// <summary>The native handle, for the model-parallel autograd ops.</summary>
    internal ProcessGroupHandle HandleForOps => _handle;

    /// <summary>This process's rank in the group.</summary>
    public int Rank { get; }

    /// <summary>Ranks in the group.</summary>
    public int Size { get; }

    /// <summary>The group's name (its key prefix in the store).</summary>
    public string Name { get; }

    /// <summary>How long a collective or transfer of the group may be waited for (its started work's too).</summary>
    public TimeSpan Timeout { get; }

    /// <summary>
    /// A Gloo group on <paramref name="interfaceHost"/> (loopback by default; null: this host's name, for groups that
    /// span machines). Only members call this, each with its rank inside the group; <paramref name="name"/> must be the
    /// same on all members and different from other groups' (it prefixes the group's keys in the store).
    /// </summary>
    public static ProcessGroup Gloo(Store store, string name, int rank, int size, TimeSpan timeout, string? interfaceHost = "127.0.0.1")
    {
        Native.Check(Native.pt_pg_gloo(store.Handle, name, rank, size, (long)timeout.TotalMilliseconds, interfaceHost, out var h));
        return new ProcessGroup(new ProcessGroupHandle(h), rank, size, name, timeout);
    }

    /// <summary>An NCCL group (a CUDA build of the shim only).</summary>
    public static ProcessGroup Nccl(Store store, string name, int rank, int size, TimeSpan timeout)
    {
        Native.Check(Native.pt_pg_nccl(store.Handle, name, rank, size, (long)timeout.TotalMilliseconds, out var h));
        return new ProcessGroup(new ProcessGroupHandle(h), rank, size, name, timeout);
    }

    /// <summary>In-place all-reduce.</summary>
    public void AllReduce(Tensor t, ReduceOp op = ReduceOp.Sum) => Native.Check(Native.pt_allreduce(_handle, t.Handle, (int)op));

    /// <summary>In-place all-reduce that completes when the returned work is waited on.</summary>
    public Work AllReduceAsync(Tensor t, ReduceOp op = ReduceOp.Sum)
    {
        Native.Check(Native.pt_allreduce_async(_handle, t.Handle, (int)op, out var w));
        return new Work(w, Timeout);
    }

    /// <summary>Every rank's tensor, stacked along a new leading dimension.</summary>
    public Tensor AllGather(Tensor t) => Tensor.From(Native.pt_allgather(_handle, t.Handle, out var h), h);

    /// <summary>
    /// The reduction of every rank's tensor, split in Size chunks along dimension 0; returns this rank's chunk.
    /// (Gloo emulates it with an all-reduce: twice the traffic of a native reduce-scatter.)
    /// </summary>
    public Tensor ReduceScatter(Tensor t, ReduceOp op = ReduceOp.Sum) =>
        Tensor.From(Native.pt_reduce_scatter(_handle, t.Handle, (int)op, out var h), h);

    /// <summary>All-to-all: this rank's tensor in Size equal chunks along dimension 0, chunk j sent to rank j; returns
    /// the chunks received, rank j's at position j.</summary>
    public Tensor AllToAll(Tensor t) => Tensor.From(Native.pt_alltoall(_handle, t.Handle, out var h), h);

    /// <summary>In-place broadcast from <paramref name="root"/>.</summary>
    public void Broadcast(Tensor t, int root) => Native.Check(Native.pt_broadcast(_handle, t.Handle, root));

    /// <summary>Waits for every rank.</summary>
    public void Barrier() => Native.Check(Native.pt_barrier(_handle));

    /// <summary>Sends to a group rank (blocking).</summary>
    public void Send(Tensor t, int dst, int tag = 0) => Native.Check(Native.pt_send(_handle, t.Handle, dst, tag));

    /// <summary>Receives into a contiguous tensor from a group rank (blocking).</summary>
    public void Recv(Tensor t, int src, int tag = 0) => Native.Check(Native.pt_recv(_handle, t.Handle, src, tag));

    /// <summary>Starts a send.</summary>
    public Work SendAsync(Tensor t, int dst, int tag = 0)
    {
        Native.Check(Native.pt_send_async(_handle, t.Handle, dst, tag, out var w));
        return new Work(w, Timeout);
    }

    /// <summary>Starts a receive.</summary>
    public Work RecvAsync(Tensor t, int src, int tag = 0)
    {
        Native.Check(Native.pt_recv_async(_handle, t.Handle, src, tag, out var w));
        return new Work(w, Timeout);
    }

    /// <summary>Leaves the group.</summary>
    public void Dispose() => _handle.Dispose();
}
