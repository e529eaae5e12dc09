using System.Text.Json.Nodes;
using Xunit;
using Planner.CostModel.Pipeline;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;
using Planner.CostModel.Trace;

namespace Planner.CostModel.Tests;

/// <summary>The predicted step as a trace (docs/timelines.md): it spans the priced step, each stage runs the schedule
/// generator's actions in its order without overlap, and the Chrome document names every stage and lane.</summary>
public class StepTraceTests
{
    private static readonly ModelSpec Model = ModelLoader.Load("llama2-7b");
    private static readonly ClusterSpec Cluster = ClusterLoader.Load("dgx-h100");

    public static TheoryData<int, int, int, int, int> Plans => new()
    {
        // tp, pp, vpp, mbs, zero
        { 1, 1, 1, 1, 1 },
        { 2, 4, 2, 1, 1 },
        { 4, 2, 1, 2, 3 },
        { 2, 8, 1, 1, 2 },
    };

    private static ParallelPlan Plan(int tp, int pp, int vpp, int mbs, int zero) =>
        new(tp, pp, 128 / (tp * pp), 1, zero, mbs, 256, 4096, vpp, Recompute.Selective, tp > 1, Precision.Bf16);

    [Theory]
    [MemberData(nameof(Plans))]
    public void TraceSpansThePricedStep(int tp, int pp, int vpp, int mbs, int zero)
    {
        var plan = Plan(tp, pp, vpp, mbs, zero);
        var events = StepTrace.Of(Model, Cluster, plan);
        Assert.Equal(Pricer.Price(Model, Cluster, plan).StepTimeSeconds, StepTrace.Span(events), 9);
        Assert.All(events, e => Assert.True(e.Start >= 0 && e.Duration >= 0, e.Name));
    }

    [Theory]
    [MemberData(nameof(Plans))]
    public void EachStageRunsTheSchedulesActionsInOrderWithoutOverlap(int tp, int pp, int vpp, int mbs, int zero)
    {
        var plan = Plan(tp, pp, vpp, mbs, zero);
        var events = StepTrace.Of(Model, Cluster, plan);
        var schedule = ScheduleGenerator.Generate(plan.Pp, plan.Vpp, plan.MicroBatches);
        for (int s = 0; s < plan.Pp; s++)
        {
            var compute = events.Where(e => e.Stage == s && e.Lane == TraceLane.Compute).OrderBy(e => e.Start).ToList();
            var expected = schedule.Stages[s].Select(a => $"{(a.Kind == PassKind.Forward ? "forward" : "backward")} mb {a.MicroBatch} chunk {a.Chunk}");
            Assert.Equal(expected, compute.Select(e => e.Name));
            for (int i = 1; i < compute.Count; i++)
                Assert.True(compute[i].Start >= compute[i - 1].End - 1e-12, $"stage {s}: {compute[i].Name} starts before {compute[i - 1].Name} ends");
        }
    }

    [Fact]
    public void ChromeDocumentNamesEveryStageAndLane()
    {
        var plan = Plan(2, 4, 2, 1, 1);
        var events = StepTrace.Of(Model, Cluster, plan);
        var doc = JsonNode.Parse(ChromeTrace.Of(events, s => $"stage {s}").ToJsonString())!;
        var list = doc["traceEvents"]!.AsArray();
        var names = list.Where(e => (string?)e!["name"] == "process_name").Select(e => (string?)e!["args"]!["name"]).ToList();
        Assert.Equal(Enumerable.Range(0, 4).Select(s => $"stage {s}"), names);
        Assert.Contains(list, e => (string?)e!["name"] == "thread_name" && (string?)e["args"]!["name"] == ChromeTrace.LaneName(TraceLane.DataParallelComm));
        var complete = list.Where(e => (string?)e!["ph"] == "X").ToList();
        Assert.Equal(events.Count, complete.Count);
        // A transfer carries one micro-batch's activations, split over the stage's 2 tensor-parallel ranks:
        // mbs 1 × seq 4096 × hidden 4096 × 2 bytes / 2.
        var send = complete.First(e => ((string)e!["name"]!).StartsWith("send activations", StringComparison.Ordinal));
        Assert.Equal(1.0 * 4096 * 4096 * 2 / 2, (double)send!["args"]!["bytes_per_gpu"]!);
        double end = complete.Max(e => (double)e!["ts"]! + (double)e!["dur"]!);
        Assert.Equal(Pricer.Price(Model, Cluster, plan).StepTimeSeconds * 1e6, end, 3);
    }
}
