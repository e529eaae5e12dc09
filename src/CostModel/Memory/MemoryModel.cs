using Planner.CostModel.Compute;
using Planner.CostModel.Plans;
using Planner.CostModel.Specs;

namespace Planner.CostModel.Memory;

/// <summary>
/// Per-rank memory: model state by precision and ZeRO stage (Rajbhandari et al. 2020: 2 + 2 + 12 bytes per
/// parameter in mixed precision), activations by recompute policy and sequence parallelism (Korthikanti et al.
/// 2022, generalised to GQA, gated MLPs and MoE), times the micro-batches the pipeline schedule holds in flight.
/// </summary>
public sealed class MemoryModel
{
    /// <summary>Share of the allocated peak lost to allocator fragmentation, where no profile measured it.</summary>
    public const double Fragmentation = 0.05;

    private readonly ModelSpec _m;
    private readonly ParallelPlan _p;
    private readonly TransformerOps _ops;
    private readonly double _reservedBytes;
    private readonly double _fragmentation;
    private readonly bool _bucketCopies;
    private readonly bool _fp32Params;

    /// <summary>Creates the model for one plan.</summary>
    /// <param name="gradientBucketCopies">The data-parallel reduction works on copies of the gradients (PyTorch DDP's
    /// default buckets, the executor's flattened buckets) rather than on the gradient storage itself (Megatron-LM's
    /// contiguous buffer): with dp &gt; 1 a buffer the size of the gradients whose reductions are in flight at once
    /// beside them: the stage's under ZeRO-0/1 (every bucket of the last backward), one model chunk's under ZeRO-2
    /// (its reduce-scatters are waited for at the end of each backward of the chunk).</param>
    /// <param name="fp32Params">The parameters themselves are fp32 and cast to the compute precision at each use (the
    /// executor), rather than kept in the training precision beside an fp32 master copy in the optimizer (Megatron-LM):
    /// fp32 weights and gradients; AdamW's moments on the parameters (ZeRO-0) or on an fp32 master shard (ZeRO-1/2/3);
    /// under mixed precision each micro-batch in flight keeps its casts of the weights for its backward; under ZeRO-3
    /// a whole model chunk is gathered at a time.</param>
    public MemoryModel(ModelSpec model, ParallelPlan plan, TransformerOps ops, GpuSpec gpu, bool gradientBucketCopies = false, bool fp32Params = false)
    {
        _m = model;
        _p = plan;
        _ops = ops;
        _reservedBytes = gpu.ReservedGib * Units.GiB;
        _fragmentation = gpu.Profiled?.MemoryFactor is double f ? Math.Max(0, f - 1) : Fragmentation; // never below what is allocated
        _bucketCopies = gradientBucketCopies;
        _fp32Params = fp32Params;
    }

    /// <summary>Parameters held by a rank of a stage (before ZeRO-3 sharding).</summary>
    public double StageParams(int layers, bool first, bool last)
    {
        double p = layers * (double)_m.LayerParams / _p.Tp;
        if (first)
            p += (double)_m.EmbeddingParams / _p.Tp;
        if (last)
        {
            p += _m.NormParams;
            // A tied output layer on another stage keeps its own copy of the embedding (synchronised by an all-reduce).
            p += _m.TiedEmbeddings ? (first ? 0 : (double)_m.Vocab * _m.Hidden / _p.Tp) : (double)_m.LmHeadParams / _p.Tp;
        }
        return p;
    }

    /// <summary>Activation bytes one block saves for backward for one micro-batch on one rank.</summary>
    public double ActivationsPerLayer(Recompute recompute)
    {
        double e = _p.Precision.ActivationBytes();
        double t = _ops.Tokens, tn = _ops.NormTokens, h = _m.Hidden, d = _m.HeadDim;
        if (recompute == Recompute.Full)
            return e * tn * h; // only the block input
        double routed = t * _m.ExpertsPerToken;
        double fl = (double)_m.Ffn / _p.Tp;
        double aq = _ops.LocalHeads, akv = _ops.LocalKvHeads;
        // Replicated across TP unless sequence-parallel: norm inputs, QKV and MLP inputs, dropout masks.
        double replicated = tn * h * (4 * e + 2);
        double attention = e * t * (aq + akv) * d   // Q and K for the scores
                           + e * t * akv * d        // V
                           + e * t * aq * d;        // projection input
        double mlp = _m.Mlp == MlpKind.SwiGlu
            ? e * routed * fl * 3                    // gate and up outputs, the down projection's input
            : e * routed * fl * 2;                   // GeLU input, the down projection's input
        if (_m.IsMoe)
            mlp += e * routed * h;                   // dispatched copies of the tokens
        double core = _ops.FlashAttention
            ? 4 * _p.Mbs * aq * _ops.LocalSeq // flash attention keeps only the softmax statistics (fp32)
            : recompute == Recompute.None
                ? _p.Mbs * aq * _ops.LocalSeq * _p.Seq * (2 * e + 1) // softmax output, dropout mask and output
                : 0;
        return replicated + attention + mlp + core;
    }

    /// <summary>Peak memory of a rank on a stage.</summary>
    /// <param name="stage">Stage index.</param>
    /// <param name="layers">Transformer blocks on the stage (all its chunks).</param>
    /// <param name="inFlight">Micro-batch model chunks in flight at the stage's peak.</param>
    /// <param name="chunks">Model chunks on the stage (vpp).</param>
    /// <param name="recompute">The stage's recompute policy (default: the plan's for that stage).</param>
    /// <param name="variant">The plan with other values of the knobs that leave the kernels alone (partial recompute,
    /// optimizer offload): a search prices those variants on one model. Default: the plan of the constructor.</param>
    public MemoryBreakdown Stage(int stage, int layers, int inFlight, int chunks, Recompute? recompute = null, ParallelPlan? variant = null)
    {
        var v = variant ?? _p;
        var rc = recompute ?? v.RecomputeOf(stage);
        bool first = stage == 0, last = stage == _p.Pp - 1;
        double e = _p.Precision.ActivationBytes();
        double paramsHere = StageParams(layers, first, last);
        bool mixed = _p.Precision.IsMixed();
        double weightBytes = mixed && !_fp32Params ? 2 : 4;
        double gradBytes = mixed && !_fp32Params ? 2 : 4;
        // Fp32 parameters: Adam's two moments, and under ZeRO an fp32 master shard beside the full parameters.
        double optimBytes = _fp32Params ? (_p.Zero >= 1 && _p.Dp > 1 ? 12 : 8) : mixed ? 12 : 8;
        double dp = _p.Dp;
        // ZeRO-3 with fp32 parameters keeps only the master shard (counted with the optimizer) between uses.
        double weights = _fp32Params && _p.Zero >= 3 && _p.Dp > 1 ? 0 : paramsHere * weightBytes / (_p.Zero >= 3 ? dp : 1);
        double grads = paramsHere * gradBytes / (_p.Zero >= 2 ? dp : 1);
        double owned = paramsHere / (_p.Zero >= 1 ? dp : 1);
        // Offloaded optimizer state lives in host memory with an fp32 copy of its gradients.
        double optim = owned * optimBytes * (1 - v.OptimizerOffload);
        double host = owned * (optimBytes + 4) * v.OptimizerOffload;

        // Under block-wise partial recompute the first k blocks of each chunk keep only their input.
        double chunkLayers = (double)layers / chunks;
        double recomputed = v.RecomputeLayers is { } k && rc == Recompute.Full ? Math.Min(k, chunkLayers) : chunkLayers;
        double perChunk = recomputed * ActivationsPerLayer(rc) + (chunkLayers - recomputed) * ActivationsPerLayer(Recompute.None);
        double activations = perChunk * inFlight;
        // Casts of fp32 parameters to the compute precision, saved by autograd for each micro-batch's backward.
        if (_fp32Params && mixed)
            activations += inFlight * paramsHere / chunks * e;
        if (first)
            activations += inFlight * _ops.NormTokens * _m.Hidden; // embedding dropout masks

        double working = 0;
        if (rc == Recompute.Full)
            working += ActivationsPerLayer(Recompute.None); // the block being recomputed holds everything
        else if (rc == Recompute.Selective && !_ops.FlashAttention)
            working += _p.Mbs * _ops.LocalHeads * _ops.LocalSeq * _p.Seq * (2 * e + 1); // one recomputed attention core
        if (last)
            working += _ops.Tokens * _m.Vocab / _p.Tp * (e + 4 + 4); // logits, fp32 softmax and its gradient
        if (_p.Zero >= 3)
            working += _fp32Params
                ? paramsHere / chunks * 4 // a whole chunk gathered at a time, fp32
                : 2 * (double)_m.LayerParams / _p.Tp * weightBytes; // the gathered layer and the prefetched one

        // Send and receive buffers of the pipeline; TP collective staging of one hidden-state tensor.
        double buffers = (_p.Pp > 1 ? 2 * _ops.Tokens * _m.Hidden * e : 0) + (_p.Tp > 1 ? _ops.Tokens * _m.Hidden * e : 0)
                         + (_bucketCopies && _p.Dp > 1 ? BucketCopies(paramsHere * gradBytes, chunks) : 0);
        double allocated = weights + grads + optim + activations + working + buffers;
        double overhead = _fragmentation * allocated + _reservedBytes;
        return new MemoryBreakdown(stage, weights, grads, optim, activations, working, buffers, overhead, inFlight, host);
    }

    /// <summary>Bytes of the flat gradient copies in flight at once (see the constructor), given the stage's full
    /// gradient bytes; ZeRO-3 reduce-scatters each chunk synchronously, as its sharding accounts for.</summary>
    private double BucketCopies(double stageGradBytes, int chunks) => _p.Zero switch
    {
        <= 1 => stageGradBytes,
        2 => stageGradBytes / chunks, // an average chunk
        _ => 0,
    };
}
