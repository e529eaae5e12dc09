namespace Planner.Cli.Tests;

/// <summary>Files of the repository the tests read (found by walking up from the test binaries).</summary>
internal static class RepoFiles
{
    /// <summary>The repository file at <paramref name="relative"/>; a test without it fails naming it.</summary>
    public static string Find(string relative)
    {
        string path = global::Planner.Cli.Commands.ValidateCommand.RepoFile(relative);
        return File.Exists(path) ? path : throw new FileNotFoundException($"{relative} not found above {AppContext.BaseDirectory}");
    }
}
