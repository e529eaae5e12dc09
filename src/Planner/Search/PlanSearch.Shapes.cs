using System.Collections.Concurrent;
using System.Diagnostics;
using Planner.Cli.Milp;
using Planner.CostModel.Memory;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;

namespace Planner.Cli.Search;

/// <summary>The parallel shapes a search expands: every split of the GPUs it may use.</summary>
public static partial class PlanSearch
{
    /// <summary>A parallel shape: the GPUs used and their split into tp · cp · pp · dp, at one sequence and precision.</summary>
    private readonly record struct Shape(int Tp, int Cp, int Pp, int Dp, int Seq, Precision Precision);

    private static IEnumerable<Shape> Shapes(SearchRequest req)
    {
        var m = req.Model;
        var c = req.Cluster;
        int tpMax = Math.Min(req.TpMax ?? c.NvlinkDomain, c.TotalGpus);
        foreach (int gpus in GpuCounts(req))
            foreach (int seq in req.Seqs)
                foreach (var precision in req.Precisions)
                    for (int tp = 1; tp <= tpMax; tp++)
                    {
                        if (gpus % tp != 0 || PlanCheck.TpProblem(m, tp) is not null)
                            continue;
                        for (int cp = 1; cp <= gpus / tp; cp *= 2)
                        {
                            // Context parallelism splits each sequence in 2·cp chunks of at least 512 tokens.
                            if (cp > 1 && (seq % (2 * cp) != 0 || seq / cp < 1024))
                                break;
                            if (gpus % (tp * cp) != 0)
                                break;
                            int rest = gpus / (tp * cp);
                            for (int pp = 1; pp <= Math.Min(rest, m.Layers); pp++)
                                if (rest % pp == 0)
                                    yield return new Shape(tp, cp, pp, rest / pp, seq, precision);
                        }
                    }
    }

    /// <summary>All GPUs, or with --allow-idle every whole-node count down to half the cluster.</summary>
    private static IEnumerable<int> GpuCounts(SearchRequest req)
    {
        int n = req.Cluster.TotalGpus, step = req.Cluster.GpusPerNode;
        yield return n;
        if (!req.AllowIdle)
            yield break;
        for (int g = n - step; g >= Math.Max(step, (n + 1) / 2); g -= step)
            yield return g;
    }
}
