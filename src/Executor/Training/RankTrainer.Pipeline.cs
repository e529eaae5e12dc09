using Planner.CostModel.Comm;
using Planner.CostModel.Pipeline;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;
using Planner.Executor.Distributed;
using Planner.Executor.Torch;

namespace Planner.Executor.Training;

/// <summary>The rank's pipeline: the schedule's forward and backward passes of its chunks, their transfers, and
/// ZeRO-3's gathers and ZeRO's chunk-wise reductions around them.</summary>
public sealed partial class RankTrainer
{
    private sealed class InFlight
    {
        public required DisposeScope Scope;
        public required int Chunk;
        public Tensor? Input;   // received activation (requires grad), null on the embedding chunk
        public Tensor? Output;  // chunk output, or the scaled loss on the last chunk
        public List<Segment>? Segments; // blocks run from detached inputs, so that the backward can stop between them
        public bool Overlap; // each block's gradients go to the DP reduction when done (the chunk's last backward; every backward under ZeRO-2)
        public Tensor? Embedded; // segmented embedding chunk: the embedding's output, with graph
        public long[]? Targets;
    }

    /// <summary>
    /// Blocks [<paramref name="From"/>, <paramref name="To"/>) of a chunk run from <paramref name="Input"/>: recomputed
    /// (the input saved without graph, the block rerun in the backward) or kept (the input a detached leaf, the
    /// <paramref name="Output"/> with its graph from it).
    /// </summary>
    private sealed record Segment(Tensor Input, Tensor? Output, int From, int To, bool Recomputed);

    private double RunPipeline(int step)
    {
        int pp = _plan.Pp, vpp = _plan.Vpp, m = _plan.MicroBatches;
        var schedule = ScheduleGenerator.Generate(pp, vpp, m);
        // The micro-batch of each chunk's last backward on this stage: its gradients are final after it.
        var lastMicroBatch = new int[vpp];
        foreach (var a in schedule.Stages[_me.Pp])
            if (a.Kind == PassKind.Backward)
                lastMicroBatch[a.Chunk] = a.MicroBatch;
        var live = new Dictionary<(int, int), InFlight>();
        var pending = new List<(Work Work, Tensor Keep)>();
        // A chunk output's send has completed once its gradient came back: wait for it and free it then, so the
        // stage holds no more activations than the schedule's in-flight bound.
        var forwardSends = new Dictionary<(int, int), (Work Work, Tensor Keep)>();
        double lossSum = 0;
        long seqLocal = _stage.LocalSeq;
        foreach (var action in schedule.Stages[_me.Pp])
        {
            int v = action.Chunk * pp + _me.Pp;
            bool firstChunk = v == 0, lastChunk = v == pp * vpp - 1;
            if (action.Kind == PassKind.Forward)
            {
                var scope = DisposeScope.Begin();
                var run = new InFlight
                {
                    Scope = scope, Chunk = action.Chunk,
                    Overlap = _overlapReduce && (_overlapEveryBackward || action.MicroBatch == lastMicroBatch[action.Chunk]),
                };
                var (ids, targets) = Batch(step, action.MicroBatch);
                Tensor x;
                if (firstChunk)
                {
                    GatherChunk(action.Chunk);
                    x = _stage.Embed(ids, _plan.Mbs);
                    if (_plan.RecomputeOf(_me.Pp) == Recompute.Full || run.Overlap)
                        run.Embedded = x; // the blocks start from a detached copy; the backward ends here
                }
                else
                {
                    var received = Tensor.Zeros([_plan.Mbs, seqLocal, _m.Hidden], _stage.Compute, _device);
                    long w0 = Now();
                    int from = (_me.Pp - 1 + pp) % pp;
                    _links[PipelineLinks.Of(true, from)].Recv(received, from, Tag(action.MicroBatch, v, forward: true));
                    _ppWait += Since(w0);
                    received.RequiresGrad = true;
                    run.Input = received;
                    x = received;
                    GatherChunk(action.Chunk);
                }
                x = Blocks(action.Chunk, x, run);
                if (lastChunk)
                {
                    run.Targets = targets;
                    var loss = _stage.HeadLoss(x, targets);
                    lossSum += loss.Item();
                    run.Output = loss * ((_scaler?.Scale ?? 1) / m);
                }
                else
                {
                    run.Output = x;
                    var outgoing = x.Detach().Contiguous();
                    DisposeScope.Untrack(outgoing);
                    forwardSends[(action.MicroBatch, action.Chunk)] = (_links[PipelineLinks.Of(true, _me.Pp)].SendAsync(outgoing, (_me.Pp + 1) % pp, Tag(action.MicroBatch, v + 1, forward: true)), outgoing);
                }
                scope.Detach();
                live[(action.MicroBatch, action.Chunk)] = run;
                ReleaseChunk(action.Chunk);
            }
            else
            {
                var run = live[(action.MicroBatch, action.Chunk)];
                live.Remove((action.MicroBatch, action.Chunk));
                run.Scope.Resume();
                Tensor? grad = null;
                if (!lastChunk)
                {
                    grad = Tensor.Zeros([_plan.Mbs, seqLocal, _m.Hidden], _stage.Compute, _device);
                    long w0 = Now();
                    int from = (_me.Pp + 1) % pp;
                    _links[PipelineLinks.Of(false, from)].Recv(grad, from, Tag(action.MicroBatch, v, forward: false));
                    _ppWait += Since(w0);
                    if (forwardSends.Remove((action.MicroBatch, action.Chunk), out var sent))
                    {
                        sent.Work.Wait(Timeout);
                        sent.Work.Dispose();
                        sent.Keep.Dispose();
                    }
                }
                GatherChunk(action.Chunk);
                BackwardChunk(run, grad);
                if (!firstChunk)
                {
                    var back = run.Input!.Grad!.Contiguous();
                    DisposeScope.Untrack(back);
                    pending.Add((_links[PipelineLinks.Of(false, _me.Pp)].SendAsync(back, (_me.Pp - 1 + pp) % pp, Tag(action.MicroBatch, v - 1, forward: false)), back));
                }
                run.Scope.Dispose();
                ReduceChunkGradients(action.Chunk);
                ReleaseChunk(action.Chunk);
            }
        }
        foreach (var (work, keep) in pending.Concat(forwardSends.Values))
        {
            work.Wait(Timeout);
            work.Dispose();
            keep.Dispose();
        }
        return lossSum;
    }

    /// <summary>ZeRO-3: all-gathers a chunk's parameters from the DP ranks' shards before its forward or backward.</summary>
    private void GatherChunk(int chunk)
    {
        if (!_zero3)
            return;
        long t0 = Now();
        foreach (int g in _chunkGroups[chunk])
            _shards!.Gather(g);
        _dpComm += Since(t0);
    }

    /// <summary>ZeRO-3: frees a chunk's parameters after its forward or backward (graphs keep them by identity only).</summary>
    private void ReleaseChunk(int chunk)
    {
        if (!_zero3)
            return;
        foreach (int g in _chunkGroups[chunk])
            _shards!.Release(g);
    }

    /// <summary>
    /// ZeRO-2/3: after a chunk's backward, reduce-scatters its gradients into the rank's gradient shard and drops the
    /// full ones. Under ZeRO-2 most were started during the backward: this waits for them here, before the stage's next
    /// backward could add to the same gradients, and so that no more than one micro-batch's gradients of the chunk (and
    /// their flat copies) are held at a time, which is what ZeRO-2 saves.
    /// </summary>
    private void ReduceChunkGradients(int chunk)
    {
        if (!_chunkwise)
            return;
        using var scope = DisposeScope.Begin();
        long t0 = Now();
        ReduceGroups(_chunkGroups[chunk]);
        _dpComm += Since(t0);
    }

    /// <summary>
    /// ZeRO: waits for the reduce-scatters started during the backward, then reduce-scatters those of
    /// <paramref name="groups"/> that were not started (their sequence-parallel sums first).
    /// </summary>
    private void ReduceGroups(IEnumerable<int> groups)
    {
        var started = new HashSet<int>();
        foreach (var reduction in _scattering)
        {
            _shards!.FinishReduce(reduction);
            started.Add(reduction.Group);
        }
        _scattering.Clear();
        foreach (int g in groups)
            if (!started.Contains(g))
            {
                SumSequenceParallelGradients(_shards!.Parameters(g));
                _shards.ReduceGradients(g);
            }
    }

    /// <summary>
    /// Under sequence parallelism the norms and the row-parallel biases see only this rank's part of the sequence:
    /// their gradients are summed over the TP group (the position embedding is added before the split).
    /// </summary>
    private void SumSequenceParallelGradients(IReadOnlyList<Tensor> parameters)
    {
        if (!_plan.SequenceParallel || _tp is null)
            return;
        foreach (var spec in _stage.Specs)
            if (spec.Shard == Shard.Replicated && spec.Name != "wpe" && parameters.Contains(_stage[spec.Name]) && _stage[spec.Name].Grad is { } g)
                _tp.AllReduce(g);
    }

    /// <summary>A unique tag per micro-batch, virtual stage and direction within a step.</summary>
    private int Tag(int microBatch, int virtualStage, bool forward) =>
        (microBatch * _plan.Pp * _plan.Vpp + virtualStage) * 2 + (forward ? 0 : 1);

    private Tensor Blocks(int chunk, Tensor x, InFlight run)
    {
        var layers = _stage.ChunkLayers[chunk];
        var policy = _plan.RecomputeOf(_me.Pp);
        // Full recompute of the chunk's first r blocks (all of them unless the plan limits it).
        int recomputed = policy == Recompute.Full ? _plan.RecomputedBlocks(_me.Pp, layers.Length) : 0;
        if (recomputed == 0 && !run.Overlap)
        {
            foreach (int layer in layers)
                x = _stage.Block(layer, x, policy);
            return x;
        }
        run.Segments = [];
        int i = 0;
        // Recomputed blocks keep only their input; the backward reruns them.
        using (TorchRuntime.NoGrad())
            for (; i < recomputed; i++)
            {
                run.Segments.Add(new Segment(x, null, i, i + 1, true));
                x = _stage.Block(layers[i], x, Recompute.None);
            }
        // Kept blocks run with their graph from a detached input: one segment for all of them, or one per block when
        // the backward hands each block's gradients to the DP all-reduce as soon as they are final.
        var kept = policy == Recompute.Full ? Recompute.None : policy;
        do
        {
            int to = run.Overlap ? Math.Min(i + 1, layers.Length) : layers.Length;
            var input = x.Detach();
            input.RequiresGrad = true;
            x = input;
            for (int j = i; j < to; j++)
                x = _stage.Block(layers[j], x, kept);
            run.Segments.Add(new Segment(input, x, i, to, false));
            i = to;
        }
        while (i < layers.Length);
        return x;
    }

    private void BackwardChunk(InFlight run, Tensor? gradOut)
    {
        if (run.Segments is not { } segments)
        {
            run.Output!.Backward(gradOut);
            return;
        }
        var layers = _stage.ChunkLayers[run.Chunk];
        // Through the loss (last chunk) or the chunk output down to the last segment's input; when that segment holds
        // no block (every block recomputed) its input is the output itself and this only accumulates its gradient.
        run.Output!.Backward(gradOut);
        if (run.Overlap && _stage.HasHead && run.Chunk == _plan.Vpp - 1)
            StartReduce(_headParameters); // the head's gradients are final once the loss is through it
        Tensor grad = segments[^1].Input.Grad!;
        for (int k = segments.Count - 1; k >= 0; k--)
        {
            var seg = segments[k];
            if (k < segments.Count - 1)
            {
                if (seg.Recomputed)
                {
                    var xin = seg.Input.Detach();
                    xin.RequiresGrad = true;
                    _stage.Block(layers[seg.From], xin, Recompute.None).Backward(grad);
                    grad = xin.Grad!;
                }
                else
                {
                    seg.Output!.Backward(grad);
                    grad = seg.Input.Grad!;
                }
            }
            if (run.Overlap)
                for (int j = seg.From; j < seg.To; j++)
                    StartReduce(_blockParameters[layers[j]]);
        }
        if (run.Embedded is not null)
        {
            run.Embedded.Backward(grad);
            if (run.Overlap)
                StartReduce(_embeddingParameters);
        }
        else
            run.Input!.Backward(grad); // the received tensor is a leaf: this only accumulates its gradient
    }

    // ---- data-parallel reduction overlapped with the backward (ZeRO-0/1/2) -----------------------------------------
}
