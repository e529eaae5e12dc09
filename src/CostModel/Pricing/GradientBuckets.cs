namespace Planner.CostModel.Pricing;

/// <summary>What a data-parallel gradient bucket holds.</summary>
public enum BucketKind
{
    /// <summary>One transformer block's parameters.</summary>
    Block,
    /// <summary>The final norm and the output layer (and any multi-token-prediction modules), on the last virtual stage.</summary>
    Head,
    /// <summary>The embedding, on the first virtual stage.</summary>
    Embedding,
}

/// <summary>One bucket of a model chunk's gradients; <paramref name="Layer"/> is the model's block index for a block.</summary>
public readonly record struct GradientBucket(BucketKind Kind, int Layer = -1);

/// <summary>
/// The rule both the cost model and the executor follow for a model chunk's data-parallel gradient buckets: one per
/// block, the head's on the chunk that holds the head, the embedding's on the chunk that holds the embedding
/// (<see cref="StageLayout.HasHead"/>, <see cref="StageLayout.HasEmbedding"/>). The chunk's backward runs from the head
/// down to the embedding, so the bucket it finishes last is the embedding's, else the first block's, else the head's.
/// </summary>
public static class GradientBuckets
{
    /// <summary>The buckets of chunk <paramref name="chunk"/> of stage <paramref name="stage"/>: the blocks' in the model's
    /// order, then the head's, then the embedding's (the order ZeRO lays out its shards in).</summary>
    public static IEnumerable<GradientBucket> Of(StageLayout layout, int stage, int chunk)
    {
        int first = layout.FirstLayerOf(stage, chunk), count = layout.LayersOf(stage, chunk);
        for (int l = first; l < first + count; l++)
            yield return new GradientBucket(BucketKind.Block, l);
        if (layout.HasHead(stage, chunk))
            yield return new GradientBucket(BucketKind.Head);
        if (layout.HasEmbedding(stage, chunk))
            yield return new GradientBucket(BucketKind.Embedding);
    }

    /// <summary>The bucket whose gradients the chunk's backward finishes last (its reduction is the one that cannot
    /// hide behind the chunk's own backward).</summary>
    /// <param name="embeddingApart">The embedding is not reduced in the chunk's buckets (tied across stages and reduced
    /// after the flush): the first block's is then the last.</param>
    public static GradientBucket LastFinished(StageLayout layout, int stage, int chunk, bool embeddingApart = false) =>
        layout.HasEmbedding(stage, chunk) && !embeddingApart ? new GradientBucket(BucketKind.Embedding)
        : layout.LayersOf(stage, chunk) > 0 ? new GradientBucket(BucketKind.Block, layout.FirstLayerOf(stage, chunk))
        : new GradientBucket(BucketKind.Head);
}
