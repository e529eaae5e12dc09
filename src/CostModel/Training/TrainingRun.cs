namespace Planner.CostModel.Training;

/// <summary>
/// A whole training run priced (the <c>training</c> object of docs/run-level.md). A figure whose inputs the cluster does
/// not give is null, and <see cref="Omitted"/> says why; <see cref="Defaults"/> lists the values used for keys not given.
/// </summary>
/// <param name="Tokens">Tokens trained.</param>
/// <param name="Steps">Optimizer steps.</param>
/// <param name="UsefulSeconds">Seconds of the steps themselves.</param>
/// <param name="WallSeconds">Seconds from start to end: the steps, checkpoint pauses, work lost at failures, restarts.</param>
/// <param name="Gpus">GPUs the plan holds.</param>
/// <param name="Nodes">Nodes they occupy.</param>
/// <param name="Cost">Wall GPU-hours at the cluster's price.</param>
/// <param name="EnergyMwh">Energy from the wall, MWh.</param>
/// <param name="Co2Tonnes">Emissions at the cluster's carbon intensity, tonnes CO2e.</param>
/// <param name="MeanGpuWatts">A GPU's mean draw over the wall time, W.</param>
/// <param name="CheckpointBytes">Bytes of one checkpoint.</param>
/// <param name="CheckpointWriteSeconds">Seconds to write one with all ranks at once at the storage bandwidth.</param>
/// <param name="CheckpointPauseSeconds">Seconds training pauses per checkpoint (the write, or the snapshot when async).</param>
/// <param name="CheckpointIntervalSeconds">Seconds of training between checkpoints (Daly).</param>
/// <param name="YoungIntervalSeconds">Young's first-order interval, sqrt(2 · pause · MTBF).</param>
/// <param name="ClusterMtbfSeconds">The plan's nodes' MTBF, seconds: the per-node MTBF over the nodes.</param>
/// <param name="ExpectedFailures">Wall time over the cluster MTBF.</param>
/// <param name="Goodput">Useful time over wall time.</param>
/// <param name="Segments">The stretches at each batch and length.</param>
/// <param name="Inputs">The values used, by key.</param>
/// <param name="Defaults">Keys not given and the value used for them, with its source.</param>
/// <param name="Omitted">Figures left out, and why.</param>
public sealed record TrainingRun(
    double Tokens,
    double Steps,
    double UsefulSeconds,
    double WallSeconds,
    int Gpus,
    int Nodes,
    double? Cost,
    double? EnergyMwh,
    double? Co2Tonnes,
    double? MeanGpuWatts,
    double CheckpointBytes,
    double CheckpointWriteSeconds,
    double CheckpointPauseSeconds,
    double CheckpointIntervalSeconds,
    double YoungIntervalSeconds,
    double ClusterMtbfSeconds,
    double ExpectedFailures,
    double Goodput,
    IReadOnlyList<RunSegment> Segments,
    IReadOnlyDictionary<string, object> Inputs,
    IReadOnlyList<string> Defaults,
    IReadOnlyList<string> Omitted)
{
    /// <summary>Wall days.</summary>
    public double Days => WallSeconds / 86400;

    /// <summary>Wall GPU-hours.</summary>
    public double GpuHours => WallSeconds * Gpus / 3600;
}
