using System.Globalization;
using Planner.CostModel.Pricing;
using Planner.Executor.Model;
using Planner.Executor.Torch;

namespace Planner.Executor.Parallelize;

/// <summary>
/// The trainable parameters of each gradient bucket of one rank's model chunks, by the cost model's rule
/// (<see cref="GradientBuckets"/>): a block's are its "layers.{i}." parameters, the embedding's the token table (where
/// the stage holds the embedding) and the positions, the head's the rest (the final norm, the output layer, or the
/// token table tied to it on the last stage).
/// </summary>
public sealed class Buckets
{
    private readonly StageLayout _layout;
    private readonly int _stage;
    private readonly Dictionary<int, List<Tensor>> _blocks = [];
    private readonly List<Tensor> _embedding = [], _head = [];

    /// <summary>Sorts <paramref name="model"/>'s trainable parameters (those of <paramref name="only"/> if given) into buckets.</summary>
    public Buckets(GptModel model, StageLayout layout, int stage, int chunks, IReadOnlyList<ParameterSpec>? only = null)
    {
        _layout = layout;
        _stage = stage;
        Chunks = chunks;
        foreach (var spec in only ?? model.TrainableSpecs)
        {
            var p = model[spec.Name];
            if (spec.Name.StartsWith("layers.", StringComparison.Ordinal))
            {
                int layer = int.Parse(spec.Name.Split('.')[1], CultureInfo.InvariantCulture);
                if (!_blocks.TryGetValue(layer, out var list))
                    _blocks[layer] = list = [];
                list.Add(p);
            }
            else if (spec.Name == "wpe" || (spec.Name == "wte" && model.HasEmbedding))
                _embedding.Add(p); // with tied embeddings on one stage the head's use of wte comes first
            else
                _head.Add(p);
        }
    }

    /// <summary>The rank's model chunks.</summary>
    public int Chunks { get; }

    /// <summary>The buckets of chunk <paramref name="chunk"/>: its blocks' in the model's order, the head's, the embedding's.</summary>
    public IEnumerable<GradientBucket> Of(int chunk) => GradientBuckets.Of(_layout, _stage, chunk);

    /// <summary>The parameters of a bucket.</summary>
    public List<Tensor> this[GradientBucket bucket] => bucket.Kind switch
    {
        BucketKind.Block => _blocks[bucket.Layer],
        BucketKind.Head => _head,
        _ => _embedding,
    };
}
