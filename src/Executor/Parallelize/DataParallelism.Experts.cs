using Planner.Executor.Distributed;
using Planner.Executor.Optim;
using Planner.Executor.Torch;

namespace Planner.Executor.Parallelize;

/// <summary>The group over which expert parallelism's routed experts are reduced: the expert-data-parallel ranks that
/// hold the same experts (null when no other rank does).</summary>
public sealed record ExpertGroups(ProcessGroup? Edp);

/// <summary>The routed experts a rank holds under expert parallelism, the group that reduces their gradients, and
/// their optimizer.</summary>
public sealed class ExpertGradients(IReadOnlyList<Tensor> parameters, ProcessGroup? edp, IOptimizer optimizer)
{
    /// <summary>The experts' parameters (this rank's).</summary>
    public IReadOnlyList<Tensor> Parameters => parameters;

    /// <summary>The expert-data-parallel group, or null.</summary>
    public ProcessGroup? Edp => edp;

    /// <summary>The optimizer over <see cref="Parameters"/> (never sharded: ZeRO shards only the dense parameters).</summary>
    public IOptimizer Optimizer => optimizer;
}

/// <summary>The routed experts' reduction under expert parallelism.</summary>
public sealed partial class DataParallelism
{
    /// <summary>
    /// Expert parallelism: the experts' gradients already hold what every rank of the EP group routed to them (the
    /// all-to-all's backward brought them); summed over the expert-data-parallel ranks, they hold all dp replicas'
    /// contributions, and are divided by dp for the mean over the global batch, as the dense ones are.
    /// </summary>
    private void ReduceExperts()
    {
        if (_experts is null)
            return;
        // Every expert's gradient (zeros where none), so that the ranks reduce tensors of one size.
        var all = _experts.Parameters;
        long t0 = _clock.Now();
        using var flat = ShardedParameters.Flatten(all, grads: true);
        _experts.Edp?.AllReduce(flat);
        using (var mean = flat / _plan.Dp)
            SetGradients(mean, all);
        CommSeconds += _clock.Since(t0);
    }
}
