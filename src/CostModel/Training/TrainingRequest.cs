namespace Planner.CostModel.Training;

/// <summary>Megatron-LM's <c>--rampup-batch-size start increment samples</c>: the global batch starts at
/// <paramref name="Start"/> sequences and grows by <paramref name="Increment"/> each samples / ((gbs − start) / increment)
/// samples consumed, reaching the plan's gbs after <paramref name="Samples"/> samples.</summary>
public sealed record BatchRampup(int Start, int Increment, double Samples);

/// <summary>Sequence-length warmup (Li et al. 2022, "The Stability-Efficiency Dilemma", DeepSpeed's <c>seqlen</c>
/// curriculum, fixed_linear): the length grows linearly from <paramref name="Start"/> to the plan's over the first
/// <paramref name="Steps"/> steps.</summary>
public sealed record SeqWarmup(int Start, int Steps);

/// <summary>What a whole run is asked to train and how.</summary>
/// <param name="Tokens">Tokens to train.</param>
/// <param name="AsyncCheckpoint">Checkpoints written in the background (PyTorch DCP's async_save, Megatron's
/// <c>--async-save</c>): training pauses only for the snapshot to host memory.</param>
/// <param name="Rampup">Batch ramp-up (null: the plan's gbs from the first step).</param>
/// <param name="Warmup">Sequence-length warmup (null: the plan's length from the first step).</param>
/// <param name="Schedule">A batch schedule file (null: the ramp-up, or the plan's gbs from the first step).</param>
public sealed record TrainingRequest(double Tokens, bool AsyncCheckpoint = false, BatchRampup? Rampup = null, SeqWarmup? Warmup = null,
    BatchSchedule? Schedule = null);
