namespace Planner.CostModel.Pipeline;

/// <summary>
/// A complete pipeline-parallel schedule for one optimizer step: for every physical stage, the ordered
/// list of actions it executes.
/// </summary>
/// <param name="Pp">Number of physical pipeline stages (pipeline-parallel degree).</param>
/// <param name="Vpp">Model chunks per stage (virtual pipeline degree); 1 means non-interleaved.</param>
/// <param name="MicroBatches">Micro-batches per optimizer step (count, not size).</param>
/// <param name="Stages">Per physical stage (index 0..Pp-1), its actions in execution order.</param>
public sealed record PipelineSchedule(
    int Pp,
    int Vpp,
    int MicroBatches,
    IReadOnlyList<IReadOnlyList<PipelineAction>> Stages)
{
    /// <summary>Number of virtual stages (Pp × Vpp).</summary>
    public int VirtualStages => Pp * Vpp;
}
