using Planner.CostModel.Compute;
using Planner.CostModel.Specs;
using Xunit;

namespace Planner.CostModel.Tests;

/// <summary>Memory-bound ops are priced by bytes, or by the element rate of their transcendental function when a
/// device (a CPU) evaluates it slower than it moves the bytes.</summary>
public class KernelTimerTests
{
    [Fact]
    public void A_transcendental_op_costs_the_slower_of_its_bytes_and_its_elements()
    {
        var gpu = ClusterLoader.LoadGpu("a100-80g");
        Assert.Equal(0, gpu.ElementRateG); // GPUs: memory-bound
        var gelu = Op.Memory("gelu", bytes: 8e6, elements: 1e6);
        var onGpu = new KernelTimer(gpu, Precision.Bf16);
        Assert.Equal(onGpu.Memory(8e6), onGpu.Forward(gelu));

        // 0.25 G elements/s: 1e6 elements take 4 ms, far above 8 MB at 10 GB/s·0.5 (1.6 ms).
        var cpu = ClusterLoader.LoadGpu("local-cpu");
        Assert.Equal(0.25, cpu.ElementRateG);
        var timer = new KernelTimer(cpu, Precision.Fp32);
        double overhead = cpu.KernelOverheadUs * 1e-6;
        Assert.Equal(1e6 / 0.25e9 + overhead, timer.Forward(gelu), 12);
        Assert.Equal(1e6 / 0.25e9 + overhead, timer.Backward(gelu), 12);
        // An op without a transcendental function stays memory-bound.
        var add = Op.Memory("add", bytes: 8e6);
        Assert.Equal(8e6 / (cpu.MemoryBandwidthGbs * 1e9 * cpu.MemoryEfficiency) + overhead, timer.Forward(add), 12);
    }
}
