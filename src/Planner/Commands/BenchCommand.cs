using System.CommandLine;
using System.Diagnostics;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;

namespace Planner.Cli.Commands;

/// <summary><c>bench</c>: how many plans <c>predict</c>'s pricing handles per second on one core.</summary>
public static class BenchCommand
{
    /// <summary>Creates the command.</summary>
    public static Command Create(TextWriter stdout)
    {
        var seconds = new Option<double>("--seconds") { Description = "How long to measure each case", DefaultValueFactory = _ => 2.0 };
        var search = new Option<bool>("--search") { Description = "Also time the plan search on three large cases (530B on 5,120 A100, 405B on 16,384 H100, DeepSeek-V3 on 256 GB200)" };
        var torch = new Option<bool>("--torch") { Description = "Also measure the libtorch binding: 2048x2048 fp32 matmul rate against PyTorch (same threads), and the per-call overhead of a small op" };
        var executor = new Option<bool>("--executor") { Description = "Also compare the executor's training step with an equivalent PyTorch script (one process, one thread)" };
        var cmd = new Command("bench", "Measure the pricing rate (plans priced per second, one core) and, with --search, the search time") { seconds, search, torch, executor };
        cmd.SetAction(r =>
        {
            double budget = r.GetValue(seconds);
            if (budget is <= 0 or > 600)
                throw new InputException($"--seconds: {budget} must be above 0 and at most 600");
            foreach (var (name, model, cluster, plan) in Cases())
            {
                var m = ModelLoader.Load(model);
                var c = ClusterLoader.Load(cluster);
                for (int i = 0; i < 3; i++)
                    Pricer.Price(m, c, plan); // warm up the JIT
                var watch = Stopwatch.StartNew();
                long n = 0;
                while (watch.Elapsed.TotalSeconds < budget)
                {
                    Pricer.Price(m, c, plan);
                    n++;
                }
                double rate = n / watch.Elapsed.TotalSeconds;
                stdout.WriteLine($"{name,-44} {rate,12:N0} plans/s  {1e6 / rate,10:F1} us/plan  ({plan.MicroBatches} micro-batches x {plan.Pp} stages x {plan.Vpp} chunks)");
            }
            if (r.GetValue(torch))
                TorchBench.Run(stdout, budget);
            if (r.GetValue(executor))
                ExecutorBench.Run(stdout);
            if (r.GetValue(search))
                foreach (var (name, model, cluster, gbs, seq, precision) in SearchCases())
                {
                    var req = new Search.SearchRequest(ModelLoader.Load(model), cluster, gbs, false, [seq], [precision], Top: 10);
                    Search.PlanSearch.Run(req); // warm up the JIT
                    var runs = Enumerable.Range(0, 3).Select(_ => Search.PlanSearch.Run(req)).ToList();
                    var best = runs[0].Plans[0];
                    stdout.WriteLine($"search {name,-36} {runs.Min(x => x.Seconds),6:F2} s best of 3  ({runs[0].Enumerated:N0} plans, {runs[0].Priced} priced exactly; best {Rendering.Tables.Describe(best.Plan)}, {best.StepTimeSeconds:F2} s/step)");
                }
            return Cli.Ok;
        });
        return cmd;
    }

    private static IEnumerable<(string, string, ClusterSpec, int, int, Precision)> SearchCases()
    {
        yield return ("megatron-530b on dgx-a100-80g-5120, gbs 2560", "megatron-530b", ClusterLoader.Load("dgx-a100-80g-5120"), 2560, 2048, Precision.Bf16);
        yield return ("llama3-405b on dgx-h100-16384, gbs 2048", "llama3-405b", ClusterLoader.Load("dgx-h100-16384"), 2048, 8192, Precision.Bf16);
        yield return ("deepseek-v3-nomtp on 256 gb200 (nvl72), mxfp8", "deepseek-v3-nomtp", ClusterLoader.Load("gb200-nvl72") with { Nodes = 64 }, 4096, 4096, Precision.Mxfp8);
    }

    private static IEnumerable<(string, string, string, ParallelPlan)> Cases()
    {
        yield return ("gpt3-175b TP8 PP8 DP2 mbs1 gbs1536", "gpt3-175b", "dgx-a100-80g",
            new ParallelPlan(8, 8, 2, 1, 1, 1, 1536, 2048, 1, Recompute.Selective, true, Precision.Bf16));
        yield return ("gpt3-175b TP8 PP8 VPP3 DP2 mbs1 gbs1536", "gpt3-175b", "dgx-a100-80g",
            new ParallelPlan(8, 8, 2, 1, 1, 1, 1536, 2048, 3, Recompute.Selective, true, Precision.Bf16));
        yield return ("llama3-8b TP1 PP1 DP128 ZeRO-3 mbs2 gbs512", "llama3-8b", "dgx-h100",
            new ParallelPlan(1, 1, 128, 1, 3, 2, 512, 8192, 1, Recompute.Selective, false, Precision.Bf16));
    }
}
