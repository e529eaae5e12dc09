using FsCheck;
using FsCheck.Fluent;

namespace Planner.Cli.Tests.Fuzz;

/// <summary>
/// Token files (nanoGPT's flat little-endian uint16 or uint32 tokens): valid ones of any length, some tokens set outside
/// the vocabulary, lengths that are not whole tokens, truncated or empty files, and random bytes.
/// </summary>
public static class TokenMutations
{
    /// <summary>Token files for a model of <paramref name="vocab"/> tokens.</summary>
    public static Gen<FuzzInput> Of(int vocab)
    {
        var tokens = Gen.Choose(0, vocab - 1).ArrayOf();
        return Gen.OneOf(
            tokens.Select(t => new FuzzInput($"{t.Length} valid uint16 tokens", Uint16(t))),
            Gen.Zip(tokens, Gen.Choose(0, 65535).NonEmptyListOf()).Select(t => OutOfVocabulary(t.Item1, t.Item2, vocab)),
            Gen.Zip(tokens, Gen.Choose(1, 3)).Select(t => new FuzzInput($"{t.Item1.Length} tokens and {t.Item2} stray bytes",
                [.. Uint16(t.Item1), .. new byte[t.Item2]])),
            ByteMutations.Of(string.Concat(Enumerable.Range(0, 64).Select(i => (char)(' ' + i % 90)))));
    }

    private static byte[] Uint16(int[] tokens) => tokens.SelectMany(t => new[] { (byte)t, (byte)(t >> 8) }).ToArray();

    private static FuzzInput OutOfVocabulary(int[] tokens, IReadOnlyList<int> values, int vocab)
    {
        var copy = tokens.Length > 0 ? (int[])tokens.Clone() : new int[40];
        foreach (var v in values)
            copy[(v * 7919) % copy.Length] = v;
        return new FuzzInput($"{copy.Length} tokens, {values.Count(v => v >= vocab)} of them outside the vocabulary", Uint16(copy));
    }
}
