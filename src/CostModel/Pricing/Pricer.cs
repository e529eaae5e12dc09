using Planner.CostModel.Comm;
using Planner.CostModel.Compute;
using Planner.CostModel.Memory;
using Planner.CostModel.Pipeline;
using Planner.CostModel.Plans;
using Planner.CostModel.Specs;

namespace Planner.CostModel.Pricing;

/// <summary>
/// Prices a plan: per-chunk forward and backward times from the kernels and the TP/CP collectives, the pipeline
/// simulated from the same schedule the executor runs, data-parallel reduction and ZeRO traffic with their overlap,
/// the optimizer step, and each stage's peak memory.
/// </summary>
public static class Pricer
{
    /// <summary>Prices a plan that passed <see cref="PlanCheck.Problem"/>; throws <see cref="InputException"/> otherwise.</summary>
    public static Prediction Price(ModelSpec model, ClusterSpec cluster, ParallelPlan plan, PricingOptions? options = null) =>
        PriceOffloads(model, cluster, plan, [plan.OptimizerOffload], options)[0];

    /// <summary>
    /// Prices a plan at several optimizer-offload fractions with one pipeline simulation (the fraction changes only
    /// the optimizer step and the memory): the same predictions as <see cref="Price"/> for each variant.
    /// </summary>
    public static IReadOnlyList<Prediction> PriceOffloads(ModelSpec model, ClusterSpec cluster, ParallelPlan plan, IReadOnlyList<double> offloads, PricingOptions? options = null)
    {
        foreach (double f in offloads)
            if (PlanCheck.Problem(model, cluster, plan with { OptimizerOffload = f }) is { } problem)
                throw new InputException(problem.ToString());
        options ??= PricingOptions.Default;
        var costs = PipelineCosts.Compute(model, cluster, plan, options);
        int m = plan.MicroBatches;
        var schedule = ScheduleGenerator.Generate(plan.Pp, plan.Vpp, m);
        double Duration(int s, int c, PassKind k) => k == PassKind.Forward ? costs.Forward[s, c] : costs.Backward[s, c];
        var withP2p = PipelineSimulator.Simulate(schedule, Duration, costs.P2p);
        var withoutP2p = costs.P2p > 0 ? PipelineSimulator.Simulate(schedule, Duration, 0) : withP2p;

        // The busiest stage explains the step.
        int critical = 0;
        for (int s = 1; s < plan.Pp; s++)
            if (withP2p.StageBusySeconds[s] > withP2p.StageBusySeconds[critical])
                critical = s;
        var cp = costs.Parts[critical];
        double busy = withP2p.StageBusySeconds[critical];
        var flops = Flops.PerStep(model, plan, options.Kernels.FusedAttention);
        var predictions = new List<Prediction>(offloads.Count);
        double adapters = BlockLinears.ModelAdapters(model, plan.Tuning);
        foreach (double offload in offloads)
        {
            var variant = plan with { OptimizerOffload = offload };
            double worstTail = costs.WorstTailWith(offload);
            double optimizer = costs.OptimizerSeconds(critical, offload);
            double step = withP2p.MakespanSeconds + worstTail;
            var breakdown = new Breakdown(
                Compute: cp.Compute + cp.Offload, // with the host copies of offloaded activations that compute does not hide
                Recompute: cp.Recompute,
                TpComm: cp.TpComm,
                PpComm: withP2p.MakespanSeconds - withoutP2p.MakespanSeconds,
                DpComm: cp.Zero3 + (worstTail - optimizer),
                Bubble: withoutP2p.MakespanSeconds - busy,
                Optimizer: optimizer,
                CpComm: cp.CpComm,
                EpComm: cp.EpComm);

            var mem = StageMemory(costs, variant);
            double peak = 0, capacity = double.MaxValue, peakFlops = 0;
            bool fits = costs.HostFits(variant);
            for (int s = 0; s < plan.Pp; s++)
            {
                var gpuOfStage = cluster.GroupList[plan.GroupOf(s)].Gpu;
                peak = Math.Max(peak, mem[s].Total);
                capacity = Math.Min(capacity, gpuOfStage.MemoryGib);
                fits &= mem[s].Total <= gpuOfStage.MemoryBytes;
                peakFlops += gpuOfStage.SpecPeakFlops(plan.Precision) / plan.Pp; // every stage has tp·cp·dp GPUs
            }

            // FLOPs of the whole model for the global batch: per-sequence FLOPs of an unsharded model.
            int gpus = plan.Gpus;
            double modelTflops = flops.Model / (gpus * step) / 1e12;
            double hardwareTflops = flops.Hardware / (gpus * step) / 1e12;
            predictions.Add(new Prediction(
                variant,
                model.Source ?? model.Name,
                cluster.Source ?? cluster.Name,
                step,
                (double)plan.Gbs * plan.Seq / step,
                modelTflops,
                hardwareTflops,
                modelTflops * 1e12 / peakFlops,
                peak / Units.GiB,
                capacity,
                fits,
                breakdown,
                mem,
                options.Stack,
                model.TotalParams + adapters,
                plan.Tuning.Adapters ? adapters : model.TotalParams));
        }
        return predictions;
    }

    /// <summary>
    /// A lower bound of <see cref="Price"/>'s step time and the exact peak memory, without simulating the pipeline:
    /// what a search needs to discard a plan cheaply. Throws like <see cref="Price"/> on a plan that fails its checks.
    /// </summary>
    public static (double StepLowerBound, double PeakMemoryBytes) Bound(ModelSpec model, ClusterSpec cluster, ParallelPlan plan, PricingOptions? options = null)
    {
        if (PlanCheck.Problem(model, cluster, plan) is { } problem)
            throw new InputException(problem.ToString());
        var costs = PipelineCosts.Compute(model, cluster, plan, options ?? PricingOptions.Default);
        double peak = cluster.IsHeterogeneous ? StageMemory(costs, plan).Max(b => b.Total) : costs.PeakMemoryBytes(plan);
        return (costs.MakespanLowerBound(plan.MicroBatches) + costs.WorstTail, peak);
    }

    private static MemoryBreakdown[] StageMemory(PipelineCosts costs, ParallelPlan plan)
    {
        var mem = new MemoryBreakdown[plan.Pp];
        for (int s = 0; s < plan.Pp; s++)
            mem[s] = costs.StageMemory(s, plan);
        return mem;
    }
}
