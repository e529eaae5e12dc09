using System.Text.Json;

namespace Planner.CostModel.Specs;

/// <summary>Parsing a user's JSON file with errors that name the file and line.</summary>
internal static class JsonInput
{
    /// <summary>Parses text whose root must be an object; <paramref name="what"/> says which object, for the error.</summary>
    public static JsonDocument ParseObject(string json, string source, string what)
    {
        JsonDocument doc;
        try
        {
            // A key given twice is refused: the reader would otherwise keep one of the two values without a word.
            doc = JsonDocument.Parse(json, new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true, AllowDuplicateProperties = false });
        }
        catch (JsonException e)
        {
            throw new InputException($"{source}: invalid JSON at line {(e.LineNumber ?? 0) + 1}: {e.Message.Split('\n')[0].Trim()}");
        }
        if (doc.RootElement.ValueKind != JsonValueKind.Object)
        {
            var kind = Kind(doc.RootElement);
            doc.Dispose();
            throw new InputException($"{source}: expected a JSON object ({what}), got {kind}");
        }
        return doc;
    }

    /// <summary>"an array", "a string", ... for error messages.</summary>
    public static string Kind(JsonElement v) => v.ValueKind switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "an array",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        _ => "null",
    };
}
