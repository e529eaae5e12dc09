namespace Planner.CostModel.Specs;

/// <summary>
/// Bad user input: a missing file, a malformed document, a missing or unknown key, an out-of-range value.
/// The message is one line that names the file, key or flag; the CLI prints it and exits with code 2.
/// </summary>
public sealed class InputException : Exception
{
    /// <summary>A problem whose message names its file or key itself.</summary>
    public InputException(string message)
        : base(message) => Reason = message;

    /// <summary>A problem with an input the cost model knows by its key (<c>model</c>, <c>cluster</c>, <c>plan</c>,
    /// <c>stack</c>): the caller names it as the user gave it (the CLI by its flag, <c>--model</c>).</summary>
    public InputException(string field, string reason)
        : base($"{field}: {reason}") => (Field, Reason) = (field, reason);

    /// <summary>The input's key (or where the input was named, as a file's row), or null when the message names its
    /// source itself.</summary>
    public string? Field { get; }

    /// <summary>What is wrong, without the key.</summary>
    public string Reason { get; }
}
