namespace Planner.CostModel.Pricing;

/// <summary>How many blocks of each kind (indexed as <see cref="Compute.TransformerOps.Kinds"/>) a stage or chunk holds.</summary>
public sealed record BlockMix(IReadOnlyList<int> Counts)
{
    /// <summary>Blocks of every kind.</summary>
    public int Total => Counts.Sum();

    /// <summary><paramref name="layers"/> blocks of the first kind (a uniform model's), of <paramref name="kinds"/> kinds.</summary>
    public static BlockMix Uniform(int kinds, int layers)
    {
        var counts = new int[kinds];
        counts[0] = layers;
        return new BlockMix(counts);
    }

    /// <summary>True when both mixes hold as many blocks of every kind.</summary>
    public bool SameBlocks(BlockMix other) => Counts.SequenceEqual(other.Counts);

    /// <summary>The blocks of two mixes together.</summary>
    public BlockMix Plus(BlockMix other) => new(Counts.Zip(other.Counts, (a, b) => a + b).ToArray());

    /// <inheritdoc />
    public bool Equals(BlockMix? other) => other is not null && Counts.SequenceEqual(other.Counts);

    /// <inheritdoc />
    public override int GetHashCode() => Counts.Aggregate(17, (h, c) => h * 31 + c);
}
