using System.Text.Json.Nodes;
using FsCheck;
using FsCheck.Fluent;

namespace Planner.Cli.Tests.Fuzz;

/// <summary>
/// Mutations of a valid JSON file (a model config, a plan, kept measurements): a key dropped, duplicated or added, a value
/// replaced by another type, an edge number or a token that is not JSON; the byte mutations; and random JSON documents.
/// </summary>
public static class JsonMutations
{
    private const string Mark = "\u0001fuzz\u0001";

    /// <summary>The mutations of <paramref name="valid"/>, a JSON object.</summary>
    public static Gen<FuzzInput> Of(string valid)
    {
        var paths = Paths(JsonNode.Parse(valid)!, []).ToArray();
        var path = Gen.Elements(paths);
        return Gen.Frequency(
            (2, path.Select(p => Edit(valid, p, "dropped", (parent, key) => Remove(parent, key)))),
            (6, path.SelectMany(p => Values.Json(NumberAt(valid, p)).Select(v => Replace(valid, p, v)))),
            (1, path.Where(p => p.Length == 1).Select(p => Duplicate(valid, p[0]))),
            (1, Gen.Zip(Gen.Elements("extra_key", "Hidden_Size", "tp ", ""), Values.Json()).Select(t =>
                FuzzInput.Text($"key '{t.Item1}' added", valid.Insert(valid.IndexOf('{') + 1, $"\"{t.Item1}\": {t.Item2}, ")))),
            (2, ByteMutations.Of(valid)),
            (1, RandomJson(3).Select(t => FuzzInput.Text("random JSON", t))));
    }

    /// <summary>Every member and array element, as the keys and indexes that lead to it.</summary>
    private static IEnumerable<string[]> Paths(JsonNode node, string[] at)
    {
        var children = node switch
        {
            JsonObject o => o.Select(kv => (kv.Key, kv.Value)),
            JsonArray a => a.Select((v, i) => ($"#{i}", v)),
            _ => [],
        };
        foreach (var (key, value) in children)
        {
            string[] path = [.. at, key];
            yield return path;
            if (value is not null && at.Length < 3)
                foreach (var deeper in Paths(value, path))
                    yield return deeper;
        }
    }

    private static double? NumberAt(string valid, string[] path) =>
        Find(JsonNode.Parse(valid)!, path) is JsonValue v && v.TryGetValue(out double d) ? d : null;

    private static JsonNode? Find(JsonNode node, string[] path)
    {
        JsonNode? n = node;
        foreach (var key in path)
            n = key.StartsWith('#') ? n?.AsArray()[int.Parse(key[1..])] : n?.AsObject()[key];
        return n;
    }

    private static FuzzInput Edit(string valid, string[] path, string what, Action<JsonNode, string> edit)
    {
        var root = JsonNode.Parse(valid)!;
        edit(Find(root, path[..^1])!, path[^1]);
        return FuzzInput.Text($"'{string.Join('.', path)}' {what}", root.ToJsonString());
    }

    private static void Remove(JsonNode parent, string key)
    {
        if (key.StartsWith('#'))
            parent.AsArray().RemoveAt(int.Parse(key[1..]));
        else
            parent.AsObject().Remove(key);
    }

    /// <summary>The value at <paramref name="path"/> replaced by raw text (which may not be JSON).</summary>
    private static FuzzInput Replace(string valid, string[] path, string raw)
    {
        var marked = Edit(valid, path, $"set to {Short(raw)}", (parent, key) =>
        {
            if (key.StartsWith('#'))
                parent.AsArray()[int.Parse(key[1..])] = Mark;
            else
                parent.AsObject()[key] = Mark;
        });
        string text = System.Text.Encoding.UTF8.GetString(marked.Bytes).Replace(JsonValue.Create(Mark).ToJsonString(), raw);
        return FuzzInput.Text(marked.How, text);
    }

    private static FuzzInput Duplicate(string valid, string key)
    {
        var root = JsonNode.Parse(valid)!.AsObject();
        string again = $"\"{key}\": {root[key]?.ToJsonString() ?? "null"}, ";
        return FuzzInput.Text($"'{key}' given twice", valid.Insert(valid.IndexOf('{') + 1, again));
    }

    private static string Short(string raw) => raw.Length <= 30 ? raw : raw[..27] + "...";

    /// <summary>A random JSON document of at most <paramref name="depth"/> levels.</summary>
    public static Gen<string> RandomJson(int depth)
    {
        var scalar = Values.Json();
        if (depth == 0)
            return scalar;
        var inner = RandomJson(depth - 1);
        return Gen.Frequency(
            (2, scalar),
            (1, inner.ListOf().Select(l => "[" + string.Join(", ", l) + "]")),
            (2, Gen.Zip(Gen.Elements("a", "n_layer", "hidden_size", "tp", "gemm", "model", ""), inner).ListOf()
                .Select(l => "{" + string.Join(", ", l.Select(kv => $"\"{kv.Item1}\": {kv.Item2}")) + "}")));
    }
}
