using Planner.CostModel.Comm;
using Planner.CostModel.Compute;
using Planner.CostModel.Memory;
using Planner.CostModel.Pipeline;
using Planner.CostModel.Plans;
using Planner.CostModel.Specs;

namespace Planner.CostModel.Pricing;

/// <summary>
/// The per-chunk forward and backward durations of every pipeline stage for one micro-batch (kernels, TP/CP
/// collectives, exposed ZeRO-3 traffic) and the work after the flush; the input of the pipeline simulation and of
/// the search's lower bound.
/// </summary>
public sealed partial class PipelineCosts
{
    /// <summary>Bytes the optimizer step streams per parameter it owns: read and write the fp32 master (or the
    /// weights), the gradient (fp32) read for its norm and for the update, the optimizer's state read and written
    /// (<see cref="FineTuning.StepStateBytes"/>: AdamW's m and v), and the working copy written (16-bit in mixed
    /// precision). AdamW: 7·4 + 4 (+ 2) bytes. Without a master copy (QLoRA's bf16 adapters) the 16-bit weights are read
    /// and written in place and their 16-bit gradients read.</summary>
    private static double OptimizerBytesPerParam(bool mixed, FineTuning tuning) => mixed && !tuning.MasterCopy
        ? 2 * 2 + FineTuning.StepStateBytes(tuning.Optimizer, 2)
        : 2 * 4 + FineTuning.StepStateBytes(tuning.Optimizer, 4) + (mixed ? 2 : 0);

    /// <summary>
    /// Sophia's Hessian estimate (Liu et al. 2023, Gauss-Newton-Bartlett): every k = 10 steps a forward and a backward
    /// of the step's micro-batches on labels sampled from the model's own outputs, whose squared gradients refresh the
    /// diagonal; amortized over the k steps and counted with the optimizer. 0 for every other optimizer.
    /// </summary>
    private static double SophiaHessianSeconds(ParallelPlan plan, double[,] fwd, double[,] bwd, int stage)
    {
        if (plan.Tuning.Optimizer != OptimizerKind.Sophia)
            return 0;
        double pass = 0;
        for (int c = 0; c < fwd.GetLength(1); c++)
            pass += fwd[stage, c] + bwd[stage, c];
        return pass * plan.MicroBatches / FineTuning.SophiaHessianInterval;
    }

    /// <summary>Forward seconds of [stage, chunk] for one micro-batch.</summary>
    public required double[,] Forward { get; init; }
    /// <summary>Backward seconds (with recompute) of [stage, chunk] for one micro-batch.</summary>
    public required double[,] Backward { get; init; }
    /// <summary>Per-stage accounting.</summary>
    public required StageParts[] Parts { get; init; }
    /// <summary>Seconds of one point-to-point activation transfer between neighbouring stages.</summary>
    public required double P2p { get; init; }
    /// <summary>Bytes each GPU sends in one such transfer (0 without pipeline parallelism).</summary>
    public double P2pBytes { get; init; }
    /// <summary>Blocks per stage and chunk.</summary>
    public required StageLayout Layout { get; init; }
    /// <summary>The memory model of the plan, per GPU group.</summary>
    public required MemoryModel[] Memories { get; init; }
    /// <summary>Host memory each GPU may fill with offloaded state, bytes (0 without a host spec).</summary>
    public required double HostBytesPerGpu { get; init; }
    /// <summary>Seconds per offloaded parameter of the CPU optimizer step, pipelined over buckets: the slowest of the
    /// gradient's copy to the host, the CPU's Adam update and the updated weight's copy back (0 without a host spec).</summary>
    public required double HostSecondsPerParam { get; init; }

    /// <summary>
    /// The optimizer step of a stage with <paramref name="offload"/> of its state on the host: the GPU steps the rest
    /// while the CPU steps that part, so the slower of the two.
    /// </summary>
    public double OptimizerSeconds(int stage, double offload)
    {
        var part = Parts[stage];
        return offload <= 0 ? part.GpuOptimizer : Math.Max(part.GpuOptimizer * (1 - offload), part.OwnedParams * offload * HostSecondsPerParam);
    }

    /// <summary>The largest after-flush time over stages with another optimizer offload than the plan's.</summary>
    public double WorstTailWith(double offload)
    {
        double w = 0;
        for (int s = 0; s < Parts.Length; s++)
            w = Math.Max(w, Parts[s].DpTail + OptimizerSeconds(s, offload));
        return w;
    }

    /// <summary>True when the plan's offloaded state fits its nodes' host memory (the first and last stages hold the
    /// most of an even split of uniform blocks; every stage is checked otherwise).</summary>
    public bool HostFits(ParallelPlan plan)
    {
        if (plan.OptimizerOffload <= 0)
            return true;
        if (AnyStageMayPeak(plan))
            return Enumerable.Range(0, plan.Pp).All(s => StageMemory(s, plan).Host <= HostBytesPerGpu);
        return StageMemory(0, plan).Host <= HostBytesPerGpu && StageMemory(plan.Pp - 1, plan).Host <= HostBytesPerGpu;
    }

    /// <summary>True when a middle stage may hold more than the end stages: blocks of several kinds, or an uneven split.</summary>
    private bool AnyStageMayPeak(ParallelPlan plan) => Memories[0].KindCount > 1 || plan.Stages is not null;

    /// <summary>The largest after-flush time over stages.</summary>
    public double WorstTail
    {
        get
        {
            double w = 0;
            foreach (var p in Parts)
                w = Math.Max(w, p.Tail);
            return w;
        }
    }

    /// <summary>
    /// A lower bound of the simulated pipeline's makespan that is tight for the schedules we generate: stage s
    /// cannot start before the first micro-batch's chunk-0 forwards on stages 0..s−1 (and their transfers), runs
    /// its own actions one after another, and ends with the last micro-batch's chunk-0 backward, after which stages
    /// s−1..0 still run theirs. Equal to the makespan for uniform stages.
    /// </summary>
    public double MakespanLowerBound(int microBatches)
    {
        int pp = Parts.Length, vpp = Forward.GetLength(1);
        double best = 0, prefix = 0;
        for (int s = 0; s < pp; s++)
        {
            double busy = 0;
            for (int c = 0; c < vpp; c++)
                busy += Forward[s, c] + Backward[s, c];
            best = Math.Max(best, prefix + microBatches * busy);
            prefix += Forward[s, 0] + Backward[s, 0] + 2 * P2p;
        }
        return best;
    }

    /// <summary>Peak memory of one stage's rank.</summary>
    public MemoryBreakdown StageMemory(int stage, ParallelPlan plan) =>
        Memories[plan.GroupOf(stage)].Stage(stage, Layout.MixOnStage(stage), ScheduleGenerator.InFlightBound(plan.Pp, plan.Vpp, plan.MicroBatches, stage), plan.Vpp, variant: plan);

    /// <summary>
    /// The largest per-rank peak, bytes. For a model of uniform blocks only the first and last stages can hold it:
    /// layers per stage and in-flight micro-batches never increase along the pipeline and the first stage adds the
    /// embedding, so stage 0 bounds every middle stage; the last stage adds the head, the logits and a tied embedding's
    /// copy. Blocks of several kinds (dense first blocks before MoE ones) or an uneven split can make a middle stage the
    /// largest: every stage is then computed.
    /// </summary>
    public double PeakMemoryBytes(ParallelPlan plan)
    {
        double peak = Math.Max(StageMemory(0, plan).Total, plan.Pp > 1 ? StageMemory(plan.Pp - 1, plan).Total : 0);
        if (AnyStageMayPeak(plan))
            for (int s = 1; s < plan.Pp - 1; s++)
                peak = Math.Max(peak, StageMemory(s, plan).Total);
        return peak;
    }

    /// <summary>Host memory each GPU of the cluster may fill with offloaded state, bytes (0 without a host spec).</summary>
    public static double HostBytesPerGpuOf(ClusterSpec cluster) => cluster.Host is { } host ? host.UsableBytes / cluster.GpusPerNode : 0;

    /// <summary>Computes the costs of a plan that passed <see cref="PlanCheck"/>.</summary>
    public static PipelineCosts Compute(ModelSpec model, ClusterSpec cluster, ParallelPlan plan, PricingOptions options)
    {
        var cache = new Dictionary<(int, Recompute), BlockCosts>();
        return Compute(model, cluster, plan, options, (g, r) =>
            cache.TryGetValue((g, r), out var b) ? b : cache[(g, r)] = BlockCosts.Compute(model, cluster.ForGroup(g), plan with { Recompute = r }, options));
    }

    /// <summary>
    /// Computes the costs of a plan from its (possibly cached) per-block costs for each GPU group and recompute policy.
    /// </summary>
    public static PipelineCosts Compute(ModelSpec model, ClusterSpec cluster, ParallelPlan plan, PricingOptions options, Func<int, Recompute, BlockCosts> blocks)
    {
        var placement = Placement.For(plan, cluster);
        var layout = StageLayout.Of(model, plan);
        var planBlock = blocks(0, plan.Recompute);
        var memories = new MemoryModel[cluster.GroupList.Count];
        for (int g = 0; g < memories.Length; g++)
            memories[g] = new MemoryModel(model, plan, planBlock.Ops, cluster.GroupList[g].Gpu, options);
        var pricer = new StagePricer(model, cluster, plan, options, blocks, placement, layout, memories[0], planBlock.Ops.Quantization);

        var fwd = new double[plan.Pp, plan.Vpp];
        var bwd = new double[plan.Pp, plan.Vpp];
        var parts = new StageParts[plan.Pp];
        for (int s = 0; s < plan.Pp; s++)
            parts[s] = pricer.Passes(s, fwd, bwd);

        double p2pBytes = planBlock.HiddenBytes / plan.Tp; // scatter/gather across the TP ranks of a stage (Narayanan et al. 2021)
        double p2p = plan.Pp > 1 ? CollectiveModel.Seconds(Collective.SendRecv, p2pBytes, 2, placement.CrossesDomains(Axis.Pp) ? 1 : 2, cluster) : 0;

        // After the flush: gradient reduction, the optimizer step, and for ZeRO-1/2 the parameter all-gather.
        for (int s = 0; s < plan.Pp; s++)
            pricer.AfterFlush(s, parts[s], fwd, bwd);
        var costs = new PipelineCosts
        {
            Forward = fwd,
            Backward = bwd,
            Parts = parts,
            P2p = p2p,
            P2pBytes = plan.Pp > 1 ? p2pBytes : 0,
            Layout = layout,
            Memories = memories,
            HostBytesPerGpu = HostBytesPerGpuOf(cluster),
            HostSecondsPerParam = pricer.HostSecondsPerParam(),
        };
        for (int s = 0; s < plan.Pp; s++)
            parts[s].Optimizer = costs.OptimizerSeconds(s, plan.OptimizerOffload);
        return costs;
    }
}
