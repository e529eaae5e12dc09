using Planner.CostModel.Pipeline;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Trace;
using Planner.Executor.Distributed;
using Planner.Executor.Parallelize;
using Planner.Executor.Torch;

namespace Planner.Executor.Training;

/// <summary>
/// Runs one rank's part of the plan's pipeline schedule (the cost model's <see cref="ScheduleGenerator"/>): the forward
/// and backward passes of its chunks in the schedule's order, the activations and their gradients sent to and received
/// from the neighbouring stages, and around each pass what the parallelism steps ask for (ZeRO-3's gathers, the
/// gradient buckets handed to the data-parallel reduction as they become final).
/// </summary>
public sealed class PipelineRunner
{
    private sealed class InFlight
    {
        public required DisposeScope Scope;
        public required int Chunk;
        public Tensor? Input;   // received activation (requires grad), null on the embedding chunk
        public Tensor? Output;  // chunk output, or the scaled loss on the last chunk
        public List<Segment>? Segments; // blocks run from detached inputs, so that the backward can stop between them
        public bool Overlap; // each bucket's gradients go to the DP reduction when done
        public Tensor? Embedded; // segmented embedding chunk: the embedding's output, with graph
    }

    private readonly ParallelRank _rank;
    private readonly ParallelPlan _plan;
    private readonly int _stage;
    private readonly ProcessGroup[] _links;
    private readonly DeviceClock _clock;
    private readonly PipelineSchedule _schedule;
    private readonly int[] _lastMicroBatch; // the micro-batch of each chunk's last backward on this stage
    private readonly long[] _receiveShape;

    /// <summary>The runner of pipeline stage <paramref name="stage"/> (<paramref name="links"/>: the pipeline's
    /// point-to-point groups).</summary>
    public PipelineRunner(ParallelRank rank, ParallelPlan plan, int stage, ProcessGroup[] links, DeviceClock clock, long hidden)
    {
        _rank = rank;
        _plan = plan;
        _stage = stage;
        _links = links;
        _clock = clock;
        _schedule = ScheduleGenerator.Generate(plan.Pp, plan.Vpp, plan.MicroBatches);
        rank.Model.RecordsRouting = rank.Model.Spec.IsMoe;
        _lastMicroBatch = new int[plan.Vpp];
        foreach (var a in _schedule.Stages[stage])
            if (a.Kind == PassKind.Backward)
                _lastMicroBatch[a.Chunk] = a.MicroBatch;
        // Tokens of a micro-batch in this rank's activations: seq / cp, and / tp under sequence parallelism.
        long seq = plan.SequenceParallel ? plan.Seq / plan.Cp / plan.Tp : plan.Seq / plan.Cp;
        _receiveShape = [plan.Mbs, seq, hidden];
    }

    /// <summary>The sum over the last <see cref="Run"/>'s micro-batches of the stage's MoE blocks' load-balancing
    /// losses (without their coefficient; 0 without MoE blocks).</summary>
    public double AuxLossSum { get; private set; }

    /// <summary>Each MoE block forward's busiest expert load over the mean in the last <see cref="Run"/>, in the order
    /// they ran: the micro-batches' forwards only (a block that recompute runs again in the backward is not counted twice).</summary>
    public List<double> RoutingLoads { get; } = [];

    /// <summary>When set, the next <see cref="Run"/> appends each pass it runs and each wait for a neighbour, with the
    /// clock's nanoseconds at its start and end (a measured trace, docs/timelines.md); null records nothing.</summary>
    public List<(string Name, TraceLane Lane, long Start, long End)>? Recorded { get; set; }

    /// <summary>Seconds blocked receiving from neighbouring stages in the last <see cref="Run"/>.</summary>
    public double WaitSeconds { get; private set; }

    /// <summary>
    /// Runs the schedule once: <paramref name="batch"/>(micro-batch) gives the token ids and targets, the loss is scaled
    /// by <paramref name="lossScale"/> over the micro-batches. Returns the sum of the micro-batches' losses (0 on
    /// stages without the head).
    /// </summary>
    public double Run(Func<int, (long[] Ids, long[] Targets)> batch, double lossScale)
    {
        WaitSeconds = 0;
        AuxLossSum = 0;
        RoutingLoads.Clear();
        // The load-balancing losses' gradients start from the main loss's scale (none in a curvature pass).
        _rank.Model.AuxLossScale = _rank.Model.SampledTargets is null ? lossScale / _plan.MicroBatches : 0;
        var live = new Dictionary<(int, int), InFlight>();
        var pending = new List<(Work Work, Tensor Keep)>();
        // A chunk output's send has completed once its gradient came back: wait for it and free it then, so the
        // stage holds no more activations than the schedule's in-flight bound.
        var forwardSends = new Dictionary<(int, int), (Work Work, Tensor Keep)>();
        double lossSum = 0;
        foreach (var action in _schedule.Stages[_stage])
        {
            long a0 = Recorded is null ? 0 : _clock.Now();
            if (action.Kind == PassKind.Forward)
                live[(action.MicroBatch, action.Chunk)] = Forward(action, batch, lossScale, forwardSends, ref lossSum);
            else
            {
                var run = live[(action.MicroBatch, action.Chunk)];
                live.Remove((action.MicroBatch, action.Chunk));
                Backward(action, run, forwardSends, pending);
            }
            Recorded?.Add(($"{(action.Kind == PassKind.Forward ? "forward" : "backward")} mb {action.MicroBatch} chunk {action.Chunk}", TraceLane.Compute, a0, _clock.Now()));
        }
        foreach (var (work, keep) in pending.Concat(forwardSends.Values))
        {
            work.Wait();
            work.Dispose();
            keep.Dispose();
        }
        return lossSum;
    }

    private int VirtualStage(int chunk) => chunk * _plan.Pp + _stage;

    /// <summary>The chunk that holds the embedding: the pipeline's first, receiving from no stage.</summary>
    private bool IsFirst(int chunk) => _rank.Layout.HasEmbedding(_stage, chunk);

    /// <summary>The chunk that holds the head: the pipeline's last, sending to no stage.</summary>
    private bool IsLast(int chunk) => _rank.Layout.HasHead(_stage, chunk);

    private InFlight Forward(PipelineAction action, Func<int, (long[] Ids, long[] Targets)> batch, double lossScale,
        Dictionary<(int, int), (Work Work, Tensor Keep)> forwardSends, ref double lossSum)
    {
        int pp = _plan.Pp, v = VirtualStage(action.Chunk);
        var data = _rank.Data;
        var scope = DisposeScope.Begin();
        var run = new InFlight
        {
            Scope = scope,
            Chunk = action.Chunk,
            Overlap = data.ReducesDuring(action.MicroBatch == _lastMicroBatch[action.Chunk]),
        };
        var (ids, targets) = batch(action.MicroBatch);
        Tensor x;
        if (IsFirst(action.Chunk))
        {
            data.Gather(action.Chunk);
            x = _rank.Model.Embed(ids, _plan.Mbs);
            if (_rank.Recompute.Full || run.Overlap)
                run.Embedded = x; // the blocks start from a detached copy; the backward ends here
        }
        else
        {
            var received = Tensor.Zeros(_receiveShape, _rank.Model.Compute, _rank.Model.Device);
            int from = (_stage - 1 + pp) % pp;
            Receive(_links[PipelineLinks.Of(true, from)], received, from, Tag(action.MicroBatch, v, forward: true));
            received.RequiresGrad = true;
            run.Input = received;
            x = received;
            data.Gather(action.Chunk);
        }
        double aux = _rank.Model.AuxLossTotal;
        _rank.Model.TakeRoutingLoads(); // what recompute's reruns recorded since the last forward
        x = _rank.Recompute.Forward(_rank.Model, _rank.Chunks[action.Chunk], x, run.Overlap, out run.Segments);
        AuxLossSum += _rank.Model.AuxLossTotal - aux;
        RoutingLoads.AddRange(_rank.Model.TakeRoutingLoads());
        if (IsLast(action.Chunk))
        {
            var loss = _rank.Model.HeadLoss(x, targets);
            lossSum += loss.Item();
            run.Output = loss * (lossScale / _plan.MicroBatches);
        }
        else
        {
            run.Output = x;
            var outgoing = x.Detach().Contiguous();
            DisposeScope.Untrack(outgoing);
            forwardSends[(action.MicroBatch, action.Chunk)] = (_links[PipelineLinks.Of(true, _stage)].SendAsync(outgoing, (_stage + 1) % pp, Tag(action.MicroBatch, v + 1, forward: true)), outgoing);
        }
        scope.Detach();
        data.Release(action.Chunk);
        return run;
    }

    private void Backward(PipelineAction action, InFlight run, Dictionary<(int, int), (Work Work, Tensor Keep)> forwardSends,
        List<(Work Work, Tensor Keep)> pending)
    {
        int pp = _plan.Pp, v = VirtualStage(action.Chunk);
        var data = _rank.Data;
        run.Scope.Resume();
        Tensor? grad = null;
        if (!IsLast(action.Chunk))
        {
            grad = Tensor.Zeros(_receiveShape, _rank.Model.Compute, _rank.Model.Device);
            int from = (_stage + 1) % pp;
            Receive(_links[PipelineLinks.Of(false, from)], grad, from, Tag(action.MicroBatch, v, forward: false));
            if (forwardSends.Remove((action.MicroBatch, action.Chunk), out var sent))
            {
                sent.Work.Wait();
                sent.Work.Dispose();
                sent.Keep.Dispose();
            }
        }
        data.Gather(action.Chunk);
        BackwardChunk(run, grad);
        if (!IsFirst(action.Chunk))
        {
            var back = run.Input!.Grad!.Contiguous();
            DisposeScope.Untrack(back);
            pending.Add((_links[PipelineLinks.Of(false, _stage)].SendAsync(back, (_stage - 1 + pp) % pp, Tag(action.MicroBatch, v - 1, forward: false)), back));
        }
        run.Scope.Dispose();
        data.AfterBackward(action.Chunk);
        data.Release(action.Chunk);
    }

    private void Receive(ProcessGroup link, Tensor into, int from, int tag)
    {
        long w0 = _clock.Now();
        link.Recv(into, from, tag);
        long w1 = _clock.Now();
        WaitSeconds += (w1 - w0) / 1e9;
        Recorded?.Add(($"wait for stage {from}", TraceLane.PipelineTransfer, w0, w1));
    }

    private void BackwardChunk(InFlight run, Tensor? gradOut)
    {
        // Through the loss (last chunk) or the chunk output down to the last segment's input; when that segment holds
        // no block (every block recomputed) its input is the output itself and this only accumulates its gradient.
        run.Output!.Backward(gradOut);
        if (run.Segments is not { } segments)
            return;
        var data = _rank.Data;
        if (run.Overlap && IsLast(run.Chunk))
            data.BucketDone(new GradientBucket(BucketKind.Head)); // the head's gradients are final once the loss is through it
        Action<int>? blockDone = run.Overlap ? layer => data.BucketDone(new GradientBucket(BucketKind.Block, layer)) : null;
        var grad = Recomputation.Backward(_rank.Model, _rank.Chunks[run.Chunk], segments, blockDone);
        if (run.Embedded is not null)
        {
            if (run.Embedded.RequiresGrad) // a frozen embedding (LoRA's base) has nothing to differentiate
                run.Embedded.Backward(grad);
            if (run.Overlap)
                data.BucketDone(new GradientBucket(BucketKind.Embedding));
        }
        else
            run.Input!.Backward(grad); // the received tensor is a leaf: this only accumulates its gradient
    }

    /// <summary>A unique tag per micro-batch, virtual stage and direction within a step.</summary>
    private int Tag(int microBatch, int virtualStage, bool forward) =>
        (microBatch * _plan.Pp * _plan.Vpp + virtualStage) * 2 + (forward ? 0 : 1);
}
