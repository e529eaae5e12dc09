namespace Planner.Cli.Commands;

/// <summary>A rank process failed; the message names the rank and its error.</summary>
/// <param name="BadInput">The rank refused its input (exit code 2): the launcher exits 2 too, and does not restart.</param>
public sealed class RankFailedException(string message, bool BadInput = false) : Exception(message)
{
    /// <summary>The rank refused its input (exit code 2).</summary>
    public bool BadInput { get; } = BadInput;
}
