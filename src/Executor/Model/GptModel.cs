using Planner.CostModel.Specs;
using Planner.Executor.Torch;

namespace Planner.Executor.Model;

/// <summary>
/// A GPT or Llama model, plain: some of its blocks (by the model's index), the embedding if asked, the final norm and
/// head if asked, their parameters by name (<see cref="GptParameters"/>) and the forward of each piece. It knows no plan
/// and no process group. It is described first and made later: the parallelism steps (<c>Planner.Executor.Parallelize</c>)
/// add parameters (adapters), freeze some, give each parameter's shard (<see cref="Shard"/>) and set its
/// <see cref="Hooks"/>, store some frozen weights in NF4; <see cref="Place"/> then initialises each parameter whole,
/// keeps its shard (an NF4 weight quantized whole first) and frees the whole one before the next, so a process never
/// holds more than one unsharded tensor. Head counts and sequence lengths are
/// read from the parameters and the activations it is given.
/// </summary>
public sealed partial class GptModel : IDisposable
{
    private readonly ModelSpec _m;
    private readonly Dictionary<string, Tensor> _params = [];
    private readonly List<ParameterSpec> _specs = [];
    private readonly HashSet<string> _frozen = [];
    private readonly HashSet<string> _toQuantize = [];
    private readonly Dictionary<string, Nf4Tensor> _nf4 = [];
    private readonly ulong _seed;
    private double _adapterScale = 1;
    private Func<ParameterSpec, Tensor, Tensor>? _shard;

    /// <summary>The pieces' parameters, described (made by <see cref="Place"/>, each from <paramref name="seed"/> and its
    /// name, so that every process starts from the same values), in the training precision <paramref name="compute"/>.</summary>
    public GptModel(ModelSpec model, IEnumerable<int> layers, bool embedding, bool head, DType compute, ulong seed)
    {
        _m = model;
        Compute = compute;
        Layers = layers.ToArray();
        HasEmbedding = embedding;
        HasHead = head;
        _seed = seed;
        if (embedding || (head && model.TiedEmbeddings))
            _specs.AddRange(GptParameters.Embedding(model).Where(p => embedding || p.Name == "wte"));
        foreach (int layer in Layers)
            _specs.AddRange(GptParameters.Block(model, layer));
        if (head)
            _specs.AddRange(GptParameters.Head(model));
    }

    /// <summary>Adds parameters (before <see cref="Place"/>).</summary>
    public void Add(IEnumerable<ParameterSpec> specs)
    {
        if (Placed)
            throw new InvalidOperationException("parameters are added before the model is placed");
        _specs.AddRange(specs);
    }

    /// <summary>Drops the parameters <paramref name="held"/> does not keep (before <see cref="Place"/>): those another
    /// process holds whole, such as other ranks' experts.</summary>
    public void Keep(Func<ParameterSpec, bool> held)
    {
        if (Placed)
            throw new InvalidOperationException("parameters are dropped before the model is placed");
        _specs.RemoveAll(s => !held(s));
    }

    /// <summary>Marks the parameters <paramref name="whole"/> picks as held whole by every process of a tensor-parallel
    /// group (before <see cref="Place"/>), whatever their usual split.</summary>
    public void Replicate(Func<ParameterSpec, bool> whole)
    {
        if (Placed)
            throw new InvalidOperationException("the shards are set before the model is placed");
        for (int i = 0; i < _specs.Count; i++)
            if (whole(_specs[i]))
                _specs[i] = _specs[i] with { Shard = Shard.Replicated };
    }

    /// <summary>A parameter's spec by name.</summary>
    public ParameterSpec SpecOf(string name) => _specs.First(s => s.Name == name);

    /// <summary>How each whole parameter becomes what this process keeps (a parallelism's shard), applied by
    /// <see cref="Place"/>; the whole one is freed after it.</summary>
    public void ShardWith(Func<ParameterSpec, Tensor, Tensor> shard)
    {
        if (Placed)
            throw new InvalidOperationException("the shards are set before the model is placed");
        _shard = shard;
    }

    /// <summary>True once <see cref="Place"/> has made the parameters.</summary>
    public bool Placed { get; private set; }

    /// <summary>Low-rank adapters are present: each adapted linear adds <paramref name="scale"/>·B·A to its output.</summary>
    public void ScaleAdapters(double scale) => _adapterScale = scale;

    /// <summary>Freezes the parameters <paramref name="frozen"/> picks: they get no gradients and are not optimized.</summary>
    public void Freeze(Func<ParameterSpec, bool> frozen)
    {
        foreach (var spec in _specs.Where(frozen))
            _frozen.Add(spec.Name);
    }

    /// <summary>
    /// Stores the frozen [out, in] weights <paramref name="quantized"/> picks in NF4 (<see cref="Nf4Tensor"/>, QLoRA's
    /// base): <see cref="Place"/> quantizes each whole before cutting it into its shard, and each use dequantizes it.
    /// </summary>
    public void StoreInNf4(Func<ParameterSpec, bool> quantized)
    {
        if (Placed)
            throw new InvalidOperationException("weights are quantized as the model is placed, not after");
        foreach (var spec in _specs.Where(quantized))
        {
            if (!_frozen.Contains(spec.Name) || spec.Shape.Length != 2)
                throw new InvalidOperationException($"{spec.Name}: only frozen [out, in] weights are stored in NF4");
            _toQuantize.Add(spec.Name);
        }
    }

    /// <summary>True for a weight stored in NF4 (it has no tensor in <see cref="Parameters"/>).</summary>
    public bool IsQuantized(string name) => _toQuantize.Contains(name);

    /// <summary>True unless the parameter is frozen.</summary>
    public bool IsTrainable(string name) => !_frozen.Contains(name);

    /// <summary>The specs of the parameters that train, in <see cref="Specs"/> order.</summary>
    public IReadOnlyList<ParameterSpec> TrainableSpecs => _specs.Where(s => !_frozen.Contains(s.Name)).ToList();

    /// <summary>The parameters that train (every one unless some are frozen), in <see cref="Specs"/> order.</summary>
    public IReadOnlyList<Tensor> Trainable => TrainableSpecs.Select(s => _params[s.Name]).ToList();

    /// <summary>The model's shape.</summary>
    public ModelSpec Spec => _m;

    /// <summary>The model's blocks this instance holds, by the model's index.</summary>
    public IReadOnlyList<int> Layers { get; }

    /// <summary>True when it holds the embedding.</summary>
    public bool HasEmbedding { get; }

    /// <summary>True when it holds the final norm, the head and the loss.</summary>
    public bool HasHead { get; }

    /// <summary>The parameter specs, in a fixed order.</summary>
    public IReadOnlyList<ParameterSpec> Specs => _specs;

    /// <summary>The parameters held as tensors in the training precision (all but those stored in NF4), in
    /// <see cref="Specs"/> order.</summary>
    public IReadOnlyList<Tensor> Parameters => Specs.Where(s => _params.ContainsKey(s.Name)).Select(s => _params[s.Name]).ToList();

    /// <summary>A parameter held as a tensor, by name (not one stored in NF4).</summary>
    public Tensor this[string name] => _params[name];

    /// <summary>A parameter's values (this process's shard) as fp32, row-major; an NF4 weight's dequantized.</summary>
    public float[] Values(string name)
    {
        if (!_nf4.TryGetValue(name, out var q))
            return _params[name].ToFloatArray();
        using var values = q.Dequantize();
        return values.ToFloatArray();
    }

    /// <summary>Bytes of memory the parameters hold: the tensors' storage, and the NF4 weights' codes and absmax.</summary>
    public long StorageBytes => Parameters.Sum(p => p.StorageBytes) + _nf4.Values.Sum(q => q.StorageBytes);

    /// <summary>Where the parameters live and the passes run.</summary>
    public Device Device { get; private set; } = Device.Cpu;

    /// <summary>The dtype activations travel in.</summary>
    public DType Compute { get; }

    /// <summary>Where a parallelism acts on the forward (<see cref="ModelHooks.Plain"/> until a step sets them).</summary>
    public ModelHooks Hooks { get; set; } = ModelHooks.Plain;

    /// <summary>Which tokens of each sequence the model holds and how they attend (<see cref="ContextHooks.Plain"/>, the
    /// whole sequence, until context parallelism sets them).</summary>
    public ContextHooks Context { get; set; } = ContextHooks.Plain;

    /// <summary>Makes the parameters: each initialised whole on the CPU, cut to its shard, moved to
    /// <paramref name="device"/> and made to require gradients unless frozen; the last step before training.</summary>
    public void Place(Device device)
    {
        if (Placed)
            throw new InvalidOperationException("the model is placed once");
        foreach (var spec in _specs)
        {
            var t = GptParameters.InitFull(spec, _seed);
            if (_toQuantize.Contains(spec.Name))
            {
                _nf4[spec.Name] = Quantized(spec, t, device);
                continue;
            }
            if (_shard is not null)
            {
                var shard = _shard(spec, t);
                if (!ReferenceEquals(shard, t))
                    t.Dispose();
                t = shard;
            }
            if (device != Device.Cpu)
            {
                var moved = t.To(device);
                t.Dispose();
                t = moved;
            }
            DisposeScope.Untrack(t);
            t.RequiresGrad = !_frozen.Contains(spec.Name);
            _params[spec.Name] = t;
        }
        Device = device;
        Placed = true;
    }

    /// <summary>The NF4 storage of a whole weight, quantized before it is cut into this process's shard.</summary>
    private Nf4Tensor Quantized(ParameterSpec spec, Tensor whole, Device device)
    {
        using (whole)
        {
            var shard = _shard;
            var q = Nf4Tensor.Quantize(whole, shard is null ? null : t => shard(spec, t));
            if (device == Device.Cpu)
                return q;
            using (q)
                return q.To(device);
        }
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
            x = x + F.Embedding(W("wpe"), Tensor.From(Context.Positions(seq), seq).On(x.Device));
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
        var n1 = Norm(x, p + "ln1");
        var h = Hooks.Enter(n1);
        // Heads are head_dim wide, which need not be hidden / heads: the local head counts come from Q's and K's rows.
        long b = h.Shape[0], s = h.Shape[1], d = _m.HeadDim;
        long hl = Rows(p + "attn.q.w") / d, kvl = Rows(p + "attn.k.w") / d;
        Tensor Heads(Tensor t, long n) => t.View(b, s, n, d).Transpose(1, 2);
        var q = Heads(Column(p + "attn.q", n1, h), hl);
        var k = Heads(Column(p + "attn.k", n1, h), kvl);
        var v = Heads(Column(p + "attn.v", n1, h), kvl);
        if (_m.Positions == PositionKind.Rotary)
        {
            var (cos, sin) = Rope(Context.Positions(s), d, h.Device);
            q = q * cos + RotateHalf(q) * sin;
            k = k * cos + RotateHalf(k) * sin;
        }
        var att = Context.Attention(q, k, v, recomputeAttention);
        var merged = att.Transpose(1, 2).Reshape(b, s, hl * d);
        var o = Row(p + "attn.o", merged);
        if (Wo(p + "attn.o.b") is { } ob)
            o = o + ob;
        x = x + o;
        var n2 = Norm(x, p + "ln2");
        if (_m.IsMoeLayer(layer))
        {
            var (moe, aux) = MoeMlp(p, n2);
            return F.AttachAuxLoss(x + moe, aux, AuxLossCoefficient * AuxLossScale);
        }
        var h2 = Hooks.Enter(n2);
        Tensor inner = _m.Mlp == MlpKind.SwiGlu
            ? Column(p + "mlp.gate", n2, h2).Silu() * Column(p + "mlp.up", n2, h2)
            : Column(p + "mlp.fc1", n2, h2).Gelu(tanhApproximation: true);
        var y = Row(p + "mlp.down", inner);
        if (Wo(p + "mlp.down.b") is { } db)
            y = y + db;
        return x + y;
    }

    /// <summary>
    /// A column-parallel linear on <paramref name="inside"/> (the region's input, <see cref="ModelHooks.Enter"/> of
    /// <paramref name="outside"/>), with its adapter if it has one: A applies to the input outside the region and its
    /// rank-wide output enters the region itself, so that A's gradient and the input's are whole on every process.
    /// </summary>
    private Tensor Column(string name, Tensor outside, Tensor inside)
    {
        var y = _nf4.TryGetValue(name + ".w", out var q)
            ? Biased(q.Linear(inside), name)
            : F.Linear(inside, W(name + ".w"), Wo(name + ".b"));
        if (!_params.ContainsKey(name + ".lora_a"))
            return y;
        var a = Hooks.Enter(F.Linear(outside, W(name + ".lora_a")));
        return y + F.Linear(a, W(name + ".lora_b")) * _adapterScale;
    }

    /// <summary>
    /// A row-parallel linear's output out of the region (before its bias), with its adapter if it has one: A's partial
    /// output leaves the region itself and B applies to it outside, so that B's gradient is whole on every process.
    /// </summary>
    private Tensor Row(string name, Tensor input)
    {
        var y = Hooks.Leave(_nf4.TryGetValue(name + ".w", out var q) ? q.Linear(input) : F.Linear(input, W(name + ".w")));
        if (!_params.ContainsKey(name + ".lora_a"))
            return y;
        var a = Hooks.Leave(F.Linear(input, W(name + ".lora_a")));
        return y + F.Linear(a, W(name + ".lora_b")) * _adapterScale;
    }

    /// <summary>The rows of a weight's shard held here (a column-parallel layer's local outputs).</summary>
    private long Rows(string name) => _nf4.TryGetValue(name, out var q) ? q.Shape[0] : _params[name].Shape[0];

    private Tensor Biased(Tensor y, string name) => Wo(name + ".b") is { } b ? y + b : y;

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
        var flat = logits.View(h.Shape[0] * h.Shape[1], logits.Shape[2]);
        return Hooks.Loss(flat, SampledTargets is { } seed ? Hooks.Sample(flat, targets, seed) : targets);
    }

    /// <summary>When set, the loss is taken against labels drawn from the model's own outputs with this seed (a
    /// curvature pass: Sophia's Gauss-Newton-Bartlett estimate), and the targets given are the tokens' keys
    /// (<see cref="ModelHooks.Sample"/>).</summary>
    public ulong? SampledTargets { get; set; }

    private static Tensor RotateHalf(Tensor x)
    {
        var halves = x.Chunk(2, -1);
        return Tensor.Cat([-halves[1], halves[0]], -1);
    }

    /// <summary>Rotary cos and sin [tokens, head_dim] of the tokens at <paramref name="positions"/> in their sequence.</summary>
    private (Tensor Cos, Tensor Sin) Rope(long[] positions, long d, Device device)
    {
        long s = positions.Length;
        var cos = new float[s * d];
        var sin = new float[s * d];
        for (long t = 0; t < s; t++)
            for (long i = 0; i < d / 2; i++)
            {
                double angle = positions[t] / Math.Pow(10000, 2.0 * i / d);
                cos[t * d + i] = cos[t * d + i + d / 2] = (float)Math.Cos(angle);
                sin[t * d + i] = sin[t * d + i + d / 2] = (float)Math.Sin(angle);
            }
        return (Tensor.From(cos, s, d).On(device).To(Compute), Tensor.From(sin, s, d).On(device).To(Compute));
    }

    /// <summary>Frees the parameters.</summary>
    public void Dispose()
    {
        foreach (var p in _params.Values)
            p.Dispose();
        foreach (var q in _nf4.Values)
            q.Dispose();
    }
}
