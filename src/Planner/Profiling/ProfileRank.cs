using System.Diagnostics;
using System.Text.Json;
using Planner.Executor.Distributed;
using Planner.Executor.Torch;

namespace Planner.Cli.Profiling;

/// <summary>
/// One rank of <c>profile</c>: the ranks run the compute sweeps at the same time (as training ranks share the
/// machine's memory bandwidth), then time collectives between them; rank 0 prints the measurements as JSON.
/// </summary>
public static class ProfileRank
{
    /// <summary>GEMM shapes (m, n, k) measured: square sizes and thin ones, as the cost model prices them.</summary>
    public static readonly (int M, int N, int K)[] GemmShapes =
    [
        (64, 64, 64), (128, 128, 128), (256, 256, 256), (512, 512, 512), (1024, 1024, 1024), (2048, 2048, 2048),
        (2048, 256, 256), (256, 2048, 256), (256, 256, 2048), (1024, 256, 1024), (2048, 1024, 256), (512, 2048, 512),
        (32, 1024, 1024), (1024, 32, 1024), (1024, 1024, 32), (4096, 512, 128),
        // A transformer's own: tokens of a micro-batch against hidden, 3/4x hidden and vocabulary-sized dimensions.
        (128, 768, 256), (128, 1024, 256), (128, 256, 1024), (128, 8192, 256), (256, 8192, 128),
        (512, 768, 256), (512, 8192, 256), (2048, 3072, 1024), (2048, 4096, 1024), (2048, 1024, 4096), (1024, 8192, 512),
    ];

    /// <summary>Message sizes of the collective sweep, bytes.</summary>
    public static readonly long[] MessageBytes = [4 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20];

    /// <summary>Median of exactly <paramref name="runs"/> timed calls: every rank makes the same calls, as collectives require.</summary>
    private static double MedianOf(Action op, int runs)
    {
        op();
        var times = new double[runs];
        for (int i = 0; i < runs; i++)
        {
            var w = Stopwatch.StartNew();
            op();
            times[i] = w.Elapsed.TotalSeconds;
        }
        Array.Sort(times);
        return times[runs / 2];
    }

    private static double Median(Action op, double budget, int minRuns = 3)
    {
        op();
        var times = new List<double>();
        var total = Stopwatch.StartNew();
        while (times.Count < minRuns || total.Elapsed.TotalSeconds < budget)
        {
            var w = Stopwatch.StartNew();
            op();
            times.Add(w.Elapsed.TotalSeconds);
            if (times.Count > 10_000)
                break;
        }
        times.Sort();
        return times[times.Count / 2];
    }

    /// <summary>Runs the rank; returns the exit code.</summary>
    public static int Run(int rank, int world, string host, int port, TextWriter stdout)
    {
        TorchRuntime.Threads = 1;
        var timeout = TimeSpan.FromMinutes(2);
        using var store = Store.Tcp(host, port, world, rank == 0, timeout);
        using var pg = ProcessGroup.Gloo(store, "profile", rank, world, timeout);
        using var scope = DisposeScope.Begin();
        pg.Barrier();
        var gemm = new List<double[]>();
        foreach (var (m, n, k) in GemmShapes)
        {
            var a = Tensor.Normal([m, k], 0, 1, seed: 1);
            var b = Tensor.Normal([k, n], 0, 1, seed: 2);
            pg.Barrier();
            double t = Median(() => a.MatMul(b).Dispose(), 0.15);
            gemm.Add([m, n, k, t]);
            a.Dispose();
            b.Dispose();
        }
        // The runtime's share of a rank: resident memory once the math library has run (BLAS keeps per-thread
        // work buffers after its first GEMM), with the GEMMs' tensors freed.
        var (rss, _) = TorchRuntime.Memory(Device.Cpu);
        const long elements = 4 << 20;
        var x = Tensor.Full([elements], 1);
        var y = Tensor.Full([elements], 2);
        pg.Barrier();
        double add = Median(() => (x + y).Dispose(), 0.3);
        // Elementwise transcendental functions (the MLP's tanh GELU; exp in softmax and the loss): elements per second.
        double gelu = Median(() => x.Gelu(tanhApproximation: true).Dispose(), 0.3);
        var s1 = Tensor.Full([1], 1);
        var s2 = Tensor.Full([1], 1);
        double small = Median(() => (s1 + s2).Dispose(), 0.2);
        var allReduce = new List<double[]>();
        var loaded = new List<double[]>();
        var sendRecv = new List<double[]>();
        // Training runs its collectives between kernels: a few milliseconds of work, then the collective, on every
        // rank. With ranks sharing cores, a collective then also waits for the peers' communication threads to be
        // scheduled again. Measured as (work + all-reduce) minus the work alone.
        var wa = Tensor.Normal([512, 512], 0, 1, seed: 3);
        var wb = Tensor.Normal([512, 512], 0, 1, seed: 4);
        void Work() => wa.MatMul(wb).Dispose();
        pg.Barrier();
        double workAlone = MedianOf(Work, 20);
        foreach (long bytes in MessageBytes)
        {
            var t = Tensor.Zeros([bytes / 4]);
            pg.Barrier();
            int runs = (int)Math.Clamp((16L << 20) / bytes, 5, 50);
            allReduce.Add([bytes, MedianOf(() => pg.AllReduce(t), runs)]);
            pg.Barrier();
            loaded.Add([bytes, Math.Max(1e-6, MedianOf(() => { Work(); pg.AllReduce(t); }, runs) - workAlone)]);
            pg.Barrier();
            // Ping-pong between ranks 0 and 1: half the round trip is one transfer.
            double roundTrip = MedianOf(() =>
            {
                if (rank == 0)
                {
                    pg.Send(t, 1);
                    pg.Recv(t, 1);
                }
                else if (rank == 1)
                {
                    pg.Recv(t, 0);
                    pg.Send(t, 0);
                }
            }, runs);
            sendRecv.Add([bytes, roundTrip / 2]);
            pg.Barrier();
            t.Dispose();
        }
        // Overlap: how much a kernel slows while an all-reduce runs beside it (the data-parallel reduction behind the
        // backward). Work of about twice the all-reduce's time, alone and with the all-reduce started first.
        var big = Tensor.Zeros([(4L << 20) / 4]);
        pg.Barrier();
        double commAlone = MedianOf(() => pg.AllReduce(big), 5);
        int kernels = Math.Max(1, (int)Math.Ceiling(2 * commAlone / workAlone));
        pg.Barrier();
        double computeAlone = MedianOf(() => { for (int i = 0; i < kernels; i++) Work(); }, 5);
        pg.Barrier();
        double together = MedianOf(() =>
        {
            using var work = pg.AllReduceAsync(big);
            for (int i = 0; i < kernels; i++)
                Work();
            work.Wait(timeout);
        }, 5);
        big.Dispose();
        if (rank == 0)
            stdout.WriteLine(JsonSerializer.Serialize(new
            {
                rss_bytes = rss,
                world,
                gemm,
                add_seconds = add,
                add_bytes = 3 * 4 * elements,
                gelu_seconds = gelu,
                gelu_elements = elements,
                small_op_seconds = small,
                all_reduce = allReduce,
                all_reduce_loaded = loaded,
                overlap = new[] { computeAlone, commAlone, together },
                send_recv = sendRecv,
                torch = TorchRuntime.Version,
            }));
        pg.Barrier();
        return 0;
    }
}
