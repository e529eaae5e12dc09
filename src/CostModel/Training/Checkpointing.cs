using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;

namespace Planner.CostModel.Training;

/// <summary>
/// Checkpoints and failures of a whole run: the checkpoint's size from the memory model's per-parameter state, the
/// interval by Young (1974) with Daly's (2006) higher-order refinement, and the wall time a run of a given useful time
/// takes once checkpoint writes, work lost at failures and restarts are counted (docs/run-level.md).
/// </summary>
public static class Checkpointing
{
    /// <summary>
    /// Bytes of one checkpoint: the weights in the training precision (the adapters alone under LoRA and QLoRA, the
    /// frozen base being on disk already) and, for every trained parameter, the fp32 master copy (mixed precision) and
    /// the optimizer's state (MemoryModel's accounting: AdamW's two fp32 moments, 8 bytes). Adafactor's factored state,
    /// a few bytes per row and column, is not counted.
    /// </summary>
    public static double Bytes(Prediction p)
    {
        var t = p.Plan.Tuning;
        bool mixed = p.Plan.Precision.IsMixed();
        double weightBytes = mixed ? 2 : 4;
        double master = mixed && t.MasterCopy ? 4 : 0;
        double weights = t.Adapters ? p.TrainableParameters : p.Parameters;
        return weights * weightBytes + p.TrainableParameters * (master + FineTuning.StateBytes(t.Optimizer));
    }

    /// <summary>Seconds the training pauses per checkpoint under async checkpointing: each rank copies its weights and
    /// optimizer state (the memory model's, of the rank that holds most) to host memory over its host link.</summary>
    public static double SnapshotSeconds(Prediction p, ClusterSpec c)
    {
        double gbs = c.Host?.PcieGbs ?? c.Gpu.HostLinkGbs;
        if (gbs <= 0)
            throw new InputException("async_checkpoint", "the cluster gives no host link (host.pcie_gbs, or the GPU's host_link_gbs) to price the snapshot with");
        var s = p.MemoryByStage.MaxBy(m => m.Weights + m.Optimizer)!;
        return (s.Weights + s.Optimizer) / (gbs * 1e9);
    }

    /// <summary>Young's interval between checkpoints: sqrt(2 · cost · MTBF).</summary>
    public static double Young(double cost, double mtbf) => Math.Sqrt(2 * cost * mtbf);

    /// <summary>Daly's refinement of Young's interval (Daly 2006, eq. 37): sqrt(2δM)·(1 + sqrt(δ/2M)/3 + δ/(18M)) − δ
    /// while δ &lt; 2M, else M.</summary>
    public static double Daly(double cost, double mtbf) =>
        cost >= 2 * mtbf ? mtbf : Young(cost, mtbf) * (1 + Math.Sqrt(cost / (2 * mtbf)) / 3 + cost / (2 * mtbf) / 9) - cost;

    /// <summary>
    /// Wall seconds of a run of <paramref name="useful"/> seconds of steps: W = U·(1 + δ/τ) + (W/M)·(lost + restart),
    /// each failure losing <paramref name="lost"/> seconds of work on average and <paramref name="restart"/> seconds
    /// getting back. Throws <see cref="InputException"/> when failures come faster than the run can recover.
    /// </summary>
    public static double WallSeconds(double useful, double cost, double interval, double lost, double restart, double mtbf)
    {
        double recovering = (lost + restart) / mtbf;
        if (recovering >= 0.95)
            throw new InputException($"cluster: mtbf_hours_per_node gives a cluster MTBF of {mtbf / 3600:G3} h, too short for a restart ({restart:G3} s) " +
                                     $"and the work lost per failure ({lost:G3} s): the run would hardly progress");
        return useful * (1 + cost / interval) / (1 - recovering);
    }
}
