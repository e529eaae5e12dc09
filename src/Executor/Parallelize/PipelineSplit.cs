using Planner.CostModel.Pricing;

namespace Planner.Executor.Parallelize;

/// <summary>
/// The pipeline split: which blocks each model chunk of a stage holds, by the cost model's <see cref="StageLayout"/>
/// (virtual stage chunk · pp + stage; the embedding on the first chunk of the first stage, the head on the last chunk of
/// the last: <see cref="StageLayout.HasEmbedding"/>, <see cref="StageLayout.HasHead"/>).
/// </summary>
public static class PipelineSplit
{
    /// <summary>The model's block indices of each chunk of pipeline stage <paramref name="stage"/>.</summary>
    public static IReadOnlyList<int[]> Chunks(StageLayout layout, int stage) =>
        Enumerable.Range(0, layout.Vpp)
            .Select(c => Enumerable.Range(layout.FirstLayerOf(stage, c), layout.LayersOf(stage, c)).ToArray())
            .ToList();
}
