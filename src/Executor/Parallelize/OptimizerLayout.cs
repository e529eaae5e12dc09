using Planner.Executor.Distributed;
using Planner.Executor.Model;
using Planner.Executor.Optim;
using Planner.Executor.Torch;

namespace Planner.Executor.Parallelize;

/// <summary>
/// What an optimizer steps on a rank, described as pieces of whole weights (<see cref="HeldWeights"/>): each trainable
/// parameter's TP shard (where <see cref="ParameterSpec.Shard"/> puts it in the whole weight), or under ZeRO the ranges
/// of them the rank's master slice holds. Element-wise optimizers need only the tensors; Adafactor and 8-bit Adam use
/// the pieces to compute their whole-weight statistics as one process would.
/// </summary>
public static class OptimizerLayout
{
    /// <summary>The rank's trainable parameters (those of <paramref name="only"/> if given), each its whole TP shard.</summary>
    public static HeldWeights Parameters(GptModel model, TensorParallelism? tp, IReadOnlyList<ParameterSpec>? only = null)
    {
        var specs = only ?? model.TrainableSpecs;
        var weights = specs.Select(s => Whole(s, tp)).ToList();
        var pieces = specs.Select((s, i) => (IReadOnlyList<WeightPiece>)[Piece(s, i, tp, 0, model[s.Name].Numel, 0)]).ToList();
        return new HeldWeights(specs.Select(s => model[s.Name]).ToList(), pieces, weights, null, tp?.Group);
    }

    /// <summary>The rank's ZeRO master slice, holding ranges of the trainable parameters' (those of
    /// <paramref name="only"/> if given) TP shards.</summary>
    public static HeldWeights Sharded(GptModel model, TensorParallelism? tp, ShardedParameters shards, ProcessGroup dp,
        IReadOnlyList<ParameterSpec>? only = null)
    {
        var specs = only ?? model.TrainableSpecs;
        var index = new Dictionary<Tensor, int>(ReferenceEqualityComparer.Instance);
        for (int i = 0; i < specs.Count; i++)
            index[model[specs[i].Name]] = i;
        var pieces = shards.Held().Select(h => Piece(specs[index[h.Parameter]], index[h.Parameter], tp, h.Start, h.Length, h.At)).ToList();
        return new HeldWeights([shards.Master], [pieces], specs.Select(s => Whole(s, tp)).ToList(), dp, tp?.Group);
    }

    private static WholeWeight Whole(ParameterSpec s, TensorParallelism? tp) =>
        new(s.Shape[0], HeldWeights.Cols(s.Shape), tp is not null && s.Shard != Shard.Replicated);

    private static WeightPiece Piece(ParameterSpec s, int weight, TensorParallelism? tp, long start, long length, long at)
    {
        int size = tp?.Group.Size ?? 1, rank = tp?.Rank ?? 0;
        long rows = s.Shape[0], cols = HeldWeights.Cols(s.Shape);
        return s.Shard switch
        {
            Shard.Rows when size > 1 => new WeightPiece(weight, cols, rank * rows / size, 0, start, length, at),
            Shard.Columns when size > 1 => new WeightPiece(weight, cols / size, 0, rank * cols / size, start, length, at),
            _ => new WeightPiece(weight, cols, 0, 0, start, length, at),
        };
    }
}
