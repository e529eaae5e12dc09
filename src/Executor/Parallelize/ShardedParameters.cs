using Planner.Executor.Distributed;
using Planner.Executor.Torch;

namespace Planner.Executor.Parallelize;

/// <summary>
/// ZeRO's sharding of a stage's parameters over the data-parallel group. The parameters come in groups (under ZeRO-1/2
/// the buckets the backward finishes one by one: each block's, the embedding's, the head's; each model chunk's under
/// ZeRO-3); a group's parameters, flattened in order and padded to a multiple of the DP size, are split evenly over the
/// DP ranks, and this rank keeps its slice of every group, one after the other, as the fp32 <see cref="Master"/> shard
/// the optimizer steps. Gradients are reduce-scattered group by group into a gradient shard of the same layout (summed
/// over micro-batches until <see cref="AverageGradients"/>), synchronously or started (<see cref="StartReduce"/>) while
/// the backward goes on and finished later; parameters are all-gathered group by group from the master shard, and
/// under ZeRO-3 freed between uses.
/// </summary>
public sealed class ShardedParameters : IDisposable
{
    private readonly ProcessGroup _dp;
    private readonly IReadOnlyList<IReadOnlyList<Tensor>> _groups;
    private readonly long[] _shard, _offset;
    private Tensor? _gradients; // this step's reduce-scattered gradients, summed over DP ranks and micro-batches

    /// <summary>Shards the parameters' current values: each DP rank must pass the same groups of the same shapes.</summary>
    public ShardedParameters(IReadOnlyList<IReadOnlyList<Tensor>> groups, ProcessGroup dp)
    {
        _dp = dp;
        _groups = groups;
        int n = groups.Count;
        _shard = new long[n];
        _offset = new long[n];
        using var scope = DisposeScope.Begin();
        var slices = new List<Tensor>();
        long offset = 0;
        for (int g = 0; g < n; g++)
        {
            _shard[g] = (groups[g].Sum(p => p.Numel) + dp.Size - 1) / dp.Size;
            _offset[g] = offset;
            offset += _shard[g];
            var padded = Pad(Flatten(groups[g], grads: false), _shard[g] * dp.Size);
            slices.Add(padded.Narrow(0, dp.Rank * _shard[g], _shard[g]));
        }
        Master = Tensor.Cat(slices, 0);
        DisposeScope.Untrack(Master);
        Master.RequiresGrad = true;
    }

    /// <summary>This rank's slice of every group, fp32, requiring grad: what the optimizer steps.</summary>
    public Tensor Master { get; }

    /// <summary>
    /// What <see cref="Master"/> holds of each parameter: the range [start, start + length) of its flattened elements,
    /// at <c>At</c> in the master shard (parameters of which this rank holds nothing are left out; padding is not held).
    /// </summary>
    public IEnumerable<(Tensor Parameter, long Start, long Length, long At)> Held()
    {
        for (int g = 0; g < _groups.Count; g++)
        {
            long from = _dp.Rank * _shard[g], to = from + _shard[g], offset = 0;
            foreach (var p in _groups[g])
            {
                long start = Math.Max(from, offset), end = Math.Min(to, offset + p.Numel);
                if (end > start)
                    yield return (p, start - offset, end - start, _offset[g] + start - from);
                offset += p.Numel;
            }
        }
    }

    /// <summary>Number of groups.</summary>
    public int Groups => _groups.Count;

    /// <summary>The parameters of group <paramref name="group"/>.</summary>
    public IReadOnlyList<Tensor> Parameters(int group) => _groups[group];

    /// <summary>
    /// Gives group <paramref name="group"/>'s parameters their full values, all-gathered from every DP rank's master
    /// shard (storage freed by <see cref="Release"/> is allocated again). The values are written outside autograd, so
    /// graphs that saved the parameters before a release use them again in their backward.
    /// </summary>
    public void Gather(int group)
    {
        using var scope = DisposeScope.Begin();
        var mine = Master.Detach().Narrow(0, _offset[group], _shard[group]);
        var full = _dp.AllGather(mine).Reshape(_shard[group] * _dp.Size);
        long offset = 0;
        foreach (var p in _groups[group])
        {
            long n = p.Numel;
            p.AllocateStorage();
            p.Data().CopyFrom(full.Narrow(0, offset, n).View(p.Shape));
            offset += n;
        }
    }

    /// <summary>Frees the memory of group <paramref name="group"/>'s parameters (they keep their shapes and identity).</summary>
    public void Release(int group)
    {
        foreach (var p in _groups[group])
            p.FreeStorage();
    }

    /// <summary>
    /// Reduce-scatters (sums over the DP ranks) group <paramref name="group"/>'s parameter gradients, adds this rank's
    /// slice to the gradient shard and drops the parameters' gradients.
    /// </summary>
    public void ReduceGradients(int group) => FinishReduce(StartReduce(group));

    /// <summary>A group's gradient reduction in flight: its flattened, padded gradients being summed over the DP ranks.</summary>
    public sealed class Reduction
    {
        internal Reduction(int group, Work work, Tensor flat)
        {
            Group = group;
            Work = work;
            Flat = flat;
        }

        /// <summary>The group reduced.</summary>
        public int Group { get; }
        internal Work Work { get; }
        internal Tensor Flat { get; }
    }

    /// <summary>
    /// Starts the reduce-scatter of group <paramref name="group"/>'s gradients, which must be final for this step (or
    /// micro-batch) until <see cref="FinishReduce"/>: Gloo has no reduce-scatter, so a flat copy of the group's
    /// gradients, padded to the shards' size, is all-reduced in the background (twice a native reduce-scatter's traffic).
    /// </summary>
    public Reduction StartReduce(int group)
    {
        var (work, flat) = StartAllReduce(_dp, _groups[group], _shard[group] * _dp.Size);
        return new Reduction(group, work, flat);
    }

    /// <summary>
    /// Waits for a reduction, adds this rank's slice of the sum to the gradient shard and drops the group's parameter
    /// gradients (and the flat copy).
    /// </summary>
    public void FinishReduce(Reduction reduction)
    {
        using var scope = DisposeScope.Begin();
        int group = reduction.Group;
        reduction.Work.Wait();
        reduction.Work.Dispose();
        var sum = GradientShard(group);
        sum.CopyFrom(sum + reduction.Flat.Narrow(0, _dp.Rank * _shard[group], _shard[group]));
        reduction.Flat.Dispose();
        foreach (var p in _groups[group])
            p.SetGrad(null);
    }

    /// <summary>
    /// Starts the in-place all-reduce of a flat fp32 copy of the tensors' gradients, zero-padded to
    /// <paramref name="length"/> elements; the caller waits for the work and disposes the copy.
    /// </summary>
    internal static (Work Work, Tensor Flat) StartAllReduce(ProcessGroup group, IReadOnlyList<Tensor> tensors, long length)
    {
        using var scope = DisposeScope.Begin();
        var flat = Pad(Flatten(tensors, grads: true), length);
        DisposeScope.Untrack(flat);
        return (group.AllReduceAsync(flat), flat);
    }

    /// <summary>This rank's slice of group <paramref name="group"/>'s gradient sum this step (a view to reduce in place).</summary>
    public Tensor GradientShard(int group)
    {
        if (_gradients is null)
        {
            _gradients = Tensor.Zeros(Master.Shape, DType.Float32, Master.Device);
            DisposeScope.Untrack(_gradients);
        }
        return _gradients.Narrow(0, _offset[group], _shard[group]);
    }

    /// <summary>Sets the master shard's gradient to the gradient sum divided by the DP size and starts a new sum.</summary>
    public void AverageGradients()
    {
        using var scope = DisposeScope.Begin();
        if (_gradients is null)
            throw new InvalidOperationException("no gradients were reduced this step");
        Master.SetGrad(_gradients / _dp.Size);
        _gradients.Dispose();
        _gradients = null;
    }

    /// <summary>The tensors' values (or gradients, zeros where none), flattened and concatenated, in fp32.</summary>
    internal static Tensor Flatten(IReadOnlyList<Tensor> tensors, bool grads)
    {
        using var scope = DisposeScope.Begin();
        var parts = tensors.Select(t => (grads ? t.Grad ?? Tensor.Zeros(t.Shape, DType.Float32, t.Device) : t.Detach()).Reshape(-1).To(DType.Float32)).ToList();
        return scope.Keep(Tensor.Cat(parts, 0));
    }

    private static Tensor Pad(Tensor flat, long length)
    {
        long n = flat.Numel;
        if (n == length)
            return flat;
        using var zeros = Tensor.Zeros([length - n], DType.Float32, flat.Device);
        return Tensor.Cat([flat, zeros], 0);
    }

    /// <summary>Frees the shards.</summary>
    public void Dispose()
    {
        _gradients?.Dispose();
        Master.Dispose();
    }
}
