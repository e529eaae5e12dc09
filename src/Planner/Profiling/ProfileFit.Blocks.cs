using System.Text.Json.Nodes;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;
using Cal = Planner.CostModel.Calibration.Calibration;

namespace Planner.Cli.Profiling;

/// <summary>The fits of the blocks as training runs them: whole, split over tensor-parallel ranks, a MoE block over
/// expert-parallel ranks, the block over context-parallel ranks.</summary>
public static partial class ProfileFit
{
    /// <summary>The block and head against their price, and the block split over two tensor-parallel ranks and its
    /// collectives (null: one rank per node).</summary>
    private sealed record BlocksFit(PassAgainstPriced Block, PassAgainstPriced Head, PassAgainstPriced? TpBlock, MeasuredAgainstPriced? TpComm);

    /// <summary>A MoE block over two expert-parallel ranks: its all-to-alls per forward and backward, and its passes
    /// without them against their kernels' price.</summary>
    private sealed record MoeFit(MeasuredAgainstPriced Exchange, MeasuredAgainstPriced Passes);

    /// <summary>A linear layer as measured, and its passes against the GEMM curve's price.</summary>
    private sealed record LinearFit(LinearTimes Measured, PassAgainstPriced Fit);

    /// <summary>The block and head (and the block split over two tensor-parallel ranks, with its collectives) against
    /// their price, the ratios into <paramref name="cal"/>.</summary>
    private static BlocksFit FitBlocks(ClusterSpec cluster, JsonObject m, ProfileSizes sizes, Precision precision, BlockTimes measured, ref Cal cal)
    {
        // A whole transformer block and its head as the executor runs them, against their price with everything above:
        // what the kernel list leaves out (framework overheads, layout copies) corrects every block and head.
        var blockTimer = new Planner.CostModel.Compute.KernelTimer(cal.Apply(cluster).Gpu, precision);
        var blockOps = new Planner.CostModel.Compute.TransformerOps(sizes.BlockModel(), sizes.BlockPlan(), flashAttention: false);
        PassAgainstPriced Priced(PassTimes passes, IReadOnlyList<Planner.CostModel.Compute.Op> group) =>
            new(new(passes.Forward, blockTimer.Forward(group)), new(passes.Backward, blockTimer.Backward(group)));
        var block = Priced(measured.Block, blockOps.Block);
        var head = Priced(measured.Head, blockOps.Head);
        cal = cal with
        {
            Profiled = cal.Profiled! with
            {
                BlockForward = block.Forward.Ratio,
                BlockBackward = block.Backward.Ratio,
                HeadForward = head.Forward.Ratio,
                HeadBackward = head.Backward.Ratio,
            },
        };
        // The same block split over two tensor-parallel ranks, its collectives left out (priced apart); one rank: none.
        if (m["block_tp"] is not JsonArray ta)
            return new BlocksFit(block, head, null, null);
        var tpMeasured = SplitBlockTimes.Of(ta);
        var tpOps = new Planner.CostModel.Compute.TransformerOps(sizes.BlockModel(), sizes.BlockPlan(tp: 2), flashAttention: false);
        var tpBlock = Priced(tpMeasured.Passes, tpOps.Block);
        // Its collectives (two all-reduces per pass, forward and backward) against their price from the fit.
        var tpCosts = BlockCosts.Compute(sizes.BlockModel(), cal.Apply(cluster), sizes.BlockPlan(tp: 2), ExecutorSoftware.Options);
        var tpComm = new MeasuredAgainstPriced(tpMeasured.CommSeconds, tpCosts.Block.TpForward + tpCosts.Block.TpBackward);
        cal = cal with
        {
            Profiled = cal.Profiled! with
            {
                TpBlockForward = tpBlock.Forward.Ratio,
                TpBlockBackward = tpBlock.Backward.Ratio,
                TpComm = tpComm.Ratio,
            },
        };
        return new BlocksFit(block, head, tpBlock, tpComm);
    }

    /// <summary>
    /// A MoE block with its experts split over two ranks (ep 2) as the executor runs it: its all-to-alls against their
    /// price from the fit (the ratio into <paramref name="cal"/>), and its passes beyond their kernels' price with the
    /// block factors above, per local expert and pass (the executor's MoE overhead: routing on the host, each expert's
    /// own calls). Null: one rank per node, or measurements without it.
    /// </summary>
    private static MoeFit? FitMoeBlock(ClusterSpec cluster, JsonObject m, ProfileSizes sizes, Precision precision, ref Cal cal)
    {
        if (m["block_ep"] is not JsonArray ea)
            return null;
        var e = SplitBlockTimes.Of(ea);
        var (costs, ops, timer) = SplitBlockPrices(sizes.MoeBlockModel(), sizes.MoeBlockPlan(), cluster, cal, precision);
        var exchange = new MeasuredAgainstPriced(e.CommSeconds, costs.Block.EpForward + costs.Block.EpBackward);
        var passes = new MeasuredAgainstPriced(e.Passes.Total, timer.BlockForward(ops.Block) + timer.BlockBackward(ops.Block));
        double overheadUs = Math.Max(0, passes.Measured - passes.Priced) / (2 * ops.LocalExperts) * 1e6;
        cal = cal with { Profiled = cal.Profiled! with { EpComm = exchange.Ratio, MoeExpertOverheadUs = overheadUs } };
        return new MoeFit(exchange, passes);
    }

    /// <summary>The block over two context-parallel ranks: the ring's transfers as training runs them against their price
    /// from the fit, the ratio into <paramref name="cal"/>: per forward and backward, or null.</summary>
    private static MeasuredAgainstPriced? FitRing(ClusterSpec cluster, JsonObject m, ProfileSizes sizes, Precision precision, ref Cal cal)
    {
        if (m["block_cp"] is not JsonArray ca)
            return null;
        var c = SplitBlockTimes.Of(ca);
        var (costs, ops, timer) = SplitBlockPrices(sizes.BlockModel(), sizes.CpBlockPlan(), cluster, cal, precision);
        var ring = new MeasuredAgainstPriced(c.CommSeconds, costs.Block.CpForward + costs.Block.CpBackward);
        // Its passes without the transfers against the kernels' price (the whole block's factor left out).
        cal = cal with
        {
            Profiled = cal.Profiled! with
            {
                CpComm = ring.Ratio,
                CpBlockForward = new MeasuredAgainstPriced(c.Passes.Forward, timer.Forward(ops.Block)).Ratio,
                CpBlockBackward = new MeasuredAgainstPriced(c.Passes.Backward, timer.Backward(ops.Block)).Ratio,
            },
        };
        return ring;
    }

    /// <summary>What a block split over two ranks is priced at with the calibration so far: its costs under the
    /// executor's stack, its kernels and their timer.</summary>
    private static (BlockCosts Costs, Planner.CostModel.Compute.TransformerOps Ops, Planner.CostModel.Compute.KernelTimer Timer) SplitBlockPrices(
        ModelSpec model, ParallelPlan plan, ClusterSpec cluster, Cal cal, Precision precision)
    {
        var calibrated = cal.Apply(cluster);
        return (BlockCosts.Compute(model, calibrated, plan, ExecutorSoftware.Options),
            new Planner.CostModel.Compute.TransformerOps(model, plan, flashAttention: false),
            new Planner.CostModel.Compute.KernelTimer(calibrated.Gpu, precision));
    }
}
