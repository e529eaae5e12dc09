using Planner.Executor.Torch;

namespace Planner.Executor.Model;

/// <summary>
/// The places where a parallelism acts on the model's forward (as torchtitan's parallelize functions act on a module's
/// inputs and outputs): into and out of a block's attention and MLP, the token lookup, after the embedding, and the loss
/// over the logits. The plain model's are these: identities, the whole vocabulary's lookup and loss.
/// </summary>
public class ModelHooks
{
    /// <summary>The hooks of a model that runs whole on one process.</summary>
    public static ModelHooks Plain { get; } = new();

    /// <summary>Into a block's attention or MLP (the normed activations, [batch, tokens, hidden]).</summary>
    public virtual Tensor Enter(Tensor x) => x;

    /// <summary>True when the routed experts are split like the dense MLP (expert-TP = TP), each process computing its
    /// part of every routed row of the region; false when each process holds its experts whole and routes the rows it
    /// holds outside the region (its part of the sequence under sequence parallelism).</summary>
    public virtual bool SplitsExperts => false;

    /// <summary>The part of <paramref name="x"/> ([batch, tokens here, …], outside the region) whose tokens this process
    /// routes to experts held whole: all of them here and under sequence parallelism (each rank's tokens are its own
    /// already); without it, this rank's part of the sequence.</summary>
    public virtual Tensor OwnTokens(Tensor x) => x;

    /// <summary>The routed experts' outputs of <see cref="OwnTokens"/> put back together as the activations outside the
    /// region are laid out.</summary>
    public virtual Tensor AllTokens(Tensor x) => x;

    /// <summary>Out of a block's attention or MLP (its output projection's result, before the bias).</summary>
    public virtual Tensor Leave(Tensor x) => x;

    /// <summary>The token embeddings of <paramref name="ids"/> ([batch, seq]) from the embedding table
    /// <paramref name="wte"/> (the rows this process holds).</summary>
    public virtual Tensor Lookup(Tensor wte, long[] ids, int batch, long seq) =>
        F.Embedding(wte, Tensor.From(ids, batch, seq).On(wte.Device));

    /// <summary>The embedding's output (positions added) on its way to the first block.</summary>
    public virtual Tensor AfterEmbedding(Tensor x) => x;

    /// <summary>
    /// Labels drawn from the model's own distribution over fp32 logits [tokens, vocabulary (the columns this process
    /// holds)], one per token <paramref name="keys"/> (a token's place in the whole run: the draw depends only on it,
    /// <paramref name="seed"/> and the vocabulary id, <see cref="Sampling.GumbelArgmax"/>).
    /// </summary>
    public virtual long[] Sample(Tensor logits, long[] keys, ulong seed)
    {
        using var scope = DisposeScope.Begin();
        return Sampling.GumbelArgmax(logits, keys, seed, 0).Ids.ToLongArray();
    }

    /// <summary>The mean cross entropy of fp32 logits [tokens, vocabulary (the columns this process holds)].</summary>
    public virtual Tensor Loss(Tensor logits, long[] targets) =>
        F.CrossEntropy(logits, Tensor.From(targets, logits.Shape[0]).On(logits.Device));
}
