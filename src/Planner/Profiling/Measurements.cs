using System.Text.Json.Nodes;
using Planner.CostModel.Specs;

namespace Planner.Cli.Profiling;

// What the profile's ranks measure, as named values. Rank 0 writes them into its JSON document as arrays of numbers
// (the form kept by --keep-measurements, which later versions read back): each record's order of numbers is given
// once, by its ToJson and its Of.

/// <summary>Median seconds of a pass forward and backward.</summary>
public sealed record PassTimes(double Forward, double Backward)
{
    /// <summary>Forward and backward.</summary>
    public double Total => Forward + Backward;
}

/// <summary>A measurement against its price from the cost model (seconds, or bytes for memory).</summary>
public sealed record MeasuredAgainstPriced(double Measured, double Priced)
{
    /// <summary>Measured over priced: the correction it gives.</summary>
    public double Ratio => Measured / Priced;
}

/// <summary>A pass forward and backward against its price.</summary>
public sealed record PassAgainstPriced(MeasuredAgainstPriced Forward, MeasuredAgainstPriced Backward);

/// <summary>The numbers of a measurement's JSON array.</summary>
internal static class JsonNumbers
{
    public static double[] Of(JsonNode node) => node.AsArray().Select(v => (double)v!).ToArray();
}

/// <summary>The reference block and its head at the block's size, and the block over one short sequence (the same
/// calls on a sixteenth of the tokens). JSON: [block forward, backward, head forward, backward, small block forward,
/// backward].</summary>
public sealed record BlockTimes(PassTimes Block, PassTimes Head, PassTimes SmallBlock)
{
    public double[] ToJson() => [Block.Forward, Block.Backward, Head.Forward, Head.Backward, SmallBlock.Forward, SmallBlock.Backward];

    public static BlockTimes Of(JsonNode node)
    {
        var v = JsonNumbers.Of(node);
        return new(new(v[0], v[1]), new(v[2], v[3]), new(v[4], v[5]));
    }
}

/// <summary>The block split over two ranks (tensor, expert or context parallel): its passes without its communication,
/// and that communication's seconds per forward and backward. JSON: [forward, backward, communication].</summary>
public sealed record SplitBlockTimes(PassTimes Passes, double CommSeconds)
{
    public double[] ToJson() => [Passes.Forward, Passes.Backward, CommSeconds];

    public static SplitBlockTimes Of(JsonNode node)
    {
        var v = JsonNumbers.Of(node);
        return new(new(v[0], v[1]), v[2]);
    }
}

/// <summary>A linear layer of <paramref name="Tokens"/> rows from <paramref name="In"/> to <paramref name="Out"/>
/// features, timed forward and backward. JSON: [tokens, in, out, forward, backward].</summary>
public sealed record LinearTimes(double Tokens, double In, double Out, PassTimes Times)
{
    public double[] ToJson() => [Tokens, In, Out, Times.Forward, Times.Backward];

    public static LinearTimes Of(JsonNode node)
    {
        var v = JsonNumbers.Of(node);
        return new(v[0], v[1], v[2], new(v[3], v[4]));
    }
}

/// <summary>The backward of <paramref name="Blocks"/> blocks alone, their gradients' all-reduces alone, and both as
/// training overlaps them, seconds. JSON: [backward, all-reduces, together, blocks].</summary>
public sealed record OverlapTimes(double Backward, double Comm, double Together, int Blocks)
{
    public double[] ToJson() => [Backward, Comm, Together, Blocks];

    public static OverlapTimes Of(JsonNode node)
    {
        var v = JsonNumbers.Of(node);
        return new(v[0], v[1], v[2], (int)v[3]);
    }
}

/// <summary>An m x n x k GEMM's median seconds. JSON: [m, n, k, seconds].</summary>
public sealed record GemmTime(double M, double N, double K, double Seconds)
{
    public double[] ToJson() => [M, N, K, Seconds];

    public static GemmTime Of(JsonNode node)
    {
        var v = JsonNumbers.Of(node);
        return new(v[0], v[1], v[2], v[3]);
    }
}

/// <summary>A memory-bound op's measured cost (<see cref="OpRate"/>) as the measurements hold it. JSON: [ns per element
/// forward, backward].</summary>
public static class OpRateJson
{
    public static double[] ToJson(OpRate rate) => [rate.ForwardNs, rate.BackwardNs];

    public static OpRate Of(JsonNode node)
    {
        var v = JsonNumbers.Of(node);
        return new OpRate(v[0], v[1]);
    }
}

/// <summary>A collective or transfer of a message of <paramref name="Bytes"/>: its seconds. JSON: [bytes, seconds].</summary>
public sealed record MessageTime(double Bytes, double Seconds)
{
    public double[] ToJson() => [Bytes, Seconds];

    public static MessageTime Of(JsonNode node)
    {
        var v = JsonNumbers.Of(node);
        return new(v[0], v[1]);
    }
}

/// <summary>An all-reduce of <paramref name="Bytes"/> over a group of <paramref name="Ranks"/>: its seconds. JSON:
/// [ranks, bytes, seconds].</summary>
public sealed record GroupTime(int Ranks, double Bytes, double Seconds)
{
    public double[] ToJson() => [Ranks, Bytes, Seconds];

    public static GroupTime Of(JsonNode node)
    {
        var v = JsonNumbers.Of(node);
        return new((int)v[0], v[1], v[2]);
    }
}
