using System.Text.Json;
using Planner.CostModel.Specs;

namespace Planner.CostModel.Plans;

/// <summary>
/// Reads the plan object of CONTRACTS.md ("The plan object"), the file that <c>plan --out</c> writes and
/// <c>run --plan</c> and <c>export --plan</c> read. Every key of the plan is required except <c>recompute_layers</c>
/// (<see cref="ParallelPlan.RecomputeLayers"/>), <c>optimizer_offload</c> (<see cref="ParallelPlan.OptimizerOffload"/>),
/// <c>ep</c>, <c>etp</c>, <c>moe_imbalance</c>, <c>moe_capacity</c> (the expert-parallel fields of <see cref="ParallelPlan"/>),
/// <c>stack</c> (the software stack the plan is priced for), <c>finetune</c>, <c>lora_rank</c>, <c>lora_targets</c> and
/// <c>optimizer</c> (<see cref="ParallelPlan.FineTuning"/>; absent: full training with AdamW)
/// and <c>stages</c> (the
/// uneven split <see cref="Pricing.PredictionJson"/> writes for <see cref="ParallelPlan.Stages"/>: <c>layers</c> and
/// <c>recompute</c> per pipeline stage, and optionally <c>groups</c>); <c>prediction</c> and any other key are
/// ignored. Every problem is an <see cref="InputException"/> whose one line names the file and key.
/// </summary>
public static class PlanFile
{
    /// <summary>What a plan file holds: the plan, the model and cluster it names, and the software stack it is priced
    /// for (<c>stack</c>; absent: <see cref="Pricing.PricingOptions.DefaultStack"/>).</summary>
    public sealed record Contents(ParallelPlan Plan, string Model, string Cluster, string Stack)
    {
        /// <summary>The plan, model and cluster.</summary>
        public void Deconstruct(out ParallelPlan plan, out string model, out string cluster) => (plan, model, cluster) = (Plan, Model, Cluster);
    }

    /// <summary>Largest degree or size accepted, as for the <c>predict</c> flags.</summary>
    public const int MaxValue = 10_000_000;

    /// <summary>Reads a plan file.</summary>
    public static Contents Read(string path)
    {
        if (Directory.Exists(path))
            throw new InputException("plan", $"'{path}' is a directory, not a plan file");
        if (!File.Exists(path))
            throw new InputException("plan", $"file '{path}' not found");
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InputException("plan", $"cannot read '{path}': {FirstLine(e.Message)}");
        }
        return Parse(text, path);
    }

    /// <summary>Every key a plan file may hold: a key the executor or the pricing would not read is refused, not
    /// ignored (a misspelt <c>optimiser</c> must not train with the default). <c>prediction</c> is what
    /// <c>plan --out</c> writes beside the plan, read by no one.</summary>
    public static IReadOnlyList<string> Keys { get; } =
    [
        "model", "cluster", "stack", "tp", "pp", "dp", "cp", "zero", "mbs", "gbs", "seq", "vpp", "recompute", "sequence_parallel",
        "precision", "stages", "recompute_layers", "optimizer_offload", "ep", "etp", "moe_imbalance", "moe_capacity", "finetune",
        "lora_rank", "lora_targets", "optimizer", "prediction", "grad_compression", "local_sgd",
    ];

    /// <summary>Parses plan JSON text; <paramref name="source"/> names the file in error messages.</summary>
    public static Contents Parse(string json, string source)
    {
        using (var doc = JsonInput.ParseObject(json, source, "the plan object"))
        {
            var root = doc.RootElement;
            if (root.EnumerateObject().Select(p => p.Name).FirstOrDefault(k => !Keys.Contains(k)) is { } unknown)
                throw new InputException($"{source}: unknown key '{unknown}' (a plan's keys: {string.Join(", ", Keys)})");
            Unimplemented(root, source);
            string model = Name(root, source, "model");
            string cluster = Name(root, source, "cluster");
            string stack = root.TryGetProperty("stack", out var st) && st.ValueKind != JsonValueKind.Null
                ? Name(root, source, "stack")
                : Pricing.PricingOptions.DefaultStack;
            int tp = Positive(root, source, "tp");
            int pp = Positive(root, source, "pp");
            int dp = Positive(root, source, "dp");
            int cp = Positive(root, source, "cp");
            int zero = Whole(root, source, "zero");
            if (zero is < 0 or > 3)
                throw new InputException($"{source}: key 'zero' is {zero}; expected a ZeRO stage 0, 1, 2 or 3");
            int mbs = Positive(root, source, "mbs");
            int gbs = Positive(root, source, "gbs");
            int seq = Positive(root, source, "seq");
            int vpp = Positive(root, source, "vpp");
            string recomputeName = Text(root, source, "recompute");
            var recompute = ParallelPlan.ParseRecompute(recomputeName)
                ?? throw new InputException($"{source}: key 'recompute' is {Raw(root.GetProperty("recompute"))}; expected none, selective or full");
            bool sequenceParallel = Bool(root, source, "sequence_parallel");
            string precisionName = Text(root, source, "precision");
            var precision = PrecisionInfo.TryParse(precisionName)
                ?? throw new InputException($"{source}: key 'precision' is {Raw(root.GetProperty("precision"))}; expected one of {PrecisionInfo.Names}");

            // Rules that hold for any model and cluster: the batch splits into whole micro-batches per
            // data-parallel rank, and interleaving needs a pipeline.
            if (gbs % ((long)dp * mbs) != 0)
                throw new InputException($"{source}: key 'gbs' is {gbs}, not divisible by dp·mbs = {dp}·{mbs}");
            if (vpp > 1 && pp == 1)
                throw new InputException($"{source}: key 'vpp' is {vpp} with 'pp' 1; interleaving needs a pipeline of at least 2 stages");
            if ((long)tp * pp * dp * cp > int.MaxValue)
                throw new InputException($"{source}: keys 'tp'·'pp'·'dp'·'cp' = {(long)tp * pp * dp * cp} GPUs is out of range");

            var stages = Stages(root, source, pp, vpp);
            int? recomputeLayers = null;
            if (root.TryGetProperty("recompute_layers", out var rl) && rl.ValueKind != JsonValueKind.Null)
            {
                recomputeLayers = Positive(root, source, "recompute_layers");
                if (recompute != Recompute.Full)
                    throw new InputException($"{source}: key 'recompute_layers' needs 'recompute' full, got '{recomputeName}'");
            }
            double offload = 0;
            if (root.TryGetProperty("optimizer_offload", out var off) && off.ValueKind != JsonValueKind.Null)
            {
                if (off.ValueKind != JsonValueKind.Number || !off.TryGetDouble(out offload) || offload is < 0 or > 1)
                    throw new InputException($"{source}: key 'optimizer_offload' is {Raw(off)}; expected a fraction from 0 to 1");
            }
            int ep = OptionalPositive(root, source, "ep") ?? 1, etp = OptionalPositive(root, source, "etp") ?? 1;
            double imbalance = OptionalNumber(root, source, "moe_imbalance", "a load factor of at least 1", v => v >= 1) ?? 1;
            double? capacity = OptionalNumber(root, source, "moe_capacity", "a capacity factor above 0", v => v > 0);
            var plan = new ParallelPlan(tp, pp, dp, cp, zero, mbs, gbs, seq, vpp, recompute, sequenceParallel, precision, stages, recomputeLayers, offload,
                ep, etp, imbalance, capacity, Tuning(root, source));
            return new Contents(plan, model, cluster, stack);
        }
    }

    /// <summary>Keys of CONTRACTS that nothing prices or trains yet (gradient compression, local SGD): refused unless they
    /// say the default, so that a plan written to the contract learns why it is not honoured.</summary>
    private static void Unimplemented(JsonElement root, string source)
    {
        if (root.TryGetProperty("grad_compression", out var g) && g.ValueKind != JsonValueKind.Null
            && !(g.ValueKind == JsonValueKind.String && g.GetString() == "none"))
            throw new InputException($"{source}: key 'grad_compression' is {Raw(g)}; gradient compression is not priced or trained yet (only \"none\")");
        if (root.TryGetProperty("local_sgd", out var l) && l.ValueKind != JsonValueKind.Null)
            throw new InputException($"{source}: key 'local_sgd' is {Raw(l)}; local SGD is not priced or trained yet (leave the key out)");
    }

    /// <summary>The optional fine-tuning keys; null when none is given (full training with AdamW).</summary>
    private static FineTuning? Tuning(JsonElement root, string source)
    {
        string[] keys = ["finetune", "lora_rank", "lora_targets", "optimizer"];
        if (!keys.Any(k => root.TryGetProperty(k, out var v) && v.ValueKind != JsonValueKind.Null))
            return null;
        T Optional<T>(string key, T absent, Func<string, T?> parse, string expected) where T : struct
        {
            if (!root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null)
                return absent;
            return (v.ValueKind == JsonValueKind.String ? parse(v.GetString()!) : null)
                ?? throw new InputException($"{source}: key '{key}' is {Raw(v)}; expected {expected}");
        }
        var method = Optional("finetune", FineTuneMethod.Full, FineTuning.ParseMethod, FineTuning.MethodNames);
        var targets = Optional("lora_targets", LoraTargets.All, FineTuning.ParseTargets, FineTuning.TargetNames);
        var optimizer = Optional("optimizer", OptimizerKind.AdamW, FineTuning.ParseOptimizer, FineTuning.OptimizerNames);
        int rank = OptionalPositive(root, source, "lora_rank") ?? FineTuning.DefaultRank;
        return new FineTuning(method, rank, targets, optimizer);
    }

    /// <summary>The optional <c>stages</c> object: one entry per pipeline stage in each list, interleaving excluded.</summary>
    private static StagePlan? Stages(JsonElement root, string source, int pp, int vpp)
    {
        if (!root.TryGetProperty("stages", out var st) || st.ValueKind == JsonValueKind.Null)
            return null;
        if (st.ValueKind != JsonValueKind.Object)
            throw new InputException($"{source}: key 'stages' must be an object with 'layers' and 'recompute' lists, got {Raw(st)}");
        if (vpp != 1)
            throw new InputException($"{source}: key 'stages' (an uneven split) needs 'vpp' 1, got {vpp}");
        if (st.EnumerateObject().Select(p => p.Name).FirstOrDefault(k => k is not ("layers" or "recompute" or "groups")) is { } unknown)
            throw new InputException($"{source}: unknown key 'stages.{unknown}' (its keys: layers, recompute, groups)");
        var layers = List(st, source, "layers", pp, (v, key) =>
        {
            if (v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int n) && n is >= 1 and <= MaxValue)
                return n;
            throw new InputException($"{source}: key '{key}' has {Raw(v)}; expected whole numbers of layers from 1 to {MaxValue}");
        });
        var recompute = List(st, source, "recompute", pp, (v, key) =>
            (v.ValueKind == JsonValueKind.String ? ParallelPlan.ParseRecompute(v.GetString()!) : null)
            ?? throw new InputException($"{source}: key '{key}' has {Raw(v)}; expected none, selective or full"));
        IReadOnlyList<int>? groups = null;
        if (st.TryGetProperty("groups", out var g) && g.ValueKind != JsonValueKind.Null)
            groups = List(st, source, "groups", pp, (v, key) =>
                v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int n) && n >= 0
                    ? n
                    : throw new InputException($"{source}: key '{key}' has {Raw(v)}; expected GPU group numbers from 0"));
        return new StagePlan(layers, recompute, groups);
    }

    private static List<T> List<T>(JsonElement stages, string source, string name, int pp, Func<JsonElement, string, T> item)
    {
        string key = $"stages.{name}";
        if (!stages.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null)
            throw new InputException($"{source}: missing required key '{key}'");
        if (v.ValueKind != JsonValueKind.Array)
            throw new InputException($"{source}: key '{key}' must be a list, got {Raw(v)}");
        if (v.GetArrayLength() != pp)
            throw new InputException($"{source}: key '{key}' has {v.GetArrayLength()} entries; expected one per pipeline stage ('pp' {pp})");
        return v.EnumerateArray().Select(e => item(e, key)).ToList();
    }

    private static JsonElement Get(JsonElement root, string source, string key)
    {
        if (!root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null)
            throw new InputException($"{source}: missing required key '{key}'");
        return v;
    }

    private static int Whole(JsonElement root, string source, string key)
    {
        var v = Get(root, source, key);
        if (v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out long l) && l is >= int.MinValue and <= int.MaxValue)
            return (int)l;
        throw new InputException($"{source}: key '{key}' must be a whole number, got {Raw(v)}");
    }

    private static int Positive(JsonElement root, string source, string key)
    {
        int v = Whole(root, source, key);
        return v is >= 1 and <= MaxValue
            ? v
            : throw new InputException($"{source}: key '{key}' is {v}; expected a whole number from 1 to {MaxValue}");
    }

    private static int? OptionalPositive(JsonElement root, string source, string key) =>
        root.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null ? Positive(root, source, key) : null;

    private static double? OptionalNumber(JsonElement root, string source, string key, string expected, Func<double, bool> valid)
    {
        if (!root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null)
            return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetDouble(out double d) || !valid(d))
            throw new InputException($"{source}: key '{key}' is {Raw(v)}; expected {expected}");
        return d;
    }

    private static string Text(JsonElement root, string source, string key)
    {
        var v = Get(root, source, key);
        return v.ValueKind == JsonValueKind.String
            ? v.GetString()!
            : throw new InputException($"{source}: key '{key}' must be a string, got {Raw(v)}");
    }

    private static string Name(JsonElement root, string source, string key)
    {
        string s = Text(root, source, key);
        if (string.IsNullOrWhiteSpace(s))
            throw new InputException($"{source}: key '{key}' is empty; expected a preset name or a path");
        if (s.Any(char.IsControl))
            throw new InputException($"{source}: key '{key}' contains control characters; expected a preset name or a path");
        return s;
    }

    private static bool Bool(JsonElement root, string source, string key)
    {
        var v = Get(root, source, key);
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new InputException($"{source}: key '{key}' must be true or false, got {Raw(v)}"),
        };
    }

    /// <summary>A value as written, shortened to keep the error on one short line.</summary>
    private static string Raw(JsonElement v)
    {
        string s = string.Join(' ', v.GetRawText().Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        return s.Length <= 40 ? s : s[..37] + "...";
    }

    private static string FirstLine(string s) => s.Split('\n')[0].Trim();
}
