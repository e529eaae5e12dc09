using System.Diagnostics;
using Planner.Executor.Torch;

namespace Planner.Cli.Commands;

/// <summary>
/// The binding against PyTorch on this machine: the rate of a 2048×2048 fp32 matmul with 1 and 2 intra-op threads,
/// and the cost of one call of a tiny op, both through the binding and through Debian's python3-torch.
/// </summary>
public static class TorchBench
{
    private const string Script = """
import sys, time, torch
n, threads, budget = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
torch.set_num_threads(threads)
a = torch.randn(n, n); b = torch.randn(n, n)
for _ in range(3): torch.matmul(a, b)
t0 = time.perf_counter(); k = 0
while time.perf_counter() - t0 < budget:
    torch.matmul(a, b); k += 1
mm = (time.perf_counter() - t0) / k
x = torch.ones(1); y = torch.ones(1)
for _ in range(1000): torch.add(x, y)
t0 = time.perf_counter(); k = 0
while time.perf_counter() - t0 < budget / 4:
    for _ in range(1000): torch.add(x, y)
    k += 1000
small = (time.perf_counter() - t0) / k
print(mm, small)
""";

    /// <summary>Measures and prints; returns the binding/PyTorch matmul time ratios per thread count.</summary>
    public static void Run(TextWriter stdout, double budget)
    {
        const int n = 2048;
        double flops = 2.0 * n * n * n;
        foreach (int threads in new[] { 1, 2 })
        {
            TorchRuntime.Threads = threads;
            double mm, small;
            using (DisposeScope.Begin())
            {
                var a = Tensor.Normal([n, n], 0, 1, seed: 1);
                var b = Tensor.Normal([n, n], 0, 1, seed: 2);
                mm = Time(() => a.MatMul(b).Dispose(), budget);
                var x = Tensor.Full([1], 1);
                var y = Tensor.Full([1], 1);
                small = Time(() => (x + y).Dispose(), budget / 4, batch: 1000);
            }
            var (pyMm, pySmall) = Python(n, threads, budget);
            stdout.WriteLine($"torch matmul {n}x{n} fp32, {threads} thread(s): binding {flops / mm / 1e9,7:F1} GFLOP/s, PyTorch {flops / pyMm / 1e9,7:F1} GFLOP/s, time ratio {mm / pyMm:F3}");
            stdout.WriteLine($"torch small op (1-element add), {threads} thread(s): binding {small * 1e6,6:F2} us/call, PyTorch {pySmall * 1e6,6:F2} us/call");
        }
    }

    private static double Time(Action op, double budget, int batch = 1)
    {
        for (int i = 0; i < 3; i++)
            op();
        var watch = Stopwatch.StartNew();
        long calls = 0;
        while (watch.Elapsed.TotalSeconds < budget)
        {
            for (int i = 0; i < batch; i++)
                op();
            calls += batch;
        }
        return watch.Elapsed.TotalSeconds / calls;
    }

    private static (double Matmul, double Small) Python(int n, int threads, double budget)
    {
        string path = Path.Combine(Path.GetTempPath(), $"planner-torch-bench-{Environment.ProcessId}.py");
        File.WriteAllText(path, Script);
        try
        {
            var psi = new ProcessStartInfo("/usr/bin/python3", [path, n.ToString(), threads.ToString(), budget.ToString(System.Globalization.CultureInfo.InvariantCulture)])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            };
            // torch.set_num_threads does not bound OpenBLAS's own threads (the binding's thread setting does).
            psi.Environment["OPENBLAS_NUM_THREADS"] = threads.ToString();
            using var p = Process.Start(psi) ?? throw new InvalidOperationException("cannot start /usr/bin/python3");
            string output = p.StandardOutput.ReadToEnd();
            string error = p.StandardError.ReadToEnd();
            p.WaitForExit();
            if (p.ExitCode != 0)
                throw new InvalidOperationException($"PyTorch reference failed (python3-torch installed?): {error.Split('\n')[0]}");
            var parts = output.Trim().Split(' ');
            return (double.Parse(parts[0], System.Globalization.CultureInfo.InvariantCulture), double.Parse(parts[1], System.Globalization.CultureInfo.InvariantCulture));
        }
        finally
        {
            File.Delete(path);
        }
    }
}
