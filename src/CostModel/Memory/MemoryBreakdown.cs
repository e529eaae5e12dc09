namespace Planner.CostModel.Memory;

/// <summary>Peak memory of one rank, bytes, by what holds it.</summary>
/// <param name="Stage">Pipeline stage of the rank.</param>
/// <param name="Weights">Working weights (the rank's shard under TP/PP, and under ZeRO-3 its 1/dp of it).</param>
/// <param name="Gradients">Gradient accumulation buffers.</param>
/// <param name="Optimizer">fp32 master weights (mixed precision) and Adam's two moments.</param>
/// <param name="Activations">Activations saved for backward, for every micro-batch (and model chunk) in flight.</param>
/// <param name="Working">Transient peaks: a recomputed layer, the logits of the loss, ZeRO-3 gathered layers.</param>
/// <param name="Buffers">Communication buffers (point-to-point activations, collective staging).</param>
/// <param name="Overhead">Allocator fragmentation and the runtime's reserved memory.</param>
/// <param name="InFlight">Micro-batch model chunks whose activations are held at once.</param>
/// <param name="Host">Host (CPU) memory the rank's offloaded optimizer state takes; not part of <see cref="Total"/>.</param>
/// <param name="Adapters">LoRA's share of the parts above (null under full training).</param>
public sealed record MemoryBreakdown(
    int Stage,
    double Weights,
    double Gradients,
    double Optimizer,
    double Activations,
    double Working,
    double Buffers,
    double Overhead,
    int InFlight,
    double Host = 0,
    AdapterMemory? Adapters = null)
{
    /// <summary>The sum, bytes.</summary>
    public double Total => Weights + Gradients + Optimizer + Activations + Working + Buffers + Overhead;
}

/// <summary>LoRA adapters' share of a rank's memory, bytes, each already counted in its part of <see cref="MemoryBreakdown"/>.</summary>
/// <param name="Weights">The adapters' weights (in <see cref="MemoryBreakdown.Weights"/>).</param>
/// <param name="Gradients">Their gradients: all of <see cref="MemoryBreakdown.Gradients"/>, the base being frozen.</param>
/// <param name="Optimizer">Their optimizer state and master copy: all of <see cref="MemoryBreakdown.Optimizer"/>.</param>
/// <param name="Activations">The r-wide intermediates they keep (in <see cref="MemoryBreakdown.Activations"/>).</param>
public sealed record AdapterMemory(double Weights, double Gradients, double Optimizer, double Activations)
{
    /// <summary>The sum, bytes.</summary>
    public double Total => Weights + Gradients + Optimizer + Activations;
}
