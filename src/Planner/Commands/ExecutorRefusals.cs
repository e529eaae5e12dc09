using System.Globalization;
using Planner.CostModel.Plans;
using Planner.CostModel.Specs;
using Planner.Executor.Torch;
using Planner.Executor.Training;

namespace Planner.Cli.Commands;

/// <summary>
/// What <c>run</c> refuses to train: every plan value the executor cannot honour on the device it would train on is
/// bad input, never a silent fallback (docs/executor.md "Every plan key against the executor"). The one line names the
/// plan file, the plan's own cluster (and its GPU) and the device of this run, which need not be the cluster's.
/// </summary>
public static class ExecutorRefusals
{
    /// <summary>Why the executor cannot honour this plan of this model on <paramref name="device"/>, or null: the
    /// trainer's own refusals (<see cref="RankTrainer.Unsupported"/>), then the plan keys it does not read.</summary>
    public static string? Reason(ModelSpec model, ParallelPlan plan, Device device)
    {
        if (RankTrainer.Unsupported(model, plan, device) is { } unsupported)
            return unsupported;
        if (plan.Precision == Precision.Tf32)
            return "key 'precision' is 'tf32': the executor computes it in fp32 (a CPU has no TF32, and the binding does not turn on CUDA's TF32 matrix multiply); plan fp32 or bf16";
        if (plan.OptimizerOffload > 0)
            return $"key 'optimizer_offload' is {Text(plan.OptimizerOffload)}; the executor steps the optimizer where its ranks run (CPU ranks have no host link to offload over): set it to 0 to run this plan";
        if (plan.MoeCapacity is double capacity)
            return $"key 'moe_capacity' is {Text(capacity)}: the executor drops no tokens (every routed token reaches its experts); leave the key out to run this plan";
        return null;
    }

    /// <summary>Refuses a plan the executor cannot honour here.</summary>
    /// <param name="planPath">The plan file, as named by --plan.</param>
    /// <param name="clusterName">The plan's key <c>cluster</c>.</param>
    /// <param name="cluster">That cluster, when it loads (its GPU is named too).</param>
    /// <exception cref="InputException">One line: the file, the reason, the plan's cluster and this run's device.</exception>
    public static void Check(string planPath, ModelSpec model, ParallelPlan plan, string clusterName, ClusterSpec? cluster, Device device)
    {
        if (Reason(model, plan, device) is not { } reason)
            return;
        string gpu = cluster is null ? "" : $", GPU '{cluster.Gpu.Name}'";
        string on = device.Type == DeviceType.Cpu ? "the CPU" : $"CUDA device {device}";
        throw new InputException($"{planPath}: {reason} (the plan's cluster '{clusterName}'{gpu}; this run trains on {on})");
    }

    private static string Text(double v) => v.ToString("G", CultureInfo.InvariantCulture);
}
