using Planner.Executor.Distributed;
using Planner.Executor.Model;
using Planner.Executor.Optim;

namespace Planner.Executor.Parallelize;

/// <summary>An optimizer, what it steps as pieces of whole weights, the model's name of each of those weights
/// (<see cref="HeldWeights.Weights"/>' order), and the group whose ranks step the same pieces (data-parallel replicas
/// without ZeRO; null when no other rank does): what a checkpoint saves of a rank's training state.</summary>
public sealed record SteppedWeights(IOptimizer Optimizer, HeldWeights Held, IReadOnlyList<string> Names, ProcessGroup? Replicas);

/// <summary>What checkpoints read and restore: the optimizers with what they step.</summary>
public sealed partial class DataParallelism
{
    private readonly List<SteppedWeights> _stepped = [];

    /// <summary>The rank's optimizers (the dense parameters' or their ZeRO shard's, and the routed experts' under
    /// expert parallelism) with what each steps.</summary>
    public IReadOnlyList<SteppedWeights> Stepped => _stepped;

    private IOptimizer Stepping(OptimizerSettings settings, HeldWeights held, IReadOnlyList<ParameterSpec> specs, ProcessGroup? replicas)
    {
        var optimizer = settings.Create(held);
        _stepped.Add(new SteppedWeights(optimizer, held, specs.Select(s => s.Name).ToList(), replicas));
        return optimizer;
    }

    /// <summary>
    /// After a checkpoint wrote the stepped tensors (the parameters, or under ZeRO the master shard): under ZeRO-1/2 the
    /// parameters are all-gathered from the master shards again (every DP rank must call this); ZeRO-3 gathers them at
    /// their next use.
    /// </summary>
    public void Restored()
    {
        if (_shards is null || _zero3)
            return;
        for (int g = 0; g < _shards.Groups; g++)
            _shards.Gather(g);
    }
}
