using FsCheck;
using FsCheck.Fluent;

namespace Planner.Cli.Tests.Fuzz;

/// <summary>
/// Mutations of line-structured text: YAML's <c>key: value</c> lines and CSV's rows of cells. A line (key or row) dropped
/// or given twice, a value or cell replaced by an edge number or text of another kind, a line's indentation changed, a
/// column dropped or doubled; plus the byte mutations.
/// </summary>
public static class LineMutations
{
    /// <summary>The mutations of a valid YAML mapping.</summary>
    public static Gen<FuzzInput> Yaml(string valid)
    {
        var lines = valid.Split('\n');
        var index = Gen.Choose(0, lines.Length - 1);
        var valued = Enumerable.Range(0, lines.Length).Where(i => lines[i].Contains(": ") && lines[i].Split(": ", 2)[1].Trim().Length > 0).ToArray();
        return Gen.Frequency(
            (2, index.Select(i => With(lines, $"line {i} dropped", l => l.RemoveAt(i)))),
            (1, index.Select(i => With(lines, $"line {i} given twice", l => l.Insert(i, l[i])))),
            (6, Gen.Elements(valued).SelectMany(i => Values.Text(Number(lines[i].Split(": ", 2)[1])).Select(v =>
                With(lines, $"line {i}'s value set to {v}", l => l[i] = l[i].Split(": ", 2)[0] + ": " + v)))),
            (1, Gen.Zip(index, Gen.Elements("", "  ", "    ", "\t", " ")).Select(t =>
                With(lines, $"line {t.Item1} indented '{t.Item2}'", l => l[t.Item1] = t.Item2 + l[t.Item1].TrimStart()))),
            (1, Gen.Zip(index, Gen.Elements("extra_key: 1", "---", "- 1", "? x", "&a b: *a", "gpu: *nothing", "<<: {x: 1}", "nodes: [1, 2]")).Select(t =>
                With(lines, $"'{t.Item2}' inserted at line {t.Item1}", l => l.Insert(t.Item1, t.Item2)))),
            (2, ByteMutations.Of(valid)),
            (1, Gen.Choose(1, 3000).Select(n => FuzzInput.Text($"a value nested {n} deep", "name: x\ngpu: " + new string('[', n) + new string(']', n) + "\n"))),
            (1, ByteMutations.RandomText().Select(t => FuzzInput.Text("random text", t))));
    }

    /// <summary>The mutations of a valid CSV file with a header row.</summary>
    public static Gen<FuzzInput> Csv(string valid)
    {
        var rows = valid.TrimEnd('\n').Split('\n').Select(r => r.Split(',').ToList()).ToList();
        var row = Gen.Choose(0, rows.Count - 1);
        var cell = row.SelectMany(r => Gen.Choose(0, rows[r].Count - 1).Select(c => (Row: r, Cell: c)));
        var column = Gen.Choose(0, rows[0].Count - 1);
        return Gen.Frequency(
            (2, row.Select(r => Cells(rows, $"row {r} dropped", t => t.RemoveAt(r)))),
            (1, row.Select(r => Cells(rows, $"row {r} given twice", t => t.Insert(r, [.. t[r]])))),
            (6, cell.SelectMany(c => Values.Text(Number(rows[c.Row][c.Cell])).Select(v =>
                Cells(rows, $"cell {c.Row},{c.Cell} set to {v}", t => t[c.Row][c.Cell] = v)))),
            (1, column.Select(c => Cells(rows, $"column {c} dropped", t => t.ForEach(r => { if (c < r.Count) r.RemoveAt(c); })))),
            (1, column.Select(c => Cells(rows, $"column {c} given twice", t => t.ForEach(r => { if (c < r.Count) r.Insert(c, r[c]); })))),
            (1, row.Select(r => Cells(rows, $"a cell added to row {r}", t => t[r].Add("1")))),
            (1, Gen.Constant(Cells(rows, "the header only", t => t.RemoveRange(1, t.Count - 1)))),
            (2, ByteMutations.Of(valid)),
            (1, ByteMutations.RandomText().Select(t => FuzzInput.Text("random text", t))));
    }

    private static double? Number(string text) =>
        double.TryParse(text.Trim(), System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double v) ? v : null;

    private static FuzzInput With(string[] lines, string how, Action<List<string>> edit)
    {
        var copy = lines.ToList();
        edit(copy);
        return FuzzInput.Text(how, string.Join('\n', copy));
    }

    private static FuzzInput Cells(List<List<string>> rows, string how, Action<List<List<string>>> edit)
    {
        var copy = rows.Select(r => r.ToList()).ToList();
        edit(copy);
        return FuzzInput.Text(how, string.Join('\n', copy.Select(r => string.Join(',', r))) + "\n");
    }
}
