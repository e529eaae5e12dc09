using System.Globalization;
using Planner.CostModel.Specs;

namespace Planner.CostModel.Training;

/// <summary>What a batch schedule file counts its changes in.</summary>
public enum ScheduleUnit { Samples, Tokens }

/// <summary>From <paramref name="From"/> samples or tokens consumed on, the global batch is <paramref name="Gbs"/>.</summary>
public sealed record BatchChange(double From, int Gbs);

/// <summary>
/// A global batch that changes as training goes, given as a file (<c>--batch-schedule</c>, docs/run-level.md): what an
/// adaptive batch size controller driven by the gradient noise scale (McCandlish et al. 2018, "An Empirical Model of
/// Large-Batch Training") decided, or any other. The batch holds from each change to the next; the last change's
/// batch, the plan's gbs, holds to the end of the run.
/// </summary>
public sealed record BatchSchedule(ScheduleUnit Unit, IReadOnlyList<BatchChange> Changes, string Source)
{
    /// <summary>The largest file read.</summary>
    public const int MaxChanges = 100_000;

    /// <summary>The batch at <paramref name="consumed"/> samples or tokens (as <see cref="Unit"/> counts), and how
    /// many more until it changes (infinite after the last change).</summary>
    public int BatchAt(double consumed, out double left)
    {
        int i = Changes.Count - 1;
        while (i > 0 && Changes[i].From > consumed + 1e-9 * Math.Max(1, consumed))
            i--;
        left = i + 1 < Changes.Count ? Math.Max(0, Changes[i + 1].From - consumed) : double.PositiveInfinity;
        return Changes[i].Gbs;
    }

    /// <summary>Parses a schedule: a header <c>samples,gbs</c> or <c>tokens,gbs</c>, then one change per line, the first
    /// at 0, each later one further on; blank lines and lines starting with <c>#</c> are skipped. Anything else is an
    /// <see cref="InputException"/> naming <paramref name="source"/> and its line.</summary>
    public static BatchSchedule Parse(string text, string source)
    {
        ScheduleUnit? unit = null;
        var changes = new List<BatchChange>();
        var lines = text.Split('\n');
        for (int n = 0; n < lines.Length; n++)
        {
            string line = lines[n].Trim();
            if (line.Length == 0 || line.StartsWith('#'))
                continue;
            string at = $"{source} line {n + 1}";
            var cells = line.Split(',', StringSplitOptions.TrimEntries);
            if (unit is null)
            {
                unit = cells is ["samples", "gbs"] ? ScheduleUnit.Samples : cells is ["tokens", "gbs"] ? ScheduleUnit.Tokens
                    : throw new InputException("batch_schedule", $"{at}: the header must be 'samples,gbs' or 'tokens,gbs', not '{Shorten(line)}'");
                continue;
            }
            if (cells.Length != 2 || !double.TryParse(cells[0], NumberStyles.Float, CultureInfo.InvariantCulture, out double from) || !double.IsFinite(from)
                || !int.TryParse(cells[1], NumberStyles.Integer, CultureInfo.InvariantCulture, out int gbs))
                throw new InputException("batch_schedule", $"{at}: '{Shorten(line)}' is not a number of {Name(unit.Value)} and a whole global batch");
            if (gbs < 1 || gbs > 100_000_000)
                throw new InputException("batch_schedule", $"{at}: the global batch {gbs} must be from 1 to 100000000");
            if (changes.Count == 0 ? from != 0 : from <= changes[^1].From)
                throw new InputException("batch_schedule", changes.Count == 0
                    ? $"{at}: the first change must be at 0 {Name(unit.Value)}, not {cells[0]}"
                    : $"{at}: {cells[0]} {Name(unit.Value)} is not after the change before ({changes[^1].From:R})");
            if (changes.Count == MaxChanges)
                throw new InputException("batch_schedule", $"{source}: more than {MaxChanges} changes");
            changes.Add(new BatchChange(from, gbs));
        }
        if (unit is null || changes.Count == 0)
            throw new InputException("batch_schedule", $"{source}: no changes (a header 'samples,gbs' or 'tokens,gbs' and a line '0,BATCH' at least)");
        return new BatchSchedule(unit.Value, changes, source);
    }

    private static string Name(ScheduleUnit u) => u == ScheduleUnit.Samples ? "samples" : "tokens";

    private static string Shorten(string s) => s.Length <= 40 ? s : s[..40] + "...";
}
