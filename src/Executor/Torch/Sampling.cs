namespace Planner.Executor.Torch;

/// <summary>
/// Labels drawn from a model's own outputs (sampling.cpp): the Gumbel-max trick with noise that depends only on (seed,
/// token key, vocabulary id), so that a process holding a slice of the vocabulary draws its part of exactly what one
/// process holding all of it draws.
/// </summary>
public static class Sampling
{
    /// <summary>
    /// Per row of <paramref name="logits"/> [n, v] (vocabulary ids from <paramref name="vocabStart"/>), the largest
    /// logit plus its Gumbel noise (fp64) and its id (int64; ties: the larger id), on the CPU.
    /// </summary>
    public static (Tensor Values, Tensor Ids) GumbelArgmax(Tensor logits, long[] keys, ulong seed, long vocabStart)
    {
        Native.Check(Native.pt_gumbel_argmax(logits.Handle, keys, keys.Length, seed, vocabStart, out var values, out var ids));
        return (Tensor.From(0, values), Tensor.From(0, ids));
    }
}
