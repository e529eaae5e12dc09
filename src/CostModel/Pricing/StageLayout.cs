using Planner.CostModel.Specs;

namespace Planner.CostModel.Pricing;

/// <summary>
/// How the blocks are split over virtual pipeline stages: virtual stage v = chunk · pp + stage holds
/// <see cref="LayersOf(int)"/>(v) consecutive blocks, split as evenly as possible with the remainder on the first
/// virtual stages. The embedding is on virtual stage 0, the LM head and loss (and any multi-token-prediction modules) on
/// the last. Blocks of different kinds (dense or MoE, windowed attention) are counted per chunk by kind.
/// </summary>
public sealed class StageLayout
{
    private readonly int[] _layers;
    private readonly int[] _start;
    private readonly int[] _kindOfLayer;

    /// <summary>Splits <paramref name="layers"/> uniform blocks over pp · vpp virtual stages.</summary>
    public StageLayout(int layers, int pp, int vpp) : this(EvenSplit(layers, pp * vpp), pp, vpp, new int[layers], 1)
    {
    }

    /// <summary>An explicit split: <paramref name="layersPerStage"/>[s] uniform blocks on stage s (one chunk per stage).</summary>
    public StageLayout(IReadOnlyList<int> layersPerStage) : this(layersPerStage.ToArray(), layersPerStage.Count, 1, new int[layersPerStage.Sum()], 1)
    {
    }

    private StageLayout(int[] layers, int pp, int vpp, int[] kindOfLayer, int kinds)
    {
        Pp = pp;
        Vpp = vpp;
        _layers = layers;
        _start = new int[layers.Length];
        for (int v = 1; v < layers.Length; v++)
            _start[v] = _start[v - 1] + layers[v - 1];
        _kindOfLayer = kindOfLayer;
        _mixes = new BlockMix[layers.Length];
        for (int v = 0; v < layers.Length; v++)
        {
            var counts = new int[kinds];
            for (int l = _start[v]; l < _start[v] + layers[v] && l < kindOfLayer.Length; l++)
                counts[kindOfLayer[l]]++;
            _mixes[v] = new BlockMix(counts);
        }
        _stageMixes = new BlockMix[pp];
        for (int s = 0; s < pp; s++)
        {
            var mix = _mixes[s];
            for (int c = 1; c < vpp; c++)
                mix = mix.Plus(_mixes[c * pp + s]);
            _stageMixes[s] = mix;
        }
    }

    private readonly BlockMix[] _mixes;
    private readonly BlockMix[] _stageMixes;

    private static readonly System.Runtime.CompilerServices.ConditionalWeakTable<ModelSpec, System.Collections.Concurrent.ConcurrentDictionary<(int, int), StageLayout>> Even = new();

    /// <summary>The layout of a plan: its explicit stages, or the even split (made once per model, pp and vpp); blocks
    /// classified by the model's kinds.</summary>
    public static StageLayout Of(ModelSpec model, Plans.ParallelPlan plan)
    {
        var kinds = LayerKinds.Of(model);
        if (plan.Stages is { } st)
            return new StageLayout(st.Layers.ToArray(), plan.Pp, 1, kinds.IndexOfLayer, kinds.Kinds.Count);
        return Even.GetValue(model, _ => new()).GetOrAdd((plan.Pp, plan.Vpp),
            key => new StageLayout(EvenSplit(model.Layers, key.Item1 * key.Item2), key.Item1, key.Item2, kinds.IndexOfLayer, kinds.Kinds.Count));
    }

    /// <summary>The most blocks a model chunk holds when <paramref name="layers"/> blocks are split evenly over
    /// pp · vpp virtual stages (the first ones take the remainder).</summary>
    public static int MostBlocksPerChunk(int layers, int pp, int vpp) => (layers + pp * vpp - 1) / (pp * vpp);

    private static int[] EvenSplit(int layers, int n)
    {
        var split = new int[n];
        for (int v = 0; v < n; v++)
            split[v] = layers / n + (v < layers % n ? 1 : 0);
        return split;
    }

    /// <summary>Physical stages.</summary>
    public int Pp { get; }

    /// <summary>Model chunks per stage.</summary>
    public int Vpp { get; }

    /// <summary>Blocks on a virtual stage.</summary>
    public int LayersOf(int virtualStage) => _layers[virtualStage];

    /// <summary>Blocks on chunk <paramref name="chunk"/> of stage <paramref name="stage"/>.</summary>
    public int LayersOf(int stage, int chunk) => _layers[chunk * Pp + stage];

    /// <summary>The model's index of the first block on chunk <paramref name="chunk"/> of stage <paramref name="stage"/>.</summary>
    public int FirstLayerOf(int stage, int chunk) => _start[chunk * Pp + stage];

    /// <summary>The kind (an index of <see cref="Compute.TransformerOps.Kinds"/>) of the model's block <paramref name="layer"/>.</summary>
    public int KindOfLayer(int layer) => _kindOfLayer[layer];

    /// <summary>Blocks on a physical stage, all chunks.</summary>
    public int LayersOnStage(int stage)
    {
        int sum = 0;
        for (int c = 0; c < Vpp; c++)
            sum += LayersOf(stage, c);
        return sum;
    }

    /// <summary>The blocks of a chunk by kind.</summary>
    public BlockMix MixOf(int stage, int chunk) => _mixes[chunk * Pp + stage];

    /// <summary>The blocks of a physical stage, all chunks, by kind.</summary>
    public BlockMix MixOnStage(int stage) => _stageMixes[stage];

    /// <summary>True for the chunk that holds the embedding.</summary>
    public bool HasEmbedding(int stage, int chunk) => stage == 0 && chunk == 0;

    /// <summary>True for the chunk that holds the LM head and loss.</summary>
    public bool HasHead(int stage, int chunk) => stage == Pp - 1 && chunk == Vpp - 1;
}
