using Planner.CostModel.Pipeline;
using Planner.CostModel.Pricing;

namespace Planner.Executor.Distributed;

/// <summary>
/// Which of a pipeline's four point-to-point groups carries a transfer: one per direction (activations downstream,
/// gradients upstream) and per parity of the sending stage. NCCL ignores tags and runs a pair's sends and receives
/// in issue order on one stream per communicator: with one group, stage s sending an activation while stage s+1 sends
/// a gradient back (1F1B's steady state) would each wait for the other's receive. Split this way, every pair of
/// ranks in a group carries transfers one way only (even with two stages, whose wrap-around of interleaving sends
/// back to stage 0), so a stream only waits for the matching receive, which the schedule posts in the same order
/// (checked for the generator's schedules by <see cref="Transfers"/>'s tests).
/// </summary>
public static class PipelineLinks
{
    /// <summary>The groups a pipeline of several stages needs.</summary>
    public const int Count = 4;

    /// <summary>The group of a transfer sent by stage <paramref name="senderStage"/>.</summary>
    public static int Of(bool forward, int senderStage) => (forward ? 0 : 2) + senderStage % 2;

    /// <summary>One transfer of a step: its group, the stages it goes between and the (micro-batch, virtual stage) it feeds.</summary>
    public readonly record struct Transfer(int Link, int From, int To, int MicroBatch, int VirtualStage, bool Forward);

    /// <summary>
    /// The transfers stage <paramref name="stage"/> issues in order, sends and receives, as the executor runs the
    /// schedule: a forward receives its input (unless it is the first virtual stage) and sends its output (unless it is
    /// the last); a backward receives its output's gradient (unless last) and sends its input's (unless first).
    /// </summary>
    public static IEnumerable<(bool Send, Transfer Transfer)> Transfers(PipelineSchedule schedule, int pp, int vpp, int stage)
    {
        // Which chunk is the pipeline's first (the embedding's) and last (the head's): the layout's rule, as the runner asks it.
        var layout = new StageLayout(pp * vpp, pp, vpp);
        foreach (var a in schedule.Stages[stage])
        {
            int v = a.Chunk * pp + stage;
            int prev = (stage - 1 + pp) % pp, next = (stage + 1) % pp;
            bool first = layout.HasEmbedding(stage, a.Chunk), last = layout.HasHead(stage, a.Chunk);
            if (a.Kind == PassKind.Forward)
            {
                if (!first)
                    yield return (false, new Transfer(Of(true, prev), prev, stage, a.MicroBatch, v, true));
                if (!last)
                    yield return (true, new Transfer(Of(true, stage), stage, next, a.MicroBatch, v + 1, true));
            }
            else
            {
                if (!last)
                    yield return (false, new Transfer(Of(false, next), next, stage, a.MicroBatch, v, false));
                if (!first)
                    yield return (true, new Transfer(Of(false, stage), stage, prev, a.MicroBatch, v - 1, false));
            }
        }
    }
}
