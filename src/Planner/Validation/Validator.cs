using System.Globalization;
using CsvHelper;
using CsvHelper.Configuration;
using Planner.CostModel.Comm;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;

namespace Planner.Cli.Validation;

/// <summary>One priced row: what we predict against what the source measured.</summary>
public sealed record ValidationRow(PublishedRun Run, Prediction Prediction)
{
    /// <summary>Signed error of the predicted step time, percent of the published one.</summary>
    public double ErrorPct => (Prediction.StepTimeSeconds - Run.StepTimeS) / Run.StepTimeS * 100;
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
/// latencies and efficiencies. Nothing is tuned per row.
/// </summary>
public static class Validator
{
    /// <summary>Latency per hop inside a node when a row gives none, µs (the DGX presets' value).</summary>
    public const double IntraLatencyUs = 3;
    /// <summary>Latency per hop across nodes when a row gives none, µs.</summary>
    public const double InterLatencyUs = 6;

    /// <summary>
    /// The software of the published runs: Megatron-LM of 2021–22 reduced data-parallel gradients after the
    /// backward pass, without overlap (overlap arrived later with its distributed optimizer), and computed attention
    /// with a materialised softmax (fused flash attention came later).
    /// </summary>
    public static PricingOptions Software { get; } = new(OverlapGradReduce: false, FlashAttention: false);

    /// <summary>Reads the CSV; a malformed file is an <see cref="InputException"/> naming it.</summary>
    public static IReadOnlyList<PublishedRun> Read(string path)
    {
        if (!File.Exists(path))
            throw new InputException($"--runs: file '{path}' not found");
        try
        {
            using var reader = new StreamReader(path);
            using var csv = new CsvReader(reader, new CsvConfiguration(CultureInfo.InvariantCulture) { TrimOptions = TrimOptions.Trim });
            var rows = csv.GetRecords<PublishedRun>().ToList();
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
    public static ClusterSpec Cluster(PublishedRun r) => new(
        $"{r.Gpus}x{r.Gpu}",
        ClusterLoader.LoadGpu(r.Gpu, $"row {r.Id}: gpu"),
        Nodes: (r.Gpus + r.GpusPerNode - 1) / r.GpusPerNode,
        GpusPerNode: r.GpusPerNode,
        IntraNode: new LinkSpec(r.IntraGbs, IntraLatencyUs, ClusterLoader.DefaultIntraNodeEfficiency),
        InterNode: new LinkSpec(r.InterGbs, InterLatencyUs, ClusterLoader.DefaultInterNodeEfficiency));

    /// <summary>The plan of a row.</summary>
    public static ParallelPlan Plan(PublishedRun r) => new(
        r.Tp, r.Pp, r.Dp, r.Cp, r.Zero, r.Mbs, r.Gbs, r.Seq, r.Vpp,
        ParallelPlan.ParseRecompute(r.Recompute) ?? throw new InputException($"row {r.Id}: recompute '{r.Recompute}' is not none, selective or full"),
        r.SeqParallel,
        PrecisionInfo.TryParse(r.Precision) ?? throw new InputException($"row {r.Id}: precision '{r.Precision}' is unknown"));

    /// <summary>Prices every row.</summary>
    public static IReadOnlyList<ValidationRow> Run(IEnumerable<PublishedRun> runs) =>
        runs.Select(r => new ValidationRow(r, Pricer.Price(Model(r), Cluster(r), Plan(r), Software))).ToList();
}
