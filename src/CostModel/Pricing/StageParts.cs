namespace Planner.CostModel.Pricing;

/// <summary>What one stage spends per step, by cause (seconds), before the pipeline is simulated.</summary>
public sealed class StageParts
{
    /// <summary>Forward and backward kernels, all micro-batches.</summary>
    public double Compute;
    /// <summary>Recomputed forward kernels.</summary>
    public double Recompute;
    /// <summary>TP collectives.</summary>
    public double TpComm;
    /// <summary>Context-parallel exchanges not hidden behind the attention core.</summary>
    public double CpComm;
    /// <summary>Expert-parallel token dispatch and combine.</summary>
    public double EpComm;
    /// <summary>Activation copies to and from host memory (offloaded layers) not hidden behind compute.</summary>
    public double Offload;
    /// <summary>ZeRO-3 gathers and reduce-scatters not hidden behind compute.</summary>
    public double Zero3;
    /// <summary>One micro-batch's backward over all chunks: what DP reduction can hide behind.</summary>
    public double LastBackward;
    /// <summary>One micro-batch's forward over all chunks: what a ZeRO-1/2 parameter gather can hide behind.</summary>
    public double FirstForward;
    /// <summary>Exposed data-parallel time after the pipeline flush (reduction, gathers, tied embeddings); with ZeRO-2
    /// reducing every micro-batch (<see cref="Zero2Reduction.PerMicroBatch"/>) also the exposed parts of the
    /// earlier micro-batches' reduce-scatters, which hold the stage up as long, only before the flush.</summary>
    public double DpTail;
    /// <summary>The optimizer step.</summary>
    public double Optimizer;
    /// <summary>The optimizer step with all the rank's optimizer state on the GPU.</summary>
    public double GpuOptimizer;
    /// <summary>Parameters whose optimizer state the rank owns (after ZeRO sharding).</summary>
    public double OwnedParams;
    /// <summary>Everything after the flush: <see cref="DpTail"/> + <see cref="Optimizer"/>.</summary>
    public double Tail => DpTail + Optimizer;
}
