namespace Planner.CostModel.Specs;

/// <summary>
/// Bad user input: a missing file, a malformed document, a missing or unknown key, an out-of-range value.
/// The message is one line that names the file, key or flag; the CLI prints it and exits with code 2.
/// </summary>
public sealed class InputException(string message) : Exception(message);
