using System.Text.Json.Nodes;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;
using Cal = Planner.CostModel.Calibration.Calibration;

namespace Planner.Cli.Profiling;

/// <summary>The fits of the blocks as training runs them: whole, split over tensor-parallel ranks, a MoE block over
/// expert-parallel ranks, the block over context-parallel ranks.</summary>
public static partial class ProfileFit
{
    /// <summary>The block and head (and the block split over two tensor-parallel ranks, with its collectives) against
    /// their price, the ratios into <paramref name="cal"/>: rows of measured and priced seconds.</summary>
    private static (double[] BlockRow, double[]? TpBlockRow, double[]? TpCommRow) FitBlocks(ClusterSpec cluster, JsonObject m, ProfileSizes sizes,
        Precision precision, double[] measured, ref Cal cal)
    {
        // A whole transformer block and its head as the executor runs them, against their price with everything above:
        // what the kernel list leaves out (framework overheads, layout copies) corrects every block and head.
        var blockTimer = new Planner.CostModel.Compute.KernelTimer(cal.Apply(cluster).Gpu, precision);
        var blockOps = new Planner.CostModel.Compute.TransformerOps(sizes.BlockModel(), sizes.BlockPlan(), flashAttention: false);
        double[] blockRow = [measured[0], blockTimer.Forward(blockOps.Block), measured[1], blockTimer.Backward(blockOps.Block),
            measured[2], blockTimer.Forward(blockOps.Head), measured[3], blockTimer.Backward(blockOps.Head)];
        cal = cal with
        {
            Profiled = cal.Profiled! with
            {
                BlockForward = blockRow[0] / blockRow[1],
                BlockBackward = blockRow[2] / blockRow[3],
                HeadForward = blockRow[4] / blockRow[5],
                HeadBackward = blockRow[6] / blockRow[7],
            },
        };
        // The same block split over two tensor-parallel ranks, its collectives left out (priced apart); one rank: none.
        double[]? tpBlockRow = null, tpCommRow = null;
        if (m["block_tp"] is JsonArray ta)
        {
            var tpMeasured = ta.Select(v => (double)v!).ToArray();
            var tpOps = new Planner.CostModel.Compute.TransformerOps(sizes.BlockModel(), sizes.BlockPlan(tp: 2), flashAttention: false);
            tpBlockRow = [tpMeasured[0], blockTimer.Forward(tpOps.Block), tpMeasured[1], blockTimer.Backward(tpOps.Block)];
            // Its collectives (two all-reduces per pass, forward and backward) against their price from the fit.
            var tpCosts = BlockCosts.Compute(sizes.BlockModel(), cal.Apply(cluster), sizes.BlockPlan(tp: 2), Executor);
            tpCommRow = [tpMeasured[2], tpCosts.Block.TpForward + tpCosts.Block.TpBackward];
            cal = cal with
            {
                Profiled = cal.Profiled! with
                {
                    TpBlockForward = tpBlockRow[0] / tpBlockRow[1],
                    TpBlockBackward = tpBlockRow[2] / tpBlockRow[3],
                    TpComm = tpCommRow[0] / tpCommRow[1],
                },
            };
        }
        return (blockRow, tpBlockRow, tpCommRow);
    }

    /// <summary>
    /// A MoE block with its experts split over two ranks (ep 2) as the executor runs it: its all-to-alls against their
    /// price from the fit (the ratio into <paramref name="cal"/>), and its passes beyond their kernels' price with the
    /// block factors above, per local expert and pass (the executor's MoE overhead: routing on the host, each expert's
    /// own calls). Rows [measured, priced] of the exchange per forward and backward and of the passes, or null (one rank
    /// per node, or measurements without it).
    /// </summary>
    private static (double[] Exchange, double[] Passes)? FitMoeBlock(ClusterSpec cluster, JsonObject m, ProfileSizes sizes, Precision precision, ref Cal cal)
    {
        if (m["block_ep"] is not JsonArray ea)
            return null;
        var e = ea.Select(v => (double)v!).ToArray();
        var model = sizes.MoeBlockModel();
        var plan = sizes.MoeBlockPlan();
        var calibrated = cal.Apply(cluster);
        var costs = BlockCosts.Compute(model, calibrated, plan, Executor);
        double[] exchange = [e[2], costs.Block.EpForward + costs.Block.EpBackward];
        var ops = new Planner.CostModel.Compute.TransformerOps(model, plan, flashAttention: false);
        var timer = new Planner.CostModel.Compute.KernelTimer(calibrated.Gpu, precision);
        double[] passes = [e[0] + e[1], timer.BlockForward(ops.Block) + timer.BlockBackward(ops.Block)];
        double overheadUs = Math.Max(0, passes[0] - passes[1]) / (2 * ops.LocalExperts) * 1e6;
        cal = cal with { Profiled = cal.Profiled! with { EpComm = exchange[0] / exchange[1], MoeExpertOverheadUs = overheadUs } };
        return (exchange, passes);
    }

    /// <summary>The block over two context-parallel ranks: the ring's transfers as training runs them against their price
    /// from the fit, the ratio into <paramref name="cal"/>: [measured, priced] per forward and backward, or null.</summary>
    private static double[]? FitRing(ClusterSpec cluster, JsonObject m, ProfileSizes sizes, Precision precision, ref Cal cal)
    {
        if (m["block_cp"] is not JsonArray ca)
            return null;
        var c = ca.Select(v => (double)v!).ToArray();
        var plan = sizes.CpBlockPlan();
        var model = sizes.BlockModel();
        var calibrated = cal.Apply(cluster);
        var costs = BlockCosts.Compute(model, calibrated, plan, Executor);
        double[] ring = [c[2], costs.Block.CpForward + costs.Block.CpBackward];
        // Its passes without the transfers against the kernels' price (the whole block's factor left out).
        var ops = new Planner.CostModel.Compute.TransformerOps(model, plan, flashAttention: false);
        var timer = new Planner.CostModel.Compute.KernelTimer(calibrated.Gpu, precision);
        cal = cal with
        {
            Profiled = cal.Profiled! with
            {
                CpComm = ring[0] / ring[1],
                CpBlockForward = c[0] / timer.Forward(ops.Block),
                CpBlockBackward = c[1] / timer.Backward(ops.Block),
            },
        };
        return ring;
    }
}
