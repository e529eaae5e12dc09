using System.Text;

namespace Planner.Cli.Tests.Fuzz;

/// <summary>One generated input file: what was done to the valid file (or "random ...") and the bytes written.</summary>
public sealed record FuzzInput(string How, byte[] Bytes)
{
    /// <summary>A text input, UTF-8 without a byte-order mark.</summary>
    public static FuzzInput Text(string how, string text) => new(how, Encoding.UTF8.GetBytes(text));

    /// <summary>FsCheck prints the failing case: what was done and the start of the bytes.</summary>
    public override string ToString()
    {
        string text = Encoding.UTF8.GetString(Bytes, 0, Math.Min(Bytes.Length, 400)).Replace("\n", "\\n");
        return $"{How} ({Bytes.Length} bytes): {text}";
    }
}
