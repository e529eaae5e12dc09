using Planner.CostModel.Pipeline;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;

namespace Planner.CostModel.Trace;

/// <summary>The kinds of work a trace shows, one row (thread) each per stage.</summary>
public enum TraceLane { Compute, ParallelComm, PipelineTransfer, DataParallelComm, Optimizer }

/// <summary>One span of a traced step.</summary>
/// <param name="Stage">The pipeline stage (a process in the trace).</param>
/// <param name="Lane">What kind of work it is (a thread of the stage).</param>
/// <param name="Name">What it is: "forward mb 3 chunk 1", "send activations mb 3 chunk 1 to stage 2", ...</param>
/// <param name="Start">Seconds from the step's start.</param>
/// <param name="Duration">Seconds.</param>
/// <param name="Args">Figures shown beside it (seconds, bytes, ...).</param>
public sealed record TraceEvent(int Stage, TraceLane Lane, string Name, double Start, double Duration, IReadOnlyDictionary<string, object>? Args = null)
{
    /// <summary>Seconds from the step's start to its end.</summary>
    public double End => Start + Duration;
}

/// <summary>
/// The predicted step as events (docs/timelines.md): the pipeline simulated from the same schedule and per-pass costs
/// the price comes from, each forward and backward of each micro-batch and chunk on its stage, the share of each pass
/// that its stage spends in tensor-, context- and expert-parallel communication, the transfers between stages, then each
/// stage's exposed data-parallel communication and optimizer step after the flush. The trace spans the predicted step.
/// </summary>
public static class StepTrace
{
    /// <summary>The events of one step of <paramref name="plan"/>.</summary>
    public static IReadOnlyList<TraceEvent> Of(ModelSpec model, ClusterSpec cluster, ParallelPlan plan, PricingOptions? options = null)
    {
        options ??= PricingOptions.Default;
        var costs = PipelineCosts.Compute(model, cluster, plan, options);
        var schedule = ScheduleGenerator.Generate(plan.Pp, plan.Vpp, plan.MicroBatches);
        var events = new List<TraceEvent>();
        double[] commShare = new double[plan.Pp];
        for (int s = 0; s < plan.Pp; s++)
        {
            var part = costs.Parts[s];
            double busy = 0;
            for (int c = 0; c < plan.Vpp; c++)
                busy += (costs.Forward[s, c] + costs.Backward[s, c]) * plan.MicroBatches;
            commShare[s] = busy > 0 ? Math.Min(1, (part.TpComm + part.CpComm + part.EpComm) / busy) : 0;
        }
        double p2p = plan.Pp == 1 ? 0 : costs.P2p;
        var sim = PipelineSimulator.Simulate(schedule, (s, c, k) => k == PassKind.Forward ? costs.Forward[s, c] : costs.Backward[s, c], costs.P2p,
            (s, a, start, end) => AddPass(events, plan, s, a, start, end, commShare[s], p2p, costs.P2pBytes));
        double flush = sim.MakespanSeconds;
        for (int s = 0; s < plan.Pp; s++)
        {
            var part = costs.Parts[s];
            double optimizer = costs.OptimizerSeconds(s, plan.OptimizerOffload);
            if (part.DpTail > 0)
                events.Add(new TraceEvent(s, TraceLane.DataParallelComm, plan.Zero >= 2 ? "gradient reduce-scatter and parameter all-gather (exposed)" : "gradient all-reduce (exposed)",
                    flush, part.DpTail, new Dictionary<string, object> { ["seconds"] = part.DpTail }));
            if (optimizer > 0)
                events.Add(new TraceEvent(s, TraceLane.Optimizer, "optimizer step", flush + part.DpTail, optimizer, new Dictionary<string, object> { ["seconds"] = optimizer }));
        }
        return events;
    }

    /// <summary>The seconds from the first event's start to the last event's end.</summary>
    public static double Span(IReadOnlyList<TraceEvent> events) => events.Count == 0 ? 0 : events.Max(e => e.End) - Math.Min(0, events.Min(e => e.Start));

    private static void AddPass(List<TraceEvent> events, ParallelPlan plan, int stage, PipelineAction a, double start, double end, double commShare, double p2p,
        double p2pBytes)
    {
        string pass = a.Kind == PassKind.Forward ? "forward" : "backward";
        string what = $"mb {a.MicroBatch} chunk {a.Chunk}";
        double d = end - start;
        events.Add(new TraceEvent(stage, TraceLane.Compute, $"{pass} {what}", start, d,
            new Dictionary<string, object> { ["micro_batch"] = a.MicroBatch, ["chunk"] = a.Chunk, ["seconds"] = d }));
        if (commShare > 0 && d > 0)
            events.Add(new TraceEvent(stage, TraceLane.ParallelComm, $"TP/CP/EP collectives of {pass} {what}", end - d * commShare, d * commShare,
                new Dictionary<string, object> { ["seconds"] = d * commShare, ["share_of_pass"] = commShare }));
        // The pass's output goes to the next virtual stage (forward) or the one before (backward), when that is another GPU.
        int v = a.Chunk * plan.Pp + stage, last = plan.Pp * plan.Vpp - 1;
        bool sends = a.Kind == PassKind.Forward ? v < last : v > 0;
        if (sends && p2p > 0)
        {
            int to = a.Kind == PassKind.Forward ? (stage + 1) % plan.Pp : (stage + plan.Pp - 1) % plan.Pp;
            string tensor = a.Kind == PassKind.Forward ? "activations" : "gradients";
            events.Add(new TraceEvent(stage, TraceLane.PipelineTransfer, $"send {tensor} {what} to stage {to}", end, p2p,
                new Dictionary<string, object> { ["seconds"] = p2p, ["bytes_per_gpu"] = p2pBytes }));
        }
    }
}
