using Planner.Executor.Torch;

namespace Planner.Executor.Model;

/// <summary>
/// Where a mixture-of-experts block's routed rows are computed: the plain model's are all computed here, each expert's
/// rows by that expert. Expert parallelism (<c>Planner.Executor.Parallelize.ExpertParallelism</c>) sends them to the
/// ranks that hold their experts and brings the results back.
/// </summary>
public class ExpertDispatch
{
    /// <summary>Every expert held and computed by this process.</summary>
    public static ExpertDispatch Local { get; } = new();

    /// <summary>
    /// The experts' outputs for <paramref name="rows"/> ([rows, hidden]: expert 0's rows first, then expert 1's, and so
    /// on, <paramref name="counts"/>[e] of expert e), in the same order; <paramref name="expert"/> computes an expert
    /// this process holds on its rows.
    /// </summary>
    public virtual Tensor Run(Tensor rows, long[] counts, Func<int, Tensor, Tensor> expert)
    {
        var parts = new List<Tensor>(counts.Length);
        long offset = 0;
        for (int e = 0; e < counts.Length; e++)
        {
            parts.Add(expert(e, rows.Narrow(0, offset, counts[e])));
            offset += counts[e];
        }
        return Tensor.Cat(parts, 0);
    }
}
