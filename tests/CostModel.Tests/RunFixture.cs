using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;
using Planner.CostModel.Training;

namespace Planner.CostModel.Tests;

/// <summary>The whole-run tests' model, plan and cluster: Llama 2 7B at TP2 PP2 DP32 on 16 nodes of A100 (or of
/// another GPU), gbs 512 × 4,096.</summary>
internal static class RunFixture
{
    public static readonly ModelSpec Model = ModelLoader.Load("llama2-7b");
    public static readonly ParallelPlan Plan = new(2, 2, 32, 1, 1, 1, 512, 4096, 1, Recompute.None, true, Precision.Bf16);

    /// <summary>The cluster, with <paramref name="extra"/> YAML lines appended.</summary>
    public static ClusterSpec Cluster(string extra = "", string gpu = "a100-80g", double intraGbs = 300, double interGbs = 25) => ClusterLoader.Parse(
        $"name: t\ngpu: {gpu}\nnodes: 16\ngpus_per_node: 8\nintra_node: {{bandwidth_gbs: {intraGbs}, latency_us: 3}}\n" +
        $"inter_node: {{bandwidth_gbs: {interGbs}, latency_us: 6}}\n" + extra, "t.yaml");

    /// <summary>The plan's whole run on <paramref name="c"/>.</summary>
    public static TrainingRun Run(ClusterSpec c, TrainingRequest req) =>
        TrainingEstimate.Estimate(Pricer.Price(Model, c, Plan), c, req, q => Pricer.Price(Model, c, q));
}
