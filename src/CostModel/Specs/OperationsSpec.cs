namespace Planner.CostModel.Specs;

/// <summary>What a cluster draws from the wall (cluster key <c>power</c>; docs/run-level.md).</summary>
/// <param name="GpuW">Most a GPU draws, W (<c>gpu_w</c>; null: the GPU preset's spec-sheet <see cref="GpuSpec.TdpW"/>).</param>
/// <param name="NodeW">A node's draw besides its GPUs (CPUs, memory, NICs, fans), W (<c>node_w</c>; null: not given).</param>
/// <param name="Pue">The facility's power usage effectiveness (<c>pue</c>; null: not given).</param>
/// <param name="WaitFraction">Share of <paramref name="GpuW"/> a GPU draws while it waits on communication, a pipeline
/// bubble, a checkpoint write or a restart (<c>wait_fraction</c>; null: <see cref="OperationsSpec.DefaultWaitFraction"/>).</param>
/// <param name="CapW">A power limit set on every GPU (<c>cap_w</c>, as <c>nvidia-smi -pl</c> sets it), W; null: none.
/// Below the GPU's most power it slows the GPU's arithmetic (<see cref="PowerCap"/>).</param>
public sealed record PowerSpec(double? GpuW = null, double? NodeW = null, double? Pue = null, double? WaitFraction = null, double? CapW = null)
{
    /// <summary>The share of its most power a waiting GPU draws (<see cref="OperationsSpec.DefaultWaitFraction"/> when not given).</summary>
    public double Wait => WaitFraction ?? OperationsSpec.DefaultWaitFraction;
}

/// <summary>
/// The keys a whole training run is priced with beyond its step time: power, carbon, reliability and checkpoint storage
/// (all optional; a figure whose inputs are missing is left out of the <c>training</c> object, which says why).
/// </summary>
/// <param name="Power">Power draw (<c>power</c>).</param>
/// <param name="CarbonKgPerKwh">Grid carbon intensity, kg CO2e per kWh (<c>carbon_kg_per_kwh</c>).</param>
/// <param name="MtbfHoursPerNode">Mean time between failures of one node, hours (<c>mtbf_hours_per_node</c>).</param>
/// <param name="RestartSeconds">Seconds from a failure to training again: detection, rescheduling, loading the last
/// checkpoint (<c>restart_s</c>).</param>
/// <param name="CheckpointGbs">Aggregate write bandwidth of the checkpoint storage, GB/s (<c>storage.checkpoint_gbs</c>).</param>
public sealed record OperationsSpec(PowerSpec? Power = null, double? CarbonKgPerKwh = null, double? MtbfHoursPerNode = null,
    double? RestartSeconds = null, double? CheckpointGbs = null)
{
    /// <summary>No keys given.</summary>
    public static readonly OperationsSpec None = new();

    /// <summary>
    /// Share of the GPU's most power drawn while it waits (exposed communication, bubbles, checkpoint writes, restarts)
    /// when the cluster gives no <c>power.wait_fraction</c>. An assumption, not a measurement we can cite: NVIDIA
    /// publishes no idle or communication draw; it lies between an idle GPU's (about a tenth of its TDP on the
    /// nvidia-smi readings of idle H100s) and a busy one's, NCCL kernels keeping HBM and NVLink active. Stated in the
    /// output's inputs; set the key when measured.
    /// </summary>
    public const double DefaultWaitFraction = 0.3;

    /// <summary>Per-node MTBF used when the cluster gives none, hours: Meta's Llama 3 405B run saw 419 unexpected
    /// interruptions in 54 days on 16,384 H100 GPUs, 2,048 nodes (Llama Team, "The Llama 3 Herd of Models", 2024,
    /// section 3.3.4): 54 × 24 × 2048 / 419.</summary>
    public const double DefaultMtbfHoursPerNode = 54.0 * 24 * 2048 / 419;

    /// <summary>Checkpoint write bandwidth per GPU of the plan when the cluster gives no <c>storage.checkpoint_gbs</c>,
    /// GB/s: Meta's Tectonic store behind Llama 3's 16,384-GPU run sustained 2 TB/s (Llama Team, "The Llama 3 Herd of
    /// Models", 2024, section 3.3.1).</summary>
    public const double DefaultCheckpointGbsPerGpu = 2000.0 / 16384;
}
