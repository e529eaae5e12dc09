using Planner.CostModel.Pipeline;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;

namespace Planner.CostModel.Training;

/// <summary>A stretch of a run at one global batch and sequence length, priced with the plan at that batch and length.</summary>
/// <param name="Steps">Optimizer steps of the stretch (fractional in the last, whose budget need not fill a step).</param>
/// <param name="Prediction">The plan's price at the stretch's batch and length.</param>
public sealed record RunSegment(double Steps, Prediction Prediction)
{
    /// <summary>Seconds of the stretch's steps.</summary>
    public double Seconds => Steps * Prediction.StepTimeSeconds;

    /// <summary>Tokens the stretch trains.</summary>
    public double Tokens => Steps * Prediction.Plan.Gbs * Prediction.Plan.Seq;
}

/// <summary>
/// The steps of a whole run: a batch ramp-up as Megatron-LM's <c>--rampup-batch-size</c> takes it (the batch is a
/// function of the samples consumed; each batch a whole number of micro-batches of every data-parallel rank, as
/// Megatron asserts) or a batch schedule file (<see cref="BatchSchedule"/>), a linear sequence-length warmup over its steps (priced at 16 lengths at most, each the mean of
/// its sixteenth of the warmup rounded down to a multiple of the plan's 8·tp·cp), then the plan's batch and length.
/// </summary>
public static class RunSchedule
{
    /// <summary>Lengths a warmup is priced at, at most.</summary>
    public const int WarmupPieces = 16;

    /// <summary>The run's stretches; <paramref name="price"/> prices the plan at another batch or length.</summary>
    public static IReadOnlyList<RunSegment> Segments(Prediction final, TrainingRequest req, Func<ParallelPlan, Prediction> price)
    {
        var plan = final.Plan;
        Check(plan, req);
        var cache = new Dictionary<(int, int), Prediction> { [(plan.Gbs, plan.Seq)] = final };
        Prediction At(int gbs, int seq) =>
            cache.TryGetValue((gbs, seq), out var p) ? p : cache[(gbs, seq)] = PriceAt(plan, gbs, seq, req, price);
        var segments = new List<RunSegment>();
        double tokens = req.Tokens, samples = 0, step = 0;
        while (tokens > 0)
        {
            int seq = SeqAt(plan, req.Warmup, step, out double stepsLeft);
            int gbs = BatchOf(plan, req, samples, req.Tokens - tokens, seq, out double batchSteps);
            double perStep = (double)gbs * seq;
            bool last = double.IsPositiveInfinity(batchSteps) && double.IsPositiveInfinity(stepsLeft);
            double steps = last ? tokens / perStep : Math.Min(Math.Min(batchSteps, stepsLeft), Math.Ceiling(tokens / perStep));
            segments.Add(new RunSegment(steps, At(gbs, seq)));
            tokens = last ? 0 : tokens - steps * perStep;
            samples += steps * gbs;
            step += steps;
        }
        return Merge(segments);
    }

    /// <summary>The batch after <paramref name="samples"/> samples and <paramref name="trained"/> tokens, and the
    /// whole steps at length <paramref name="seq"/> until it changes (infinite once it no longer does).</summary>
    private static int BatchOf(ParallelPlan plan, TrainingRequest req, double samples, double trained, int seq, out double steps)
    {
        if (req.Schedule is { } file)
        {
            bool inTokens = file.Unit == ScheduleUnit.Tokens;
            int batch = file.BatchAt(inTokens ? trained : samples, out double left);
            steps = double.IsPositiveInfinity(left) ? left : Math.Max(1, Math.Ceiling(left / (inTokens ? (double)batch * seq : batch)));
            return batch;
        }
        int gbs = BatchAt(plan.Gbs, req.Rampup, samples, out double samplesLeft);
        steps = double.IsPositiveInfinity(samplesLeft) ? samplesLeft : Math.Ceiling(samplesLeft / gbs);
        return gbs;
    }

    /// <summary>Every batch and length the schedule runs the plan at (the plan's own last).</summary>
    public static IEnumerable<(int Gbs, int Seq)> Shapes(ParallelPlan plan, TrainingRequest req)
    {
        var batches = new SortedSet<int> { plan.Gbs };
        foreach (var change in req.Schedule?.Changes ?? [])
            batches.Add(change.Gbs);
        for (double samples = 0; req.Rampup is { } r && samples < r.Samples;)
        {
            batches.Add(BatchAt(plan.Gbs, r, samples, out double left));
            samples += double.IsPositiveInfinity(left) ? r.Samples : left;
        }
        var lengths = new SortedSet<int> { plan.Seq };
        for (double step = 0; req.Warmup is { } w && step < w.Steps;)
        {
            lengths.Add(SeqAt(plan, w, step, out double left));
            step += left;
        }
        return from b in batches from s in lengths select (b, s);
    }

    private static Prediction PriceAt(ParallelPlan plan, int gbs, int seq, TrainingRequest req, Func<ParallelPlan, Prediction> price)
    {
        var at = plan with { Gbs = gbs, Seq = seq };
        // Too few micro-batches for the interleaved schedule (a multiple of pp): the stretch runs non-interleaved 1F1B,
        // as a run resumed from a parallelism-agnostic checkpoint (Megatron-Core's dist_checkpointing) can; the schedule
        // entry shows its vpp.
        if (at.Vpp > 1 && gbs % (at.Dp * at.Mbs) == 0 && ScheduleGenerator.Validate(at.Pp, at.Vpp, at.MicroBatches) is not null)
            at = at with { Vpp = 1 };
        try
        {
            return price(at);
        }
        catch (InputException e)
        {
            string key = gbs == plan.Gbs ? "seq_warmup" : req.Schedule is not null ? "batch_schedule" : "batch_rampup";
            throw new InputException(key, $"the plan cannot run gbs {gbs} at seq {seq}: {e.Message}");
        }
    }

    /// <summary>The batch after <paramref name="samples"/> samples (Megatron's RampupBatchsizeNumMicroBatchesCalculator),
    /// and the samples until it next grows (infinite once at the plan's).</summary>
    public static int BatchAt(int gbs, BatchRampup? r, double samples, out double samplesLeft)
    {
        samplesLeft = double.PositiveInfinity;
        if (r is null || samples >= r.Samples)
            return gbs;
        int increments = (gbs - r.Start) / r.Increment;
        if (increments == 0)
            return gbs;
        double perIncrement = r.Samples / increments;
        // The tolerance keeps a sum of stretches that lands a rounding error short of a threshold from stalling there.
        int k = (int)Math.Floor(samples / perIncrement + 1e-9);
        if (k >= increments)
            return gbs;
        samplesLeft = Math.Max(1, k == increments - 1 ? r.Samples - samples : (k + 1) * perIncrement - samples);
        return Math.Min(gbs, r.Start + k * r.Increment);
    }

    /// <summary>The length priced at <paramref name="step"/> of a warmup and the steps until the next priced length.</summary>
    public static int SeqAt(ParallelPlan plan, SeqWarmup? w, double step, out double stepsLeft)
    {
        stepsLeft = double.PositiveInfinity;
        if (w is null || step >= w.Steps)
            return plan.Seq;
        int pieces = Math.Min(WarmupPieces, w.Steps);
        double perPiece = (double)w.Steps / pieces;
        int j = Math.Min(pieces - 1, (int)Math.Floor(step / perPiece));
        stepsLeft = Math.Max(1, Math.Ceiling((j + 1) * perPiece - step));
        double mid = (j + 0.5) * perPiece;
        double length = w.Start + (plan.Seq - w.Start) * mid / w.Steps;
        int granule = Granule(plan);
        return Math.Clamp((int)(length / granule) * granule, Math.Min(granule, plan.Seq), plan.Seq);
    }

    /// <summary>Lengths of a warmup are multiples of this: 8 (tensor-core tiles) per tensor- and context-parallel rank.</summary>
    public static int Granule(ParallelPlan p) => 8 * p.Tp * p.Cp;

    private static void Check(ParallelPlan plan, TrainingRequest req)
    {
        if (req.Rampup is { } r)
        {
            if (r.Start > plan.Gbs)
                throw new InputException("batch_rampup", $"the start batch {r.Start} is above the global batch {plan.Gbs}");
            if ((plan.Gbs - r.Start) % r.Increment != 0)
                throw new InputException("batch_rampup", $"gbs {plan.Gbs} minus the start {r.Start} is not a multiple of the increment {r.Increment} (Megatron asserts it)");
            int unit = plan.Mbs * plan.Dp;
            if (r.Start % unit != 0 || r.Increment % unit != 0)
                throw new InputException("batch_rampup", $"the ramp's batches ({r.Start}, +{r.Increment}) must be multiples of mbs·dp = {unit} of the plan (Megatron asserts it)");
        }
        if (req.Schedule is { } f)
        {
            if (req.Rampup is not null)
                throw new InputException("batch_schedule", "give a batch ramp-up or a batch schedule, not both");
            if (f.Changes[^1].Gbs != plan.Gbs)
                throw new InputException("batch_schedule", $"{f.Source}: the last batch {f.Changes[^1].Gbs} is not the plan's gbs {plan.Gbs} (the schedule ends at the plan's batch)");
            int unit = plan.Mbs * plan.Dp;
            if (f.Changes.FirstOrDefault(c => c.Gbs % unit != 0) is { } bad)
                throw new InputException("batch_schedule", $"{f.Source}: the batch {bad.Gbs} is not a multiple of mbs·dp = {unit} of the plan");
        }
        if (req.Warmup is { } w && w.Start > plan.Seq)
            throw new InputException("seq_warmup", $"the start length {w.Start} is above the sequence length {plan.Seq}");
    }

    private static IReadOnlyList<RunSegment> Merge(List<RunSegment> segments)
    {
        var merged = new List<RunSegment>();
        foreach (var s in segments)
            if (merged.Count > 0 && ReferenceEquals(merged[^1].Prediction, s.Prediction))
                merged[^1] = merged[^1] with { Steps = merged[^1].Steps + s.Steps };
            else
                merged.Add(s);
        return merged;
    }
}
