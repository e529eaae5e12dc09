using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Nodes;
using Planner.Cli.Rendering;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;
using Spectre.Console;

namespace Planner.Cli.Commands;

/// <summary>
/// <c>plan</c>: rank parallel plans for a model on a cluster. This first version enumerates a candidate grid
/// and prices every point; the MILP search replaces it.
/// </summary>
public static class PlanCommand
{
    /// <summary>The embedded default: GPT-3 175B on 16 DGX A100 80GB nodes, the GPT-3 paper's batch and sequence.</summary>
    public const string DefaultModel = "gpt3-175b", DefaultCluster = "dgx-a100-80g";
    /// <summary>Default global batch, sequences (GPT-3's 3.2M tokens at sequence 2048).</summary>
    public const int DefaultGbs = 1536;

    /// <summary>Creates the command.</summary>
    public static Command Create(TextWriter stdout)
    {
        var model = new Option<string>("--model") { Description = "Preset name or path to a HuggingFace config.json", DefaultValueFactory = _ => DefaultModel };
        var cluster = new Option<string>("--cluster") { Description = "Preset name or path to a cluster YAML file", DefaultValueFactory = _ => DefaultCluster };
        var gbs = new Option<int>("--gbs") { Description = "Global batch size, sequences", DefaultValueFactory = _ => DefaultGbs };
        var seq = new Option<int?>("--seq") { Description = "Sequence length (default: the model's maximum, at most 8192)" };
        var precision = new Option<string>("--precision") { Description = "Training precision", DefaultValueFactory = _ => "bf16" }.AcceptOnlyFromAmong("bf16", "fp16", "fp32", "fp8", "tf32");
        var top = new Option<int>("--top") { Description = "How many plans to show", DefaultValueFactory = _ => 10 };
        var json = new Option<bool>("--json") { Description = "Print {\"plans\": [...], \"search\": {...}}" };
        var cmd = new Command("plan", "Rank parallel plans for a model on a cluster") { model, cluster, gbs, seq, precision, top, json };
        cmd.SetAction(r =>
        {
            var m = ModelLoader.Load(r.GetValue(model)!);
            var c = ClusterLoader.Load(r.GetValue(cluster)!);
            int g = r.GetValue(gbs);
            if (g < 1)
                throw new InputException($"--gbs: {g} must be at least 1");
            int s = r.GetValue(seq) ?? PlanFlags.DefaultSeq(m);
            if (s < 1)
                throw new InputException($"--seq: {s} must be at least 1");
            int n = r.GetValue(top);
            if (n < 1)
                throw new InputException($"--top: {n} must be at least 1");
            var prec = PrecisionInfo.TryParse(r.GetValue(precision)!)!.Value;
            var watch = System.Diagnostics.Stopwatch.StartNew();
            var (ranked, evaluated) = Rank(m, c, g, s, prec);
            double seconds = watch.Elapsed.TotalSeconds;
            if (ranked.Count == 0)
                throw new InputException($"no plan of {evaluated} evaluated fits {m.Name} on {c.Name} (gbs {g}, seq {s}, {prec.Name()}) in {c.Gpu.MemoryGib} GiB per GPU");
            var best = ranked.Take(n).ToList();
            if (r.GetValue(json))
            {
                var o = new JsonObject
                {
                    ["plans"] = new JsonArray(best.Select(p =>
                    {
                        var plan = PredictionJson.Plan(p.Plan, p.Model, p.Cluster);
                        plan["prediction"] = PredictionJson.Prediction(p);
                        return (JsonNode)plan;
                    }).ToArray()),
                    ["search"] = new JsonObject { ["evaluated"] = evaluated, ["seconds"] = seconds },
                };
                stdout.WriteLine(o.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
                return Cli.Ok;
            }
            var console = Tables.Console(stdout);
            console.WriteLine($"{m.Name} ({m.TotalParams / 1e9:F1}B parameters) on {c.Name} ({c.TotalGpus} x {c.Gpu.Name}), gbs {g}, seq {s}, {prec.Name()}");
            var t = new Table().Border(TableBorder.Rounded).AddColumn("#").AddColumn("plan")
                .AddColumn(new TableColumn("step s").RightAligned()).AddColumn(new TableColumn("tokens/s").RightAligned())
                .AddColumn(new TableColumn("MFU").RightAligned()).AddColumn(new TableColumn("mem GiB").RightAligned())
                .AddColumn(new TableColumn("bubble").RightAligned()).AddColumn(new TableColumn("comm").RightAligned());
            int i = 1;
            foreach (var p in best)
            {
                var b = p.Breakdown;
                t.AddRow($"{i++}", Tables.Describe(p.Plan), $"{p.StepTimeSeconds:F2}", $"{p.TokensPerSecond:N0}", $"{p.Mfu:P1}", $"{p.PeakMemoryGib:F1}",
                    $"{b.Bubble / p.StepTimeSeconds:P0}", $"{(b.TpComm + b.PpComm + b.DpComm) / p.StepTimeSeconds:P0}");
            }
            console.Write(t);
            console.WriteLine($"evaluated {evaluated} plans in {seconds:F2} s");
            return Cli.Ok;
        });
        return cmd;
    }

    /// <summary>Prices a grid of plans on all GPUs; returns those that fit, fastest first, and how many were priced.</summary>
    public static (List<Prediction> Ranked, int Evaluated) Rank(ModelSpec m, ClusterSpec c, int gbs, int seq, Precision precision)
    {
        var fits = new List<Prediction>();
        int evaluated = 0;
        int gpus = c.TotalGpus;
        for (int tp = 1; tp <= Math.Min(c.GpusPerNode, gpus); tp *= 2)
        for (int pp = 1; pp <= Math.Min(m.Layers, gpus / tp); pp++)
        {
            if (gpus % (tp * pp) != 0)
                continue;
            int dp = gpus / (tp * pp);
            foreach (int vpp in new[] { 1, 2, 4 })
            foreach (int mbs in new[] { 1, 2, 4, 8 })
            // Under flash attention (the pricing default) selective recompute saves nothing more than none does.
            foreach (var rc in new[] { Recompute.None, Recompute.Full })
            foreach (int zero in new[] { 0, 1, 3 })
            {
                var plan = new ParallelPlan(tp, pp, dp, 1, zero, mbs, gbs, seq, vpp, rc, tp > 1, precision);
                if (PlanCheck.Problem(m, c, plan) is not null)
                    continue;
                evaluated++;
                var p = Pricer.Price(m, c, plan);
                if (p.Fits)
                    fits.Add(p);
            }
        }
        fits.Sort((a, b) => a.StepTimeSeconds.CompareTo(b.StepTimeSeconds));
        return (fits, evaluated);
    }
}
