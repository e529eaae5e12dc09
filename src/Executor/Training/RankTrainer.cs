using Planner.CostModel.Plans;
using Planner.CostModel.Specs;
using Planner.CostModel.Trace;
using Planner.Executor.Distributed;
using Planner.Executor.Model;
using Planner.Executor.Parallelize;
using Planner.Executor.Torch;

namespace Planner.Executor.Training;

/// <summary>What one rank measured in one optimizer step.</summary>
/// <param name="Loss">The global batch's mean loss (reported by the last pipeline stage; NaN elsewhere).</param>
/// <param name="TpComm">Seconds in tensor-parallel collectives.</param>
/// <param name="PpWait">Seconds blocked receiving from neighbouring stages (bubble and transfers).</param>
/// <param name="DpComm">Seconds reducing gradients (and ZeRO's gathers).</param>
/// <param name="Optimizer">Seconds in the optimizer step.</param>
/// <param name="CpComm">Seconds in the ring attention's transfers (posting them and waiting for what its compute did not hide).</param>
/// <param name="EpComm">Seconds in expert-parallel all-to-alls (token dispatch and combine, forward and backward).</param>
/// <param name="RoutingLoads">Each MoE block forward's busiest expert load over the mean, in the order they ran (empty
/// for a dense model).</param>
/// <param name="Trace">The step's passes, waits, data-parallel communication and optimizer with their seconds from the
/// step's start (stage field 0: the caller knows the rank), when the step was traced; null otherwise.</param>
/// <param name="TraceOriginNs">The traced step's start on the machine's monotonic clock (ns), the origin of
/// <paramref name="Trace"/>'s times: ranks of one machine line up by it.</param>
public sealed record StepMetrics(int Step, double Seconds, double Loss, double TpComm = 0, double PpWait = 0, double DpComm = 0, double Optimizer = 0,
    double CpComm = 0, double EpComm = 0, IReadOnlyList<double>? RoutingLoads = null, IReadOnlyList<TraceEvent>? Trace = null,
    long TraceOriginNs = 0)
{
    /// <summary>What remains: forward and backward kernels (and recompute).</summary>
    public double Compute => Math.Max(0, Seconds - TpComm - CpComm - EpComm - PpWait - DpComm - Optimizer);
}

/// <summary>Options of a training run.</summary>
/// <param name="LossScale">The first dynamic loss scale; null scales only fp16 (from 2^16).</param>
/// <param name="Device">Where the rank trains: the CPU (Gloo groups) or a CUDA device (NCCL groups).</param>
/// <param name="TraceFrom">The first step whose events the rank records and reports (run --trace: every timed step), or null.</param>
/// <param name="TimeoutSeconds">How long the rendezvous and every collective or transfer may be waited for (run --timeout).</param>
public sealed record TrainOptions(int Steps, ulong Seed = 1234, double LearningRate = TrainOptions.DefaultLearningRate, double WeightDecay = 0.0, double AdamEps = 1e-8, double? LossScale = null,
    Device Device = default, double TimeoutSeconds = TrainOptions.DefaultTimeoutSeconds, int? TraceFrom = null)
{
    /// <summary>The learning rate when none is given (every optimizer's: Adafactor steps without the relative step's
    /// parameter scale).</summary>
    public const double DefaultLearningRate = 1e-3;

    /// <summary>The collective and heartbeat timeout when none is given: ten minutes (torch.distributed's default).</summary>
    public const double DefaultTimeoutSeconds = 600;

    /// <summary><see cref="TimeoutSeconds"/> as a span.</summary>
    public TimeSpan Timeout => TimeSpan.FromSeconds(TimeoutSeconds);
}

/// <summary>
/// One rank of a training run: its process groups (<see cref="RankGroups"/>), its part of the model with the plan's
/// parallelism applied from outside (<see cref="Parallelizer"/>), and the step: the pipeline schedule
/// (<see cref="PipelineRunner"/>), then the data-parallel reduction and the optimizer (<see cref="DataParallelism"/>),
/// with loss scaling around them.
/// </summary>
public sealed class RankTrainer : IDisposable
{
    private readonly ParallelPlan _plan;
    private readonly RankGroups _groups;
    private readonly ParallelRank _rank;
    private readonly PipelineRunner _pipeline;
    private readonly ITokenSource _data;
    private readonly DeviceClock _clock;
    private readonly LossScaler? _scaler;
    private readonly ulong _seed;

    /// <summary>The dynamic loss scale, or null without loss scaling.</summary>
    public double? LossScale => _scaler?.Scale;

    /// <summary>Steps skipped because their scaled gradients overflowed.</summary>
    public int SkippedSteps => _scaler?.SkippedSteps ?? 0;

    /// <summary>Why the executor cannot train this plan of this model, or null.</summary>
    /// <param name="device">Where it would train (fp16 needs a CUDA device).</param>
    public static string? Unsupported(ModelSpec model, ParallelPlan plan, Device device = default)
    {
        var t = plan.Tuning;
        if (t.QuantizedBase && plan.Zero >= 3)
            return "qlora with zero 3: the executor keeps the 4-bit NF4 base whole on every rank, as the cost model prices it (it refuses zero 3 too); use zero 0, 1 or 2";
        if (t.Adapters && plan.Zero >= 3 && plan.Dp * plan.Cp > 1)
            return "lora with zero 3: the executor keeps the frozen base whole on every rank (the cost model shards it, as DeepSpeed and FSDP do); use zero 0, 1 or 2";
        if (!OptimizerSettings.Supported(t.Optimizer))
            return $"{FineTuning.Name(t.Optimizer)}: the executor has no such optimizer";
        if (model.Vocab % plan.Tp != 0)
            return $"the executor needs tp ({plan.Tp}) to divide the vocabulary ({model.Vocab}); pad the vocabulary in the model config";
        if (plan.Precision == Precision.Fp16 && device.Type == DeviceType.Cpu)
            return "fp16: the executor trains on CPU, where libtorch has no fp16 matrix multiply ('addmm' is not implemented for Half); train in bf16 or fp32 (--loss-scale exercises the fp16 loss scaling in any precision)";
        if (plan.Cp > 1 && ContextUnsupported(model, plan) is { } cp)
            return cp;
        if (model.KvHeads % plan.Tp != 0)
            return $"the executor needs tp ({plan.Tp}) to divide the {model.KvHeads} key/value heads";
        if (model.IsMoe && MoeUnsupported(model, plan) is { } moe)
            return moe;
        if (plan.Precision.IsQuantized())
            return $"{plan.Precision.Name()}: the executor has no low-precision GEMMs (its libtorch binding runs fp32, bf16 and fp16); train in bf16";
        if (model.Mla is not null)
            return "the executor does not run multi-head latent attention (the model's kv_lora_rank) yet";
        if (model.MtpLayers > 0)
            return "the executor does not run multi-token prediction (num_nextn_predict_layers) yet";
        if (model.Window is not null)
            return "the executor does not run sliding-window attention (sliding_window) yet";
        // Heads of any width train (head_dim, or hidden // heads); rotary positions rotate the two halves of a head.
        if (model.Positions == PositionKind.Rotary && model.HeadDim % 2 != 0)
            return $"the executor's rotary positions need heads of an even width; the model's are {model.HeadDim} wide (head_dim, or hidden // heads)";
        return null;
    }

    /// <summary>Why the executor cannot train this model with context parallelism (cp &gt; 1), or null.</summary>
    private static string? ContextUnsupported(ModelSpec model, ParallelPlan plan)
    {
        if (model.IsMoe)
            return "context parallelism with mixture-of-experts blocks: not yet in the executor (cp must be 1)";
        if (plan.Seq % (2 * plan.Cp) != 0)
            return $"context parallelism needs seq ({plan.Seq}) divisible by 2·cp = {2 * plan.Cp} (each sequence is cut in 2·cp chunks)";
        if (plan.SequenceParallel && plan.Seq / plan.Cp % plan.Tp != 0)
            return $"sequence parallelism needs the {plan.Seq / plan.Cp} tokens per CP rank divisible by tp ({plan.Tp})";
        return null;
    }

    /// <summary>Why the executor cannot train this mixture-of-experts model under this plan, or null.</summary>
    private static string? MoeUnsupported(ModelSpec model, ParallelPlan plan)
    {
        if (plan.Ep > 1 && plan.Zero >= 3)
            return "zero 3 with expert parallelism: not yet in the executor (use zero 0, 1 or 2)";
        if (plan.Ep > 1 && plan.Zero >= 1 && plan.ExpertDp > 1)
            return $"zero {plan.Zero} with expert parallelism over {plan.ExpertDp} expert-data-parallel ranks: the executor keeps the experts' optimizer state whole (ZeRO shards the dense parameters only); use zero 0"
                + (model.Moe!.Experts % (plan.Ep * plan.ExpertDp) == 0 ? $", or ep = {plan.Ep * plan.ExpertDp} so that no two ranks of a stage hold the same experts" : "");
        if (plan.Etp != 1 && plan.Etp != plan.Tp)
            return $"expert tensor parallelism {plan.Etp}: the executor keeps the experts whole (etp 1) or splits them as the dense MLP (etp = tp = {plan.Tp})";
        if (plan.Tp > 1 && plan.Etp > 1 && !plan.SequenceParallel)
            return "experts split over tp need sequence parallelism in the executor (as in Megatron-Core); or keep them whole (etp 1)";
        if (plan.Tuning.Adapters)
            return "lora on mixture-of-experts models: not yet in the executor";
        if (model.Mlp != MlpKind.SwiGlu || model.Biases)
            return "mixture-of-experts blocks: the executor builds gated (SwiGLU) experts without biases";
        if (model.Moe!.ExpertFfn % plan.Etp != 0 || model.Moe.SharedFfn % plan.Tp != 0)
            return $"the executor needs etp ({plan.Etp}) to divide the experts' ffn ({model.Moe.ExpertFfn}) and tp ({plan.Tp}) the shared expert's ({model.Moe.SharedFfn})";
        return null;
    }

    /// <summary>Sets up the rank: groups (every rank creates them in the same order), parameters and optimizer.</summary>
    public RankTrainer(ModelSpec model, ParallelPlan plan, int rank, Store store, ITokenSource data, TrainOptions options, bool loopback = true)
    {
        if (Unsupported(model, plan, options.Device) is { } reason)
            throw new NotSupportedException(reason);
        TorchRuntime.SetDevice(options.Device);
        _plan = plan;
        _data = data;
        _seed = options.Seed;
        _clock = new DeviceClock(options.Device);
        if (plan.Precision == Precision.Fp16 || options.LossScale is not null)
            _scaler = new LossScaler(options.LossScale ?? 65536);
        _groups = new RankGroups(plan, rank, store, options.Device, loopback, model.TiedEmbeddings, model.IsMoe, options.Timeout);
        _rank = Parallelizer.Apply(model, plan, _groups, options.Seed, options.Device,
            new OptimizerSettings(plan.Tuning.Optimizer, options.LearningRate, options.WeightDecay, options.AdamEps, (long)plan.Gbs * plan.Seq), plan.Tuning);
        _pipeline = new PipelineRunner(_rank, plan, _groups.Me.Pp, _groups.Links, _clock, model.Hidden);
    }

    /// <summary>
    /// The stage's parameters by name (this rank's TP shards; NF4 weights dequantized), for checks against the
    /// single-process run. Under ZeRO-3 they are all-gathered for the copy and freed again: every DP rank must call this.
    /// </summary>
    public Dictionary<string, float[]> ParameterValues() => _rank.Data.ParameterValues();

    /// <summary>
    /// Bytes of memory the stage's parameters and the ZeRO master shard hold now (between steps: the full parameters
    /// and the shard under ZeRO-1/2, only the shard under ZeRO-3; a QLoRA base's NF4 weights as their codes and absmax).
    /// </summary>
    public long ResidentParameterBytes => _rank.Model.StorageBytes + _rank.Data.ShardBytes;

    /// <summary>Bytes the full-size gradients of the stage held when the last step's pipeline ended (before the
    /// data-parallel reduction): all of them under ZeRO-0/1, none under ZeRO-2/3 (reduce-scattered chunk by chunk).</summary>
    public long GradientBytesAfterBackward { get; private set; }

    /// <summary>Reductions of the last step that started during the backward (ZeRO-0/1/2 with dp &gt; 1): per chunk, one
    /// per block, and the head's and the embedding's where the chunk has them; under ZeRO-2 in every micro-batch.</summary>
    public int OverlappedReduces { get; private set; }

    /// <summary>The model's parameters that train on this rank's stage, counted whole (not this rank's shards): every
    /// trainable one the stage holds, an embedding tied to the head counted on the first stage only, the routed experts
    /// of the other expert-parallel ranks (as many as this one holds) too.</summary>
    public long TrainableParameters => _rank.Model.TrainableSpecs
        .Where(s => s.Name != "wte" || _rank.Model.HasEmbedding)
        .Sum(s => s.Shape.Aggregate(1L, (a, b) => a * b) * (ExpertParallelism.IsExpert(s.Name) ? _plan.Ep : 1));

    /// <summary>The last step's load-balancing loss of this rank's stage (its MoE blocks' losses summed, averaged over
    /// the micro-batches, without the coefficient), or null for a dense model.</summary>
    public double? AuxLoss { get; private set; }

    /// <summary>Bytes of the optimizer's state on this rank (after the first step).</summary>
    public long OptimizerStateBytes => _rank.Data.OptimizerStateBytes;

    /// <summary>The rank's mesh coordinates.</summary>
    public MeshCoordinates Coordinates => _groups.Me;

    /// <summary>The plan trained.</summary>
    public ParallelPlan Plan => _plan;

    /// <summary>The rank's optimizers with what each steps (what a checkpoint saves).</summary>
    public IReadOnlyList<SteppedWeights> Stepped => _rank.Data.Stepped;

    /// <summary>The loss scaler's state, or null without loss scaling.</summary>
    public LossScalerState? ScalerState => _scaler?.State;

    /// <summary>
    /// After a checkpoint's values were written into the stepped tensors: the parameters gathered from ZeRO's shards
    /// again (every rank must call this) and the loss scaler continued from <paramref name="scaler"/>.
    /// </summary>
    public void Restored(LossScalerState? scaler)
    {
        _rank.Data.Restored();
        if ((scaler is null) != (_scaler is null))
            throw new InvalidDataException(scaler is null
                ? "the checkpoint was written without loss scaling; this run scales the loss (fp16 or --loss-scale)"
                : "the checkpoint was written with loss scaling; this run does not scale the loss");
        if (scaler is not null)
            _scaler!.Restore(scaler);
    }

    /// <summary>Runs one optimizer step; with <paramref name="trace"/> its events are recorded (<see cref="StepMetrics.Trace"/>).</summary>
    public StepMetrics Step(int step, bool trace = false)
    {
        long t0 = _clock.Now();
        _pipeline.Recorded = trace ? [] : null;
        TensorParallel.TakeCommSeconds();
        ContextParallel.TakeCommSeconds();
        _rank.Experts?.TakeCommSeconds();
        var data = _rank.Data;
        data.BeginStep();
        if (data.RefreshesCurvature(step))
            CurvaturePass(step);
        double lossSum = _pipeline.Run(microBatch => Batch(step, microBatch), _scaler?.Scale ?? 1);
        var routingLoads = _pipeline.RoutingLoads.ToArray();
        AuxLoss = _rank.Model.Spec.IsMoe ? _pipeline.AuxLossSum / _plan.MicroBatches : null;
        OverlappedReduces = data.StartedReductions;
        GradientBytesAfterBackward = _rank.Model.Parameters.Sum(p => p.Grad?.StorageBytes ?? 0);
        double tpComm = TensorParallel.TakeCommSeconds(), cpComm = ContextParallel.TakeCommSeconds();
        double epComm = _rank.Experts?.TakeCommSeconds() ?? 0;
        long flushed = trace ? _clock.Now() : 0;
        data.ReduceAndStep(Unscale);
        long stepped = trace ? _clock.Now() : 0;
        double loss = double.NaN;
        if (_rank.Model.HasHead)
        {
            using var l = Tensor.From([lossSum / _plan.MicroBatches], 1).On(_rank.Model.Device);
            _groups.Dp?.AllReduce(l);
            loss = l.Item() / (_groups.Dp?.Size ?? 1);
        }
        double seconds = _clock.Since(t0);
        var events = trace ? StepEvents(t0, flushed, stepped, data) : null;
        return new StepMetrics(step, seconds, loss, tpComm, _pipeline.WaitSeconds, data.CommSeconds, data.OptimizerSeconds, cpComm, epComm, routingLoads, events,
            trace ? t0 : 0);
    }

    /// <summary>The traced step's events, in seconds from its start <paramref name="t0"/>: the pipeline's passes and waits
    /// as recorded, then the data-parallel reduction (from the flush, for as long as it was timed) and the optimizer step
    /// (ending where the step's reduction and update ended). The reduction's buckets that overlapped the backward are
    /// inside its time, not placed one by one.</summary>
    private List<TraceEvent> StepEvents(long t0, long flushed, long stepped, DataParallelism data)
    {
        var events = _pipeline.Recorded!.Select(e => new TraceEvent(0, e.Lane, e.Name, (e.Start - t0) / 1e9, (e.End - e.Start) / 1e9)).ToList();
        double flush = (flushed - t0) / 1e9, end = (stepped - t0) / 1e9;
        double optimizer = Math.Min(data.OptimizerSeconds, Math.Max(0, end - flush));
        double reduce = Math.Min(data.CommSeconds, Math.Max(0, end - flush - optimizer));
        if (reduce > 0)
            events.Add(new(0, TraceLane.DataParallelComm, "data-parallel reduction (timed, after the flush)", flush, reduce));
        if (optimizer > 0)
            events.Add(new(0, TraceLane.Optimizer, "optimizer step", end - optimizer, optimizer));
        _pipeline.Recorded = null;
        return events;
    }

    /// <summary>
    /// Sophia's curvature pass: the step's batch through the pipeline against labels the model draws from its own
    /// outputs (each token's draw keyed by its place in the run, so every layout draws what one process draws), its
    /// mean gradient reduced as a step's and squared into the curvature estimate.
    /// </summary>
    private void CurvaturePass(int step)
    {
        _rank.Model.SampledTargets = _seed ^ (0x5eedUL + (ulong)step);
        _pipeline.Run(microBatch => Keyed(step, microBatch), _scaler?.Scale ?? 1);
        _rank.Model.SampledTargets = null;
        _rank.Data.ReduceAndUpdateCurvature(UnscaleCurvature);
    }

    /// <summary>A micro-batch's inputs, with each target replaced by its token's key: its index among all the tokens of the run.</summary>
    private (long[] Ids, long[] Keys) Keyed(int step, int microBatch)
    {
        var (ids, _) = Batch(step, microBatch);
        var positions = Positions();
        long first = FirstSample(step, microBatch);
        return (ids, Enumerable.Range(0, ids.Length).Select(i => (first + i / positions.Length) * _plan.Seq + positions[i % positions.Length]).ToArray());
    }

    /// <summary>The run's index of a micro-batch's first sample on this rank (the DP rank's share of the step's batch).</summary>
    private long FirstSample(int step, int microBatch) =>
        (long)step * _plan.Gbs + (long)_groups.Me.Dp * (_plan.Gbs / _plan.Dp) + (long)microBatch * _plan.Mbs;

    /// <summary>The positions in each sample of the tokens this rank trains on: all of them, or its CP chunks.</summary>
    private long[] Positions() => _plan.Cp == 1
        ? ContextHooks.Plain.Positions(_plan.Seq)
        : ContextParallel.Positions(_plan.Seq, _plan.Cp, _groups.Me.Cp);

    private (long[] Ids, long[] Targets) Batch(int step, int microBatch)
    {
        int mbs = _plan.Mbs;
        var positions = Positions();
        int local = positions.Length;
        var ids = new long[mbs * local];
        var targets = new long[mbs * local];
        var buffer = new long[_plan.Seq + 1];
        long first = FirstSample(step, microBatch);
        for (int i = 0; i < mbs; i++)
        {
            _data.Sample(first + i, buffer);
            for (int t = 0; t < local; t++)
            {
                ids[i * local + t] = buffer[positions[t]];
                targets[i * local + t] = buffer[positions[t] + 1];
            }
        }
        return (ids, targets);
    }

    /// <summary>
    /// Loss scaling: true when every rank's gradients are finite, after dividing them by the scale; false (the step is
    /// to be skipped, the scale halved) when any rank's overflowed. Without a scaler, true.
    /// </summary>
    private bool Unscale(IReadOnlyList<Tensor> optimized)
    {
        if (_scaler is null)
            return true;
        return _scaler.Update(UnscaleGradients(optimized));
    }

    /// <summary>A curvature pass's gradients unscaled as a step's, its refresh skipped when any rank's overflowed (the
    /// scale is the step's to adjust).</summary>
    private bool UnscaleCurvature(IReadOnlyList<Tensor> optimized) => _scaler is null || UnscaleGradients(optimized);

    /// <summary>True when every rank's gradients are finite, then divided by the scale.</summary>
    private bool UnscaleGradients(IReadOnlyList<Tensor> optimized)
    {
        // Every rank decides the same: the overflow count summed over the TP, PP and DP axes covers the whole grid.
        using var overflow = Tensor.From([LossScaler.AllFinite(optimized.Select(p => p.Grad)) ? 0f : 1f], 1).On(_rank.Model.Device);
        foreach (var g in new[] { _groups.Tp, _groups.Pp, _groups.Dp })
            g?.AllReduce(overflow);
        bool finite = overflow.Item() == 0;
        if (finite)
        {
            using var scope = DisposeScope.Begin();
            foreach (var p in optimized)
                if (p.Grad is { } g)
                    p.SetGrad(g / _scaler!.Scale);
        }
        return finite;
    }

    /// <summary>Frees everything.</summary>
    public void Dispose()
    {
        _rank.Dispose();
        _groups.Dispose();
    }
}
