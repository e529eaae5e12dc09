using Planner.CostModel.Plans;
using Planner.Executor.Model;

namespace Planner.Executor.Parallelize;

/// <summary>
/// LoRA (Hu et al. 2021) on a plain <see cref="GptModel"/>: every parameter present is frozen (the base), and each
/// targeted block linear gains adapters A [rank, in] and B [out, rank] (<see cref="GptParameters.Adapters"/>) whose
/// scaled product B·A adds to its output. Applied before tensor parallelism, which splits the adapters as their base.
/// The scale is α / rank with α = rank (1), the value LoRA's paper sets α to for the first rank it tries. Under QLoRA
/// (Dettmers et al. 2023) the weights of every block linear (<see cref="GptParameters.Linears"/>, targeted or not: the
/// set the cost model prices in NF4) are stored in NF4, quantized whole as the model is placed, before they are cut
/// into their tensor-parallel shards; biases, norms, the embedding and the head stay in the training precision.
/// </summary>
public static class LowRankAdapters
{
    /// <summary>Adds the adapters <paramref name="tuning"/> asks for and freezes the base (its block linears' weights
    /// stored in NF4 under QLoRA); nothing under full training.</summary>
    public static void Apply(GptModel model, FineTuning tuning)
    {
        if (!tuning.Adapters)
            return;
        var linears = model.Layers.SelectMany(layer => GptParameters.Linears(model.Spec, layer)).ToList();
        var adapters = linears
            .Where(l => tuning.Targets.HasFlag(l.Target))
            .SelectMany(l => GptParameters.Adapters(l.Name, model.SpecOf(l.Name + ".w").Shape, tuning.Rank, l.ColumnParallel))
            .ToList();
        model.Freeze(_ => true);
        if (tuning.QuantizedBase)
        {
            var weights = linears.Select(l => l.Name + ".w").ToHashSet();
            model.StoreInNf4(spec => weights.Contains(spec.Name));
        }
        model.Add(adapters);
        model.ScaleAdapters(1.0);
    }
}
