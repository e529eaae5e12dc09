using System.Text;

namespace Planner.Executor.Training;

/// <summary>
/// A checkpoint directory: one <c>step-N</c> folder per checkpoint (N the steps done, eight digits), complete once
/// its <c>manifest.json</c> is in place, and <c>run.json</c> naming the run that writes there. Every file is written
/// under a temporary name, flushed to the disk and renamed into place, so that a crash leaves either the old file or
/// the whole new one.
/// </summary>
public static class CheckpointFolders
{
    private const string Prefix = "step-";

    /// <summary>The file naming the run whose checkpoints a directory holds.</summary>
    public const string RunFile = "run.json";

    /// <summary>The folder of the checkpoint after <paramref name="step"/> steps.</summary>
    public static string Of(string directory, int step) => Path.Combine(directory, $"{Prefix}{step:D8}");

    /// <summary>Every checkpoint folder in <paramref name="directory"/> by steps done, complete or not.</summary>
    public static List<(int Step, string Folder, bool Complete)> All(string directory)
    {
        if (!Directory.Exists(directory))
            return [];
        return Directory.GetDirectories(directory, Prefix + "*")
            .Select(f => (Ok: int.TryParse(Path.GetFileName(f)[Prefix.Length..], out int s), Step: s, Folder: f))
            .Where(x => x.Ok)
            .Select(x => (x.Step, x.Folder, File.Exists(Path.Combine(x.Folder, CheckpointManifest.FileName))))
            .OrderBy(x => x.Step).ToList();
    }

    /// <summary>The folder of the latest complete checkpoint, or null: a folder without its manifest (a checkpoint
    /// cut short) is never picked.</summary>
    public static string? Latest(string directory) => All(directory).LastOrDefault(x => x.Complete).Folder;

    /// <summary>Keeps the newest <paramref name="keep"/> complete checkpoints; removes older ones and every incomplete
    /// one older than the newest complete one (a later incomplete one may be being written).</summary>
    public static void Prune(string directory, int keep)
    {
        var all = All(directory);
        var complete = all.Where(x => x.Complete).ToList();
        if (complete.Count == 0)
            return;
        int newest = complete[^1].Step;
        var kept = complete.TakeLast(keep).Select(x => x.Step).ToHashSet();
        foreach (var (step, folder, _) in all)
            if (step < newest && !kept.Contains(step))
                Directory.Delete(folder, recursive: true);
    }

    /// <summary>The run id in <paramref name="directory"/>'s run file, or null when it has none.</summary>
    public static string? RunId(string directory)
    {
        string path = Path.Combine(directory, RunFile);
        if (!File.Exists(path))
            return null;
        try
        {
            using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(path));
            return doc.RootElement.TryGetProperty("run_id", out var id) ? id.GetString() : null;
        }
        catch (System.Text.Json.JsonException)
        {
            return null;
        }
    }

    /// <summary>Writes the run file naming run <paramref name="runId"/>.</summary>
    public static void Claim(string directory, string runId)
    {
        Directory.CreateDirectory(directory);
        WriteAtomically(Path.Combine(directory, RunFile), Encoding.UTF8.GetBytes($$"""{"run_id": "{{runId}}"}""" + "\n"));
    }

    /// <summary>Removes what a checkpoint directory of another run holds of it: its checkpoint folders and run file
    /// (other files stay).</summary>
    public static void Clear(string directory)
    {
        foreach (var (_, folder, _) in All(directory))
            Directory.Delete(folder, recursive: true);
        File.Delete(Path.Combine(directory, RunFile));
    }

    /// <summary>Writes <paramref name="path"/> whole or not at all: a temporary file, flushed to the disk, renamed.</summary>
    public static void WriteAtomically(string path, byte[] bytes) => WriteAtomically(path, s => s.Write(bytes));

    /// <summary>Writes <paramref name="path"/> through <paramref name="write"/> whole or not at all.</summary>
    public static void WriteAtomically(string path, Action<FileStream> write)
    {
        string temporary = path + ".tmp";
        using (var stream = new FileStream(temporary, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            write(stream);
            stream.Flush(flushToDisk: true);
        }
        File.Move(temporary, path, overwrite: true);
    }
}
