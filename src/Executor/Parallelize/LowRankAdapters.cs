using Planner.CostModel.Plans;
using Planner.Executor.Model;

namespace Planner.Executor.Parallelize;

/// <summary>
/// LoRA (Hu et al. 2021) on a plain <see cref="GptModel"/>: every parameter present is frozen (the base), and each
/// targeted block linear gains adapters A [rank, in] and B [out, rank] (<see cref="GptParameters.Adapters"/>) whose
/// scaled product B·A adds to its output. Applied before tensor parallelism, which splits the adapters as their base.
/// The scale is α / rank with α = rank (1), the value LoRA's paper sets α to for the first rank it tries.
/// </summary>
public static class LowRankAdapters
{
    /// <summary>Adds the adapters <paramref name="tuning"/> asks for and freezes the base; nothing under full training.</summary>
    public static void Apply(GptModel model, FineTuning tuning)
    {
        if (!tuning.Adapters)
            return;
        var adapters = model.Layers
            .SelectMany(layer => GptParameters.Linears(model.Spec, layer))
            .Where(l => tuning.Targets.HasFlag(l.Target))
            .SelectMany(l => GptParameters.Adapters(l.Name, model.SpecOf(l.Name + ".w").Shape, tuning.Rank, l.ColumnParallel))
            .ToList();
        model.Freeze(_ => true);
        model.Add(adapters);
        model.ScaleAdapters(1.0);
    }
}
