using Planner.CostModel.Plans;
using Planner.CostModel.Specs;
using Planner.Executor.Torch;

namespace Planner.Executor.Model;

/// <summary>How a parameter can be split across a tensor-parallel group (the model only declares it; the tensor-parallel
/// step of <c>Parallelize</c> splits it).</summary>
public enum Shard
{
    /// <summary>Every TP rank holds all of it.</summary>
    Replicated,
    /// <summary>Rows split (column-parallel layers' weights and biases; vocabulary rows of embeddings).</summary>
    Rows,
    /// <summary>Columns split (row-parallel layers' weights).</summary>
    Columns,
}

/// <summary>A named parameter: its full shape and how it is sharded.</summary>
public sealed record ParameterSpec(string Name, long[] Shape, Shard Shard, double InitStd, double InitValue = 0)
{
    /// <summary>The shape of one TP rank's shard.</summary>
    public long[] ShardShape(int tp) => Shard switch
    {
        Shard.Rows => [Shape[0] / tp, .. Shape[1..]],
        Shard.Columns => [Shape[0], Shape[1] / tp],
        _ => Shape,
    };
}

/// <summary>
/// The parameters of a GPT built from a <see cref="ModelSpec"/>, by name: blocks keyed "layers.{i}.…", the embedding
/// "wte" (and "wpe"), the final norm "ln_f" and the head "lm_head" unless tied. Every rank initialises a parameter's
/// full tensor from a seed derived from its name (parallelism steps then keep their slices of it), so each layout starts
/// from exact slices of the single-process model.
/// </summary>
public static class GptParameters
{
    /// <summary>Parameters of the embedding stage.</summary>
    public static IEnumerable<ParameterSpec> Embedding(ModelSpec m)
    {
        yield return new ParameterSpec("wte", [m.Vocab, m.Hidden], Shard.Rows, 0.02);
        if (m.Positions == PositionKind.Learned)
            yield return new ParameterSpec("wpe", [m.MaxSeq, m.Hidden], Shard.Replicated, 0.01);
    }

    /// <summary>
    /// Parameters of block <paramref name="layer"/>. The attention's heads are <see cref="ModelSpec.HeadDim"/> wide, which
    /// need not be hidden / heads (a config's <c>head_dim</c>, or hidden // heads when the heads do not divide the hidden
    /// size): Q is [heads·head_dim, hidden], K and V [kv_heads·head_dim, hidden], the output [hidden, heads·head_dim], the
    /// shapes <see cref="BlockLinears"/> prices. Tensor parallelism splits Q, K and V by rows (whole heads, as kv_heads
    /// divide by tp) and the output by columns.
    /// </summary>
    public static IEnumerable<ParameterSpec> Block(ModelSpec m, int layer)
    {
        string p = $"layers.{layer}.";
        double outStd = 0.02 / Math.Sqrt(2.0 * m.Layers); // GPT-2's scaled init of residual projections
        long qDim = (long)m.Heads * m.HeadDim;
        foreach (var n in Norm(m, p + "ln1"))
            yield return n;
        yield return new ParameterSpec(p + "attn.q.w", [qDim, m.Hidden], Shard.Rows, 0.02);
        yield return new ParameterSpec(p + "attn.k.w", [m.KvDim, m.Hidden], Shard.Rows, 0.02);
        yield return new ParameterSpec(p + "attn.v.w", [m.KvDim, m.Hidden], Shard.Rows, 0.02);
        if (m.Biases)
        {
            yield return new ParameterSpec(p + "attn.q.b", [qDim], Shard.Rows, 0);
            yield return new ParameterSpec(p + "attn.k.b", [m.KvDim], Shard.Rows, 0);
            yield return new ParameterSpec(p + "attn.v.b", [m.KvDim], Shard.Rows, 0);
        }
        yield return new ParameterSpec(p + "attn.o.w", [m.Hidden, qDim], Shard.Columns, outStd);
        if (m.Biases)
            yield return new ParameterSpec(p + "attn.o.b", [m.Hidden], Shard.Replicated, 0);
        foreach (var n in Norm(m, p + "ln2"))
            yield return n;
        if (m.IsMoeLayer(layer))
        {
            foreach (var e in MoeParameters.Mlp(m, p, outStd))
                yield return e;
            yield break;
        }
        if (m.Mlp == MlpKind.SwiGlu)
        {
            yield return new ParameterSpec(p + "mlp.gate.w", [m.Ffn, m.Hidden], Shard.Rows, 0.02);
            yield return new ParameterSpec(p + "mlp.up.w", [m.Ffn, m.Hidden], Shard.Rows, 0.02);
        }
        else
        {
            yield return new ParameterSpec(p + "mlp.fc1.w", [m.Ffn, m.Hidden], Shard.Rows, 0.02);
            if (m.Biases)
                yield return new ParameterSpec(p + "mlp.fc1.b", [m.Ffn], Shard.Rows, 0);
        }
        yield return new ParameterSpec(p + "mlp.down.w", [m.Hidden, m.Ffn], Shard.Columns, outStd);
        if (m.Biases)
            yield return new ParameterSpec(p + "mlp.down.b", [m.Hidden], Shard.Replicated, 0);
    }

    /// <summary>
    /// The block linear layers LoRA can adapt in block <paramref name="layer"/>, as the cost model lists them
    /// (<see cref="BlockLinears"/>: the target each answers to, column- or row-parallel under tensor parallelism), by the
    /// name of their weight here without its ".w" (a dense block of a model the executor builds).
    /// </summary>
    public static IEnumerable<(string Name, LoraTargets Target, bool ColumnParallel)> Linears(ModelSpec m, int layer)
    {
        var kinds = LayerKinds.Of(m);
        foreach (var l in BlockLinears.Of(m, kinds.Kinds[kinds.IndexOfLayer[layer]]))
        {
            string module = l.Name switch
            {
                "q" or "k" or "v" or "o" => "attn." + l.Name,
                "up" when m.Mlp != MlpKind.SwiGlu => "mlp.fc1",
                _ => "mlp." + l.Name,
            };
            yield return ($"layers.{layer}.{module}", l.Target, l.Split == LinearSplit.Column);
        }
    }

    /// <summary>
    /// LoRA's adapters of the linear <paramref name="linear"/> (its weight <c>linear.w</c> of shape [out, in]): A
    /// [rank, in] and B [out, rank], the update B·A. Split under tensor parallelism as the base is: a column-parallel
    /// layer's B by rows (A whole), a row-parallel layer's A by columns (B whole). A starts from a normal draw, B from
    /// zero, so that the adapted model starts as the base (Hu et al. 2021, section 4.1).
    /// </summary>
    public static IEnumerable<ParameterSpec> Adapters(string linear, long[] weightShape, int rank, bool columnParallel)
    {
        long outDim = weightShape[0], inDim = weightShape[1];
        yield return new ParameterSpec(linear + ".lora_a", [rank, inDim], columnParallel ? Shard.Replicated : Shard.Columns, 0.02);
        yield return new ParameterSpec(linear + ".lora_b", [outDim, rank], columnParallel ? Shard.Rows : Shard.Replicated, 0);
    }

    /// <summary>Parameters of the head stage (final norm and output layer).</summary>
    public static IEnumerable<ParameterSpec> Head(ModelSpec m)
    {
        foreach (var n in Norm(m, "ln_f"))
            yield return n;
        if (!m.TiedEmbeddings)
            yield return new ParameterSpec("lm_head", [m.Vocab, m.Hidden], Shard.Rows, 0.02);
    }

    private static IEnumerable<ParameterSpec> Norm(ModelSpec m, string name)
    {
        yield return new ParameterSpec(name + ".w", [m.Hidden], Shard.Replicated, 0, InitValue: 1);
        if (m.Norm == NormKind.LayerNorm)
            yield return new ParameterSpec(name + ".b", [m.Hidden], Shard.Replicated, 0);
    }

    /// <summary>A stable 64-bit hash of a parameter name (FNV-1a), mixed with the run's seed.</summary>
    public static ulong SeedOf(string name, ulong seed)
    {
        ulong h = 14695981039346656037UL ^ seed;
        foreach (char ch in name)
        {
            h ^= ch;
            h *= 1099511628211UL;
        }
        return h;
    }

    /// <summary>The full, unsharded initial value of a parameter.</summary>
    public static Tensor InitFull(ParameterSpec spec, ulong seed) =>
        spec.InitStd > 0
            ? Tensor.Normal(spec.Shape, 0, spec.InitStd, SeedOf(spec.Name, seed))
            : Tensor.Full(spec.Shape, spec.InitValue);
}
