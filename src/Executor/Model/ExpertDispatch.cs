using Planner.Executor.Torch;

namespace Planner.Executor.Model;

/// <summary>
/// Where a mixture-of-experts block's routed rows are computed: the plain model's are all computed here, each expert's
/// rows by that expert. Expert parallelism (<c>Planner.Executor.Parallelize.ExpertParallelism</c>) sends them to the
/// ranks that hold their experts and brings the results back.
/// </summary>
/// <remarks>Each dispatch also says how unevenly the router spread the rows it dispatched over the experts
/// (<see cref="Dispatched.BusiestLoad"/>): what the cost model takes as the plan's <c>moe_imbalance</c>.</remarks>
public class ExpertDispatch
{
    /// <summary>Every expert held and computed by this process.</summary>
    public static ExpertDispatch Local { get; } = new();

    /// <summary>
    /// The experts' outputs for <paramref name="rows"/> ([rows, hidden]: expert 0's rows first, then expert 1's, and so
    /// on, <paramref name="counts"/>[e] of expert e), in the same order; <paramref name="expert"/> computes an expert
    /// this process holds on its rows. The busiest expert's load is over the rows this process routed, all of whose
    /// experts it holds.
    /// </summary>
    public virtual Dispatched Run(Tensor rows, long[] counts, Func<int, Tensor, Tensor> expert)
    {
        var parts = new List<Tensor>(counts.Length);
        long offset = 0;
        for (int e = 0; e < counts.Length; e++)
        {
            parts.Add(expert(e, rows.Narrow(0, offset, counts[e])));
            offset += counts[e];
        }
        return new Dispatched(Tensor.Cat(parts, 0), BusiestOverMean(counts, counts.Sum()));
    }

    /// <summary>The busiest of <paramref name="loads"/> over an expert's mean load: <paramref name="all"/> rows routed
    /// over <paramref name="experts"/> experts (by default as many as <paramref name="loads"/>); 1 when nothing was routed.</summary>
    protected static double BusiestOverMean(IReadOnlyCollection<long> loads, long all, int? experts = null)
    {
        double mean = (double)all / (experts ?? loads.Count);
        return mean > 0 ? loads.Max() / mean : 1;
    }
}

/// <summary>The experts' outputs of a dispatch, and how unevenly the router loaded the experts.</summary>
/// <param name="Output">The outputs, in the order of the rows dispatched.</param>
/// <param name="BusiestLoad">The rows of the busiest expert this process computed, over the mean rows an expert of the
/// dispatch's group computes (the experts' loads summed over the ranks that route together; 1: balanced).</param>
public readonly record struct Dispatched(Tensor Output, double BusiestLoad);
