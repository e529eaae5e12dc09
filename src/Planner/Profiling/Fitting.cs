using MathNet.Numerics;
using MathNet.Numerics.LinearAlgebra;

namespace Planner.Cli.Profiling;

/// <summary>Least-squares fits of the cost model's few physical parameters to measurements (MathNet.Numerics).</summary>
public static class Fitting
{
    /// <summary>The median (the mean of the middle two for an even count), NaN for none.</summary>
    public static double Median(IEnumerable<double> values)
    {
        var sorted = values.OrderBy(v => v).ToArray();
        int n = sorted.Length;
        return n == 0 ? double.NaN : n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    }

    /// <summary>
    /// Fits t = F / (P·η) · Π (d + h)/d + o to GEMM timings (F = 2·m·n·k FLOPs, d each of m, n, k): for each half
    /// dimension h on a grid, η and o by least squares on relative errors; the h with the smallest error wins.
    /// </summary>
    public static (double Efficiency, double HalfDim, double OverheadSeconds, double RelativeRms) Gemm(
        IReadOnlyList<(double M, double N, double K, double Seconds)> samples, double peakFlops)
    {
        var best = (Efficiency: 0.0, HalfDim: 0.0, Overhead: 0.0, Rms: double.MaxValue);
        foreach (double h in Generate.LinearSpaced(129, 0, 512))
        {
            // Divide each equation by t: 1 = a·(X/t) + o·(1/t), so the residuals are relative errors.
            var design = Matrix<double>.Build.Dense(samples.Count, 2, (i, j) =>
            {
                var s = samples[i];
                double x = 2 * s.M * s.N * s.K / peakFlops * (s.M + h) / s.M * (s.N + h) / s.N * (s.K + h) / s.K;
                return j == 0 ? x / s.Seconds : 1 / s.Seconds;
            });
            var ones = Vector<double>.Build.Dense(samples.Count, 1.0);
            var coef = design.QR().Solve(ones);
            double a = coef[0], o = Math.Max(0, coef[1]);
            if (a <= 0)
                continue;
            double rms = Math.Sqrt((design * Vector<double>.Build.DenseOfArray([a, o]) - ones).PointwisePower(2).Average());
            if (rms < best.Rms)
                best = (1 / a, h, o, rms);
        }
        return best;
    }

    /// <summary>
    /// Fits t = c·α + S/B to collective timings of S bytes, where c counts the latency-bound steps (2 for a two-rank
    /// ring all-reduce, 1 for a transfer) and S the bytes each rank moves (for the all-reduce S·2(n−1)/n): returns
    /// α in seconds and B in bytes per second.
    /// </summary>
    public static (double LatencySeconds, double BytesPerSecond) AlphaBeta(IReadOnlyList<(double Steps, double Bytes, double Seconds)> samples)
    {
        var design = Matrix<double>.Build.Dense(samples.Count, 2, (i, j) => (j == 0 ? samples[i].Steps : samples[i].Bytes) / samples[i].Seconds);
        var ones = Vector<double>.Build.Dense(samples.Count, 1.0);
        var coef = design.QR().Solve(ones);
        return (Math.Max(0, coef[0]), coef[1] > 0 ? 1 / coef[1] : double.PositiveInfinity);
    }

    /// <summary>
    /// The overlap slowdown s of the cost model (<see cref="Planner.CostModel.Specs.GpuSpec.Overlapped"/>) from a
    /// backward of <paramref name="backward"/> seconds whose <paramref name="buckets"/> gradient all-reduces, each
    /// started behind its part of the backward, took <paramref name="together"/> seconds in all and
    /// <paramref name="comm"/> seconds back to back alone. The last bucket starts after the backward and is exposed,
    /// as the pricer counts it: together = backward + s·comm·(n−1)/n + comm/n while the overlapped share is shorter
    /// than the backward. Within [0, <see cref="Planner.CostModel.Specs.GpuSpec.MaxOverlapSlowdown"/>].
    /// </summary>
    public static double OverlapSlowdown(double backward, double comm, double together, int buckets)
    {
        double overlapped = buckets > 1 ? comm * (buckets - 1) / buckets : comm;
        double exposed = buckets > 1 ? comm / buckets : 0;
        return overlapped <= 0 ? 0 : Math.Clamp((together - backward - exposed) / overlapped, 0, Planner.CostModel.Specs.GpuSpec.MaxOverlapSlowdown);
    }

    /// <summary>
    /// The cost of one kernel call from one pass timed at two sizes with the same calls: at size i the pass measured
    /// <c>t</c> seconds where the price is <c>A + o·B</c> (A the kernels' work, B the calls, o the cost of a call) times
    /// one factor common to both. Returns o (not finite when the two sizes cannot separate it).
    /// </summary>
    public static double CallCost(double tLarge, (double A, double B) large, double tSmall, (double A, double B) small) =>
        (tLarge * small.A - tSmall * large.A) / (tSmall * large.B - tLarge * small.B);
}
