using Planner.CostModel.Pricing;
using Planner.Executor.Distributed;
using Planner.Executor.Optim;
using Planner.Executor.Torch;

namespace Planner.Executor.Parallelize;

/// <summary>The reductions: buckets started behind the backward, ZeRO's chunk-wise reduce-scatters, and the step.</summary>
public sealed partial class DataParallelism
{
    /// <summary>
    /// A bucket's gradients are final: starts its asynchronous DP reduction (its sequence-parallel TP sums first):
    /// ZeRO-0's all-reduce of the bucket, ZeRO-1/2's reduce-scatter of the bucket's groups. An embedding tied across
    /// stages is left to the end of the step, after its sum with the other stage.
    /// </summary>
    public void BucketDone(GradientBucket done)
    {
        var bucket = BucketParameters[done].Where(p => (_shards is not null || p.Grad is not null) && !TiedAcrossStages(p)).ToList();
        if (bucket.Count == 0)
            return;
        // Host time only: a device synchronisation per block would stop the CPU from queueing the backward ahead of the
        // device (this times the flattening and the launch; the wait shows in FinishReduce / ReduceGroups).
        long t0 = TorchRuntime.NowNanoseconds();
        _tp?.SumSequenceParallelGradients(_model, bucket);
        if (_shards is null)
        {
            var (work, flat) = ShardedParameters.StartAllReduce(_dp!, bucket, bucket.Sum(p => p.Numel));
            _reducing.Add((work, flat, bucket));
            StartedReductions++;
        }
        else
            foreach (int g in bucket.Select(p => _groupOf[p]).Distinct())
            {
                _scattering.Add(_shards.StartReduce(g));
                StartedReductions++;
            }
        CommSeconds += (TorchRuntime.NowNanoseconds() - t0) / 1e9;
    }

    /// <summary>
    /// ZeRO-2/3: after a chunk's backward, reduce-scatters its gradients into the rank's gradient shard and drops the
    /// full ones. Under ZeRO-2 most were started during the backward: this waits for them here, before the stage's next
    /// backward could add to the same gradients, and so that no more than one micro-batch's gradients of the chunk (and
    /// their flat copies) are held at a time, which is what ZeRO-2 saves.
    /// </summary>
    public void AfterBackward(int chunk)
    {
        if (!_chunkwise)
            return;
        using var scope = DisposeScope.Begin();
        long t0 = _clock.Now();
        ReduceGroups(_chunkGroups[chunk]);
        CommSeconds += _clock.Since(t0);
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
                _tp?.SumSequenceParallelGradients(_model, _shards!.Parameters(g));
                _shards!.ReduceGradients(g);
            }
    }

    /// <summary>ZeRO-0: waits for the all-reduces started during the backward and averages their gradients.</summary>
    private void FinishReduce()
    {
        foreach (var (work, flat, bucket) in _reducing)
        {
            work.Wait();
            work.Dispose();
            using (var mean = flat / _dp!.Size)
                SetGradients(mean, bucket);
            flat.Dispose();
        }
        _reducing.Clear();
    }

    /// <summary>
    /// After the pipeline's flush: finishes the gradients' reduction and steps the optimizer when
    /// <paramref name="unscale"/> (loss scaling: true when every rank's gradients are finite) lets it.
    /// </summary>
    public void ReduceAndStep(Func<IReadOnlyList<Tensor>, bool> unscale) => Reduce(unscale, curvature: false);

    /// <summary>
    /// After the flush of a pass on sampled labels (Sophia's curvature pass, <see cref="RefreshesCurvature"/>): the same
    /// reduction, then the optimizer's curvature refreshed from the mean gradient instead of a step, when
    /// <paramref name="unscale"/> (loss scaling, without adjusting the scale) finds it finite.
    /// </summary>
    public void ReduceAndUpdateCurvature(Func<IReadOnlyList<Tensor>, bool> unscale) => Reduce(unscale, curvature: true);

    /// <summary>True when step <paramref name="step"/> (from 0) begins with a curvature pass: Sophia's every k-th.</summary>
    public bool RefreshesCurvature(int step) => _optimizer is Sophia && step % Sophia.CurvatureInterval == 0;

    private void Reduce(Func<IReadOnlyList<Tensor>, bool> unscale, bool curvature)
    {
        using var scope = DisposeScope.Begin();
        ReduceExperts();
        if (_shards is null)
            ReduceAndStepWhole(unscale, curvature);
        else
            ReduceAndStepSharded(unscale, curvature);
    }

    /// <summary>Steps the optimizer (when <paramref name="unscale"/> lets it) or refreshes its curvature, over
    /// <paramref name="optimized"/> and the routed experts' parameters under expert parallelism; true when stepped.</summary>
    private bool Apply(Func<IReadOnlyList<Tensor>, bool> unscale, IReadOnlyList<Tensor> optimized, bool curvature)
    {
        bool stepped = false;
        var optimizers = _experts is null ? [_optimizer] : new[] { _optimizer, _experts.Optimizer };
        if (_experts is not null)
            optimized = [.. optimized, .. _experts.Parameters];
        if (curvature)
        {
            if (unscale(optimized))
                foreach (var o in optimizers)
                    ((Sophia)o).UpdateCurvature();
        }
        else if (unscale(optimized))
        {
            foreach (var o in optimizers)
                o.Step();
            stepped = true;
        }
        foreach (var o in optimizers)
            o.ZeroGrad();
        return stepped;
    }

    private void ReduceAndStepWhole(Func<IReadOnlyList<Tensor>, bool> unscale, bool curvature)
    {
        long d0 = _clock.Now();
        var wte = _tied is not null ? _model["wte"] : null;
        // What the overlapped reduction sent already had its sequence-parallel sums (the token table, split by
        // vocabulary, has none).
        if (!_overlapReduce)
            _tp?.SumSequenceParallelGradients(_model, _dense);
        if (wte is not null)
            _tied!.AllReduce(wte.Grad!);
        if (_overlapReduce)
        {
            // The blocks, head and embedding were all-reduced during the last backward; the tied embedding now.
            if (wte is not null)
            {
                using var flat = ShardedParameters.Flatten([wte], grads: true);
                _dp!.AllReduce(flat);
                SetGradients(flat / _dp!.Size, [wte]);
            }
            FinishReduce();
        }
        CommSeconds += _clock.Since(d0);
        long o0 = _clock.Now();
        Apply(unscale, _dense, curvature);
        OptimizerSeconds += _clock.Since(o0);
    }

    /// <summary>
    /// ZeRO: reduce-scatters the gradients (ZeRO-1 started its buckets' during the last backward and waits for them
    /// now, after summing an embedding tied across stages with the other stage's; ZeRO-2/3 did it chunk by chunk in the
    /// pipeline, and sum the tied embedding's shard), steps the optimizer on this rank's shard, and under ZeRO-1/2
    /// all-gathers the parameters (ZeRO-3 gathers them at their next use).
    /// </summary>
    private void ReduceAndStepSharded(Func<IReadOnlyList<Tensor>, bool> unscale, bool curvature)
    {
        var shards = _shards!;
        long d0 = _clock.Now();
        if (!_chunkwise)
        {
            if (_tied is not null)
                _tied.AllReduce(_model["wte"].Grad!);
            ReduceGroups(Enumerable.Range(0, shards.Groups));
        }
        else if (_tied is not null)
            _tied.AllReduce(shards.GradientShard(_tiedGroup));
        shards.AverageGradients();
        CommSeconds += _clock.Since(d0);
        long z0 = _clock.Now();
        bool stepped = Apply(unscale, [shards.Master], curvature);
        OptimizerSeconds += _clock.Since(z0);
        if (!_zero3 && stepped)
        {
            long g0 = _clock.Now();
            for (int g = 0; g < shards.Groups; g++)
                shards.Gather(g);
            CommSeconds += _clock.Since(g0);
        }
    }

    private static void SetGradients(Tensor flat, IReadOnlyList<Tensor> targets)
    {
        using var scope = DisposeScope.Begin();
        long offset = 0;
        foreach (var t in targets)
        {
            long n = t.Numel;
            t.SetGrad(flat.Narrow(0, offset, n).Reshape(t.Shape).Clone());
            offset += n;
        }
    }
}
