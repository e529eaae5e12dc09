using Planner.CostModel.Pricing;

namespace Planner.CostModel.Training;

/// <summary>
/// A GPU's mean draw over a step from what each part of the step does: its kernels (forward, backward, recompute, the
/// optimizer) at the GPU's most power (or its power cap), the exposed communication and the pipeline bubble at the wait share of it
/// (docs/run-level.md). Never above the most power.
/// </summary>
public static class StepPower
{
    /// <summary>Seconds of a step the GPU runs kernels, and seconds it waits (exposed communication, bubble).</summary>
    public static (double Busy, double Waiting) Split(Breakdown b)
    {
        double busy = b.Compute + b.Recompute + b.Optimizer;
        return (busy, Math.Max(0, b.Total - busy));
    }

    /// <summary>Mean watts of one GPU over the step, drawing <paramref name="busyW"/> while it runs kernels and
    /// <paramref name="waitW"/> while it waits.</summary>
    public static double GpuWatts(Breakdown b, double busyW, double waitW)
    {
        var (busy, waiting) = Split(b);
        double total = busy + waiting;
        return total <= 0 ? waitW : (busy * busyW + waiting * waitW) / total;
    }
}
