using Planner.CostModel.Comm;
using Planner.CostModel.Compute;
using Planner.CostModel.Plans;
using Planner.CostModel.Specs;

namespace Planner.CostModel.Pricing;

/// <summary>Seconds of one block of one kind for one micro-batch on one rank, with its collectives.</summary>
public sealed class KindCosts
{
    /// <summary>Forward kernels.</summary>
    public required double Forward { get; init; }
    /// <summary>Backward kernels.</summary>
    public required double Backward { get; init; }
    /// <summary>Recomputed forward kernels under the plan's policy.</summary>
    public required double Recompute { get; init; }
    /// <summary>TP collectives of the forward.</summary>
    public required double TpForward { get; init; }
    /// <summary>TP collectives of the backward.</summary>
    public required double TpBackward { get; init; }
    /// <summary>TP collectives of a recomputed forward.</summary>
    public required double TpRecompute { get; init; }
    /// <summary>Exposed context-parallel exchange in the forward.</summary>
    public required double CpForward { get; init; }
    /// <summary>Exposed context-parallel exchange in the backward.</summary>
    public required double CpBackward { get; init; }
    /// <summary>Expert-parallel token dispatch and combine (and expert-TP gathers) of the forward.</summary>
    public required double EpForward { get; init; }
    /// <summary>Their counterparts in the backward.</summary>
    public required double EpBackward { get; init; }
    /// <summary>The dispatch and combine of a recomputed forward.</summary>
    public required double EpRecompute { get; init; }

    /// <summary>One micro-batch's forward plus backward seconds of the block, everything included.</summary>
    public double Total => Forward + Backward + Recompute + TpForward + TpBackward + TpRecompute + CpForward + CpBackward + EpForward + EpBackward + EpRecompute;
}

/// <summary>
/// Seconds of each kind of transformer block (and of the embedding, head and multi-token-prediction projection) for one
/// micro-batch on one rank, with its TP, CP and EP collectives. They depend on the fields of <see cref="Key"/> but not on
/// pp, dp or ZeRO, so a search computes them once per such key and reuses them across pipeline and data-parallel shapes.
/// </summary>
public sealed class BlockCosts
{
    /// <summary>The blocks' kernels.</summary>
    public required TransformerOps Ops { get; init; }
    /// <summary>The kernel timer (GPU and precision).</summary>
    public required KernelTimer Timer { get; init; }
    /// <summary>The costs of each kind of block, indexed as <see cref="TransformerOps.Kinds"/>.</summary>
    public required IReadOnlyList<KindCosts> Kinds { get; init; }
    /// <summary>The vocab-parallel embedding's (and the head's input-gradient) all-reduce.</summary>
    public required double TpEmbedding { get; init; }
    /// <summary>Embedding forward.</summary>
    public required double EmbeddingForward { get; init; }
    /// <summary>Embedding backward.</summary>
    public required double EmbeddingBackward { get; init; }
    /// <summary>Final norm, LM head and loss forward.</summary>
    public required double HeadForward { get; init; }
    /// <summary>Their backward.</summary>
    public required double HeadBackward { get; init; }
    /// <summary>A multi-token-prediction module's projection forward (its block and head are priced as such).</summary>
    public required double MtpForward { get; init; }
    /// <summary>Its backward.</summary>
    public required double MtpBackward { get; init; }
    /// <summary>Bytes of one micro-batch's hidden state on a rank.</summary>
    public required double HiddenBytes { get; init; }

    /// <summary>The first kind's costs (every block of a uniform model).</summary>
    public KindCosts Block => Kinds[0];

    /// <summary>The fields of a plan the block costs depend on (the cache key of a search).</summary>
    public static BlockKey Key(ParallelPlan p) =>
        new(p.Tp, p.Cp, p.Mbs, p.Seq, p.SequenceParallel, p.Precision, p.Recompute, p.Ep, p.Etp, p.MoeImbalance, p.MoeCapacity, p.Gpus, p.Tuning);

    /// <summary>
    /// LoRA's own tensor-parallel collectives in a block, forward and backward: each adapted dense linear's rank-wide
    /// tensor crosses the tensor-parallel group once per collective its region has (A's output enters a column-parallel
    /// region: the identity forward and an all-reduce backward, or under sequence parallelism an all-gather forward and
    /// a reduce-scatter backward; A's partial output leaves a row-parallel region: an all-reduce forward, or a
    /// reduce-scatter forward and an all-gather backward). A few kilobytes each: their latency is what they cost.
    /// </summary>
    private static (double Forward, double Backward) AdapterExchange(ModelSpec model, LayerKind kind, ParallelPlan plan, double bytesPerFeature,
        Placement placement, ClusterSpec cluster, PricingOptions options, double tpComm)
    {
        var t = plan.Tuning;
        if (!t.Adapters || plan.Tp == 1)
            return (0, 0);
        int column = 0, row = 0;
        foreach (var l in BlockLinears.Of(model, kind))
            if (!l.Expert && l.Targeted(t.Targets))
            {
                if (l.Split == LinearSplit.Column)
                    column++;
                else
                    row++;
            }
        double one = tpComm * CollectiveModel.Seconds(Collective.AllReduce, bytesPerFeature * t.Rank, placement, Axis.Tp, cluster, options.Algorithm);
        return plan.SequenceParallel
            ? ((column + row) * one, (column + row) * one)
            : (row * one, column * one);
    }

    /// <summary>Computes the block costs of a plan.</summary>
    public static BlockCosts Compute(ModelSpec model, ClusterSpec cluster, ParallelPlan plan, PricingOptions options)
    {
        var gpu = cluster.Gpu;
        var ops = new TransformerOps(model, plan, options.Kernels.FusedAttention, Quantization.Of(plan.Precision, gpu), options.Kernels.Loss == CrossEntropyKernel.Fused);
        var timer = new KernelTimer(gpu, plan.Precision);
        var placement = Placement.For(plan, cluster);
        double e = plan.Precision.ActivationBytes();
        // Profiled corrections of whole steps: compute as a training step runs it, tensor-parallel collectives as its
        // blocks run them.
        double step = gpu.Profiled?.StepCompute ?? 1, tpComm = gpu.Profiled?.TpComm ?? 1, cpComm = gpu.Profiled?.CpComm ?? 1;
        // TP collectives on one hidden-state tensor per tensor-parallel sublayer and pass: all-reduces, or under
        // sequence parallelism an all-gather and a reduce-scatter each, which move the same bytes.
        double hiddenBytes = ops.Tokens * model.Hidden * e;
        double tpOne = tpComm * CollectiveModel.Seconds(Collective.AllReduce, hiddenBytes, placement, Axis.Tp, cluster, options.Algorithm);
        // Ring attention passes each CP rank's K and V around the ring (and their gradients back), behind the attention core.
        double kvBytes = ops.Tokens * ops.LocalKvHeads * (model.QkHeadDim + model.HeadDim) * e;
        double cpStep = CollectiveModel.Seconds(Collective.SendRecv, kvBytes, placement, Axis.Cp, cluster, options.Algorithm);
        // Each pass of the ring starts right after compute: its first exchange waits for the CP peers' arrival, as a
        // collective does (0 on a specified cluster; measured where ranks share cores); the hops after it run in step.
        double cpArrival = CollectiveModel.Arrival(placement, Axis.Cp, cluster);
        var kinds = new List<KindCosts>(ops.Kinds.Count);
        for (int k = 0; k < ops.Kinds.Count; k++)
        {
            var kind = ops.Kinds[k];
            var blockOps = ops.Blocks[k];
            double forward = step * timer.BlockForward(blockOps, tp: plan.Tp, cp: plan.Cp);
            double recompute = plan.Recompute switch
            {
                Plans.Recompute.Full => forward,
                Plans.Recompute.Selective => step * timer.BlockForward(SelectivelyRecomputed(blockOps, kind, ops.FlashAttention, options.Activations.Recompute), tp: plan.Tp, cp: plan.Cp),
                _ => 0,
            };
            // Attention is one tensor-parallel sublayer; a dense MLP another, and a MoE block's shared experts.
            int sublayers = 1 + (!kind.Moe || model.Moe!.SharedFfn > 0 ? 1 : 0);
            double tpPass = sublayers * tpOne + (kind.Moe ? tpComm * RoutedTokensGather(plan, hiddenBytes, placement, cluster, options) : 0);
            var (adapterFwd, adapterBwd) = AdapterExchange(model, kind, plan, ops.Tokens * e, placement, cluster, options, tpComm);
            double coreFwd = timer.Forward(blockOps, attentionCoreOnly: true);
            double ep = kind.Moe ? ExpertExchange(ops, model, plan, placement, cluster, options) : 0;
            double backward = step * timer.BlockBackward(blockOps, plan.Tp, plan.Cp);
            double overhead = kind.Moe ? ExpertOverhead(gpu, options) * ops.LocalExperts : 0;
            forward += overhead;
            backward += overhead;
            var (epForward, epBackward) = ExposedExchange(gpu, options, forward, backward, ep);
            if (kind.Moe)
                epForward += RoutingCounts(model, plan, placement, cluster, options);
            if (plan.Recompute == Plans.Recompute.Full)
                recompute = forward;
            kinds.Add(new KindCosts
            {
                Forward = forward,
                Backward = backward,
                Recompute = recompute,
                TpForward = tpPass + adapterFwd,
                TpBackward = tpPass + adapterBwd,
                TpRecompute = plan.Recompute == Plans.Recompute.Full ? tpPass + adapterFwd : 0,
                CpForward = plan.Cp > 1 ? cpComm * (gpu.Overlapped(coreFwd, (plan.Cp - 1) * cpStep) - coreFwd + cpArrival) : 0,
                CpBackward = plan.Cp > 1 ? cpComm * (gpu.Overlapped(2 * coreFwd, 2 * (plan.Cp - 1) * cpStep) - 2 * coreFwd + cpArrival + (options.CpGradients == CpGradientReturn.HomeHop ? cpStep : 0)) : 0,
                EpForward = epForward,
                EpBackward = epBackward,
                EpRecompute = plan.Recompute == Plans.Recompute.Full ? epForward : 0,
            });
        }
        return new BlockCosts
        {
            Ops = ops,
            Timer = timer,
            Kinds = kinds,
            // Vocab-parallel embedding: one all-reduce of its output; the LM head's input gradient: one more.
            TpEmbedding = tpOne,
            EmbeddingForward = step * timer.Forward(ops.Embedding),
            EmbeddingBackward = step * timer.Backward(ops.Embedding),
            HeadForward = step * timer.HeadForward(ops.Head),
            HeadBackward = step * timer.HeadBackward(ops.Head),
            MtpForward = step * timer.Forward(ops.MtpProjection),
            MtpBackward = step * timer.Backward(ops.MtpProjection),
            HiddenBytes = hiddenBytes,
        };
    }

    /// <summary>
    /// The all-to-all dispatcher's exchange of how many tokens each rank routes to each expert before the forward's
    /// dispatch (the receivers size their buffers from it; Megatron-Core's all-to-all dispatcher gathers the counts in
    /// its preprocessing, the executor exchanges them): one small collective over the EP group per forward, exposed
    /// (the dispatch waits for it). None for a deduplicating (flex) dispatcher, whose layout is exchanged inside it.
    /// </summary>
    private static double RoutingCounts(ModelSpec model, ParallelPlan plan, Placement placement, ClusterSpec cluster, PricingOptions options) =>
        plan.Ep > 1 && !plan.DeduplicatesDispatch(options.Moe.Dispatcher)
            ? EpCommFactor(cluster) * CollectiveModel.Seconds(Collective.AllToAll, model.Experts * 8.0, placement, Axis.Ep, cluster, options.Algorithm)
            : 0;

    /// <summary>
    /// Seconds a MoE block's pass spends per local expert in small kernels the op list leaves out (splitting the
    /// dispatched tokens by expert, each expert's casts and bias and activation launches, its share of the permutation's
    /// index kernels). Two regimes: the router and dispatch preprocessing captured in CUDA graphs
    /// (<see cref="MoeLaunch.CudaGraphs"/>), the stack's graphed value; eager, the value a profile measured on
    /// this machine where it did (the executor runs eager), else the stack's.
    /// </summary>
    private static double ExpertOverhead(GpuSpec gpu, PricingOptions options) => options.Moe.Launch == MoeLaunch.CudaGraphs
        ? options.Moe.GraphedExpertOverheadSeconds
        : gpu.Profiled?.MoeExpertOverheadUs * 1e-6 ?? options.Moe.EagerExpertOverheadSeconds;

    /// <summary>
    /// Experts held whole without sequence parallelism take each TP rank's part of the replicated tokens: their outputs
    /// are all-gathered over TP in the forward, the inputs' gradients in the backward (one all-gather of the hidden
    /// states per pass); nothing otherwise.
    /// </summary>
    private static double RoutedTokensGather(ParallelPlan plan, double hiddenBytes, Placement placement, ClusterSpec cluster, PricingOptions options) =>
        plan.Tp > 1 && !plan.SequenceParallel
            ? CollectiveModel.Seconds(Collective.AllGather, hiddenBytes, placement, Axis.Tp, cluster, options.Algorithm)
            : 0;

    /// <summary>The profiled correction of the expert-parallel exchange (1 unless a profile measured it).</summary>
    private static double EpCommFactor(ClusterSpec cluster) => cluster.Gpu.Profiled?.EpComm ?? 1;

    /// <summary>
    /// The expert-parallel exchange's exposed seconds, forward and backward: all of it; with the exchange overlapped with
    /// another micro-batch's compute (<see cref="ExpertCommOverlap.Overlapped"/>), only what the block's compute
    /// cannot hide (the other micro-batch's block costs as much).
    /// </summary>
    private static (double Forward, double Backward) ExposedExchange(GpuSpec gpu, PricingOptions options, double forward, double backward, double ep) =>
        options.Moe.ExpertComm == ExpertCommOverlap.Overlapped && ep > 0 ? (gpu.Overlapped(forward, ep) - forward, gpu.Overlapped(backward, ep) - backward) : (ep, ep);

    /// <summary>
    /// The forward kernels selective recompute runs again in a block of kind <paramref name="kind"/> (see
    /// <see cref="RecomputeModules"/>): the materialised attention core (nothing under fused attention, whose backward
    /// redoes its scores anyway), the two norms, the experts' activation, latent attention's up-projections and their
    /// rotary embedding, a dense block's MLP.
    /// </summary>
    public static IReadOnlyList<Op> SelectivelyRecomputed(IReadOnlyList<Op> blockOps, LayerKind kind, bool flashAttention, RecomputeModules modules)
    {
        var list = new List<Op>();
        foreach (var op in blockOps)
        {
            bool again = op.AttentionCore ? modules.HasFlag(RecomputeModules.CoreAttention) && !flashAttention
                : op.Name switch
                {
                    "ln1" or "ln2" => modules.HasFlag(RecomputeModules.LayerNorm),
                    "expert_swiglu" or "expert_act" => modules.HasFlag(RecomputeModules.MoeAct),
                    "q_up" or "kv_up" => modules.HasFlag(RecomputeModules.MlaUpProj),
                    "rope" => modules.HasFlag(RecomputeModules.MlaUpProj) && blockOps.Any(o => o.Name == "kv_up"),
                    "mlp_gate_up" or "mlp_up" or "swiglu" or "gelu" or "mlp_down" => !kind.Moe && modules.HasFlag(RecomputeModules.Mlp),
                    _ => false,
                };
            if (again)
                list.Add(op);
        }
        return list;
    }

    /// <summary>
    /// Copies of each token the dispatch sends over the expert-parallel group (its own rank's share included), routing
    /// uniform over <paramref name="experts"/> experts split evenly over <paramref name="ep"/> ranks: one per routed
    /// expert, or deduplicated, one per rank that holds at least one of its <paramref name="topK"/> experts:
    /// ep · (1 − C(E − E/ep, k) / C(E, k)).
    /// </summary>
    public static double DispatchedCopies(int experts, int topK, int ep, bool deduplicated)
    {
        if (!deduplicated || ep <= 1)
            return topK;
        int others = experts - experts / ep;
        double missed = 1; // C(others, k) / C(experts, k) as a product
        for (int i = 0; i < topK; i++)
            missed *= Math.Max(0.0, others - i) / (experts - i);
        return ep * (1 - missed);
    }

    /// <summary>
    /// One pass's expert-parallel exchange in a MoE block: the all-to-all that dispatches each routed token copy to its
    /// expert's rank and the one that combines the results back (the busiest rank receives its load's share), and with
    /// expert tensor parallelism the all-gather of the dispatched tokens over the expert-TP group and the reduce-scatter
    /// of the experts' outputs. Exposed: the published runs do not overlap them with compute.
    /// </summary>
    private static double ExpertExchange(TransformerOps ops, ModelSpec model, ParallelPlan plan, Placement placement, ClusterSpec cluster, PricingOptions options)
    {
        double e = plan.Precision.ActivationBytes();
        double tokenBytes = model.Hidden * e;
        double copies = DispatchedCopies(model.Experts, model.ExpertsPerToken, plan.Ep, plan.DeduplicatesDispatch(options.Moe.Dispatcher));
        double exchanged = ops.RoutedTokens * copies * plan.ExpertLoad(model.Experts) * tokenBytes;
        double a2a = 2 * EpCommFactor(cluster) * CollectiveModel.Seconds(Collective.AllToAll, exchanged, placement, Axis.Ep, cluster, options.Algorithm);
        double etp = plan.Etp > 1
            ? CollectiveModel.Seconds(Collective.AllGather, ops.ExpertTokens * tokenBytes, placement, Axis.Etp, cluster, options.Algorithm)
              + CollectiveModel.Seconds(Collective.ReduceScatter, ops.ExpertTokens * tokenBytes, placement, Axis.Etp, cluster, options.Algorithm)
            : 0;
        return a2a + etp;
    }
}

/// <summary>The fields of a plan that <see cref="BlockCosts"/> depend on (the GPU count too: it sets how a job's nodes
/// spread over NVLink domains, see <see cref="Placement"/>).</summary>
public readonly record struct BlockKey(int Tp, int Cp, int Mbs, int Seq, bool Sp, Precision Precision, Recompute Recompute,
    int Ep, int Etp, double MoeImbalance, double? MoeCapacity, int Gpus, FineTuning Tuning);
