using Planner.CostModel.Plans;
using Planner.CostModel.Specs;

namespace Planner.Cli.Search;

/// <summary>Why no plan fits, in one line, with the smallest change of cluster size that would make one fit, and the
/// QLoRA plan that would fit when QLoRA was not searched.</summary>
public static class Infeasibility
{
    /// <summary>Explains an empty search result.</summary>
    public static string Explain(SearchRequest req, SearchResult result)
    {
        var m = req.Model;
        var c = req.Cluster;
        double gib = Units.GiB;
        double capacity = c.Gpu.MemoryGib;
        // Mixed precision and fp32 Adam both keep 16 bytes of model state per parameter (2+2+12 or 4+4+8); the leanest
        // of the fine-tuning settings searched.
        double state = req.TuningList.Min(t => BlockLinears.ModelStateBytes(m, t));
        int modelParallel = Math.Min(c.NvlinkDomain, MaxTp(m, c.NvlinkDomain)) * Math.Min(m.Layers, Math.Max(1, c.TotalGpus / Math.Max(1, c.NvlinkDomain)));
        var parts = new List<string>();
        if (result.Enumerated == 0)
            return $"no parallel shape of {m.Name} divides the {c.TotalGpus} GPUs of '{c.Name}' with gbs {req.Gbs} (try --allow-idle, another --gbs or --tp-max)";
        parts.Add($"no plan of {result.Enumerated:N0} fits {m.Name} ({m.TotalParams / 1e9:F1}B parameters) in {capacity:F0} GiB per GPU ({c.Gpu.Name})");
        if (result.Smallest is { } s)
            parts.Add($"the leanest, {Describe(s.Plan)}, needs {s.PeakBytes / gib:F1} GiB per GPU");
        double perGpuAllSharded = state / c.TotalGpus / gib;
        double weightsAndGrads = m.TotalParams * 4.0 / c.TotalGpus / gib; // 16-bit weights and gradients
        if (perGpuAllSharded > capacity && c.Host is not null)
            parts.Add($"weights, gradients and optimizer state alone need {state / gib:F0} GiB; even with ZeRO-3 over all {c.TotalGpus} GPUs and all optimizer state offloaded to the hosts, weights and gradients need {weightsAndGrads:F1} GiB per GPU");
        else if (perGpuAllSharded > capacity)
            parts.Add($"weights, gradients and optimizer state alone need {state / gib:F0} GiB, {perGpuAllSharded:F0} GiB per GPU even fully sharded (ZeRO-3 over all {c.TotalGpus} GPUs)");
        else
            parts.Add($"weights, gradients and optimizer state need {state / gib:F0} GiB: {state / modelParallel / gib:F1} GiB per GPU at tp·pp = {modelParallel} without ZeRO, {perGpuAllSharded:F1} GiB with ZeRO-3 over all GPUs; activations take the rest");
        if (QloraThatFits(req) is { } qlora)
            parts.Add(qlora);
        if (SmallestFittingScale(req) is int k)
            parts.Add($"smallest change that fits: {k}x the nodes ({c.Nodes * k} nodes, {c.TotalGpus * k} GPUs)");
        else
            parts.Add("even 64x the nodes would not fit: shorten --seq or use GPUs with more memory");
        return string.Join("; ", parts);
    }

    /// <summary>When QLoRA was not among the methods searched: the fastest QLoRA plan that fits (the rank, targets and
    /// first optimizer of the request's first setting), with its memory; null when none does.</summary>
    private static string? QloraThatFits(SearchRequest req)
    {
        if (req.TuningList.Any(t => t?.QuantizedBase == true))
            return null;
        var like = req.TuningList[0] ?? FineTuning.Default;
        var qlora = like with { Method = FineTuneMethod.Qlora };
        var found = PlanSearch.Run(req with { Tunings = [qlora], Top = 1, AllVariants = false });
        if (found.Plans.Count == 0)
            return null;
        var best = found.Plans[0];
        return $"QLoRA (rank {qlora.Rank}, {FineTuning.Name(qlora.Optimizer)}) fits: {Describe(best.Plan)} needs {best.PeakMemoryGib:F1} GiB per GPU, " +
               $"{best.TrainableParameters / 1e6:F0}M trainable parameters";
    }

    private static int MaxTp(ModelSpec m, int limit)
    {
        for (int tp = limit; tp > 1; tp--)
            if (PlanCheck.TpProblem(m, tp) is null)
                return tp;
        return 1;
    }

    /// <summary>The smallest power-of-two multiple of the node count at which some plan fits, or null.</summary>
    private static int? SmallestFittingScale(SearchRequest req)
    {
        for (int k = 2; k <= 64; k *= 2)
        {
            var bigger = req with { Cluster = req.Cluster with { Nodes = req.Cluster.Nodes * k }, Top = 1, AllowIdle = false };
            if (PlanSearch.AnyFits(bigger))
                return k;
        }
        return null;
    }

    private static string Describe(ParallelPlan p) => Rendering.Tables.Describe(p);
}
