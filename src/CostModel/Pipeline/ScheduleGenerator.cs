using System.Collections.Immutable;
using System.Runtime.InteropServices;

namespace Planner.CostModel.Pipeline;

/// <summary>
/// Builds Megatron-LM style 1F1B pipeline schedules: non-interleaved (PipeDream-Flush) when vpp == 1,
/// interleaved (Narayanan et al. 2021) when vpp &gt; 1.
/// </summary>
public static class ScheduleGenerator
{
    // Total (stage, virtual stage, micro-batch) cells must stay indexable by int in the simulator.
    private const long MaxCells = int.MaxValue / 2;

    /// <summary>
    /// Checks whether a schedule can be generated.
    /// </summary>
    /// <param name="pp">Physical pipeline stages (≥ 1).</param>
    /// <param name="vpp">Model chunks per stage (≥ 1; must be 1 when pp == 1).</param>
    /// <param name="microBatches">Micro-batches per step (≥ 1; a multiple of pp when vpp &gt; 1).</param>
    /// <returns>A human-readable reason the combination is invalid, or null if it is valid.</returns>
    public static string? Validate(int pp, int vpp, int microBatches)
    {
        if (pp < 1)
            return $"pipeline-parallel size must be >= 1 (got {pp}).";
        if (vpp < 1)
            return $"virtual pipeline size must be >= 1 (got {vpp}).";
        if (microBatches < 1)
            return $"number of micro-batches must be >= 1 (got {microBatches}).";
        if (pp == 1 && vpp > 1)
            // Interleaving only exists to shrink the bubble between stages; with one stage it is meaningless.
            return $"virtual pipeline size {vpp} requires pipeline-parallel size > 1 (got pp = 1).";
        if (vpp > 1 && microBatches % pp != 0)
            return $"interleaved schedule requires the number of micro-batches ({microBatches}) " +
                   $"to be divisible by the pipeline-parallel size ({pp}).";
        if ((long)pp * vpp * microBatches > MaxCells)
            return $"schedule too large: pp × vpp × microBatches = {(long)pp * vpp * microBatches} exceeds {MaxCells}.";
        return null;
    }

    /// <summary>
    /// Generates the per-stage action lists.
    /// </summary>
    /// <param name="pp">Physical pipeline stages.</param>
    /// <param name="vpp">Model chunks per stage; 1 selects non-interleaved 1F1B.</param>
    /// <param name="microBatches">Micro-batches per optimizer step.</param>
    /// <exception cref="ArgumentException">The combination is rejected by <see cref="Validate"/>.</exception>
    public static PipelineSchedule Generate(int pp, int vpp, int microBatches)
    {
        var reason = Validate(pp, vpp, microBatches);
        if (reason is not null)
            throw new ArgumentException(reason);

        var stages = new IReadOnlyList<PipelineAction>[pp];
        for (int s = 0; s < pp; s++)
        {
            var actions = vpp == 1
                ? OneFOneB(pp, s, microBatches)
                : Interleaved(pp, vpp, s, microBatches);
            // Wrap without copying; ImmutableArray keeps the list read-only and lets the simulator get a span.
            stages[s] = ImmutableCollectionsMarshal.AsImmutableArray(actions);
        }
        return new PipelineSchedule(pp, vpp, microBatches, ImmutableCollectionsMarshal.AsImmutableArray(stages));
    }

    /// <summary>Number of warm-up forwards stage <paramref name="stage"/> runs before its first backward.</summary>
    /// <remarks>Same formulas the generator uses; exposed so memory models and tests share one definition.</remarks>
    public static int WarmupForwards(int pp, int vpp, int microBatches, int stage)
    {
        if (vpp == 1)
            return Math.Min(pp - stage - 1, microBatches);
        // Stage s must run all of chunk 0..vpp-2 for the first group (vpp-1)*pp, plus 2 per downstream
        // stage so its 1F1B phase lines up with the backwards coming back up the pipeline.
        long total = (long)microBatches * vpp;
        long w = (long)(pp - stage - 1) * 2 + (long)(vpp - 1) * pp;
        return (int)Math.Min(w, total);
    }

    /// <summary>
    /// <see cref="MaxInFlight"/> in closed form, without generating the schedule: the warm-up forwards plus the one
    /// forward of each steady 1F1B pair, capped at all the stage's forwards.
    /// </summary>
    public static int InFlightBound(int pp, int vpp, int microBatches, int stage)
    {
        long total = (long)microBatches * vpp;
        return (int)Math.Min(WarmupForwards(pp, vpp, microBatches, stage) + 1L, total);
    }

    /// <summary>
    /// Largest number of (micro-batch, chunk) forwards whose backward has not run yet, over the stage's
    /// action sequence — i.e. the peak number of micro-batch activation sets the stage holds (count).
    /// </summary>
    public static int MaxInFlight(PipelineSchedule s, int stage)
    {
        ArgumentNullException.ThrowIfNull(s);
        if ((uint)stage >= (uint)s.Stages.Count)
            throw new ArgumentOutOfRangeException(nameof(stage), stage, $"stage must be in 0..{s.Stages.Count - 1}.");

        var actions = s.Stages[stage];
        int live = 0, max = 0;
        for (int i = 0; i < actions.Count; i++)
        {
            if (actions[i].Kind == PassKind.Forward)
            {
                live++;
                if (live > max)
                    max = live;
            }
            else
            {
                live--;
            }
        }
        return max;
    }

    // PipeDream-Flush: warm-up forwards, then alternate F/B, then drain backwards. With pp == 1 the
    // warm-up is 0, which gives F0 B0 F1 B1 ... as required for no pipelining.
    private static PipelineAction[] OneFOneB(int pp, int stage, int m)
    {
        int warmup = WarmupForwards(pp, 1, m, stage);
        var a = new PipelineAction[2 * m];
        int n = 0;
        for (int i = 0; i < warmup; i++)
            a[n++] = new PipelineAction(PassKind.Forward, i, 0);
        for (int i = 0; i < m - warmup; i++)
        {
            a[n++] = new PipelineAction(PassKind.Forward, warmup + i, 0);
            a[n++] = new PipelineAction(PassKind.Backward, i, 0);
        }
        for (int i = m - warmup; i < m; i++)
            a[n++] = new PipelineAction(PassKind.Backward, i, 0);
        return a;
    }

    // Interleaved 1F1B: the k-th forward (resp. backward) of a stage is determined by k alone — groups of
    // pp micro-batches sweep chunk 0..vpp-1 (backward: vpp-1..0) — and the F/B interleaving follows the
    // same warm-up / steady / cool-down shape as 1F1B.
    private static PipelineAction[] Interleaved(int pp, int vpp, int stage, int m)
    {
        int total = m * vpp;
        int warmup = WarmupForwards(pp, vpp, m, stage);
        var a = new PipelineAction[2 * total];
        int n = 0;
        for (int k = 0; k < warmup; k++)
            a[n++] = InterleavedAt(k, pp, vpp, PassKind.Forward);
        for (int k = 0; k < total - warmup; k++)
        {
            a[n++] = InterleavedAt(warmup + k, pp, vpp, PassKind.Forward);
            a[n++] = InterleavedAt(k, pp, vpp, PassKind.Backward);
        }
        for (int k = total - warmup; k < total; k++)
            a[n++] = InterleavedAt(k, pp, vpp, PassKind.Backward);
        return a;
    }

    private static PipelineAction InterleavedAt(int k, int pp, int vpp, PassKind kind)
    {
        int groupSpan = pp * vpp;
        int group = k / groupSpan;
        int inGroup = k - group * groupSpan;
        int chunk = inGroup / pp;
        int mb = group * pp + (inGroup - chunk * pp);
        if (kind == PassKind.Backward)
            chunk = vpp - 1 - chunk;
        return new PipelineAction(kind, mb, chunk);
    }
}
