using System.Text;
using FsCheck;
using FsCheck.Fluent;

namespace Planner.Cli.Tests.Fuzz;

/// <summary>
/// Mutations of any file as bytes: truncation, random bytes inserted or overwritten, other encodings (UTF-16, UTF-32,
/// a byte-order mark, Latin-1, invalid UTF-8), an empty or blank file, deep nesting, and wholly random bytes.
/// </summary>
public static class ByteMutations
{
    /// <summary>A mutation of <paramref name="valid"/>'s bytes; <paramref name="open"/> and <paramref name="close"/>
    /// nest the format (JSON: "[" and "]"; YAML: "- " lines or "[" and "]").</summary>
    public static Gen<FuzzInput> Of(string valid, string open = "[", string close = "]")
    {
        byte[] bytes = Encoding.UTF8.GetBytes(valid);
        return Gen.OneOf(
            Gen.Choose(0, bytes.Length).Select(n => new FuzzInput($"truncated at {n}", bytes[..n])),
            Gen.Zip(Gen.Choose(0, bytes.Length), RandomBytes(1, 8)).Select(t => new FuzzInput($"{t.Item2.Length} random bytes inserted at {t.Item1}",
                [.. bytes[..t.Item1], .. t.Item2, .. bytes[t.Item1..]])),
            Gen.Zip(Gen.Choose(0, Math.Max(0, bytes.Length - 1)), Gen.Choose(0, 255)).Select(t => Overwrite(bytes, t.Item1, (byte)t.Item2)),
            Gen.Elements(Encodings(valid)),
            Gen.Elements(new FuzzInput("empty", []), FuzzInput.Text("blank", " \n\t\n"), FuzzInput.Text("a NUL byte", "\0")),
            Gen.Choose(1, 4000).Select(depth => FuzzInput.Text($"nested {depth} deep",
                string.Concat(Enumerable.Repeat(open, depth)) + "1" + string.Concat(Enumerable.Repeat(close, depth)))),
            RandomBytes(0, 300).Select(b => new FuzzInput("random bytes", b)),
            RandomText().Select(t => FuzzInput.Text("random text", t)));
    }

    /// <summary>Printable text with the characters formats give meaning to.</summary>
    public static Gen<string> RandomText() =>
        Gen.Elements("{}[]:,\"'\\\n -#&*!|>%@`0123456789.eE+-abcxyzé\t".ToCharArray()).ArrayOf().Select(c => new string(c));

    private static Gen<byte[]> RandomBytes(int min, int max) =>
        Gen.Choose(min, max).SelectMany(n => Gen.Choose(0, 255).ArrayOf(n)).Select(a => a.Select(v => (byte)v).ToArray());

    private static FuzzInput Overwrite(byte[] bytes, int at, byte value)
    {
        var copy = (byte[])bytes.Clone();
        if (copy.Length > 0)
            copy[at] = value;
        return new FuzzInput($"byte {at} set to 0x{value:X2}", copy);
    }

    private static FuzzInput[] Encodings(string valid) =>
    [
        new("UTF-16", Encoding.Unicode.GetPreamble().Concat(Encoding.Unicode.GetBytes(valid)).ToArray()),
        new("UTF-16 without a byte-order mark", Encoding.BigEndianUnicode.GetBytes(valid)),
        new("UTF-32", Encoding.UTF32.GetPreamble().Concat(Encoding.UTF32.GetBytes(valid)).ToArray()),
        new("UTF-8 with a byte-order mark", Encoding.UTF8.GetPreamble().Concat(Encoding.UTF8.GetBytes(valid)).ToArray()),
        new("Latin-1 with an accented letter", Encoding.Latin1.GetBytes("é" + valid)),
        new("invalid UTF-8 (0xFF 0xFE 0xC0)", new byte[] { 0xFF, 0xFE, 0xC0 }.Concat(Encoding.UTF8.GetBytes(valid)).ToArray()),
    ];
}
