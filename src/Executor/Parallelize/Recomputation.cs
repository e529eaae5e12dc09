using Planner.CostModel.Plans;
using Planner.Executor.Model;
using Planner.Executor.Torch;

namespace Planner.Executor.Parallelize;

/// <summary>
/// Blocks [<paramref name="From"/>, <paramref name="To"/>) of a chunk (positions in its list of blocks) run from
/// <paramref name="Input"/>: recomputed (the input saved without graph, the block rerun in the backward) or kept (the
/// input a detached leaf, the <paramref name="Output"/> with its graph from it).
/// </summary>
public sealed record Segment(Tensor Input, Tensor? Output, int From, int To, bool Recomputed);

/// <summary>
/// Activation recompute on one pipeline stage, as the plan sets it for the stage: full recompute of a chunk's first
/// blocks (all unless the plan limits them) keeps only their inputs and reruns them in the backward; selective
/// recompute redoes the attention core's scores. The backward can also stop between blocks (one segment per block)
/// so that each block's gradients are handed on as soon as they are final.
/// </summary>
public sealed class Recomputation(ParallelPlan plan, int stage)
{
    private readonly Recompute _policy = plan.RecomputeOf(stage);

    /// <summary>Full recompute: the chunk's forward must keep its segments (and the embedding its output).</summary>
    public bool Full => _policy == Recompute.Full;

    /// <summary>
    /// The forward of a chunk's <paramref name="layers"/> from <paramref name="x"/>; <paramref name="segments"/> is null
    /// when the chunk runs as one graph (nothing recomputed, <paramref name="perBlock"/> false), else the segments for
    /// <see cref="Backward"/>.
    /// </summary>
    public Tensor Forward(GptModel model, IReadOnlyList<int> layers, Tensor x, bool perBlock, out List<Segment>? segments)
    {
        // Full recompute of the chunk's first r blocks (all of them unless the plan limits it).
        int recomputed = Full ? plan.RecomputedBlocks(stage, layers.Count) : 0;
        bool selective = _policy == Recompute.Selective;
        segments = null;
        if (recomputed == 0 && !perBlock)
        {
            foreach (int layer in layers)
                x = model.Block(layer, x, selective);
            return x;
        }
        segments = [];
        int i = 0;
        // Recomputed blocks keep only their input; the backward reruns them.
        using (TorchRuntime.NoGrad())
            for (; i < recomputed; i++)
            {
                segments.Add(new Segment(x, null, i, i + 1, true));
                x = model.Block(layers[i], x);
            }
        // Kept blocks run with their graph from a detached input: one segment for all of them, or one per block when
        // the backward hands each block's gradients on as soon as they are final.
        do
        {
            int to = perBlock ? Math.Min(i + 1, layers.Count) : layers.Count;
            var input = x.Detach();
            input.RequiresGrad = true;
            x = input;
            for (int j = i; j < to; j++)
                x = model.Block(layers[j], x, selective);
            segments.Add(new Segment(input, x, i, to, false));
            i = to;
        }
        while (i < layers.Count);
        return x;
    }

    /// <summary>
    /// The backward through a chunk's segments, once the chunk's output has been back-propagated to the last segment's
    /// input: each segment from the last to the first (recomputed ones rerun first), calling
    /// <paramref name="blockDone"/> with each block's model index once its gradients are final. Returns the gradient at
    /// the chunk's input.
    /// </summary>
    public static Tensor Backward(GptModel model, IReadOnlyList<int> layers, List<Segment> segments, Action<int>? blockDone)
    {
        Tensor grad = segments[^1].Input.Grad!;
        for (int k = segments.Count - 1; k >= 0; k--)
        {
            var seg = segments[k];
            if (k < segments.Count - 1)
            {
                if (seg.Recomputed)
                {
                    var xin = seg.Input.Detach();
                    xin.RequiresGrad = true;
                    model.Block(layers[seg.From], xin).Backward(grad);
                    grad = xin.Grad!;
                }
                else
                {
                    seg.Output!.Backward(grad);
                    grad = seg.Input.Grad!;
                }
            }
            if (blockDone is not null)
                for (int j = seg.From; j < seg.To; j++)
                    blockDone(layers[j]);
        }
        return grad;
    }
}
