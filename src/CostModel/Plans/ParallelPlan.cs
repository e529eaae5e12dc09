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
    StagePlan? Stages = null)
{
    /// <summary>The recompute policy of a stage.</summary>
    public Recompute RecomputeOf(int stage) => Stages?.Recompute[stage] ?? Recompute;

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

/// <summary>Blocks and recompute policy per pipeline stage (value equality over the lists).</summary>
public sealed record StagePlan(IReadOnlyList<int> Layers, IReadOnlyList<Recompute> Recompute)
{
    /// <inheritdoc />
    public bool Equals(StagePlan? other) =>
        other is not null && Layers.SequenceEqual(other.Layers) && Recompute.SequenceEqual(other.Recompute);

    /// <inheritdoc />
    public override int GetHashCode()
    {
        var h = new HashCode();
        foreach (int l in Layers)
            h.Add(l);
        foreach (var r in Recompute)
            h.Add(r);
        return h.ToHashCode();
    }

    /// <summary>Short form, e.g. "11f/13n/13n/11n" (layers and f(ull)/s(elective)/n(one) per stage).</summary>
    public override string ToString() =>
        string.Join('/', Layers.Select((l, i) => $"{l}{char.ToLowerInvariant(Recompute[i].ToString()[0])}"));
}
