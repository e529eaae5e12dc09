namespace Planner.CostModel.Pipeline;

/// <summary>Direction of one pipeline pass over one model chunk.</summary>
public enum PassKind
{
    /// <summary>Forward pass (produces activations that are held until the matching backward).</summary>
    Forward,

    /// <summary>Backward pass (consumes the activations of the matching forward).</summary>
    Backward,
}

/// <summary>
/// One unit of work executed by a physical pipeline stage: a forward or backward pass of one
/// micro-batch through one of the stage's model chunks.
/// </summary>
/// <param name="Kind">Forward or backward.</param>
/// <param name="MicroBatch">Micro-batch index, 0..microBatches-1.</param>
/// <param name="Chunk">
/// Model-chunk index on this stage, 0..vpp-1. Chunk c on stage s is virtual stage c*pp + s, so the
/// model is split into pp*vpp virtual stages laid out round-robin over the physical stages.
/// </param>
public readonly record struct PipelineAction(PassKind Kind, int MicroBatch, int Chunk);
