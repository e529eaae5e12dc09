using System.Reflection;

namespace Planner.CostModel.Specs;

/// <summary>The repository's <c>models/</c> and <c>topologies/</c> files, embedded in this assembly.</summary>
internal static class Presets
{
    private static readonly Assembly Self = typeof(Presets).Assembly;

    /// <summary>Text of an embedded file such as <c>models/gpt2.json</c>, or null.</summary>
    public static string? Read(string logicalName)
    {
        using var stream = Self.GetManifestResourceStream(logicalName);
        if (stream is null)
            return null;
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }

    /// <summary>Names (without prefix and extension) of the embedded files under a prefix.</summary>
    public static IReadOnlyList<string> Names(string prefix, string extension) =>
        Self.GetManifestResourceNames()
            .Where(n => n.StartsWith(prefix, StringComparison.Ordinal) && n.EndsWith(extension, StringComparison.Ordinal))
            .Select(n => n[prefix.Length..^extension.Length])
            .Order(StringComparer.Ordinal)
            .ToList();
}
