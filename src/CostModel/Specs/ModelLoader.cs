using System.Text.Json;

namespace Planner.CostModel.Specs;

/// <summary>
/// Reads a model from a HuggingFace <c>config.json</c> (GPT-2 and Llama keys, with the MoE, MLA, multi-token-prediction
/// and sliding-window keys of Mixtral, DeepSeek, Qwen and GPT-OSS configs) or from a preset name,
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
            throw new InputException("model", $"file '{nameOrPath}' not found");
        throw new InputException("model", $"'{nameOrPath}' is neither a file nor a preset (presets: {string.Join(", ", PresetNames)})");
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
            TiedEmbeddings: r.OptionalBool("tie_word_embeddings") ?? true,
            Dropout: (r.OptionalNumber("resid_pdrop") ?? 0.1) > 0 || (r.OptionalNumber("attn_pdrop") ?? 0.1) > 0);
    }

    private static ModelSpec ParseLlama(Reader r, string name)
    {
        int heads = r.Int("num_attention_heads");
        int layers = r.Int("num_hidden_layers");
        Range(r, "num_hidden_layers", layers, 10_000);
        var act = r.OptionalString("hidden_act") ?? "silu";
        bool gated = r.OptionalBool("gated_mlp") ?? IsGated(act);
        // GPT-3 and Nemotron written with these keys (NeMo's configs): LayerNorm, and for GPT-3 biases and learned positions.
        var type = r.OptionalString("model_type") ?? "";
        bool gptStyle = type is "gpt3" or "gpt2";
        var positions = r.OptionalString("position_embedding_type") switch
        {
            null or "rope" or "rotary" => PositionKind.Rotary,
            "learned_absolute" or "learned" => PositionKind.Learned,
            var other => throw r.Error($"'position_embedding_type' '{other}' is neither learned_absolute nor rope"),
        };
        return new ModelSpec(
            name,
            Layers: layers,
            Hidden: r.Int("hidden_size"),
            Heads: heads,
            KvHeads: r.OptionalInt("num_key_value_heads") ?? heads,
            Ffn: r.Int("intermediate_size"),
            Vocab: r.Int("vocab_size"),
            MaxSeq: r.Int("max_position_embeddings"),
            Mlp: gated ? MlpKind.SwiGlu : MlpKind.Gelu,
            Norm: gptStyle || type == "nemotron" ? NormKind.LayerNorm : NormKind.RmsNorm,
            Positions: positions,
            Biases: (r.OptionalBool("attention_bias") ?? gptStyle) || (r.OptionalBool("mlp_bias") ?? false),
            TiedEmbeddings: r.OptionalBool("tie_word_embeddings") ?? false,
            HeadDimension: r.OptionalInt("head_dim"),
            Moe: ParseMoe(r, layers),
            Mla: ParseMla(r),
            MtpLayers: r.OptionalInt("num_nextn_predict_layers") ?? 0,
            Window: ParseWindow(r, layers),
            // NeMo's GPT-3 configs drop out at 0.1 unless told otherwise; the Llama family's configs train without.
            Dropout: (r.OptionalNumber("hidden_dropout") ?? (gptStyle ? 0.1 : 0)) > 0 || (r.OptionalNumber("attention_dropout") ?? (gptStyle ? 0.1 : 0)) > 0);
    }

    /// <summary>The MoE keys, or null for a dense model (no expert count, or one expert).</summary>
    private static MoeSpec? ParseMoe(Reader r, int layers)
    {
        int? experts = null;
        string? expertsKey = null;
        foreach (var key in ExpertCountKeys)
            if (r.OptionalInt(key) is int n)
            {
                if (experts is int seen && seen != n)
                    throw r.Error($"'{key}' is {n} but '{expertsKey}' is {seen}; they name the same expert count");
                experts = n;
                expertsKey = key;
            }
        if (experts is not int e || e <= 1)
            return null;
        Range(r, expertsKey!, e, 100_000);
        int topK = r.Int("num_experts_per_tok");
        if (topK < 1 || topK > e)
            throw r.Error($"'num_experts_per_tok' is {topK}; expected 1 to {expertsKey} ({e})");
        int ffn = r.OptionalInt("moe_intermediate_size") ?? r.Int("intermediate_size");
        Range(r, r.Has("moe_intermediate_size") ? "moe_intermediate_size" : "intermediate_size", ffn, 10_000_000);
        int shared = 0;
        if (r.OptionalInt("shared_expert_intermediate_size") is int sharedFfn)
        {
            Range(r, "shared_expert_intermediate_size", sharedFfn, 10_000_000, min: 0);
            shared = sharedFfn;
        }
        else if (r.OptionalInt("n_shared_experts") is int count)
        {
            Range(r, "n_shared_experts", count, 1_000, min: 0);
            shared = count * ffn;
        }
        int firstDense = r.OptionalInt("first_k_dense_replace") ?? 0;
        Range(r, "first_k_dense_replace", firstDense, layers, min: 0);
        var pattern = new bool[layers];
        if (r.OptionalIntList("moe_layer_freq") is { } list)
        {
            // Megatron's form: one 0/1 entry per block.
            if (list.Count != layers || list.Any(x => x is not (0 or 1)))
                throw r.Error($"'moe_layer_freq' as a list needs one 0 or 1 per block ({layers}), got {list.Count} entries");
            for (int l = 0; l < layers; l++)
                pattern[l] = list[l] == 1 && l >= firstDense;
        }
        else
        {
            // HuggingFace's form (DeepSeek): block l is a MoE block when l >= first_k_dense_replace and l % freq == 0.
            int freq = r.OptionalInt("moe_layer_freq") ?? 1;
            Range(r, "moe_layer_freq", freq, layers);
            for (int l = 0; l < layers; l++)
                pattern[l] = l >= firstDense && l % freq == 0;
        }
        if (!pattern.Any(x => x))
            throw r.Error($"'first_k_dense_replace' / 'moe_layer_freq' leave no MoE block among the {layers}");
        return new MoeSpec(e, topK, ffn, shared, pattern);
    }

    /// <summary>The multi-head latent attention keys (present when 'kv_lora_rank' is), or null.</summary>
    private static MlaSpec? ParseMla(Reader r)
    {
        if (r.OptionalInt("kv_lora_rank") is not int kvRank)
            return null;
        var mla = new MlaSpec(r.OptionalInt("q_lora_rank") ?? 0, kvRank, r.Int("qk_nope_head_dim"), r.Int("qk_rope_head_dim"), r.Int("v_head_dim"));
        Range(r, "q_lora_rank", mla.QLoraRank, 1_000_000, min: 0);
        Range(r, "kv_lora_rank", mla.KvLoraRank, 1_000_000);
        Range(r, "qk_nope_head_dim", mla.QkNopeHeadDim, 100_000, min: 0);
        Range(r, "qk_rope_head_dim", mla.QkRopeHeadDim, 100_000, min: 0);
        Range(r, "v_head_dim", mla.VHeadDim, 100_000);
        if (mla.QkHeadDim < 1)
            throw r.Error("'qk_nope_head_dim' + 'qk_rope_head_dim' must be at least 1");
        return mla;
    }

    /// <summary>Sliding-window blocks: those 'layer_types' marks "sliding_attention", or every block when the config
    /// gives a window and no types (unless 'use_sliding_window' is false, as Qwen configs say); null for none.</summary>
    private static SlidingWindow? ParseWindow(Reader r, int layers)
    {
        var types = r.OptionalStringList("layer_types");
        if (r.OptionalInt("sliding_window") is not int window || window <= 0)
        {
            if (types is not null && types.Contains("sliding_attention"))
                throw r.Error("'layer_types' names sliding_attention blocks but 'sliding_window' gives no window");
            return null;
        }
        bool[] sliding;
        if (types is not null)
        {
            if (types.Count != layers)
                throw r.Error($"'layer_types' lists {types.Count} blocks; the model has {layers}");
            sliding = types.Select(t => t switch
            {
                "sliding_attention" => true,
                "full_attention" => false,
                _ => throw r.Error($"'layer_types' entry '{t}' is neither sliding_attention nor full_attention"),
            }).ToArray();
        }
        else if (r.OptionalBool("use_sliding_window") == false)
            return null;
        else
            sliding = Enumerable.Repeat(true, layers).ToArray();
        return sliding.Any(x => x) ? new SlidingWindow(window, sliding) : null;
    }

    /// <summary>The keys HuggingFace configs use for the routed-expert count (Mixtral, DeepSeek, Qwen).</summary>
    private static readonly string[] ExpertCountKeys = ["num_local_experts", "n_routed_experts", "num_experts"];

    private static bool IsGated(string act) => act is "silu" or "swiglu" or "swish";

    private static void Range(Reader r, string key, long v, long max, long min = 1)
    {
        if (v < min || v > max)
            throw r.Error($"'{key}' is {v}; expected a whole number from {min} to {max}");
    }

    /// <summary>The names a model's sizes go by in an input: a config's keys, or a validation CSV's columns.</summary>
    public sealed record SizeKeys(string Layers, string Hidden, string Heads, string KvHeads, string Ffn, string Vocab, string Positions)
    {
        /// <summary>GPT-2's config keys.</summary>
        public static SizeKeys Gpt2 { get; } = new("n_layer", "n_embd", "n_head", "n_head", "n_inner", "vocab_size", "n_positions");

        /// <summary>The other HuggingFace configs' keys.</summary>
        public static SizeKeys HuggingFace { get; } = new("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads",
            "intermediate_size", "vocab_size", "max_position_embeddings");
    }

    private static void Validate(ModelSpec m, string source, bool gpt2) => Validate(m, source, gpt2 ? SizeKeys.Gpt2 : SizeKeys.HuggingFace);

    /// <summary>Refuses sizes no model has (each from 1 to a bound, heads at least a unit wide, KV heads dividing the
    /// heads), each named by its key in <paramref name="keys"/>.</summary>
    /// <exception cref="InputException">One line: <paramref name="source"/>, the key and the expected range.</exception>
    public static void Validate(ModelSpec m, string source, SizeKeys keys)
    {
        var (layers, hidden, heads, kv, ffn, positions) = (keys.Layers, keys.Hidden, keys.Heads, keys.KvHeads, keys.Ffn, keys.Positions);
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
        Range(source, keys.Vocab, m.Vocab, 100_000_000);
        Range(source, positions, m.MaxSeq, 100_000_000);
        if (m.HeadDimension is int d)
            Range(source, "head_dim", d, 100_000);
        if (m.MtpLayers is < 0 or > 100)
            throw new InputException($"{source}: 'num_nextn_predict_layers' is {m.MtpLayers}; expected 0 to 100");
        // A hidden size the heads do not divide: each head hidden // heads wide (HuggingFace Llama's head_dim default).
        if (m.HeadDimension is null && m.Mla is null && m.Hidden / m.Heads < 1)
            throw new InputException($"{source}: '{hidden}' {m.Hidden} is below '{heads}' {m.Heads}: no head would be a unit wide (give 'head_dim')");
        if (m.Heads % m.KvHeads != 0)
            throw new InputException($"{source}: '{heads}' {m.Heads} is not divisible by '{kv}' {m.KvHeads}");
    }

    /// <summary>A HuggingFace checkout's <c>config.json</c> is named after its folder; any other file after itself.</summary>
    private static string DisplayName(string path) =>
        Path.GetFileName(path) == "config.json"
            ? Path.GetFileName(Path.GetDirectoryName(Path.GetFullPath(path))) ?? "config"
            : Path.GetFileNameWithoutExtension(path);


    /// <summary>Typed access to config keys with errors that name the file and key.</summary>
    private readonly struct Reader(JsonElement root, string source)
    {
        /// <summary>An input error naming the file.</summary>
        public InputException Error(string what) => new($"{source}: {what}");

        /// <summary>True when the key is present and not null.</summary>
        public bool Has(string key) => root.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null;

        /// <summary>A list of whole numbers, or null when the key is absent or not a list.</summary>
        public IReadOnlyList<int>? OptionalIntList(string key)
        {
            if (!root.TryGetProperty(key, out var v) || v.ValueKind != JsonValueKind.Array)
                return null;
            var list = new List<int>();
            foreach (var x in v.EnumerateArray())
                list.Add(x.ValueKind == JsonValueKind.Number && x.TryGetInt32(out int i)
                    ? i
                    : throw Error($"key '{key}' must list whole numbers, got {x.GetRawText()}"));
            return list;
        }

        /// <summary>A list of strings, or null when the key is absent or null.</summary>
        public IReadOnlyList<string>? OptionalStringList(string key)
        {
            if (!root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null)
                return null;
            if (v.ValueKind != JsonValueKind.Array)
                throw Error($"key '{key}' must be a list of strings, got {v.GetRawText()}");
            var list = new List<string>();
            foreach (var x in v.EnumerateArray())
                list.Add(x.ValueKind == JsonValueKind.String ? x.GetString()! : throw Error($"key '{key}' must list strings, got {x.GetRawText()}"));
            return list;
        }

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

        public double? OptionalNumber(string key)
        {
            if (!root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null)
                return null;
            return v.ValueKind == JsonValueKind.Number && v.TryGetDouble(out double d)
                ? d
                : throw new InputException($"{source}: key '{key}' must be a number, got {v.GetRawText()}");
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
