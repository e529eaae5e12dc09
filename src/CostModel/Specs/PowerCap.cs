namespace Planner.CostModel.Specs;

/// <summary>
/// A power limit on every GPU (cluster key <c>power.cap_w</c>; docs/run-level.md). Below the GPU's most power the
/// firmware lowers the core clock until the draw fits. A busy GPU's draw is its waiting draw (held while it is on and
/// waiting) plus a dynamic part that grows with the clock times the square of the voltage, and the voltage with the
/// clock in the range a GPU scales over: the dynamic part goes as the cube of the clock. So under a cap C of a GPU of most
/// power P that waits at w·P, the clock falls to ((C − w·P) / (P − w·P))^(1/3) of its own, and with it the rate of
/// every kernel the cost model times by its peak FLOP/s (GEMMs, attention); memory-bound kernels and links keep their
/// rates (a power cap lowers the core clock, not the memory's).
/// </summary>
public static class PowerCap
{
    /// <summary>The exponent of the clock in the dynamic power (clock × voltage², the voltage following the clock).</summary>
    public const double DynamicExponent = 3;

    /// <summary>The share of its clock a GPU of most power <paramref name="gpuW"/>, waiting at
    /// <paramref name="waitFraction"/> of it, keeps under <paramref name="capW"/>; 1 when the cap is at or above its
    /// most power. A cap at or below the waiting draw is an <see cref="InputException"/> naming <c>power.cap_w</c>.</summary>
    public static double ClockFraction(double gpuW, double waitFraction, double capW)
    {
        if (capW >= gpuW)
            return 1;
        double idle = waitFraction * gpuW;
        if (capW <= idle)
            throw new InputException("power.cap_w", $"{capW:G4} W is at or below what a waiting GPU draws ({idle:G4} W = power.wait_fraction {waitFraction:G3} × {gpuW:G4} W): the GPU could not run");
        return Math.Pow((capW - idle) / (gpuW - idle), 1 / DynamicExponent);
    }

    /// <summary>The cluster with every GPU's clock share set from its <c>power.cap_w</c> (recomputed from the GPU's
    /// own figures, so applying it again changes nothing); unchanged without a cap.</summary>
    public static ClusterSpec Apply(ClusterSpec cluster)
    {
        if (cluster.Operations?.Power is not { CapW: double cap } power)
            return cluster;
        GpuSpec Capped(GpuSpec gpu)
        {
            double most = MostWatts(power, gpu)
                ?? throw new InputException("power.cap_w", $"GPU '{gpu.Name}' gives no tdp_w and the cluster no power.gpu_w: a cap cannot be priced without the GPU's most power");
            return gpu with { ClockFraction = ClockFraction(most, power.Wait, cap) };
        }
        return cluster with { Gpu = Capped(cluster.Gpu), Groups = cluster.Groups?.Select(g => g with { Gpu = Capped(g.Gpu) }).ToList() };
    }

    /// <summary>The most a GPU draws: the cluster's <c>power.gpu_w</c>, else the GPU preset's spec-sheet <c>tdp_w</c>;
    /// null when neither is known.</summary>
    public static double? MostWatts(PowerSpec power, GpuSpec gpu) => power.GpuW ?? gpu.TdpW;

    /// <summary>The draw of a busy GPU: its most power, or the cap when lower.</summary>
    public static double BusyWatts(double gpuW, PowerSpec power) => power.CapW is double cap ? Math.Min(gpuW, cap) : gpuW;
}
