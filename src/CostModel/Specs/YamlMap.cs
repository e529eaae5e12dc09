using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace Planner.CostModel.Specs;

/// <summary>
/// A YAML mapping read through YamlDotNet's representation model, with strict keys:
/// every key must be consumed, so a typo is an error that names the file, line and key.
/// </summary>
internal sealed class YamlMap
{
    private readonly YamlMappingNode _node;
    private readonly string _source;
    private readonly string _path;
    private readonly HashSet<string> _read = [];

    private YamlMap(YamlMappingNode node, string source, string path)
    {
        _node = node;
        _source = source;
        _path = path;
    }

    /// <summary>Parses a document whose root must be a mapping.</summary>
    public static YamlMap Parse(string text, string source)
    {
        var stream = new YamlStream();
        try
        {
            using var reader = new StringReader(text);
            stream.Load(reader);
        }
        catch (YamlException e)
        {
            throw new InputException($"{source}: invalid YAML at line {e.Start.Line}: {e.Message.Split('\n')[0]}");
        }
        catch (InvalidOperationException e)
        {
            // YamlDotNet's scanner can fail this way on some unclosed flow collections.
            throw new InputException($"{source}: invalid YAML: {e.Message.Split('\n')[0]}");
        }
        if (stream.Documents.Count == 0 || stream.Documents[0].RootNode is not YamlMappingNode root)
            throw new InputException($"{source}: expected a YAML mapping of keys");
        return new YamlMap(root, source, "");
    }

    /// <summary>The file this map came from.</summary>
    public string Source => _source;

    private string Key(string key) => _path.Length == 0 ? key : $"{_path}.{key}";

    private YamlNode? Get(string key)
    {
        _read.Add(key);
        return _node.Children.TryGetValue(new YamlScalarNode(key), out var v) ? v : null;
    }

    /// <summary>True when the key is present.</summary>
    public bool Has(string key) => _node.Children.ContainsKey(new YamlScalarNode(key));

    /// <summary>True when the key holds a mapping.</summary>
    public bool IsMap(string key) => _node.Children.TryGetValue(new YamlScalarNode(key), out var v) && v is YamlMappingNode;

    /// <summary>A required nested mapping.</summary>
    public YamlMap Map(string key) => OptionalMap(key) ?? throw Missing(key);

    /// <summary>An optional nested mapping.</summary>
    public YamlMap? OptionalMap(string key) => Get(key) switch
    {
        null => null,
        YamlMappingNode m => new YamlMap(m, _source, Key(key)),
        var n => throw new InputException($"{_source}: line {n.Start.Line}: '{Key(key)}' must be a mapping of keys"),
    };

    /// <summary>A list of mappings, or null when the key is absent.</summary>
    public IReadOnlyList<YamlMap>? OptionalMapList(string key)
    {
        var node = Get(key);
        if (node is null)
            return null;
        if (node is not YamlSequenceNode seq || seq.Children.Count == 0)
            throw new InputException($"{_source}: line {node.Start.Line}: '{Key(key)}' must be a non-empty list of mappings");
        return seq.Children.Select((c, i) => c is YamlMappingNode m
            ? new YamlMap(m, _source, $"{Key(key)}[{i}]")
            : throw new InputException($"{_source}: line {c.Start.Line}: '{Key(key)}[{i}]' must be a mapping")).ToList();
    }

    /// <summary>An optional list of strings.</summary>
    public IReadOnlyList<string>? OptionalStrings(string key)
    {
        var node = Get(key);
        if (node is null)
            return null;
        if (node is not YamlSequenceNode seq)
            throw new InputException($"{_source}: line {node.Start.Line}: '{Key(key)}' must be a list of strings");
        return seq.Children.Select((c, i) => c is YamlScalarNode sc
            ? sc.Value ?? ""
            : throw new InputException($"{_source}: line {c.Start.Line}: '{Key(key)}[{i}]' must be a string")).ToList();
    }

    /// <summary>An optional true or false.</summary>
    public bool? OptionalBool(string key) => Get(key) switch
    {
        null => null,
        YamlScalarNode { Value: "true" or "True" or "yes" } => true,
        YamlScalarNode { Value: "false" or "False" or "no" } => false,
        var n => throw new InputException($"{_source}: line {n.Start.Line}: '{Key(key)}' must be true or false"),
    };

    /// <summary>An optional value among <paramref name="allowed"/>.</summary>
    public string? OptionalChoice(string key, params string[] allowed)
    {
        var node = Get(key);
        if (node is null)
            return null;
        if (node is YamlScalarNode { Value: { } v } && Array.IndexOf(allowed, v) >= 0)
            return v;
        throw new InputException($"{_source}: line {node.Start.Line}: '{Key(key)}' must be one of: {string.Join(", ", allowed)}");
    }

    /// <summary>A required string.</summary>
    public string String(string key) => OptionalString(key) ?? throw Missing(key);

    /// <summary>An optional string.</summary>
    public string? OptionalString(string key) => Get(key) switch
    {
        null => null,
        YamlScalarNode s => s.Value,
        var n => throw new InputException($"{_source}: line {n.Start.Line}: '{Key(key)}' must be a single value"),
    };

    /// <summary>A required number within (min, max].</summary>
    public double Number(string key, double max, double min = InputLimits.Tiny) => OptionalNumber(key, max, min) ?? throw Missing(key);

    /// <summary>An optional number within (min, max].</summary>
    public double? OptionalNumber(string key, double max, double min = InputLimits.Tiny)
    {
        var node = Get(key);
        if (node is null)
            return null;
        if (node is YamlScalarNode s && double.TryParse(s.Value, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double v))
        {
            if (v > min && v <= max && double.IsFinite(v))
                return v;
            throw new InputException($"{_source}: line {node.Start.Line}: '{Key(key)}' is {s.Value}; expected a number above {min} and at most {max}");
        }
        throw new InputException($"{_source}: line {node.Start.Line}: '{Key(key)}' must be a number");
    }

    /// <summary>A required whole number from 1 to max.</summary>
    public int Int(string key, int max)
    {
        double v = Number(key, max);
        if (v != Math.Floor(v))
            throw new InputException($"{_source}: '{Key(key)}' is {v}; expected a whole number");
        return (int)v;
    }

    /// <summary>Fails on any key outside <paramref name="allowed"/>: called before reading, so that a typo in a
    /// required key is reported as the typo rather than as a missing key.</summary>
    public YamlMap Allow(params string[] allowed)
    {
        foreach (var (k, _) in _node.Children)
        {
            var key = (k as YamlScalarNode)?.Value ?? "?";
            if (Array.IndexOf(allowed, key) < 0)
                throw new InputException($"{_source}: line {k.Start.Line}: unknown key '{Key(key)}' (expected one of: {string.Join(", ", allowed)})");
        }
        return this;
    }

    /// <summary>Fails on any key that was never asked for: typos must not pass silently.</summary>
    public void RejectUnknown(params string[] allowed)
    {
        foreach (var (k, _) in _node.Children)
        {
            var key = (k as YamlScalarNode)?.Value ?? "?";
            if (!_read.Contains(key))
                throw new InputException($"{_source}: line {k.Start.Line}: unknown key '{Key(key)}' (expected one of: {string.Join(", ", allowed)})");
        }
    }

    private InputException Missing(string key) =>
        new($"{_source}: missing required key '{Key(key)}'");
}
