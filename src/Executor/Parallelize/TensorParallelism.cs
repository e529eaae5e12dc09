using Planner.Executor.Distributed;
using Planner.Executor.Model;
using Planner.Executor.Torch;

namespace Planner.Executor.Parallelize;

/// <summary>
/// Tensor parallelism as Megatron-LM applies it, on a plain <see cref="GptModel"/>: each parameter made as this rank's
/// slice (<see cref="ParameterSpec.Shard"/>: column-parallel Q/K/V, gate/up/fc1 and vocabulary rows; row-parallel
/// output projections), the blocks' regions entered and left through <see cref="TensorParallel"/>'s collectives (a
/// gather and a reduce-scatter of the sequence under sequence parallelism, else the identity/all-reduce pair), the
/// embedding looked up by vocabulary range and the loss computed over the split vocabulary.
/// </summary>
public sealed class TensorParallelism : ModelHooks
{
    private readonly ProcessGroup _group;
    private readonly int _rank;
    private readonly bool _sequenceParallel;
    private readonly long _vocabShard;
    private readonly bool _splitsExperts;

    private TensorParallelism(ProcessGroup group, int rank, bool sequenceParallel, long vocab, bool splitsExperts)
    {
        _group = group;
        _rank = rank;
        _sequenceParallel = sequenceParallel;
        _vocabShard = vocab / group.Size;
        _splitsExperts = splitsExperts;
    }

    /// <summary>The TP group.</summary>
    public ProcessGroup Group => _group;

    /// <summary>This process's rank in <see cref="Group"/>.</summary>
    public int Rank => _rank;

    /// <summary>Shards <paramref name="model"/> over <paramref name="group"/> (this process is its member
    /// <paramref name="rank"/>) and sets its hooks; with no group (tp = 1) leaves the model whole and returns null.
    /// The routed experts are split as the dense MLP when <paramref name="splitExperts"/> (expert-TP = TP), else kept
    /// whole (expert-TP 1).</summary>
    public static TensorParallelism? Apply(GptModel model, ProcessGroup? group, int rank, bool sequenceParallel, long vocab, bool splitExperts = true)
    {
        if (group is not { Size: > 1 })
            return null;
        if (!splitExperts)
            model.Replicate(spec => ExpertParallelism.IsExpert(spec.Name));
        model.ShardWith((spec, full) => Slice(full, spec, rank, group.Size));
        var tp = new TensorParallelism(group, rank, sequenceParallel, vocab, splitExperts);
        model.Hooks = tp;
        return tp;
    }

    /// <summary>This TP rank's slice of a full tensor (a compact copy).</summary>
    public static Tensor Slice(Tensor full, ParameterSpec spec, int tpRank, int tp)
    {
        if (tp == 1 || spec.Shard == Shard.Replicated)
            return full.Clone();
        long dim = spec.Shard == Shard.Rows ? 0 : 1;
        long size = spec.Shape[dim] / tp;
        using var view = full.Narrow(dim, tpRank * size, size);
        return view.Clone(); // its own storage (a contiguous view of rows would keep the whole tensor's alive)
    }

    /// <inheritdoc />
    public override Tensor Enter(Tensor x) =>
        _sequenceParallel ? TensorParallel.Gather(_group, x, 1) : TensorParallel.Copy(_group, x);

    /// <inheritdoc />
    public override bool SplitsExperts => _splitsExperts;

    /// <inheritdoc />
    public override Tensor OwnTokens(Tensor x) => _sequenceParallel ? x : TensorParallel.Scatter(_group, x, 1);

    /// <inheritdoc />
    public override Tensor AllTokens(Tensor x) => _sequenceParallel ? x : TensorParallel.GatherParts(_group, x, 1);

    /// <inheritdoc />
    public override Tensor Leave(Tensor x) =>
        _sequenceParallel ? TensorParallel.ReduceScatter(_group, x, 1) : TensorParallel.Reduce(_group, x);

    /// <summary>Vocabulary-parallel lookup: each rank looks up the ids in its rows (zero elsewhere) and the partial
    /// embeddings are all-reduced.</summary>
    public override Tensor Lookup(Tensor wte, long[] ids, int batch, long seq)
    {
        long start = _rank * _vocabShard;
        var local = new long[ids.Length];
        var keep = new float[ids.Length];
        for (int i = 0; i < ids.Length; i++)
        {
            bool mine = ids[i] >= start && ids[i] < start + _vocabShard;
            local[i] = mine ? ids[i] - start : 0;
            keep[i] = mine ? 1 : 0;
        }
        var e = F.Embedding(wte, Tensor.From(local, batch, seq).On(wte.Device));
        var masked = e * Tensor.From(keep, batch, seq, 1).On(wte.Device).To(wte.DType);
        return TensorParallel.Reduce(_group, masked);
    }

    /// <summary>Under sequence parallelism each rank keeps its part of the sequence.</summary>
    public override Tensor AfterEmbedding(Tensor x) => _sequenceParallel ? TensorParallel.Scatter(_group, x, 1) : x;

    /// <summary>Each rank draws over its vocabulary rows; the largest score over the group wins (ties: the larger id,
    /// as one process breaks them).</summary>
    public override long[] Sample(Tensor logits, long[] keys, ulong seed)
    {
        using var scope = DisposeScope.Begin();
        var (values, ids) = Sampling.GumbelArgmax(logits, keys, seed, _rank * _vocabShard);
        var best = values.Clone().On(logits.Device); // a copy, reduced where the model runs (NCCL on GPUs)
        _group.AllReduce(best, ReduceOp.Max);
        var mine = values.ToDoubleArray();
        var top = best.ToDoubleArray();
        var local = ids.ToLongArray();
        var winner = Tensor.From(mine.Select((v, i) => v == top[i] ? local[i] : -1).ToArray(), mine.Length).On(logits.Device);
        _group.AllReduce(winner, ReduceOp.Max);
        return winner.ToLongArray();
    }

    /// <inheritdoc />
    public override Tensor Loss(Tensor logits, long[] targets) =>
        VocabParallelCrossEntropy(_group, logits, targets, _rank * _vocabShard);

    /// <summary>
    /// Replicated parameters that see only this rank's part of the sequence have partial gradients, summed over the TP
    /// group (those of <paramref name="parameters"/>): under sequence parallelism the norms and the row-parallel biases
    /// (the position embedding is added before the split), and routed experts held whole, which compute only this
    /// rank's tokens with or without it.
    /// </summary>
    public void SumSequenceParallelGradients(GptModel model, IReadOnlyList<Tensor> parameters)
    {
        foreach (var spec in model.Specs)
        {
            bool partial = _sequenceParallel ? spec.Name != "wpe" : !_splitsExperts && ExpertParallelism.IsExpert(spec.Name);
            if (partial && spec.Shard == Shard.Replicated && parameters.Contains(model[spec.Name]) && model[spec.Name].Grad is { } g)
                _group.AllReduce(g);
        }
    }

    /// <summary>
    /// Mean cross entropy of logits [n, vocab shard] whose vocabulary is split across the ranks of <paramref name="tp"/>
    /// (this rank holds ids from <paramref name="vocabStart"/>): the max (no gradient) and the sum of exponentials
    /// across the ranks, and the target's logit from the rank that holds it. With no group, the same kernels on one
    /// rank (what profile times).
    /// </summary>
    public static Tensor VocabParallelCrossEntropy(ProcessGroup? tp, Tensor logits, long[] targets, long vocabStart)
    {
        long n = logits.Shape[0], vocabShard = logits.Shape[1], start = vocabStart;
        var max = logits.Max(1, keepDim: true).Detach();
        if (tp is { Size: > 1 })
            tp.AllReduce(max, ReduceOp.Max);
        var shifted = logits - max;
        var sumExp = TensorParallel.Reduce(tp, shifted.Exp().Sum([1]));
        // The target's logit: gathered at its local index on the rank that holds it, zero elsewhere.
        var local = new long[n];
        var mine = new float[n];
        for (long i = 0; i < n; i++)
            if (targets[i] >= start && targets[i] < start + vocabShard)
            {
                local[i] = targets[i] - start;
                mine[i] = 1;
            }
        var gathered = shifted.Gather(1, Tensor.From(local, n, 1).On(logits.Device)).View(n);
        var picked = TensorParallel.Reduce(tp, gathered * Tensor.From(mine, n).On(logits.Device));
        return (sumExp.Log() - picked).Mean();
    }
}
