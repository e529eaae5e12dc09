using System.Globalization;

namespace Planner.Cli.Export;

/// <summary>The Megatron-LM command line being built: flags in order (each with its value, or null for a switch) and
/// the comment lines that go before them.</summary>
internal sealed class MegatronArgs
{
    /// <summary>Flags in the order they are printed.</summary>
    public List<(string Flag, string? Value)> Args { get; } = [];

    /// <summary>Comment lines, printed before the flags.</summary>
    public List<string> Notes { get; } = [];

    /// <summary>A flag with an integer value.</summary>
    public void Arg(string flag, long value) => Args.Add((flag, value.ToString(CultureInfo.InvariantCulture)));

    /// <summary>A flag with a number printed with up to four decimals (a fraction, a capacity factor).</summary>
    public void Number(string flag, double value) => Args.Add((flag, value.ToString("0.####", CultureInfo.InvariantCulture)));

    /// <summary>A switch, or a flag with a value already spelled as Megatron parses it.</summary>
    public void Flag(string flag, string? value = null) => Args.Add((flag, value));

    /// <summary>A comment line.</summary>
    public void Note(string note) => Notes.Add(note);
}
