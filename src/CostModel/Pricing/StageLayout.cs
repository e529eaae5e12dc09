namespace Planner.CostModel.Pricing;

/// <summary>
/// How the blocks are split over virtual pipeline stages: virtual stage v = chunk · pp + stage holds
/// <see cref="LayersOf"/>(v) blocks, split as evenly as possible with the remainder on the first virtual stages.
/// The embedding is on virtual stage 0, the LM head and loss on the last.
/// </summary>
public sealed class StageLayout
{
    private readonly int[] _layers;

    /// <summary>Splits <paramref name="layers"/> blocks over pp · vpp virtual stages.</summary>
    public StageLayout(int layers, int pp, int vpp)
    {
        Pp = pp;
        Vpp = vpp;
        int n = pp * vpp;
        _layers = new int[n];
        for (int v = 0; v < n; v++)
            _layers[v] = layers / n + (v < layers % n ? 1 : 0);
    }

    /// <summary>An explicit split: <paramref name="layersPerStage"/>[s] blocks on stage s (one chunk per stage).</summary>
    public StageLayout(IReadOnlyList<int> layersPerStage)
    {
        Pp = layersPerStage.Count;
        Vpp = 1;
        _layers = layersPerStage.ToArray();
    }

    /// <summary>The layout of a plan: its explicit stages, or the even split.</summary>
    public static StageLayout Of(Specs.ModelSpec model, Plans.ParallelPlan plan) =>
        plan.Stages is { } st ? new StageLayout(st.Layers) : new StageLayout(model.Layers, plan.Pp, plan.Vpp);

    /// <summary>Physical stages.</summary>
    public int Pp { get; }

    /// <summary>Model chunks per stage.</summary>
    public int Vpp { get; }

    /// <summary>Blocks on a virtual stage.</summary>
    public int LayersOf(int virtualStage) => _layers[virtualStage];

    /// <summary>Blocks on chunk <paramref name="chunk"/> of stage <paramref name="stage"/>.</summary>
    public int LayersOf(int stage, int chunk) => _layers[chunk * Pp + stage];

    /// <summary>Blocks on a physical stage, all chunks.</summary>
    public int LayersOnStage(int stage)
    {
        int sum = 0;
        for (int c = 0; c < Vpp; c++)
            sum += LayersOf(stage, c);
        return sum;
    }

    /// <summary>True for the chunk that holds the embedding.</summary>
    public bool HasEmbedding(int stage, int chunk) => stage == 0 && chunk == 0;

    /// <summary>True for the chunk that holds the LM head and loss.</summary>
    public bool HasHead(int stage, int chunk) => stage == Pp - 1 && chunk == Vpp - 1;
}
