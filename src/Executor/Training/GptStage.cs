using Planner.CostModel.Plans;
using Planner.CostModel.Specs;
using Planner.Executor.Distributed;
using Planner.Executor.Torch;

namespace Planner.Executor.Training;

/// <summary>
/// The part of a GPT one rank holds: its pipeline stage's model chunks (blocks by global index, the embedding on the
/// first, the final norm and head on the last) with this TP rank's shards, and the forward of each piece. The model
/// code is plain; tensor parallelism enters only through <see cref="TensorParallel"/> primitives on the TP group.
/// </summary>
public sealed class GptStage : IDisposable
{
    private readonly ModelSpec _m;
    private readonly ParallelPlan _plan;
    private readonly ProcessGroup? _tp;
    private readonly int _tpRank;
    private readonly Dictionary<string, Tensor> _params = [];
    private readonly DType _compute;
    private readonly Device _device;

    /// <summary>Builds the stage's parameters.</summary>
    /// <param name="chunkLayers">Global block indices of each model chunk this stage holds.</param>
    /// <param name="device">Where the parameters live and the passes run (initialised on the CPU, so that every device
    /// starts from the same values).</param>
    public GptStage(ModelSpec model, ParallelPlan plan, IReadOnlyList<int[]> chunkLayers, bool hasEmbedding, bool hasHead,
        ProcessGroup? tp, int tpRank, ulong seed, Device device = default)
    {
        _device = device;
        _m = model;
        _plan = plan;
        _tp = tp;
        _tpRank = tpRank;
        ChunkLayers = chunkLayers;
        HasEmbedding = hasEmbedding;
        HasHead = hasHead;
        _compute = plan.Precision switch
        {
            Precision.Bf16 => DType.BFloat16,
            Precision.Fp16 => DType.Float16,
            Precision.Fp32 or Precision.Tf32 => DType.Float32,
            _ => throw new NotSupportedException($"{plan.Precision.Name()}: the executor has no low-precision GEMMs"),
        };
        var specs = new List<ParameterSpec>();
        if (hasEmbedding || (hasHead && model.TiedEmbeddings))
            specs.AddRange(GptParameters.Embedding(model).Where(p => hasEmbedding || p.Name == "wte"));
        foreach (var chunk in chunkLayers)
            foreach (int layer in chunk)
                specs.AddRange(GptParameters.Block(model, layer));
        if (hasHead)
            specs.AddRange(GptParameters.Head(model));
        Specs = specs;
        foreach (var spec in specs)
        {
            using var full = GptParameters.InitFull(spec, seed);
            var shard = GptParameters.Slice(full, spec, tpRank, plan.Tp);
            if (device != Device.Cpu)
            {
                var moved = shard.To(device);
                shard.Dispose();
                shard = moved;
            }
            DisposeScope.Untrack(shard);
            shard.RequiresGrad = true;
            _params[spec.Name] = shard;
        }
    }

    /// <summary>Global block indices of each chunk.</summary>
    public IReadOnlyList<int[]> ChunkLayers { get; }

    /// <summary>True on the first pipeline stage.</summary>
    public bool HasEmbedding { get; }

    /// <summary>True on the last pipeline stage.</summary>
    public bool HasHead { get; }

    /// <summary>The stage's parameter specs, in a fixed order.</summary>
    public IReadOnlyList<ParameterSpec> Specs { get; }

    /// <summary>The stage's parameters (this rank's shards, fp32 masters), in <see cref="Specs"/> order.</summary>
    public IReadOnlyList<Tensor> Parameters => Specs.Select(s => _params[s.Name]).ToList();

    /// <summary>A parameter by name.</summary>
    public Tensor this[string name] => _params[name];

    /// <summary>Tokens of a micro-batch in this rank's activations (seq / tp under sequence parallelism).</summary>
    public long LocalSeq => _plan.SequenceParallel ? _plan.Seq / _plan.Tp : _plan.Seq;

    /// <summary>Where the stage's parameters live.</summary>
    public Device Device => _device;

    /// <summary>The dtype activations travel in.</summary>
    public DType Compute => _compute;

    private Tensor W(string name) => _compute == DType.Float32 ? _params[name] : _params[name].To(_compute);
    private Tensor? Wo(string name) => _params.ContainsKey(name) ? W(name) : null;

    private Tensor Norm(Tensor x, string name) => _m.Norm == NormKind.LayerNorm
        ? F.LayerNorm(x, W(name + ".w"), W(name + ".b"), 1e-5)
        : F.RmsNorm(x, W(name + ".w"), 1e-5);

    /// <summary>Into the TP region: gather the sequence under sequence parallelism, else the identity/all-reduce pair.</summary>
    private Tensor Enter(Tensor x) => _plan.SequenceParallel ? TensorParallel.Gather(_tp, x, 1) : TensorParallel.Copy(_tp, x);

    /// <summary>Out of the TP region: reduce-scatter the sequence under sequence parallelism, else all-reduce.</summary>
    private Tensor Leave(Tensor x) => _plan.SequenceParallel ? TensorParallel.ReduceScatter(_tp, x, 1) : TensorParallel.Reduce(_tp, x);

    /// <summary>Token embedding (vocab-parallel: each TP rank looks up its rows, the partial sums are all-reduced) plus positions.</summary>
    public Tensor Embed(long[] ids, int batch)
    {
        long seq = _plan.Seq, vocabShard = _m.Vocab / _plan.Tp, start = _tpRank * vocabShard;
        if (_plan.Tp == 1)
        {
            var plain = F.Embedding(W("wte"), Tensor.From(ids, batch, seq).On(_device));
            return _m.Positions == PositionKind.Learned ? plain + W("wpe").Narrow(0, 0, seq) : plain;
        }
        var local = new long[ids.Length];
        var keep = new float[ids.Length];
        for (int i = 0; i < ids.Length; i++)
        {
            bool mine = ids[i] >= start && ids[i] < start + vocabShard;
            local[i] = mine ? ids[i] - start : 0;
            keep[i] = mine ? 1 : 0;
        }
        var e = F.Embedding(W("wte"), Tensor.From(local, batch, seq).On(_device));
        var masked = e * Tensor.From(keep, batch, seq, 1).On(_device).To(_compute);
        var x = TensorParallel.Reduce(_tp, masked);
        if (_m.Positions == PositionKind.Learned)
            x = x + W("wpe").Narrow(0, 0, seq);
        return _plan.SequenceParallel ? TensorParallel.Scatter(_tp, x, 1) : x;
    }

    /// <summary>One transformer block on [batch, seq (local), hidden].</summary>
    public Tensor Block(int layer, Tensor x, Recompute recompute)
    {
        // The block's temporaries are freed when it returns (autograd keeps what its backward needs), as Python's
        // reference counting frees them: otherwise a micro-batch in flight would hold every intermediate tensor.
        using var scope = DisposeScope.Begin();
        return scope.Keep(BlockBody(layer, x, recompute));
    }

    private Tensor BlockBody(int layer, Tensor x, Recompute recompute)
    {
        string p = $"layers.{layer}.";
        int tp = _plan.Tp;
        long b = x.Shape[0], s = _plan.Seq, d = _m.HeadDim, hl = _m.Heads / tp, kvl = _m.KvHeads / tp;
        var h = Enter(Norm(x, p + "ln1"));
        Tensor Heads(Tensor t, long n) => t.View(b, s, n, d).Transpose(1, 2);
        var q = Heads(F.Linear(h, W(p + "attn.q.w"), Wo(p + "attn.q.b")), hl);
        var k = Heads(F.Linear(h, W(p + "attn.k.w"), Wo(p + "attn.k.b")), kvl);
        var v = Heads(F.Linear(h, W(p + "attn.v.w"), Wo(p + "attn.v.b")), kvl);
        if (_m.Positions == PositionKind.Rotary)
        {
            var (cos, sin) = Rope(s, d);
            q = q * cos + RotateHalf(q) * sin;
            k = k * cos + RotateHalf(k) * sin;
        }
        if (kvl < hl)
        {
            k = RepeatHeads(k, b, kvl, hl / kvl, s, d);
            v = RepeatHeads(v, b, kvl, hl / kvl, s, d);
        }
        var att = recompute == Recompute.Selective ? F.CausalAttentionRecompute(q, k, v) : F.CausalAttention(q, k, v);
        var merged = att.Transpose(1, 2).Reshape(b, s, hl * d);
        var o = Leave(F.Linear(merged, W(p + "attn.o.w")));
        if (Wo(p + "attn.o.b") is { } ob)
            o = o + ob;
        x = x + o;
        var h2 = Enter(Norm(x, p + "ln2"));
        Tensor inner = _m.Mlp == MlpKind.SwiGlu
            ? F.Linear(h2, W(p + "mlp.gate.w")).Silu() * F.Linear(h2, W(p + "mlp.up.w"))
            : F.Linear(h2, W(p + "mlp.fc1.w"), Wo(p + "mlp.fc1.b")).Gelu(tanhApproximation: true);
        var y = Leave(F.Linear(inner, W(p + "mlp.down.w")));
        if (Wo(p + "mlp.down.b") is { } db)
            y = y + db;
        return x + y;
    }

    /// <summary>Final norm, vocab-parallel logits and the mean cross entropy over the micro-batch's tokens.</summary>
    public Tensor HeadLoss(Tensor x, long[] targets)
    {
        using var scope = DisposeScope.Begin();
        return scope.Keep(HeadLossBody(x, targets));
    }

    private Tensor HeadLossBody(Tensor x, long[] targets)
    {
        long b = x.Shape[0], s = _plan.Seq, n = b * s;
        long vocabShard = _m.Vocab / _plan.Tp, start = _tpRank * vocabShard;
        var h = Enter(Norm(x, "ln_f"));
        var logits = F.Linear(h, W(_m.TiedEmbeddings ? "wte" : "lm_head")).To(DType.Float32).View(n, vocabShard);
        if (_plan.Tp == 1)
            return F.CrossEntropy(logits, Tensor.From(targets, n).On(_device));
        return VocabParallelCrossEntropy(_tp, logits, targets, start);
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

    private static Tensor RotateHalf(Tensor x)
    {
        var halves = x.Chunk(2, -1);
        return Tensor.Cat([-halves[1], halves[0]], -1);
    }

    private static Tensor RepeatHeads(Tensor t, long b, long kv, long rep, long s, long d)
    {
        var expanded = t.View(b, kv, 1, s, d);
        return Tensor.Cat(Enumerable.Repeat(expanded, (int)rep).ToList(), 2).Reshape(b, kv * rep, s, d);
    }

    private (Tensor Cos, Tensor Sin) Rope(long s, long d)
    {
        var cos = new float[s * d];
        var sin = new float[s * d];
        for (long pos = 0; pos < s; pos++)
            for (long i = 0; i < d / 2; i++)
            {
                double angle = pos / Math.Pow(10000, 2.0 * i / d);
                cos[pos * d + i] = cos[pos * d + i + d / 2] = (float)Math.Cos(angle);
                sin[pos * d + i] = sin[pos * d + i + d / 2] = (float)Math.Sin(angle);
            }
        return (Tensor.From(cos, s, d).On(_device).To(_compute), Tensor.From(sin, s, d).On(_device).To(_compute));
    }

    /// <summary>Frees the parameters.</summary>
    public void Dispose()
    {
        foreach (var p in _params.Values)
            p.Dispose();
    }
}
