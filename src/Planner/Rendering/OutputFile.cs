namespace Planner.Cli.Rendering;

/// <summary>A file a command writes for the user (a figure, a trace): written under a temporary name beside it and
/// renamed over it once complete, so that a failure leaves neither a half file nor the temporary one.</summary>
public static class OutputFile
{
    /// <summary>Replaces <paramref name="path"/> with what <paramref name="write"/> writes to the temporary path it is
    /// given (ending in <paramref name="suffix"/>, for tools that read the format from the name).</summary>
    public static void Replace(string path, Action<string> write, string suffix = ".tmp")
    {
        string full = Path.GetFullPath(path);
        string temp = Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.{Environment.ProcessId}{suffix}");
        try
        {
            write(temp);
            File.Move(temp, full, overwrite: true);
        }
        finally
        {
            if (File.Exists(temp))
                File.Delete(temp);
        }
    }
}
