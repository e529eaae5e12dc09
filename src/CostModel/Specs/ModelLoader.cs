using System.Text.Json;

namespace Planner.CostModel.Specs;

/// <summary>
/// Reads a model from a HuggingFace <c>config.json</c> (GPT-2, Llama and Mixtral keys) or from a preset name,
/// a file under <c>models/</c> embedded in this assembly.
/// </summary>
public static class ModelLoader
{
    private const string ResourcePrefix = "models/";

    /// <summary>Preset names, sorted.</summary>
    public static IReadOnlyList<string> PresetNames => Presets.Names(ResourcePrefix, ".json");

    /// <summary>Loads a preset by name, or a config file by path.</summary>
    public static ModelSpec Load(string nameOrPath)
    {
        if (File.Exists(nameOrPath))
            return Parse(File.ReadAllText(nameOrPath), nameOrPath, DisplayName(nameOrPath)) with { Source = Path.GetFullPath(nameOrPath) };
        var text = Presets.Read(ResourcePrefix + nameOrPath + ".json");
        if (text is not null)
            return Parse(text, $"models/{nameOrPath}.json", nameOrPath) with { Source = nameOrPath };
        if (nameOrPath.Contains('/') || nameOrPath.Contains('\\') || nameOrPath.EndsWith(".json", StringComparison.OrdinalIgnoreCase))
            throw new InputException($"--model: file '{nameOrPath}' not found");
        throw new InputException($"--model: '{nameOrPath}' is neither a file nor a preset (presets: {string.Join(", ", PresetNames)})");
    }

    /// <summary>Parses config JSON text; <paramref name="source"/> names the file in error messages.</summary>
    public static ModelSpec Parse(string json, string source, string name)
    {
        using (var doc = JsonInput.ParseObject(json, source, "a model config"))
        {
            var root = doc.RootElement;
            var r = new Reader(root, source);
            bool gpt2 = root.TryGetProperty("n_layer", out _) || root.TryGetProperty("n_embd", out _);
            var spec = gpt2 ? ParseGpt2(r, name) : ParseLlama(r, name);
            Validate(spec, source, gpt2);
            return spec;
        }
    }

    private static ModelSpec ParseGpt2(Reader r, string name)
    {
        int hidden = r.Int("n_embd");
        var act = r.OptionalString("activation_function") ?? "gelu_new";
        return new ModelSpec(
            name,
            Layers: r.Int("n_layer"),
            Hidden: hidden,
            Heads: r.Int("n_head"),
            KvHeads: r.Int("n_head"),
            Ffn: r.OptionalInt("n_inner") ?? 4 * hidden,
            Vocab: r.Int("vocab_size"),
            MaxSeq: r.Int("n_positions"),
            Mlp: IsGated(act) ? MlpKind.SwiGlu : MlpKind.Gelu,
            Norm: NormKind.LayerNorm,
            Positions: PositionKind.Learned,
            Biases: true,
            TiedEmbeddings: r.OptionalBool("tie_word_embeddings") ?? true);
    }

    private static ModelSpec ParseLlama(Reader r, string name)
    {
        int heads = r.Int("num_attention_heads");
        var act = r.OptionalString("hidden_act") ?? "silu";
        int experts = r.OptionalInt("num_local_experts") ?? 1;
        return new ModelSpec(
            name,
            Layers: r.Int("num_hidden_layers"),
            Hidden: r.Int("hidden_size"),
            Heads: heads,
            KvHeads: r.OptionalInt("num_key_value_heads") ?? heads,
            Ffn: r.Int("intermediate_size"),
            Vocab: r.Int("vocab_size"),
            MaxSeq: r.Int("max_position_embeddings"),
            Mlp: IsGated(act) ? MlpKind.SwiGlu : MlpKind.Gelu,
            Norm: NormKind.RmsNorm,
            Positions: PositionKind.Rotary,
            Biases: false,
            TiedEmbeddings: r.OptionalBool("tie_word_embeddings") ?? false,
            Experts: experts,
            ExpertsPerToken: experts > 1 ? r.Int("num_experts_per_tok") : 1);
    }

    private static bool IsGated(string act) => act is "silu" or "swiglu" or "swish";

    private static void Validate(ModelSpec m, string source, bool gpt2)
    {
        string layers = gpt2 ? "n_layer" : "num_hidden_layers", hidden = gpt2 ? "n_embd" : "hidden_size";
        string heads = gpt2 ? "n_head" : "num_attention_heads", kv = gpt2 ? "n_head" : "num_key_value_heads";
        string ffn = gpt2 ? "n_inner" : "intermediate_size", positions = gpt2 ? "n_positions" : "max_position_embeddings";
        static void Range(string source, string key, long v, long max)
        {
            if (v <= 0 || v > max)
                throw new InputException($"{source}: '{key}' is {v}; expected a whole number from 1 to {max}");
        }
        Range(source, layers, m.Layers, 10_000);
        Range(source, hidden, m.Hidden, 1_000_000);
        Range(source, heads, m.Heads, 100_000);
        Range(source, kv, m.KvHeads, 100_000);
        Range(source, ffn, m.Ffn, 10_000_000);
        Range(source, "vocab_size", m.Vocab, 100_000_000);
        Range(source, positions, m.MaxSeq, 100_000_000);
        Range(source, "num_local_experts", m.Experts, 100_000);
        if (m.Hidden % m.Heads != 0)
            throw new InputException($"{source}: '{hidden}' {m.Hidden} is not divisible by '{heads}' {m.Heads}");
        if (m.Heads % m.KvHeads != 0)
            throw new InputException($"{source}: '{heads}' {m.Heads} is not divisible by '{kv}' {m.KvHeads}");
        if (m.ExpertsPerToken <= 0 || m.ExpertsPerToken > m.Experts)
            throw new InputException($"{source}: 'num_experts_per_tok' is {m.ExpertsPerToken}; expected 1 to num_local_experts ({m.Experts})");
    }

    /// <summary>A HuggingFace checkout's <c>config.json</c> is named after its folder; any other file after itself.</summary>
    private static string DisplayName(string path) =>
        Path.GetFileName(path) == "config.json"
            ? Path.GetFileName(Path.GetDirectoryName(Path.GetFullPath(path))) ?? "config"
            : Path.GetFileNameWithoutExtension(path);


    /// <summary>Typed access to config keys with errors that name the file and key.</summary>
    private readonly struct Reader(JsonElement root, string source)
    {
        public int Int(string key) =>
            OptionalInt(key) ?? throw new InputException($"{source}: missing required key '{key}'");

        public int? OptionalInt(string key)
        {
            if (!root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null)
                return null;
            if (v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out long l) && l is >= int.MinValue and <= int.MaxValue)
                return (int)l;
            throw new InputException($"{source}: key '{key}' must be a whole number, got {v.GetRawText()}");
        }

        public bool? OptionalBool(string key)
        {
            if (!root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null)
                return null;
            return v.ValueKind switch
            {
                JsonValueKind.True => true,
                JsonValueKind.False => false,
                _ => throw new InputException($"{source}: key '{key}' must be true or false, got {v.GetRawText()}"),
            };
        }

        public string? OptionalString(string key)
        {
            if (!root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null)
                return null;
            return v.ValueKind == JsonValueKind.String
                ? v.GetString()
                : throw new InputException($"{source}: key '{key}' must be a string, got {v.GetRawText()}");
        }
    }
}
