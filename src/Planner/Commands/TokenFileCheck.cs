using System.Runtime.InteropServices;
using Planner.CostModel.Specs;

namespace Planner.Cli.Commands;

/// <summary>
/// <c>run --data</c>'s token file checked by the launcher before any rank starts, so that a malformed file is bad input
/// (exit 2, one line naming it) and not a rank that fails mid-run: whole tokens of <c>--data-bytes</c> each, at least one
/// sample (seq + 1 tokens), and every token the run reads inside the model's vocabulary.
/// </summary>
public static class TokenFileCheck
{
    /// <summary>Bytes read at a time while looking for tokens outside the vocabulary.</summary>
    private const int Chunk = 1 << 20;

    /// <summary>Refuses a token file the ranks could not train on.</summary>
    /// <param name="samples">Samples the run reads from the start (steps · gbs): sample i starts at token i·seq, so
    /// these read the first samples·seq + 1 tokens (the whole file when they wrap around it).</param>
    /// <exception cref="InputException">The file is unreadable, not whole tokens, shorter than a sample, or holds a token
    /// outside the vocabulary among those read.</exception>
    public static void Check(string path, int bytesPerToken, int seq, int vocab, long samples)
    {
        try
        {
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
            long length = stream.Length;
            if (length % bytesPerToken != 0)
                throw new InputException($"--data: '{path}' is {length} bytes, not a whole number of {bytesPerToken}-byte tokens (--data-bytes {bytesPerToken})");
            long count = length / bytesPerToken;
            if (count < seq + 1L)
                throw new InputException($"--data: '{path}' holds {count} tokens, fewer than one sample of seq + 1 = {seq + 1L}");
            long read = samples > (count - 1) / seq ? count : Math.Min(count, samples * seq + 1);
            Scan(stream, path, bytesPerToken, vocab, read);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InputException($"--data: cannot read '{path}': {e.Message.Split('\n')[0].Trim()}");
        }
    }

    /// <summary>Reads the first <paramref name="tokens"/> tokens and refuses the first one outside the vocabulary.</summary>
    private static void Scan(FileStream stream, string path, int bytesPerToken, int vocab, long tokens)
    {
        var buffer = new byte[Chunk];
        long position = 0;
        while (position < tokens)
        {
            int want = (int)Math.Min(Chunk / bytesPerToken, tokens - position);
            stream.ReadExactly(buffer, 0, want * bytesPerToken);
            var bytes = buffer.AsSpan(0, want * bytesPerToken);
            // Token files are little-endian, as this machine (nanoGPT writes them with numpy on x86).
            int bad = bytesPerToken == 2
                ? MemoryMarshal.Cast<byte, ushort>(bytes).IndexOfAnyExceptInRange((ushort)0, (ushort)Math.Min(vocab - 1, ushort.MaxValue))
                : MemoryMarshal.Cast<byte, uint>(bytes).IndexOfAnyExceptInRange(0u, (uint)(vocab - 1));
            if (bad >= 0)
            {
                long token = bytesPerToken == 2 ? MemoryMarshal.Cast<byte, ushort>(bytes)[bad] : MemoryMarshal.Cast<byte, uint>(bytes)[bad];
                throw new InputException($"--data: '{path}' holds token {token} at position {position + bad}, outside the vocabulary of {vocab} (--data-bytes {bytesPerToken})");
            }
            position += want;
        }
    }
}
