using System.Text.Json;
using System.Text.Json.Serialization;

namespace Planner.Executor.Training;

/// <summary>The parallel layout a checkpoint was written on (what a resume on another layout reshards from).</summary>
public sealed record CheckpointLayout(int Tp, int Pp, int Dp, int Cp, int Ep, int Zero, int Vpp, int World);

/// <summary>
/// A checkpoint's manifest (<c>manifest.json</c> in its <c>step-N</c> folder), written by rank 0 after every rank's
/// shard is in place: the checkpoint is complete exactly when it exists. It names the run (<see cref="RunId"/>, kept
/// by every resume), what the run trained (the plan copied beside it as <c>plan.json</c>, the model, the token file,
/// the flags that shape the losses) and where it stopped (<see cref="Step"/>: the steps done, <see cref="Samples"/>:
/// the samples read, the loss scaler's state).
/// </summary>
/// <param name="Format">The checkpoint format's revision (<see cref="CurrentFormat"/>).</param>
/// <param name="Step">Optimizer steps done: the resumed run's first step.</param>
/// <param name="PlanFile">The plan file the writing invocation read (a resume without --plan read the copy; the copy
/// beside the manifest, <see cref="PlanCopy"/>, is what a resume reads).</param>
/// <param name="Model">The plan's model (a name, or the absolute path of its config file).</param>
/// <param name="Data">The token file (absolute), or null for synthetic tokens.</param>
/// <param name="Optimizer">The plan's optimizer.</param>
/// <param name="Scaler">The dynamic loss scale's state, or null without loss scaling.</param>
/// <param name="Samples">Samples of the global batch read so far (the data position: step · gbs).</param>
/// <param name="Shards">Each rank's shard file, by rank.</param>
public sealed record CheckpointManifest(int Format, string RunId, int Step, string PlanFile, string Model, string? Data, int DataBytes, ulong Seed,
    double Lr, double AdamEps, double? LossScale, CheckpointLayout? Layout = null, string Optimizer = "", LossScalerState? Scaler = null, long Samples = 0,
    IReadOnlyList<string>? Shards = null, string Created = "")
{
    /// <summary>The format this code writes and reads.</summary>
    public const int CurrentFormat = 1;

    /// <summary>The manifest's file name in a checkpoint folder.</summary>
    public const string FileName = "manifest.json";

    /// <summary>The plan's copy in a checkpoint folder (its model path made absolute).</summary>
    public const string PlanCopy = "plan.json";

    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    };

    /// <summary>The manifest as JSON.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, Json);

    /// <summary>Reads the manifest of checkpoint folder <paramref name="folder"/>.</summary>
    /// <exception cref="InvalidDataException">It is not a manifest of this format.</exception>
    public static CheckpointManifest Read(string folder)
    {
        string path = Path.Combine(folder, FileName);
        CheckpointManifest? m;
        try
        {
            m = JsonSerializer.Deserialize<CheckpointManifest>(File.ReadAllText(path), Json);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not a checkpoint manifest ({e.Message.Split('\n')[0]})");
        }
        if (m is null || m.Format != CurrentFormat || m.Shards is null || m.Layout is null)
            throw new InvalidDataException($"{path}: not a checkpoint manifest of format {CurrentFormat}");
        return m;
    }
}
