using System.CommandLine;
using System.Globalization;
using Planner.CostModel.Specs;
using Planner.CostModel.Training;

namespace Planner.Cli.Commands;

/// <summary>The flags of a whole run beside <c>--tokens</c> (docs/run-level.md): schedules and async checkpointing.</summary>
public sealed class TrainingFlags
{
    /// <summary>--batch-rampup</summary>
    public Option<string?> BatchRampup { get; } = new("--batch-rampup")
    { Description = "With --tokens: start,increment,samples: the batch grows from start by increment until gbs over samples (Megatron's --rampup-batch-size)" };
    /// <summary>--batch-schedule</summary>
    public Option<string?> BatchSchedule { get; } = new("--batch-schedule")
    { Description = "With --tokens: a CSV file 'samples,gbs' or 'tokens,gbs', one batch change per line from 0 (e.g. an adaptive batch from the gradient noise scale); its last batch is --gbs" };
    /// <summary>--seq-warmup</summary>
    public Option<string?> SeqWarmup { get; } = new("--seq-warmup")
    { Description = "With --tokens: start,steps: the sequence length grows linearly from start to --seq over steps steps" };
    /// <summary>--async-checkpoint</summary>
    public Option<bool> AsyncCheckpoint { get; } = new("--async-checkpoint")
    { Description = "With --tokens: write checkpoints in the background (training pauses only for the snapshot to host memory)" };

    /// <summary>Adds the flags to a command.</summary>
    public void AddTo(Command c)
    {
        c.Options.Add(BatchRampup);
        c.Options.Add(BatchSchedule);
        c.Options.Add(SeqWarmup);
        c.Options.Add(AsyncCheckpoint);
    }

    /// <summary>The run asked for, or null without <paramref name="tokens"/> (the flags then are an error).</summary>
    public TrainingRequest? Read(ParseResult r, double? tokens)
    {
        string? ramp = r.GetValue(BatchRampup), warm = r.GetValue(SeqWarmup), schedule = r.GetValue(BatchSchedule);
        bool async = r.GetValue(AsyncCheckpoint);
        if (tokens is null)
        {
            string? given = ramp is not null ? "--batch-rampup" : schedule is not null ? "--batch-schedule" : warm is not null ? "--seq-warmup"
                : async ? "--async-checkpoint" : null;
            return given is null ? null : throw new InputException($"{given}: prices a whole run; give --tokens too");
        }
        if (!double.IsFinite(tokens.Value) || tokens <= 0)
            throw new InputException($"--tokens: {tokens} must be a positive number of tokens");
        if (ramp is not null && schedule is not null)
            throw new InputException("--batch-schedule: give it or --batch-rampup, not both");
        return new TrainingRequest(tokens.Value, async, ParseRampup(ramp), ParseWarmup(warm), ReadSchedule(schedule));
    }

    private static BatchSchedule? ReadSchedule(string? path)
    {
        if (path is null)
            return null;
        if (Directory.Exists(path))
            throw new InputException($"--batch-schedule: '{path}' is a directory, not a schedule file");
        if (!File.Exists(path))
            throw new InputException($"--batch-schedule: file '{path}' not found");
        try
        {
            return Planner.CostModel.Training.BatchSchedule.Parse(File.ReadAllText(path), path);
        }
        catch (IOException e)
        {
            throw new InputException($"--batch-schedule: '{path}' cannot be read: {e.Message}");
        }
        catch (UnauthorizedAccessException)
        {
            throw new InputException($"--batch-schedule: '{path}' cannot be read (permission denied)");
        }
    }

    private static BatchRampup? ParseRampup(string? text)
    {
        if (text is null)
            return null;
        var v = Numbers(text, "--batch-rampup", 3, "start,increment,samples");
        if (v[0] < 1 || v[1] < 1 || v[0] > 100_000_000 || v[1] > 100_000_000 || v[0] % 1 != 0 || v[1] % 1 != 0 || v[2] <= 0)
            throw new InputException($"--batch-rampup: '{text}' needs whole start and increment of at least 1 and positive samples");
        return new BatchRampup((int)v[0], (int)v[1], v[2]);
    }

    private static SeqWarmup? ParseWarmup(string? text)
    {
        if (text is null)
            return null;
        var v = Numbers(text, "--seq-warmup", 2, "start,steps");
        if (v[0] < 1 || v[1] < 1 || v[0] % 1 != 0 || v[1] % 1 != 0 || v[0] > 10_000_000 || v[1] > 1e9)
            throw new InputException($"--seq-warmup: '{text}' needs a whole start length and a whole number of steps, each at least 1");
        return new SeqWarmup((int)v[0], (int)v[1]);
    }

    private static double[] Numbers(string text, string flag, int count, string shape)
    {
        var parts = text.Split(',', StringSplitOptions.TrimEntries);
        var values = new double[parts.Length];
        for (int i = 0; i < parts.Length; i++)
            if (!double.TryParse(parts[i], NumberStyles.Float, CultureInfo.InvariantCulture, out values[i]) || !double.IsFinite(values[i]))
                throw new InputException($"{flag}: '{text}' is not {shape}");
        if (parts.Length != count)
            throw new InputException($"{flag}: '{text}' is not {shape}");
        return values;
    }
}
