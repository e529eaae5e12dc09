using System.Globalization;
using CsvHelper;
using CsvHelper.Configuration;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;

namespace Planner.Cli.Validation;

/// <summary>One priced row: what we predict against what the source measured.</summary>
public sealed record ValidationRow(ValidationCase Case, Prediction Prediction)
{
    /// <summary>Signed error of the predicted step time, percent of the published one.</summary>
    public double ErrorPct => (Prediction.StepTimeSeconds - Case.StepTimeS) / Case.StepTimeS * 100;

    /// <summary>Signed error of the predicted peak memory, percent of the published one (null when none was published).</summary>
    public double? MemoryErrorPct => Case.PeakMemoryGib is double m ? (Prediction.PeakMemoryGib - m) / m * 100 : null;
}

/// <summary>Mean absolute and maximum absolute percentage error over a set of rows.</summary>
public sealed record ErrorSummary(int Rows, double MapePct, double MaxPct)
{
    /// <summary>Summarises rows.</summary>
    public static ErrorSummary Of(IReadOnlyCollection<ValidationRow> rows) =>
        rows.Count == 0 ? new(0, 0, 0) : new(rows.Count, rows.Average(r => Math.Abs(r.ErrorPct)), rows.Max(r => Math.Abs(r.ErrorPct)));
}

/// <summary>
/// Prices every published run with the default GPU presets, the row's own network bandwidths and the default
/// latencies and efficiencies. Nothing is tuned per row. Two schemas: <c>published_runs.csv</c> (the model's shape in
/// columns, Megatron-LM of 2021–22) and <c>modern_runs.csv</c> (the model a config file in <c>models/</c> beside the CSV,
/// Megatron-Core of 2025 with expert parallelism and FP8).
/// </summary>
public static class Validator
{
    /// <summary>Latency per hop inside a node when a row gives none, µs (the DGX presets' value).</summary>
    public const double IntraLatencyUs = 3;
    /// <summary>Latency per hop across nodes when a row gives none, µs.</summary>
    public const double InterLatencyUs = 6;

    /// <summary>The stack of a row of the older schema that names none: Megatron-LM of 2021–22 (stacks/megatron-lm-2021.yaml).</summary>
    public const string PublishedStack = "megatron-lm-2021";

    /// <summary>The stack of a row of the modern schema that names none: Megatron-Core (stacks/megatron-core.yaml).</summary>
    public const string ModernStack = PricingOptions.DefaultStack;

    /// <summary>A row's stack: its <c>stack</c> column (a preset, or a stack file beside the CSV), else the schema's.</summary>
    private static PricingOptions Stack(string id, string column, string fallback, string csvPath)
    {
        string stack = StackLoader.Beside(column.Length > 0 ? column : fallback, Path.GetDirectoryName(Path.GetFullPath(csvPath)) ?? ".");
        return StackLoader.Options(stack, $"row {id}: stack");
    }

    /// <summary>Reads either schema; a malformed file is an <see cref="InputException"/> naming it.</summary>
    public static IReadOnlyList<ValidationCase> Read(string path)
    {
        if (!File.Exists(path))
            throw new InputException($"--runs: file '{path}' not found");
        string header = File.ReadLines(path).FirstOrDefault() ?? "";
        bool modern = header.Split(',').Select(c => c.Trim()).Contains("model");
        try
        {
            var cases = modern
                ? ReadRows<ModernRun>(path).Select(r => Case(r, path)).ToList()
                : ReadRows<PublishedRun>(path).Select(r => Case(r, Stack(r.Id, r.Stack, PublishedStack, path))).ToList();
            // The measurements the errors are taken against: a step time of 0 or below would give an error, not a refusal.
            foreach (var c in cases)
                if (!(c.StepTimeS > 0 && double.IsFinite(c.StepTimeS)) || c.PeakMemoryGib is { } gib && !(gib > 0 && double.IsFinite(gib)))
                    throw new InputException($"row {c.Id}: step_time_s {c.StepTimeS} and peak_memory_gib {c.PeakMemoryGib?.ToString() ?? "(none)"} must be positive numbers (seconds, GiB)");
            return cases;
        }
        catch (InputException e) when (!e.Message.StartsWith(path, StringComparison.Ordinal))
        {
            throw new InputException($"{path}: {e.Message}"); // a row's problem, named with the file it is in
        }
    }

    private static List<T> ReadRows<T>(string path)
    {
        try
        {
            using var reader = new StreamReader(path);
            using var csv = new CsvReader(reader, new CsvConfiguration(CultureInfo.InvariantCulture) { TrimOptions = TrimOptions.Trim });
            var rows = csv.GetRecords<T>().ToList();
            if (rows.Count == 0)
                throw new InputException($"{path}: no rows");
            return rows;
        }
        catch (CsvHelperException e)
        {
            int line = e.Context?.Parser?.RawRow ?? 0;
            throw new InputException($"{path}: line {line}: {e.Message.Split('\n')[0].Trim()}");
        }
    }

    /// <summary>A row of the older schema priced with <paramref name="stack"/>.</summary>
    public static ValidationCase Case(PublishedRun r, PricingOptions stack)
    {
        var (model, cluster, plan) = (Model(r), Cluster(r), Plan(r));
        ModelLoader.Validate(model, $"row {r.Id}", new ModelLoader.SizeKeys("layers", "hidden", "heads", "kv_heads", "ffn", "vocab", "seq"));
        if (PlanCheck.Problems(model, cluster, plan) is { Count: > 0 } problems)
            throw new InputException($"row {r.Id}: {string.Join("; ", problems)}");
        return new(r.Id, r.Gpus, model, cluster, plan, stack, r.StepTimeS, r.PeakMemoryGib, [Origin(r.Id), $"stack {stack.Stack}"]);
    }

    /// <summary>What a row of the older schema is summarised under: the paper of the Megatron-LM rows, by their id's
    /// prefix; for other runs the run's family (the id up to its first dash, e.g. bloom176b).</summary>
    private static string Origin(string id) =>
        id.StartsWith("korthikanti", StringComparison.Ordinal) ? "Korthikanti et al. 2022"
        : id.StartsWith("narayanan", StringComparison.Ordinal) ? "Narayanan et al. 2021"
        : $"run {id.Split('-')[0]}";

    /// <summary>The model shape of a row (GeLU rows are GPT-style: biases, LayerNorm, learned positions).</summary>
    public static ModelSpec Model(PublishedRun r)
    {
        bool gated = r.Act is "silu" or "swiglu";
        return new ModelSpec(r.Id, r.Layers, r.Hidden, r.Heads, r.KvHeads, r.Ffn, r.Vocab, r.Seq,
            gated ? MlpKind.SwiGlu : MlpKind.Gelu,
            gated ? NormKind.RmsNorm : NormKind.LayerNorm,
            gated ? PositionKind.Rotary : PositionKind.Learned,
            Biases: !gated,
            TiedEmbeddings: r.Tied);
    }

    /// <summary>The cluster of a row: the GPU preset, and the row's bandwidths with default latencies and efficiencies.</summary>
    public static ClusterSpec Cluster(PublishedRun r) => Cluster($"{r.Gpus}x{r.Gpu}", r.Id, r.Gpu, r.Gpus, r.GpusPerNode, null, r.IntraGbs, r.InterGbs);

    private static ClusterSpec Cluster(string name, string id, string gpu, int gpus, int perNode, int? domain, double intraGbs, double interGbs)
    {
        if (gpus < 1 || perNode < 1)
            throw new InputException($"row {id}: gpus and gpus_per_node must be at least 1");
        if (ClusterSpec.DomainProblem(domain, perNode) is { } domainProblem)
            throw new InputException($"row {id}: {domainProblem}");
        foreach (var (column, gbs) in new[] { ("intra_gbs", intraGbs), ("inter_gbs", interGbs) })
            if (!(gbs >= InputLimits.Tiny && double.IsFinite(gbs)))
                throw new InputException($"row {id}: {column} {gbs} must be a positive bandwidth (GB/s, at least {InputLimits.Tiny})");
        return new(name,
            ClusterLoader.LoadGpu(gpu, $"row {id}: gpu"),
            Nodes: (gpus + perNode - 1) / perNode,
            GpusPerNode: perNode,
            IntraNode: new LinkSpec(intraGbs, IntraLatencyUs, ClusterLoader.DefaultIntraNodeEfficiency, ClusterLoader.DefaultIntraNodeAllToAllEfficiency),
            InterNode: new LinkSpec(interGbs, InterLatencyUs, ClusterLoader.DefaultInterNodeEfficiency, ClusterLoader.DefaultInterNodeAllToAllEfficiency),
            NvlinkDomainSize: domain);
    }

    /// <summary>The plan of a row.</summary>
    public static ParallelPlan Plan(PublishedRun r) => new(
        r.Tp, r.Pp, r.Dp, r.Cp, r.Zero, r.Mbs, r.Gbs, r.Seq, r.Vpp,
        Recompute(r.Id, r.Recompute),
        r.SeqParallel,
        Precision(r.Id, r.Precision));

    private static Recompute Recompute(string id, string name) =>
        ParallelPlan.ParseRecompute(name) ?? throw new InputException($"row {id}: recompute '{name}' is not none, selective or full");

    private static Precision Precision(string id, string name) =>
        PrecisionInfo.TryParse(name) ?? throw new InputException($"row {id}: precision '{name}' is unknown (expected one of {PrecisionInfo.Names})");

    /// <summary>
    /// A row of the modern schema: the model file beside the CSV, Megatron-Core's distributed optimizer (ZeRO-1; ZeRO-3
    /// where the row used Megatron-FSDP), sequence parallelism whenever tp &gt; 1, force-balanced routing.
    /// </summary>
    public static ValidationCase Case(ModernRun r, string csvPath)
    {
        string modelPath = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(csvPath)) ?? ".", "models", r.Model);
        if (!File.Exists(modelPath))
            throw new InputException($"row {r.Id}: model file '{modelPath}' not found (the 'model' column names a file in models/ beside the CSV)");
        var model = ModelLoader.Load(modelPath);
        if (r.MoeBalance is not ("" or "forced"))
            throw new InputException($"row {r.Id}: moe_balance '{r.MoeBalance}' is not priced (expected forced, or empty for a dense model)");
        var cluster = Cluster($"{r.System} x{r.Gpus}", r.Id, r.Gpu, r.Gpus, r.GpusPerNode, r.NvlinkDomain, r.IntraGbs, r.InterGbs);
        if (r.Ep < 1)
            throw new InputException($"row {r.Id}: ep {r.Ep} must be at least 1 (1 for a dense model)");
        if (r.Etp is < 1)
            throw new InputException($"row {r.Id}: etp {r.Etp} must be at least 1, or empty");
        if (r.Fsdp is not (0 or 1))
            throw new InputException($"row {r.Id}: fsdp {r.Fsdp} must be 0 (distributed optimizer) or 1 (Megatron-FSDP)");
        var plan = new ParallelPlan(r.Tp, r.Pp, r.Dp, r.Cp, r.Fsdp == 1 ? 3 : 1, r.Mbs, r.Gbs, r.Seq, r.Vpp,
            Recompute(r.Id, r.Recompute), r.Tp > 1, Precision(r.Id, r.Precision), Ep: r.Ep, Etp: r.Etp ?? 1);
        if (PlanCheck.Problems(model, cluster, plan) is { Count: > 0 } problems)
            throw new InputException($"row {r.Id}: {string.Join("; ", problems)}");
        var stack = Stack(r.Id, r.Stack, ModernStack, csvPath);
        return new ValidationCase(r.Id, r.Gpus, model, cluster, plan, stack, r.StepTimeS, r.PeakMemoryGib,
            [$"model {Path.GetFileNameWithoutExtension(r.Model)}", $"system {r.System}", $"stack {stack.Stack}"]);
    }

    /// <summary>Prices every row.</summary>
    public static IReadOnlyList<ValidationRow> Run(IEnumerable<ValidationCase> cases) =>
        cases.Select(c => new ValidationRow(c, Pricer.Price(c.Model, c.Cluster, c.Plan, c.Software))).ToList();
}
