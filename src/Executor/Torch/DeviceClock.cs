namespace Planner.Executor.Torch;

/// <summary>The clock of a rank's timers, read after the device's queued work (CUDA runs asynchronously; the CPU's ops
/// are done when they return).</summary>
public readonly record struct DeviceClock(Device Device)
{
    /// <summary>Nanoseconds now, once the device has finished what was queued.</summary>
    public long Now()
    {
        if (Device.Type == DeviceType.Cuda)
            TorchRuntime.Synchronize(Device);
        return TorchRuntime.NowNanoseconds();
    }

    /// <summary>Seconds since <paramref name="t0"/> (a value of <see cref="Now"/>).</summary>
    public double Since(long t0) => (Now() - t0) / 1e9;
}
