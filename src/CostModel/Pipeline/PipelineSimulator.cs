using System.Buffers;
using System.Collections.Immutable;
using System.Runtime.InteropServices;

namespace Planner.CostModel.Pipeline;

/// <summary>
/// Timing of one simulated optimizer step's pipeline phase.
/// </summary>
/// <param name="MakespanSeconds">Time (s) at which the last action on any stage finishes; all stages start at 0.</param>
/// <param name="StageBusySeconds">Per stage, the sum of its action durations (s).</param>
/// <param name="StageIdleSeconds">Per stage, makespan minus busy (s).</param>
/// <param name="BubbleSeconds">
/// Makespan minus the busiest stage's busy time (s): the exposed pipeline bubble plus p2p waits on the critical stage.
/// </param>
public sealed record PipelineSimulation(
    double MakespanSeconds,
    IReadOnlyList<double> StageBusySeconds,
    IReadOnlyList<double> StageIdleSeconds,
    double BubbleSeconds);

/// <summary>
/// Event-driven simulator of a <see cref="PipelineSchedule"/>: each stage runs its actions strictly in order,
/// each action starting once the stage is free and its cross-stage dependency has arrived.
/// </summary>
public static class PipelineSimulator
{
    private const double NotDone = -1.0; // finish times are >= 0, so any negative value means "not finished yet"

    /// <summary>
    /// Simulates the schedule.
    /// </summary>
    /// <param name="schedule">Schedule to run.</param>
    /// <param name="durationSeconds">
    /// Duration (s, finite, ≥ 0) of one pass of one micro-batch through (stage, chunk, kind). It is called once
    /// per (stage, chunk, kind) up front, so it must not depend on the micro-batch.
    /// </param>
    /// <param name="p2pSeconds">
    /// Latency (s, finite, ≥ 0) of one activation / gradient transfer between adjacent virtual stages on
    /// different physical stages. Transfers within one physical stage (only possible when Pp == 1) cost 0.
    /// </param>
    /// <param name="onAction">Called with each action as it is placed: its stage, the action, its start and end (s);
    /// null (the pricing path) records nothing.</param>
    /// <exception cref="ArgumentException">Malformed schedule or invalid duration.</exception>
    /// <exception cref="InvalidOperationException">The schedule deadlocks (some dependency can never be met).</exception>
    /// <remarks>Long: one event loop over pooled tables that every step of it reads and writes (it runs for every plan
    /// priced exactly, thousands a search: no per-call objects to pass the state between smaller methods). O(total
    /// actions) time; the per-(virtual stage, micro-batch) finish tables are pooled.</remarks>
    public static PipelineSimulation Simulate(
        PipelineSchedule schedule,
        Func<int, int, PassKind, double> durationSeconds,
        double p2pSeconds,
        Action<int, PipelineAction, double, double>? onAction = null)
    {
        ArgumentNullException.ThrowIfNull(schedule);
        ArgumentNullException.ThrowIfNull(durationSeconds);
        if (!double.IsFinite(p2pSeconds) || p2pSeconds < 0)
            throw new ArgumentException($"p2pSeconds must be finite and >= 0 (got {p2pSeconds}).", nameof(p2pSeconds));

        int pp = schedule.Pp, vpp = schedule.Vpp, m = schedule.MicroBatches;
        if (pp < 1 || vpp < 1 || m < 1)
            throw new ArgumentException($"schedule has invalid shape pp={pp}, vpp={vpp}, microBatches={m}.", nameof(schedule));
        if (schedule.Stages is null || schedule.Stages.Count != pp)
            throw new ArgumentException($"schedule must have exactly {pp} stage lists.", nameof(schedule));
        long cellsLong = (long)pp * vpp * m;
        if (cellsLong > int.MaxValue / 2)
            throw new ArgumentException($"schedule too large ({cellsLong} virtual-stage × micro-batch cells).", nameof(schedule));
        int cells = (int)cellsLong;
        int virtualStages = pp * vpp;
        int lastVirtual = virtualStages - 1;

        // Durations depend only on (stage, chunk, kind): tabulate once so the inner loop avoids delegate calls.
        var dur = new double[pp * vpp * 2];
        for (int s = 0; s < pp; s++)
        {
            for (int c = 0; c < vpp; c++)
            {
                for (int k = 0; k < 2; k++)
                {
                    var kind = (PassKind)k;
                    double d = durationSeconds(s, c, kind);
                    if (!double.IsFinite(d) || d < 0)
                        throw new ArgumentException($"duration for stage {s}, chunk {c}, {kind} must be finite and >= 0 (got {d}).", nameof(durationSeconds));
                    dur[(s * vpp + c) * 2 + k] = d;
                }
            }
        }

        var actions = new PipelineAction[pp][];
        long totalActions = 0;
        for (int s = 0; s < pp; s++)
        {
            actions[s] = ToArray(schedule.Stages[s], s);
            totalActions += actions[s].Length;
        }

        // With one physical stage every hop stays on the same device, so it is free.
        double hop = pp == 1 ? 0.0 : p2pSeconds;

        double[] fwdDone = ArrayPool<double>.Shared.Rent(cells);
        double[] bwdDone = ArrayPool<double>.Shared.Rent(cells);
        try
        {
            fwdDone.AsSpan(0, cells).Fill(NotDone);
            bwdDone.AsSpan(0, cells).Fill(NotDone);

            var next = new int[pp];
            var free = new double[pp];
            var busy = new double[pp];
            // Work list of stages that may be able to advance; each stage is in it at most once.
            var queue = new int[pp];
            var queued = new bool[pp];
            int head = 0, count = pp;
            for (int s = 0; s < pp; s++)
            {
                queue[s] = s;
                queued[s] = true;
            }

            long done = 0;
            while (count > 0)
            {
                int s = queue[head];
                head = head + 1 == pp ? 0 : head + 1;
                count--;
                queued[s] = false;

                PipelineAction[] list = actions[s];
                int i = next[s];
                int start = i;
                double t = free[s];
                double b = busy[s];
                while (i < list.Length)
                {
                    PipelineAction a = list[i];
                    if ((uint)a.MicroBatch >= (uint)m || (uint)a.Chunk >= (uint)vpp)
                        throw new ArgumentException($"stage {s} action {i} {a} is out of range for microBatches={m}, vpp={vpp}.", nameof(schedule));

                    int v = a.Chunk * pp + s;
                    // Micro-batch-major layout: a dependency (v±1, same micro-batch) sits next to its dependant in memory.
                    int cell = a.MicroBatch * virtualStages + v;
                    double ready;
                    double d;
                    if (a.Kind == PassKind.Forward)
                    {
                        if (fwdDone[cell] >= 0)
                            throw new ArgumentException($"stage {s} runs {a} more than once.", nameof(schedule));
                        if (v == 0)
                        {
                            ready = 0;
                        }
                        else
                        {
                            double up = fwdDone[cell - 1];
                            if (up < 0)
                                break;
                            ready = up + hop;
                        }
                        d = dur[(s * vpp + a.Chunk) * 2];
                        t = Math.Max(t, ready) + d;
                        fwdDone[cell] = t;
                    }
                    else
                    {
                        if (bwdDone[cell] >= 0)
                            throw new ArgumentException($"stage {s} runs {a} more than once.", nameof(schedule));
                        double own = fwdDone[cell];
                        if (own < 0)
                            break;
                        if (v == lastVirtual)
                        {
                            ready = own;
                        }
                        else
                        {
                            double down = bwdDone[cell + 1];
                            if (down < 0)
                                break;
                            ready = Math.Max(own, down + hop);
                        }
                        d = dur[(s * vpp + a.Chunk) * 2 + 1];
                        t = Math.Max(t, ready) + d;
                        bwdDone[cell] = t;
                    }
                    b += d;
                    onAction?.Invoke(s, a, t - d, t);
                    i++;
                }

                if (i == start)
                    continue;
                next[s] = i;
                free[s] = t;
                busy[s] = b;
                done += i - start;

                // Only adjacent stages depend on this one (forward goes to s+1, backward to s-1, wrapping
                // across chunk boundaries), so only they can have become unblocked.
                if (pp > 1)
                {
                    int up = s == 0 ? pp - 1 : s - 1;
                    int down = s == pp - 1 ? 0 : s + 1;
                    Enqueue(up, queue, queued, head, ref count);
                    Enqueue(down, queue, queued, head, ref count);
                }
            }

            if (done != totalActions)
                throw new InvalidOperationException(DeadlockMessage(actions, next));

            double makespan = 0, maxBusy = 0;
            for (int s = 0; s < pp; s++)
            {
                makespan = Math.Max(makespan, free[s]);
                maxBusy = Math.Max(maxBusy, busy[s]);
            }
            var idle = new double[pp];
            for (int s = 0; s < pp; s++)
                idle[s] = makespan - busy[s];

            return new PipelineSimulation(
                makespan,
                ImmutableCollectionsMarshal.AsImmutableArray(busy),
                ImmutableCollectionsMarshal.AsImmutableArray(idle),
                makespan - maxBusy);
        }
        finally
        {
            ArrayPool<double>.Shared.Return(fwdDone);
            ArrayPool<double>.Shared.Return(bwdDone);
        }
    }

    private static void Enqueue(int s, int[] queue, bool[] queued, int head, ref int count)
    {
        if (queued[s])
            return;
        int tail = head + count;
        if (tail >= queue.Length)
            tail -= queue.Length;
        queue[tail] = s;
        queued[s] = true;
        count++;
    }

    // Schedules from ScheduleGenerator are ImmutableArrays: borrow their backing array (read-only use) instead of copying.
    private static PipelineAction[] ToArray(IReadOnlyList<PipelineAction> list, int stage)
    {
        switch (list)
        {
            case null:
                throw new ArgumentException($"stage {stage} has no action list.", "schedule");
            case ImmutableArray<PipelineAction> ia:
                return ImmutableCollectionsMarshal.AsArray(ia) ?? [];
            case PipelineAction[] arr:
                return arr;
            default:
                var copy = new PipelineAction[list.Count];
                for (int i = 0; i < copy.Length; i++)
                    copy[i] = list[i];
                return copy;
        }
    }

    private static string DeadlockMessage(PipelineAction[][] actions, int[] next)
    {
        var stuck = new List<string>();
        for (int s = 0; s < actions.Length && stuck.Count < 4; s++)
        {
            if (next[s] < actions[s].Length)
                stuck.Add($"stage {s} waiting at action {next[s]} {actions[s][next[s]]}");
        }
        return "pipeline schedule deadlocks: " + string.Join("; ", stuck);
    }
}
