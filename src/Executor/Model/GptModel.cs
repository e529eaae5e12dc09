using Planner.CostModel.Specs;
using Planner.Executor.Torch;

namespace Planner.Executor.Model;

/// <summary>
/// A GPT or Llama model, plain: some of its blocks (by the model's index), the embedding if asked, the final norm and
/// head if asked, their parameters by name (<see cref="GptParameters"/>) and the forward of each piece. It knows no plan
/// and no process group: the parallelism steps (<c>Planner.Executor.Parallelize</c>) replace its parameters by their
/// shards (<see cref="Shard"/>) and set its <see cref="Hooks"/>; head counts and sequence lengths are read from the
/// parameters and the activations it is given.
/// </summary>
public sealed class GptModel : IDisposable
{
    private readonly ModelSpec _m;
    private readonly Dictionary<string, Tensor> _params = [];

    /// <summary>The full parameters of the pieces, initialised on the CPU from <paramref name="seed"/> and each name (so
    /// that every process starts from the same values), in the training precision <paramref name="compute"/>.</summary>
    public GptModel(ModelSpec model, IEnumerable<int> layers, bool embedding, bool head, DType compute, ulong seed)
    {
        _m = model;
        Compute = compute;
        Layers = layers.ToArray();
        HasEmbedding = embedding;
        HasHead = head;
        var specs = new List<ParameterSpec>();
        if (embedding || (head && model.TiedEmbeddings))
            specs.AddRange(GptParameters.Embedding(model).Where(p => embedding || p.Name == "wte"));
        foreach (int layer in Layers)
            specs.AddRange(GptParameters.Block(model, layer));
        if (head)
            specs.AddRange(GptParameters.Head(model));
        Specs = specs;
        foreach (var spec in specs)
        {
            var full = GptParameters.InitFull(spec, seed);
            DisposeScope.Untrack(full);
            _params[spec.Name] = full;
        }
    }

    /// <summary>The model's blocks this instance holds, by the model's index.</summary>
    public IReadOnlyList<int> Layers { get; }

    /// <summary>True when it holds the embedding.</summary>
    public bool HasEmbedding { get; }

    /// <summary>True when it holds the final norm, the head and the loss.</summary>
    public bool HasHead { get; }

    /// <summary>The parameter specs, in a fixed order.</summary>
    public IReadOnlyList<ParameterSpec> Specs { get; }

    /// <summary>The parameters (fp32 masters), in <see cref="Specs"/> order.</summary>
    public IReadOnlyList<Tensor> Parameters => Specs.Select(s => _params[s.Name]).ToList();

    /// <summary>A parameter by name.</summary>
    public Tensor this[string name] => _params[name];

    /// <summary>Where the parameters live and the passes run (the CPU until <see cref="Place"/>).</summary>
    public Device Device { get; private set; } = Device.Cpu;

    /// <summary>The dtype activations travel in.</summary>
    public DType Compute { get; }

    /// <summary>Where a parallelism acts on the forward (<see cref="ModelHooks.Plain"/> until a step sets them).</summary>
    public ModelHooks Hooks { get; set; } = ModelHooks.Plain;

    /// <summary>Replaces every parameter by <paramref name="replace"/>(spec, parameter), disposing the old one (a
    /// parallelism step keeping its shard, the move to a device). The new tensors are long-lived.</summary>
    public void Replace(Func<ParameterSpec, Tensor, Tensor> replace)
    {
        foreach (var spec in Specs)
        {
            var old = _params[spec.Name];
            var next = replace(spec, old);
            if (ReferenceEquals(next, old))
                continue;
            DisposeScope.Untrack(next);
            old.Dispose();
            _params[spec.Name] = next;
        }
    }

    /// <summary>Moves the parameters to <paramref name="device"/> and makes them require gradients: the last step
    /// before training.</summary>
    public void Place(Device device)
    {
        if (device != Device.Cpu)
            Replace((_, p) => p.To(device));
        Device = device;
        foreach (var p in _params.Values)
            p.RequiresGrad = true;
    }

    private Tensor W(string name) => Compute == DType.Float32 ? _params[name] : _params[name].To(Compute);
    private Tensor? Wo(string name) => _params.ContainsKey(name) ? W(name) : null;

    private Tensor Norm(Tensor x, string name) => _m.Norm == NormKind.LayerNorm
        ? F.LayerNorm(x, W(name + ".w"), W(name + ".b"), 1e-5)
        : F.RmsNorm(x, W(name + ".w"), 1e-5);

    /// <summary>Token embeddings plus learned positions of ids [batch, seq].</summary>
    public Tensor Embed(long[] ids, int batch)
    {
        long seq = ids.Length / batch;
        var x = Hooks.Lookup(W("wte"), ids, batch, seq);
        if (_m.Positions == PositionKind.Learned)
            x = x + W("wpe").Narrow(0, 0, seq);
        return Hooks.AfterEmbedding(x);
    }

    /// <summary>One transformer block on [batch, tokens, hidden].</summary>
    /// <param name="recomputeAttention">The attention core keeps only its inputs and redoes its scores in the backward
    /// (selective recompute).</param>
    public Tensor Block(int layer, Tensor x, bool recomputeAttention = false)
    {
        // The block's temporaries are freed when it returns (autograd keeps what its backward needs), as Python's
        // reference counting frees them: otherwise a micro-batch in flight would hold every intermediate tensor.
        using var scope = DisposeScope.Begin();
        return scope.Keep(BlockBody(layer, x, recomputeAttention));
    }

    private Tensor BlockBody(int layer, Tensor x, bool recomputeAttention)
    {
        string p = $"layers.{layer}.";
        var h = Hooks.Enter(Norm(x, p + "ln1"));
        long b = h.Shape[0], s = h.Shape[1], d = _m.HeadDim;
        long hl = _params[p + "attn.q.w"].Shape[0] / d, kvl = _params[p + "attn.k.w"].Shape[0] / d;
        Tensor Heads(Tensor t, long n) => t.View(b, s, n, d).Transpose(1, 2);
        var q = Heads(F.Linear(h, W(p + "attn.q.w"), Wo(p + "attn.q.b")), hl);
        var k = Heads(F.Linear(h, W(p + "attn.k.w"), Wo(p + "attn.k.b")), kvl);
        var v = Heads(F.Linear(h, W(p + "attn.v.w"), Wo(p + "attn.v.b")), kvl);
        if (_m.Positions == PositionKind.Rotary)
        {
            var (cos, sin) = Rope(s, d, h.Device);
            q = q * cos + RotateHalf(q) * sin;
            k = k * cos + RotateHalf(k) * sin;
        }
        if (kvl < hl)
        {
            k = RepeatHeads(k, b, kvl, hl / kvl, s, d);
            v = RepeatHeads(v, b, kvl, hl / kvl, s, d);
        }
        var att = recomputeAttention ? F.CausalAttentionRecompute(q, k, v) : F.CausalAttention(q, k, v);
        var merged = att.Transpose(1, 2).Reshape(b, s, hl * d);
        var o = Hooks.Leave(F.Linear(merged, W(p + "attn.o.w")));
        if (Wo(p + "attn.o.b") is { } ob)
            o = o + ob;
        x = x + o;
        var h2 = Hooks.Enter(Norm(x, p + "ln2"));
        Tensor inner = _m.Mlp == MlpKind.SwiGlu
            ? F.Linear(h2, W(p + "mlp.gate.w")).Silu() * F.Linear(h2, W(p + "mlp.up.w"))
            : F.Linear(h2, W(p + "mlp.fc1.w"), Wo(p + "mlp.fc1.b")).Gelu(tanhApproximation: true);
        var y = Hooks.Leave(F.Linear(inner, W(p + "mlp.down.w")));
        if (Wo(p + "mlp.down.b") is { } db)
            y = y + db;
        return x + y;
    }

    /// <summary>Final norm, logits and the mean cross entropy over the micro-batch's tokens.</summary>
    public Tensor HeadLoss(Tensor x, long[] targets)
    {
        using var scope = DisposeScope.Begin();
        return scope.Keep(HeadLossBody(x, targets));
    }

    private Tensor HeadLossBody(Tensor x, long[] targets)
    {
        var h = Hooks.Enter(Norm(x, "ln_f"));
        var logits = F.Linear(h, W(_m.TiedEmbeddings ? "wte" : "lm_head")).To(DType.Float32);
        return Hooks.Loss(logits.View(h.Shape[0] * h.Shape[1], logits.Shape[2]), targets);
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

    private (Tensor Cos, Tensor Sin) Rope(long s, long d, Device device)
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
        return (Tensor.From(cos, s, d).On(device).To(Compute), Tensor.From(sin, s, d).On(device).To(Compute));
    }

    /// <summary>Frees the parameters.</summary>
    public void Dispose()
    {
        foreach (var p in _params.Values)
            p.Dispose();
    }
}
