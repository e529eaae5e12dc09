using System.IO.MemoryMappedFiles;

namespace Planner.Executor.Training;

/// <summary>Token sequences indexed by global sample number, so every parallel layout sees the same global batch.</summary>
public interface ITokenSource : IDisposable
{
    /// <summary>Fills <paramref name="tokens"/> (seq + 1 values: inputs and the next-token targets) for one sample.</summary>
    void Sample(long index, Span<long> tokens);
}

/// <summary>Deterministic synthetic tokens: a hash of (seed, sample, position) modulo the vocabulary.</summary>
public sealed class SyntheticTokens(int vocab, ulong seed) : ITokenSource
{
    /// <inheritdoc />
    public void Sample(long index, Span<long> tokens)
    {
        for (int t = 0; t < tokens.Length; t++)
        {
            ulong x = seed ^ ((ulong)index * 0x9E3779B97F4A7C15UL) ^ ((ulong)t * 0xC2B2AE3D27D4EB4FUL);
            x ^= x >> 33;
            x *= 0xFF51AFD7ED558CCDUL;
            x ^= x >> 33;
            tokens[t] = (long)(x % (ulong)vocab);
        }
    }

    /// <inheritdoc />
    public void Dispose() { }
}

/// <summary>
/// A flat token file (nanoGPT's .bin: little-endian uint16 or uint32 tokens, no header) read by memory mapping;
/// sample i starts at token i·seq, wrapping around the file.
/// </summary>
public sealed class TokenFile : ITokenSource
{
    private readonly MemoryMappedFile _file;
    private readonly MemoryMappedViewAccessor _view;
    private readonly int _width;
    private readonly long _count;
    private readonly int _seq;

    /// <summary>Opens a token file.</summary>
    public TokenFile(string path, int seq, int bytesPerToken = 2, int? vocab = null)
    {
        if (bytesPerToken is not (2 or 4))
            throw new ArgumentException("token files hold uint16 (2 bytes) or uint32 (4 bytes) tokens");
        long length = new FileInfo(path).Length;
        _count = length / bytesPerToken;
        if (_count < seq + 1)
            throw new ArgumentException($"{path}: {_count} tokens, fewer than one sequence of {seq + 1}");
        _file = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        _view = _file.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
        _width = bytesPerToken;
        _seq = seq;
        Vocab = vocab;
    }

    /// <summary>The model's vocabulary, if given: larger tokens are an error.</summary>
    public int? Vocab { get; }

    /// <inheritdoc />
    public void Sample(long index, Span<long> tokens)
    {
        long start = index * _seq % (_count - tokens.Length + 1);
        for (int t = 0; t < tokens.Length; t++)
        {
            long pos = (start + t) * _width;
            long v = _width == 2 ? _view.ReadUInt16(pos) : _view.ReadUInt32(pos);
            if (Vocab is int vocab && v >= vocab)
                throw new InvalidDataException($"token {v} at position {start + t} is outside the vocabulary of {vocab}");
            tokens[t] = v;
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        _view.Dispose();
        _file.Dispose();
    }
}
