using Planner.CostModel.Comm;
using Planner.CostModel.Compute;
using Planner.CostModel.Plans;
using Planner.CostModel.Specs;

namespace Planner.CostModel.Pricing;

/// <summary>
/// Seconds of one transformer block (and of the embedding and head) for one micro-batch on one rank, with its TP and
/// CP collectives. They depend on tp, cp, mbs, seq, sequence parallelism, precision and recompute but not on pp, dp
/// or ZeRO, so a search computes them once per such key and reuses them across pipeline and data-parallel shapes.
/// </summary>
public sealed class BlockCosts
{
    /// <summary>The block's kernels.</summary>
    public required TransformerOps Ops { get; init; }
    /// <summary>The kernel timer (GPU and precision).</summary>
    public required KernelTimer Timer { get; init; }
    /// <summary>Forward kernels of a block.</summary>
    public required double Forward { get; init; }
    /// <summary>Backward kernels of a block.</summary>
    public required double Backward { get; init; }
    /// <summary>Recomputed forward kernels of a block under the plan's policy.</summary>
    public required double Recompute { get; init; }
    /// <summary>TP collectives of a block's forward.</summary>
    public required double TpForward { get; init; }
    /// <summary>TP collectives of a block's backward.</summary>
    public required double TpBackward { get; init; }
    /// <summary>TP collectives of a recomputed forward.</summary>
    public required double TpRecompute { get; init; }
    /// <summary>Exposed context-parallel exchange in a block's forward.</summary>
    public required double CpForward { get; init; }
    /// <summary>Exposed context-parallel exchange in a block's backward.</summary>
    public required double CpBackward { get; init; }
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
    /// <summary>Bytes of one micro-batch's hidden state on a rank.</summary>
    public required double HiddenBytes { get; init; }

    /// <summary>The fields of a plan the block costs depend on (the cache key of a search).</summary>
    public static (int Tp, int Cp, int Mbs, int Seq, bool Sp, Precision Precision, Recompute Recompute) Key(ParallelPlan p) =>
        (p.Tp, p.Cp, p.Mbs, p.Seq, p.SequenceParallel, p.Precision, p.Recompute);

    /// <summary>Computes the block costs of a plan.</summary>
    public static BlockCosts Compute(ModelSpec model, ClusterSpec cluster, ParallelPlan plan, PricingOptions options)
    {
        var ops = new TransformerOps(model, plan, options.FlashAttention);
        var timer = new KernelTimer(cluster.Gpu, plan.Precision);
        var placement = new Placement(plan, cluster.GpusPerNode);
        var gpu = cluster.Gpu;
        double e = plan.Precision.ActivationBytes();
        // Profiled corrections of whole steps: compute as a training step runs it, tensor-parallel collectives as its
        // blocks run them.
        double step = gpu.Profiled?.StepCompute ?? 1, tpComm = gpu.Profiled?.TpComm ?? 1;
        double forward = step * timer.BlockForward(ops.Block, tp: plan.Tp);
        double recompute = plan.Recompute switch
        {
            Plans.Recompute.Full => forward,
            Plans.Recompute.Selective => ops.FlashAttention ? 0 : step * timer.BlockForward(ops.Block, attentionCoreOnly: true, tp: plan.Tp),
            _ => 0,
        };
        // Two TP collectives per block per pass on one hidden-state tensor: all-reduces, or under sequence
        // parallelism an all-gather and a reduce-scatter each, which move the same bytes.
        double hiddenBytes = ops.Tokens * model.Hidden * e;
        double tpOne = tpComm * CollectiveModel.Seconds(Collective.AllReduce, hiddenBytes, placement, Axis.Tp, cluster, options.Algorithm);
        double tpPair = 2 * tpOne;
        // Ring attention passes each CP rank's K and V around the ring (and their gradients back), behind the attention core.
        double kvBytes = 2 * ops.Tokens * ops.LocalKvHeads * model.HeadDim * e;
        double cpStep = CollectiveModel.Seconds(Collective.SendRecv, kvBytes, placement, Axis.Cp, cluster, options.Algorithm);
        double coreFwd = timer.Forward(ops.Block, attentionCoreOnly: true);
        return new BlockCosts
        {
            Ops = ops,
            Timer = timer,
            Forward = forward,
            Backward = step * timer.BlockBackward(ops.Block, plan.Tp),
            Recompute = recompute,
            TpForward = tpPair,
            TpBackward = tpPair,
            TpRecompute = plan.Recompute == Plans.Recompute.Full ? tpPair : 0,
            CpForward = plan.Cp > 1 ? gpu.Overlapped(coreFwd, (plan.Cp - 1) * cpStep) - coreFwd : 0,
            CpBackward = plan.Cp > 1 ? gpu.Overlapped(2 * coreFwd, 2 * (plan.Cp - 1) * cpStep) - 2 * coreFwd : 0,
            // Vocab-parallel embedding: one all-reduce of its output; the LM head's input gradient: one more.
            TpEmbedding = tpOne,
            EmbeddingForward = step * timer.Forward(ops.Embedding),
            EmbeddingBackward = step * timer.Backward(ops.Embedding),
            HeadForward = step * timer.HeadForward(ops.Head),
            HeadBackward = step * timer.HeadBackward(ops.Head),
            HiddenBytes = hiddenBytes,
        };
    }
}
