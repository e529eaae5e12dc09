using Planner.CostModel.Compute;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;

namespace Planner.CostModel.Memory;

/// <summary>
/// Per-rank memory: model state by precision and ZeRO stage (Rajbhandari et al. 2020: 2 + 2 + 12 bytes per
/// parameter in mixed precision), activations by recompute policy and sequence parallelism (Korthikanti et al.
/// 2022, generalised to GQA, MLA, gated MLPs and MoE), times the micro-batches the pipeline schedule holds in flight.
/// Dense weights are split by TP and sharded by ZeRO over the data- and context-parallel ranks; experts are split by EP
/// and expert TP and sharded over the expert-data-parallel ranks.
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
    private readonly bool _fp32Grads;
    private readonly bool _fusedLoss;
    private readonly RecomputeModules _modules;
    private readonly int _offloadLayers;

    /// <summary>Creates the model for one plan under a software stack (default Megatron-Core's). Of the stack's facts
    /// it reads: <see cref="ReductionBuffer.BucketCopies"/> (the data-parallel reduction works on copies of the
    /// gradients: with dp &gt; 1 a buffer the size of the gradients whose reductions are in flight at once beside them,
    /// the stage's under ZeRO-0/1, one model chunk's under ZeRO-2); <see cref="StatePrecision.Parameters"/> (fp32 weights
    /// and gradients, AdamW's moments on the parameters or an fp32 master shard, each micro-batch in flight keeping its
    /// casts of the weights, ZeRO-3 gathering a whole chunk at a time); <see cref="StatePrecision.Gradients"/> (the
    /// gradients accumulate in an fp32 buffer); <see cref="CrossEntropyKernel.Fused"/> (the loss keeps only the
    /// logits); <see cref="ActivationProfile.Recompute"/> (what selective recompute does not keep);
    /// <see cref="ActivationProfile.OffloadLayers"/> (layers of each chunk whose activations go to the host).</summary>
    public MemoryModel(ModelSpec model, ParallelPlan plan, TransformerOps ops, GpuSpec gpu, PricingOptions? software = null)
    {
        var o = software ?? PricingOptions.Default;
        _fusedLoss = o.Kernels.Loss == CrossEntropyKernel.Fused;
        _m = model;
        _p = plan;
        _ops = ops;
        _reservedBytes = gpu.ReservedGib * Units.GiB;
        _fragmentation = gpu.Profiled?.MemoryFactor is double f ? Math.Max(0, f - 1) : Fragmentation; // never below what is allocated
        _bucketCopies = o.DataParallel.Buffer == ReductionBuffer.BucketCopies;
        _fp32Params = o.Precision.Parameters == Dtype.Fp32;
        _fp32Grads = o.Precision.Gradients == Dtype.Fp32;
        _modules = o.Activations.Recompute;
        _offloadLayers = o.Activations.OffloadLayers;
    }

    /// <summary>Kinds of blocks of the model (<see cref="TransformerOps.Kinds"/>).</summary>
    public int KindCount => _ops.Kinds.Count;

    /// <summary>A rank's weights of one block of kind <paramref name="kind"/> (an index of <see cref="TransformerOps.Kinds"/>):
    /// the dense part (attention, norms, router, a dense MLP or shared experts) split by TP, the routed experts split by
    /// EP and expert TP.</summary>
    public (double Dense, double Expert) BlockParams(int kind)
    {
        var k = _ops.Kinds[kind];
        double experts = k.Moe ? (double)_m.Experts * _m.MlpParamsPerExpert : 0;
        return ((_m.LayerParamsOf(k) - experts) / _p.Tp, experts / (_p.Ep * _p.Etp));
    }

    /// <summary>A rank's trainable weights of one block of kind <paramref name="kind"/>: the block's under full training,
    /// its LoRA adapters over a frozen base.</summary>
    public (double Dense, double Expert) TrainableBlockParams(int kind) =>
        _p.Tuning.Adapters ? BlockLinears.Adapters(_m, _ops.Kinds[kind], _p.Tuning, _p.Tp, _p.Ep, _p.Etp) : BlockParams(kind);

    /// <summary>A rank's trainable weights of a stage or chunk (before ZeRO sharding), dense and expert parts: every
    /// weight under full training; under LoRA the adapters of its blocks (and of the multi-token-prediction modules'
    /// blocks with the head), the embedding, norms and head frozen.</summary>
    public (double Dense, double Expert) TrainableParams(BlockMix mix, bool first, bool last)
    {
        if (!_p.Tuning.Adapters)
            return Params(mix, first, last);
        double dense = 0, expert = 0;
        void Add(int kind, double n)
        {
            var (d, x) = TrainableBlockParams(kind);
            dense += n * d;
            expert += n * x;
        }
        for (int k = 0; k < mix.Counts.Count; k++)
            if (mix.Counts[k] > 0)
                Add(k, mix.Counts[k]);
        if (last && _m.MtpLayers > 0)
            Add(_ops.KindIndex(_m.MtpKind), _m.MtpLayers);
        return (dense, expert);
    }

    /// <summary>A rank's weights of the linear layers of a block of kind <paramref name="kind"/> (what QLoRA stores in NF4).</summary>
    private double LinearParams(int kind) => BlockLinears.Of(_m, _ops.Kinds[kind]).Sum(l => l.LocalWeights(_p.Tp, _p.Ep, _p.Etp));

    /// <summary>Activation bytes LoRA's adapters of one block of kind <paramref name="kind"/> keep for one micro-batch:
    /// each adapted layer's r-wide intermediate x·A (the input of B; A's input is the base layer's, kept anyway).</summary>
    public double AdapterActivationsPerLayer(int kind)
    {
        var t = _p.Tuning;
        if (!t.Adapters)
            return 0;
        double e = _p.Precision.ActivationBytes(), tokens = 0;
        foreach (var l in BlockLinears.Of(_m, _ops.Kinds[kind]))
            if (l.Targeted(t.Targets))
                tokens += l.Expert ? _ops.ExpertTokens : _ops.Tokens;
        return tokens * t.Rank * e;
    }

    /// <summary>A rank's weights of a stage or chunk (before ZeRO-3 sharding), dense and expert parts.</summary>
    public (double Dense, double Expert) Params(BlockMix mix, bool first, bool last)
    {
        double dense = 0, expert = 0;
        for (int k = 0; k < mix.Counts.Count; k++)
        {
            if (mix.Counts[k] == 0)
                continue;
            var (d, x) = BlockParams(k);
            dense += mix.Counts[k] * d;
            expert += mix.Counts[k] * x;
        }
        if (first)
            dense += (double)_m.EmbeddingParams / _p.Tp;
        if (last)
        {
            dense += _m.NormParams;
            // A tied output layer on another stage keeps its own copy of the embedding (synchronised by an all-reduce).
            dense += _m.TiedEmbeddings ? (first ? 0 : (double)_m.Vocab * _m.Hidden / _p.Tp) : (double)_m.LmHeadParams / _p.Tp;
            if (_m.MtpLayers > 0)
            {
                var (d, x) = BlockParams(_ops.KindIndex(_m.MtpKind));
                dense += _m.MtpLayers * (d + (_m.MtpModuleParams - _m.LayerParamsOf(_m.MtpKind)) / (double)_p.Tp);
                expert += _m.MtpLayers * x;
            }
        }
        return (dense, expert);
    }

    /// <summary>Parameters held by a rank of a stage (before ZeRO-3 sharding).</summary>
    public double StageParams(BlockMix mix, bool first, bool last)
    {
        var (dense, expert) = Params(mix, first, last);
        return dense + expert;
    }

    /// <summary>Parameters held by a rank of a stage of <paramref name="layers"/> blocks of a uniform model.</summary>
    public double StageParams(int layers, bool first, bool last) => StageParams(BlockMix.Uniform(_ops.Kinds.Count, layers), first, last);

    /// <summary>Activation bytes one block of the first kind saves for backward for one micro-batch on one rank.</summary>
    public double ActivationsPerLayer(Recompute recompute) => ActivationsPerLayer(0, recompute);

    /// <summary>Activation bytes one block of kind <paramref name="kind"/> saves for backward for one micro-batch on one rank.</summary>
    public double ActivationsPerLayer(int kind, Recompute recompute)
    {
        double e = _p.Precision.ActivationBytes();
        double t = _ops.Tokens, tn = _ops.NormTokens, h = _m.Hidden;
        if (recompute == Recompute.Full)
            return e * tn * h; // only the block input
        // A linear layer's input is saved quantized for the weight gradient under a low-precision format.
        double q = _ops.Quantization?.SavedInputBytes ?? e;
        var k = _ops.Kinds[kind];
        double aq = _ops.LocalHeads, akv = _ops.LocalKvHeads, qk = _m.QkHeadDim, dv = _m.HeadDim;
        // Replicated across TP unless sequence-parallel: the norms' inputs, the attention's and the MLP's inputs (linear
        // layers' inputs), dropout masks (one byte each, when the model trains with dropout).
        double masks = _m.Dropout ? 2 : 0;
        double replicated = tn * h * (2 * e + 2 * q + masks);
        double attention = e * t * (aq + akv) * qk   // Q and K for the scores
                           + e * t * akv * dv        // V
                           + q * t * aq * dv;        // projection input
        if (_m.Mla is { } a)
            attention += t * (q * (a.QLoraRank + a.KvLoraRank) + e * (a.QLoraRank + a.KvLoraRank + a.QkRopeHeadDim)); // latents: norm and up-projection inputs
        double mlp = k.Moe ? ExpertActivations(e, q) : Mlp(t, (double)_m.Ffn / _p.Tp, e, q);
        if (recompute == Recompute.Selective)
        {
            // What the recomputed modules no longer keep: the norms' outputs (the inputs of the attention's and the MLP's
            // or router's first linear layers), latent attention's queries, keys and values, the experts' activation
            // output (their second GEMM's input), a dense MLP's insides.
            if (_modules.HasFlag(RecomputeModules.LayerNorm))
                replicated -= tn * h * 2 * q;
            if (_modules.HasFlag(RecomputeModules.MlaUpProj) && _m.Mla is not null)
                attention -= e * t * (aq + akv) * qk + e * t * akv * dv;
            if (_modules.HasFlag(RecomputeModules.MoeAct) && k.Moe)
                mlp -= _ops.ExpertTokens * ((double)_m.Moe!.ExpertFfn / _p.Etp) * q;
            if (_modules.HasFlag(RecomputeModules.Mlp) && !k.Moe)
                mlp = 0;
        }
        double core = _ops.FlashAttention
            ? 4 * _p.Mbs * aq * _ops.LocalSeq // flash attention keeps only the softmax statistics (fp32)
            : recompute == Recompute.None || (recompute == Recompute.Selective && !_modules.HasFlag(RecomputeModules.CoreAttention))
                ? _p.Mbs * aq * _ops.LocalSeq * Math.Min(_p.Seq, k.Window > 0 ? k.Window : _p.Seq) * (_m.Dropout ? 2 * e + 1 : e) // softmax output (and dropout's mask and output)
                : 0; // recomputed: selective recompute of the attention core (core_attn) or full
        return replicated + attention + mlp + core + AdapterActivationsPerLayer(kind);
    }

    /// <summary>An MLP's saved activations: the activation function's input (bf16) and the down projection's input.</summary>
    private double Mlp(double tokens, double ffn, double e, double q) => _m.Mlp == MlpKind.SwiGlu
        ? tokens * ffn * (2 * e + q)  // gate and up outputs, the down projection's input
        : tokens * ffn * (e + q);     // the activation's input, the down projection's input

    /// <summary>A MoE block's saved activations on the busiest rank: the router's scores, the dispatched token copies (the
    /// experts' input), the experts' intermediate activations, and the shared experts'.</summary>
    private double ExpertActivations(double e, double q)
    {
        var moe = _m.Moe!;
        double tokens = _ops.ExpertTokens;
        double router = 2 * _ops.NormTokens * moe.Experts * 4;
        double routed = tokens * _m.Hidden * q + Mlp(tokens, (double)moe.ExpertFfn / _p.Etp, e, q);
        double shared = moe.SharedFfn > 0 ? Mlp(_ops.Tokens, (double)moe.SharedFfn / _p.Tp, e, q) : 0;
        return router + routed + shared;
    }

    /// <summary>Peak memory of a rank on a stage of <paramref name="layers"/> blocks of a uniform model.</summary>
    public MemoryBreakdown Stage(int stage, int layers, int inFlight, int chunks, Recompute? recompute = null, ParallelPlan? variant = null) =>
        Stage(stage, BlockMix.Uniform(_ops.Kinds.Count, layers), inFlight, chunks, recompute, variant);

    /// <summary>Peak memory of a rank on a stage.</summary>
    /// <param name="stage">Stage index.</param>
    /// <param name="mix">Transformer blocks on the stage (all its chunks), by kind.</param>
    /// <param name="inFlight">Micro-batch model chunks in flight at the stage's peak.</param>
    /// <param name="chunks">Model chunks on the stage (vpp).</param>
    /// <param name="recompute">The stage's recompute policy (default: the plan's for that stage).</param>
    /// <param name="variant">The plan with other values of the knobs that leave the kernels alone (partial recompute,
    /// optimizer offload): a search prices those variants on one model. Default: the plan of the constructor.</param>
    public MemoryBreakdown Stage(int stage, BlockMix mix, int inFlight, int chunks, Recompute? recompute = null, ParallelPlan? variant = null)
    {
        var v = variant ?? _p;
        var rc = recompute ?? v.RecomputeOf(stage);
        bool first = stage == 0, last = stage == _p.Pp - 1;
        double e = _p.Precision.ActivationBytes();
        var (dense, expert) = Params(mix, first, last);
        double paramsHere = dense + expert;
        bool mixed = _p.Precision.IsMixed();
        double weightBytes = mixed && !_fp32Params ? 2 : 4;
        double gradBytes = mixed && !_fp32Params && !_fp32Grads ? 2 : 4;
        // The optimizer's state and an fp32 master copy: in mixed precision (not QLoRA's bf16 adapters), or with fp32
        // parameters under ZeRO (a master shard beside the full parameters).
        double master = _fp32Params ? (_p.Zero >= 1 && _p.Dp * _p.Cp > 1 ? 4 : 0) : mixed && _p.Tuning.MasterCopy ? 4 : 0;
        double optimBytes = master + OptimizerStateBytesPerParam();
        var tuning = _p.Tuning;
        var (trainedDense, trainedExpert) = TrainableParams(mix, first, last);
        double Shard(int zero) => _p.Sharded(dense, expert, zero);
        double Trained(int zero) => _p.Sharded(trainedDense, trainedExpert, zero);
        // ZeRO-3 with fp32 parameters keeps only the master shard (counted with the optimizer) between uses.
        bool masterOnly = _fp32Params && _p.Zero >= 3 && _p.Dp * _p.Cp > 1;
        double adapterWeights = tuning.Adapters && !masterOnly ? Trained(3) * weightBytes : 0;
        // A frozen base has no master copy: its weights stay (QLoRA's linear layers in NF4; PlanCheck keeps it off ZeRO-3).
        double weights = tuning.Adapters
            ? Shard(3) * weightBytes - (tuning.QuantizedBase ? QuantizedParams(mix, last, linearsOnly: true) * (weightBytes - FineTuning.Nf4BytesPerWeight) : 0) + adapterWeights
            : masterOnly ? 0 : Shard(3) * weightBytes;
        // Quantized copies of the blocks' linear weights, built at the first micro-batch and kept for the step. FP8
        // parameters (Megatron's fp8_param_gather, on in the published FP8 recipes) replace the bf16 weights of those
        // layers; NVFP4 keeps them. Under ZeRO-3 the gathered copies are transient (counted with the gathered layers).
        if (_ops.Quantization is { } quant && _p.Zero < 3)
            weights += QuantizedParams(mix, last) * (quant.WeightCopyBytes - (_p.Precision == Precision.Nvfp4 ? 0 : weightBytes));
        double grads = Trained(2) * gradBytes;
        double owned = Trained(1);
        // Offloaded optimizer state lives in host memory with an fp32 copy of its gradients.
        double optim = owned * optimBytes * (1 - v.OptimizerOffload);
        double host = owned * (optimBytes + 4) * v.OptimizerOffload;

        var (activations, adapterActivations) = StageActivations(mix, chunks, rc, v, first, last, paramsHere, inFlight);
        double working = WorkingBytes(mix, rc, last, paramsHere, chunks, weightBytes);

        // Send and receive buffers of the pipeline; TP collective staging of one hidden-state tensor.
        double buffers = (_p.Pp > 1 ? 2 * _ops.Tokens * _m.Hidden * e : 0) + (_p.Tp > 1 ? _ops.Tokens * _m.Hidden * e : 0)
                         + (_bucketCopies && (_p.Dp * _p.Cp > 1 || (_m.IsMoe && _p.ExpertDp > 1)) ? BucketCopies((trainedDense + trainedExpert) * gradBytes, chunks) : 0);
        double allocated = weights + grads + optim + activations + working + buffers;
        double overhead = _fragmentation * allocated + _reservedBytes;
        var adapters = tuning.Adapters ? new AdapterMemory(adapterWeights, grads, optim, adapterActivations * inFlight) : null;
        return new MemoryBreakdown(stage, weights, grads, optim, activations, working, buffers, overhead, inFlight, host, adapters);
    }

    /// <summary>Activation bytes a rank of the stage keeps at its peak (<paramref name="inFlight"/> micro-batch chunks),
    /// and of them, per micro-batch chunk, the adapters' (LoRA's rank-wide intermediates).</summary>
    private (double Activations, double Adapters) StageActivations(BlockMix mix, int chunks, Recompute rc, ParallelPlan v, bool first, bool last,
        double paramsHere, int inFlight)
    {
        double e = _p.Precision.ActivationBytes();
        bool mixed = _p.Precision.IsMixed();
        // Under block-wise partial recompute the first k blocks of each chunk keep only their input.
        double activations = 0, adapterActivations = 0;
        int layers = mix.Total;
        for (int k = 0; k < mix.Counts.Count; k++)
        {
            if (mix.Counts[k] == 0)
                continue;
            double chunkLayers = (double)mix.Counts[k] / chunks;
            double recomputed = v.RecomputeLayers is { } kept && rc == Recompute.Full ? Math.Min(kept, (double)layers / chunks) * mix.Counts[k] / Math.Max(1, layers) : chunkLayers;
            activations += recomputed * ActivationsPerLayer(k, rc) + (chunkLayers - recomputed) * ActivationsPerLayer(k, Recompute.None);
            adapterActivations += (rc == Recompute.Full ? chunkLayers - recomputed : chunkLayers) * AdapterActivationsPerLayer(k);
        }
        // Layers whose activations are offloaded to the host leave the device (the kinds in the stage's proportions).
        activations -= OffloadedBytes(mix, chunks, rc);
        if (last && _m.MtpLayers > 0)
            activations += _m.MtpLayers * (ActivationsPerLayer(_ops.KindIndex(_m.MtpKind), rc) + 4 * _ops.NormTokens * _m.Hidden * e) / chunks;
        activations *= inFlight;
        // Casts of fp32 parameters to the compute precision, saved by autograd for each micro-batch's backward.
        if (_fp32Params && mixed)
            activations += inFlight * paramsHere / chunks * e;
        if (first && _m.Dropout)
            activations += inFlight * _ops.NormTokens * _m.Hidden; // embedding dropout masks
        return (activations, adapterActivations);
    }

    /// <summary>Transient bytes beside the kept activations: a recomputed block, an attention core recomputed outside a
    /// fused kernel, the logits, ZeRO-3's gathered layers, QLoRA's dequantized weight.</summary>
    private double WorkingBytes(BlockMix mix, Recompute rc, bool last, double paramsHere, int chunks, double weightBytes)
    {
        double e = _p.Precision.ActivationBytes();
        double working = 0;
        if (rc == Recompute.Full)
        {
            // The block being recomputed holds everything: the largest kind of block the model has, whether or not the
            // stage holds one, so that a stage's memory stays affine in its block count (the stage-partition MILP's
            // premise; not with offloaded activations, which the MILP refuses).
            double mostPerLayer = 0;
            for (int k = 0; k < mix.Counts.Count; k++)
                mostPerLayer = Math.Max(mostPerLayer, ActivationsPerLayer(k, Recompute.None));
            working += mostPerLayer;
        }
        else if (rc == Recompute.Selective && !_ops.FlashAttention && _modules.HasFlag(RecomputeModules.CoreAttention))
            working += _p.Mbs * _ops.LocalHeads * _ops.LocalSeq * _p.Seq * (_m.Dropout ? 2 * e + 1 : e); // one recomputed attention core
        if (last)
            // The logits, and unless the loss is fused (computed and differentiated in place) its fp32 softmax and gradient.
            working += _ops.Tokens * _m.Vocab / _p.Tp * (_fusedLoss ? e : e + 4 + 4);
        if (_p.Zero >= 3)
            working += _fp32Params
                ? paramsHere / chunks * 4 // a whole chunk gathered at a time, fp32
                : 2 * LargestBlockParams() * weightBytes; // the gathered layer and the prefetched one
        if (_p.Tuning.QuantizedBase)
            working += LargestLinear() * 2; // one base weight dequantized to bf16 for its GEMM
        return working;
    }

    /// <summary>Layers of a chunk of <paramref name="chunkLayers"/> blocks whose activations go to the host
    /// (<see cref="ActivationProfile.OffloadLayers"/>, at most all but the chunk's last layer).</summary>
    public double OffloadedLayers(double chunkLayers) => Math.Clamp(Math.Min(_offloadLayers, chunkLayers - 1), 0, double.MaxValue);

    /// <summary>Activation bytes of one micro-batch that one chunk of the blocks in <paramref name="mix"/> (all
    /// <paramref name="chunks"/> chunks of a stage) offloads to the host: its offloaded layers, the kinds in the mix's proportions.</summary>
    public double OffloadedBytes(BlockMix mix, int chunks, Recompute recompute)
    {
        int layers = mix.Total;
        if (_offloadLayers <= 0 || layers == 0)
            return 0;
        double offloaded = OffloadedLayers((double)layers / chunks), bytes = 0;
        for (int k = 0; k < mix.Counts.Count; k++)
            if (mix.Counts[k] > 0)
                bytes += offloaded * mix.Counts[k] / layers * ActivationsPerLayer(k, recompute);
        return bytes;
    }

    /// <summary>A rank's weights that a low-precision format quantizes: the blocks' (their linear layers; the norms and
    /// the router, a small share, counted with them unless <paramref name="linearsOnly"/>, as QLoRA's NF4 base counts
    /// only the linear layers' weights) and, with <paramref name="withMtp"/> (the chunk holding the head), those of the
    /// multi-token-prediction modules' blocks; not the embedding's or the head's.</summary>
    public double QuantizedParams(BlockMix mix, bool withMtp, bool linearsOnly = false)
    {
        double Of(int kind)
        {
            if (linearsOnly)
                return LinearParams(kind);
            var (d, x) = BlockParams(kind);
            return d + x;
        }
        double sum = 0;
        for (int k = 0; k < mix.Counts.Count; k++)
            if (mix.Counts[k] != 0)
                sum += mix.Counts[k] * Of(k);
        if (withMtp && _m.MtpLayers > 0)
            sum += _m.MtpLayers * Of(_ops.KindIndex(_m.MtpKind));
        return sum;
    }

    /// <summary>
    /// Optimizer state bytes per trainable parameter besides a master copy (<see cref="FineTuning.StateBytes"/>); for
    /// Adafactor the factored second moment of the first kind of block's trainable matrices (each base linear layer's,
    /// or each adapter's A and B) and the whole second moment of its vectors (norms, biases) over their weights, the
    /// blocks holding nearly every weight.
    /// </summary>
    public double OptimizerStateBytesPerParam()
    {
        var t = _p.Tuning;
        if (t.Optimizer != OptimizerKind.Adafactor)
            return FineTuning.StateBytes(t.Optimizer);
        double state = 0, weights = 0;
        if (!t.Adapters)
        {
            // The norms' and biases' weights: vectors, whose second moment Adafactor keeps whole (fp32).
            double vectors = _m.LayerParamsOf(_ops.Kinds[0]) - BlockLinears.Of(_m, _ops.Kinds[0]).Sum(l => (double)l.Copies * l.In * l.Out);
            state += 4 * vectors;
            weights += vectors;
        }
        foreach (var l in BlockLinears.Of(_m, _ops.Kinds[0]))
        {
            double copies = l.LocalCopies(_p.Ep), rows = l.LocalOut(_p.Tp, _p.Etp), cols = l.LocalIn(_p.Tp, _p.Etp);
            if (!t.Adapters)
            {
                state += copies * FineTuning.FactoredStateBytes(rows, cols);
                weights += copies * rows * cols;
            }
            else if (l.Targeted(t.Targets))
            {
                state += copies * (FineTuning.FactoredStateBytes(t.Rank, cols) + FineTuning.FactoredStateBytes(rows, t.Rank));
                weights += copies * t.Rank * (rows + cols);
            }
        }
        return weights > 0 ? state / weights : 0;
    }

    /// <summary>The largest single linear weight a rank holds (one expert's, for routed experts).</summary>
    private double LargestLinear()
    {
        double most = 0;
        foreach (var kind in _ops.Kinds)
            foreach (var l in BlockLinears.Of(_m, kind))
                most = Math.Max(most, l.LocalIn(_p.Tp, _p.Etp) * l.LocalOut(_p.Tp, _p.Etp));
        return most;
    }

    /// <summary>The largest block a rank holds (a ZeRO-3 gather's unit).</summary>
    private double LargestBlockParams()
    {
        double most = 0;
        for (int k = 0; k < _ops.Kinds.Count; k++)
        {
            var (d, x) = BlockParams(k);
            most = Math.Max(most, d + x);
        }
        return most;
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
