using System.Runtime.CompilerServices;

namespace Planner.CostModel.Specs;

/// <summary>
/// The kinds of a model's blocks and the kind of each block, computed once per model instance (a search asks for them
/// for every candidate plan).
/// </summary>
public sealed class LayerKinds
{
    private static readonly ConditionalWeakTable<ModelSpec, LayerKinds> Cache = new();

    private LayerKinds(ModelSpec model)
    {
        var kinds = new List<LayerKind>();
        IndexOfLayer = new int[model.Layers];
        for (int l = 0; l < model.Layers; l++)
        {
            var kind = model.KindOf(l);
            int index = kinds.IndexOf(kind);
            if (index < 0)
            {
                index = kinds.Count;
                kinds.Add(kind);
            }
            IndexOfLayer[l] = index;
        }
        Kinds = kinds;
    }

    /// <summary>The kinds, each once, in order of first appearance.</summary>
    public IReadOnlyList<LayerKind> Kinds { get; }

    /// <summary>For each block, the index of its kind in <see cref="Kinds"/>.</summary>
    public int[] IndexOfLayer { get; }

    /// <summary>The kinds of a model (a <c>with</c> copy of a model is another instance and gets its own).</summary>
    public static LayerKinds Of(ModelSpec model) => Cache.GetValue(model, m => new LayerKinds(m));
}
