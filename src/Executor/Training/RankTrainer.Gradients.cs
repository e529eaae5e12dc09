using Planner.CostModel.Comm;
using Planner.CostModel.Pipeline;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;
using Planner.Executor.Distributed;
using Planner.Executor.Torch;

namespace Planner.Executor.Training;

/// <summary>The rank's data-parallel side: gradient reductions started behind the backward, loss scaling and the
/// optimizer step (ZeRO sharded or not).</summary>
public sealed partial class RankTrainer
{
    private readonly bool _overlapReduce; // ZeRO-0/1/2 with dp > 1: each block's gradients reduced during the backward
    private readonly bool _overlapEveryBackward; // ZeRO-2 with dp > 1: during every backward, not only the last
    private readonly Dictionary<int, List<Tensor>> _blockParameters = [];
    private readonly List<Tensor> _embeddingParameters = [], _headParameters = [];
    private readonly List<(Work Work, Tensor Flat, List<Tensor> Bucket)> _reducing = []; // ZeRO-0's all-reduces
    private readonly List<ShardedParameters.Reduction> _scattering = []; // ZeRO-1/2's reduce-scatters
    private int _started; // reductions started during the backward this step

    /// <summary>
    /// Starts the asynchronous DP reduction of parameters whose gradients are final (their sequence-parallel TP sums
    /// first): ZeRO-0's all-reduce of the bucket, ZeRO-1/2's reduce-scatter of the bucket's group. An embedding tied
    /// across stages is left to the end of the step, after its sum with the other stage.
    /// </summary>
    private void StartReduce(List<Tensor> parameters)
    {
        var bucket = parameters.Where(p => (_shards is not null || p.Grad is not null) && !TiedAcrossStages(p)).ToList();
        if (bucket.Count == 0)
            return;
        // Host time only: a device synchronisation per block would stop the CPU from queueing the backward ahead of the
        // device (this times the flattening and the launch; the wait shows in FinishReduce / ReduceGroups).
        long t0 = TorchRuntime.NowNanoseconds();
        SumSequenceParallelGradients(bucket);
        if (_shards is null)
        {
            var (work, flat) = ShardedParameters.StartAllReduce(_dp!, bucket, bucket.Sum(p => p.Numel));
            _reducing.Add((work, flat, bucket));
            _started++;
        }
        else
            foreach (int g in bucket.Select(p => _groupOf[p]).Distinct())
            {
                _scattering.Add(_shards.StartReduce(g));
                _started++;
            }
        _dpComm += (TorchRuntime.NowNanoseconds() - t0) / 1e9;
    }

    /// <summary>Reductions of the last step that started during the backward (ZeRO-0/1/2 with dp &gt; 1): per chunk, one
    /// per block, and the head's and the embedding's where the chunk has them; under ZeRO-2 in every micro-batch.</summary>
    public int OverlappedReduces { get; private set; }

    /// <summary>ZeRO-0: waits for the all-reduces started during the backward and averages their gradients.</summary>
    private void FinishReduce()
    {
        foreach (var (work, flat, bucket) in _reducing)
        {
            work.Wait(Timeout);
            work.Dispose();
            using (var mean = flat / _plan.Dp)
                SetGradients(mean, bucket);
            flat.Dispose();
        }
        _reducing.Clear();
    }

    private void ReduceGradientsAndStep()
    {
        using var scope = DisposeScope.Begin();
        long d0 = Now();
        int dp = _plan.Dp;
        if (_shards is null)
        {
            // What the overlapped reduction sent already had its sequence-parallel sums.
            SumSequenceParallelGradients(_overlapReduce ? [_stage["wte"]] : _params);
            if (_tied is not null)
                _tied.AllReduce(_stage["wte"].Grad!);
            if (_overlapReduce)
            {
                // The blocks, head and embedding were all-reduced during the last backward; the tied embedding now.
                if (_tied is not null)
                {
                    var wte = _stage["wte"];
                    using var flat = ShardedParameters.Flatten([wte], grads: true);
                    _dp!.AllReduce(flat);
                    SetGradients(flat / dp, [wte]);
                }
                FinishReduce();
            }
            _dpComm += Since(d0);
            long o0 = Now();
            if (Unscale(_params))
                _optimizer.Step();
            _optimizer.ZeroGrad();
            _optimizerSeconds += Since(o0);
            return;
        }
        // ZeRO: reduce-scatter the gradients (ZeRO-1 started its buckets' during the last backward and waits for them
        // now, after summing an embedding tied across stages with the other stage's; ZeRO-2/3 did it chunk by chunk in
        // the pipeline, and sum the tied embedding's shard), step the optimizer on this rank's shard, and under
        // ZeRO-1/2 all-gather the parameters (ZeRO-3 gathers them at their next use).
        if (!_chunkwise)
        {
            if (_tied is not null)
                _tied.AllReduce(_stage["wte"].Grad!);
            ReduceGroups(Enumerable.Range(0, _shards.Groups));
        }
        else if (_tied is not null)
            _tied.AllReduce(_shards.GradientShard(_tiedGroup));
        _shards.AverageGradients();
        _dpComm += Since(d0);
        long z0 = Now();
        bool stepped = Unscale([_shards.Master]);
        if (stepped)
            _optimizer.Step();
        _optimizer.ZeroGrad();
        _optimizerSeconds += Since(z0);
        if (!_zero3 && stepped)
        {
            long g0 = Now();
            for (int g = 0; g < _shards.Groups; g++)
                _shards.Gather(g);
            _dpComm += Since(g0);
        }
    }

    /// <summary>
    /// Loss scaling: true when every rank's gradients are finite, after dividing them by the scale; false (the step is
    /// to be skipped, the scale halved) when any rank's overflowed. Without a scaler, true.
    /// </summary>
    private bool Unscale(IReadOnlyList<Tensor> optimized)
    {
        if (_scaler is null)
            return true;
        // Every rank decides the same: the overflow count summed over the TP, PP and DP axes covers the whole grid.
        using var overflow = Tensor.From([LossScaler.AllFinite(optimized.Select(p => p.Grad)) ? 0f : 1f], 1).On(_device);
        foreach (var g in new[] { _tp, _pp, _dp })
            g?.AllReduce(overflow);
        bool finite = overflow.Item() == 0;
        if (finite)
        {
            using var scope = DisposeScope.Begin();
            foreach (var p in optimized)
                if (p.Grad is { } g)
                    p.SetGrad(g / _scaler.Scale);
        }
        return _scaler.Update(finite);
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
