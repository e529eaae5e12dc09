using Planner.CostModel.Specs;

namespace Planner.CostModel.Plans;

/// <summary>Activation recomputation policy (Korthikanti et al. 2022).</summary>
public enum Recompute
{
    /// <summary>Keep every activation the backward pass needs.</summary>
    None,
    /// <summary>Recompute only the attention core (scores, softmax, dropout, values): large memory, few FLOPs.</summary>
    Selective,
    /// <summary>Keep only each block's input; recompute the whole block's forward in the backward pass.</summary>
    Full,
}

/// <summary>
/// One parallel configuration: the record that flows from the planner to the executor.
/// Ranks are placed TP innermost, then CP, DP, PP (see <see cref="Placement"/>).
/// </summary>
/// <param name="Tp">Tensor-parallel degree.</param>
/// <param name="Pp">Pipeline-parallel degree (physical stages).</param>
/// <param name="Dp">Data-parallel degree.</param>
/// <param name="Cp">Context-parallel degree (sequence split across ranks for attention).</param>
/// <param name="Zero">ZeRO stage 0–3 over the data-parallel group.</param>
/// <param name="Mbs">Micro-batch size, sequences.</param>
/// <param name="Gbs">Global batch size, sequences per optimizer step.</param>
/// <param name="Seq">Sequence length, tokens.</param>
/// <param name="Vpp">Model chunks per pipeline stage (interleaved 1F1B when above 1).</param>
/// <param name="Recompute">Activation recomputation policy.</param>
/// <param name="SequenceParallel">Shard the non-tensor-parallel activations along the sequence across the TP group.</param>
/// <param name="Precision">Training precision.</param>
/// <param name="Stages">An uneven split of the blocks over pipeline stages with a recompute policy per stage (from
/// the planner's MILP); null means the even split with <paramref name="Recompute"/> everywhere. Only with vpp = 1.</param>
/// <param name="RecomputeLayers">With full recompute, only the first this many blocks of each model chunk are
/// recomputed and the others keep their activations (Megatron-LM's <c>--recompute-method block
/// --recompute-num-layers</c>); null recomputes every block.</param>
/// <param name="OptimizerOffload">Fraction of the optimizer state (fp32 master weights and Adam's moments) kept in
/// host memory and stepped by the CPU while the GPU steps the rest (Megatron-LM's <c>--optimizer-cpu-offload
/// --optimizer-offload-fraction</c>, DeepSpeed's <c>offload_optimizer</c>); 0 keeps it all on the GPU.</param>
/// <param name="Ep">Expert-parallel degree: the MoE blocks' experts are split over this many ranks of a stage, which
/// exchange tokens by all-to-all.</param>
/// <param name="Etp">Expert-tensor-parallel degree: each expert's weights split over this many ranks.</param>
/// <param name="MoeImbalance">The busiest expert's token load over the mean (1: balanced, as published benchmarks force).</param>
/// <param name="MoeCapacity">Token dropping: each expert processes at most this many times its mean load (null: dropless).</param>
/// <param name="FineTuning">What trains and with which optimizer (null: every weight, with AdamW; see <see cref="Tuning"/>).</param>
public sealed record ParallelPlan(
    int Tp,
    int Pp,
    int Dp,
    int Cp,
    int Zero,
    int Mbs,
    int Gbs,
    int Seq,
    int Vpp,
    Recompute Recompute,
    bool SequenceParallel,
    Precision Precision,
    StagePlan? Stages = null,
    int? RecomputeLayers = null,
    double OptimizerOffload = 0,
    int Ep = 1,
    int Etp = 1,
    double MoeImbalance = 1,
    double? MoeCapacity = null,
    FineTuning? FineTuning = null)
{
    /// <summary>How the plan trains: <see cref="FineTuning"/>, or full training with AdamW when it is null.</summary>
    public FineTuning Tuning => FineTuning ?? Plans.FineTuning.Default;

    /// <summary>Expert-data-parallel degree: the ranks of a stage that hold the same experts, tp·cp·dp / (ep·etp).</summary>
    public int ExpertDp => Math.Max(1, Tp * Cp * Dp / (Ep * Etp));

    /// <summary>
    /// Tokens the busiest expert-parallel rank processes over the mean: the busiest expert's load (capped by the capacity
    /// factor when tokens are dropped) with the other experts of its rank at the mean. 1 without expert parallelism:
    /// a rank holding every expert processes every routed token whatever their spread.
    /// </summary>
    public double ExpertLoad(int experts)
    {
        // Every expert keeps at most the capacity; the mean load is 1.
        double cap = MoeCapacity ?? double.PositiveInfinity;
        double busiest = Math.Min(MoeImbalance, cap), others = Math.Min(1, cap);
        if (Ep <= 1)
            return others;
        double perRank = Math.Max(1, (double)experts / Ep);
        return (busiest + (perRank - 1) * others) / perRank;
    }

    /// <summary>
    /// True when the plan's expert dispatch sends each token once to every rank hit (Megatron-Core's flex dispatcher over
    /// DeepEP) rather than once per routed expert: when the software has that <paramref name="dispatcher"/>,
    /// routing is dropless (the flex dispatcher has no capacity factor) and tokens leave the rank at all (tp·ep &gt; 1,
    /// which Megatron requires of it). The pricing and the export read this one rule.
    /// </summary>
    public bool DeduplicatesDispatch(Pricing.ExpertDispatcher dispatcher) => dispatcher == Pricing.ExpertDispatcher.Flex && MoeCapacity is null && Tp * Ep > 1;

    /// <summary>The parameters of a rank's <paramref name="dense"/> and <paramref name="expert"/> weights that ZeRO at
    /// <paramref name="stage"/> or above leaves it: the dense ones sharded over the data- and context-parallel ranks, the
    /// experts over the expert-data-parallel ones (Megatron-Core's distributed optimizer and FSDP).</summary>
    public double Sharded(double dense, double expert, int stage) =>
        Zero >= stage ? dense / (Dp * Cp) + expert / ExpertDp : dense + expert;

    /// <summary>Blocks of a model chunk of <paramref name="layers"/> blocks on <paramref name="stage"/> that its
    /// recompute policy applies to; the rest run without recompute.</summary>
    public int RecomputedBlocks(int stage, int layers) =>
        RecomputeLayers is { } k && RecomputeOf(stage) == Recompute.Full ? Math.Min(k, layers) : layers;

    /// <summary>Short name of the recompute setting, e.g. "full", "none" or "full:3" (3 blocks per chunk).</summary>
    public string RecomputeLabel => RecomputeLayers is { } k ? $"{Name(Recompute)}:{k}" : Name(Recompute);

    /// <summary>The recompute policy of a stage.</summary>
    public Recompute RecomputeOf(int stage) => Stages?.Recompute[stage] ?? Recompute;

    /// <summary>The GPU group of a stage (0 unless the plan assigns stages to groups).</summary>
    public int GroupOf(int stage) => Stages?.GroupOf(stage) ?? 0;

    /// <summary>GPUs used: tp · pp · dp · cp.</summary>
    public int Gpus => Tp * Pp * Dp * Cp;

    /// <summary>Micro-batches each pipeline runs per optimizer step: gbs / (dp · mbs).</summary>
    public int MicroBatches => Gbs / (Dp * Mbs);

    /// <summary>Lower-case name of a recompute policy.</summary>
    public static string Name(Recompute r) => r.ToString().ToLowerInvariant();

    /// <summary>Parses a recompute policy name; null if unknown.</summary>
    public static Recompute? ParseRecompute(string s) => s.ToLowerInvariant() switch
    {
        "none" => Recompute.None,
        "selective" => Recompute.Selective,
        "full" => Recompute.Full,
        _ => null,
    };
}

/// <summary>
/// Blocks and recompute policy per pipeline stage, and on a heterogeneous cluster the GPU group of each stage
/// (value equality over the lists).
/// </summary>
public sealed record StagePlan(IReadOnlyList<int> Layers, IReadOnlyList<Recompute> Recompute, IReadOnlyList<int>? Groups = null)
{
    /// <summary>The GPU group of a stage (0 on a homogeneous cluster).</summary>
    public int GroupOf(int stage) => Groups?[stage] ?? 0;

    /// <inheritdoc />
    public bool Equals(StagePlan? other) =>
        other is not null && Layers.SequenceEqual(other.Layers) && Recompute.SequenceEqual(other.Recompute)
        && (Groups ?? []).SequenceEqual(other.Groups ?? []);

    /// <inheritdoc />
    public override int GetHashCode()
    {
        var h = new HashCode();
        foreach (int l in Layers)
            h.Add(l);
        foreach (var r in Recompute)
            h.Add(r);
        foreach (int g in Groups ?? [])
            h.Add(g);
        return h.ToHashCode();
    }

    /// <summary>Short form, e.g. "11f/13nx2/11n" (layers and f(ull)/s(elective)/n(one) per stage, "@gN" the GPU
    /// group, "xk" k identical stages in a row).</summary>
    public override string ToString()
    {
        var parts = new List<string>();
        for (int i = 0; i < Layers.Count;)
        {
            string one = $"{Layers[i]}{char.ToLowerInvariant(Recompute[i].ToString()[0])}{(Groups is null ? "" : $"@g{Groups[i]}")}";
            int j = i + 1;
            while (j < Layers.Count && Layers[j] == Layers[i] && Recompute[j] == Recompute[i] && GroupOf(j) == GroupOf(i))
                j++;
            parts.Add(j - i > 1 ? $"{one}x{j - i}" : one);
            i = j;
        }
        return string.Join('/', parts);
    }
}
