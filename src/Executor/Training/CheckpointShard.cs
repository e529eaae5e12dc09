using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;

namespace Planner.Executor.Training;

/// <summary>
/// A piece of one whole weight, or of one of its optimizer-state slots, in a rank's shard, addressed without the
/// layout: the weight by the one-process model's parameter name and its whole shape (a matrix of
/// <paramref name="Rows"/> × <paramref name="Cols"/>, a vector as one column), the tensor-parallel shard the piece is
/// part of by its place in the whole weight (<paramref name="RowOffset"/>, <paramref name="ColOffset"/>, its row length
/// <paramref name="LocalCols"/>), and the piece as a range of that shard's row-major elements (a ZeRO slice holds part
/// of a shard). Its values are <paramref name="Length"/> floats at <paramref name="At"/> in the shard's data.
/// </summary>
/// <param name="Kind">"param", or the optimizer's name of the state slot (exp_avg, exp_avg_sq, momentum_buffer, ...).</param>
/// <param name="Step">The optimizer's step count of the tensor the piece was cut from (-1: it had no state yet).</param>
public sealed record ShardEntry(string Name, string Kind, long Rows, long Cols, long RowOffset, long ColOffset, long LocalCols, long Start, long Length,
    long Step, long At = 0)
{
    /// <summary>Where element <paramref name="e"/> of the piece (from 0) sits in the whole weight, row-major.</summary>
    public long WholeIndex(long e)
    {
        long local = Start + e;
        return (RowOffset + local / LocalCols) * Cols + ColOffset + local % LocalCols;
    }
}

/// <summary>
/// A rank's shard file (<c>rank-NNNNN.shard</c>): eight bytes "PLNRSHD1", the header's length (int64, little-endian),
/// the header (UTF-8 JSON: the entries), then the entries' values as little-endian float32.
/// </summary>
public static class CheckpointShard
{
    private static readonly byte[] Magic = "PLNRSHD1"u8.ToArray();

    private static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    /// <summary>Rank <paramref name="rank"/>'s shard file name.</summary>
    public static string FileName(int rank) => $"rank-{rank:D5}.shard";

    /// <summary>Writes the entries (their <c>At</c> set here) with their values, whole or not at all.</summary>
    public static void Write(string path, IReadOnlyList<(ShardEntry Entry, float[] Values)> pieces)
    {
        long at = 0;
        var entries = new List<ShardEntry>();
        foreach (var (entry, values) in pieces)
        {
            entries.Add(entry with { At = at });
            at += values.Length;
        }
        byte[] header = Encoding.UTF8.GetBytes(JsonSerializer.Serialize(entries, Json));
        CheckpointFolders.WriteAtomically(path, stream =>
        {
            stream.Write(Magic);
            stream.Write(BitConverter.GetBytes((long)header.Length));
            stream.Write(header);
            foreach (var (_, values) in pieces)
                stream.Write(MemoryMarshal.AsBytes(values.AsSpan()));
        });
    }

    /// <summary>Reads a shard file.</summary>
    /// <exception cref="InvalidDataException">It is not one.</exception>
    public static (IReadOnlyList<ShardEntry> Entries, float[] Values) Read(string path)
    {
        byte[] bytes = File.ReadAllBytes(path);
        if (bytes.Length < 16 || !bytes.AsSpan(0, 8).SequenceEqual(Magic))
            throw new InvalidDataException($"{path}: not a checkpoint shard");
        long length = BitConverter.ToInt64(bytes, 8);
        if (length < 0 || 16 + length > bytes.Length || (bytes.Length - 16 - length) % 4 != 0)
            throw new InvalidDataException($"{path}: a checkpoint shard cut short");
        var entries = JsonSerializer.Deserialize<List<ShardEntry>>(bytes.AsSpan(16, (int)length), Json)
            ?? throw new InvalidDataException($"{path}: a shard without entries");
        var values = MemoryMarshal.Cast<byte, float>(bytes.AsSpan(16 + (int)length)).ToArray();
        if (entries.Any(e => e.At < 0 || e.Length < 0 || e.At + e.Length > values.Length))
            throw new InvalidDataException($"{path}: an entry outside the shard's values");
        return (entries, values);
    }
}
