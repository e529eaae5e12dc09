using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Nodes;
using Planner.Cli.Rendering;
using Planner.Cli.Search;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;
using Planner.CostModel.Training;
using Spectre.Console;

namespace Planner.Cli.Commands;

/// <summary><c>plan</c>: the fastest (or cheapest) plans of a model on a cluster, found by an exact bounded search.</summary>
public static class PlanCommand
{
    /// <summary>The embedded default: GPT-3 175B on 16 DGX A100 80GB nodes.</summary>
    public const string DefaultModel = "gpt3-175b", DefaultCluster = "dgx-a100-80g";
    /// <summary>Default global batch, sequences (GPT-3's 3.2M tokens at sequence 2048).</summary>
    public const int DefaultGbs = 1536;

    /// <summary>Creates the command.</summary>
    /// <remarks>Long: the verb's options declared beside the handler that reads them, as System.CommandLine builds a verb.</remarks>
    public static Command Create(TextWriter stdout)
    {
        var model = new Option<string>("--model") { Description = "Preset name or path to a HuggingFace config.json", DefaultValueFactory = _ => DefaultModel };
        var cluster = new Option<string>("--cluster") { Description = "Preset name or path to a cluster YAML file", DefaultValueFactory = _ => DefaultCluster };
        var gbs = new Option<int?>("--gbs") { Description = $"Global batch size, sequences (default {DefaultGbs})" };
        var gbsMax = new Option<int?>("--gbs-max") { Description = "Largest global batch: each plan takes the largest multiple of dp·mbs up to it" };
        var seq = new Option<string?>("--seq") { Description = "Sequence length, or a comma-separated set to choose from (default: the model's, at most 8192)" };
        var precision = new Option<string>("--precision") { Description = "Precision, or a comma-separated set to choose from (bf16, fp16, fp32, tf32, fp8, fp8-cs, mxfp8, nvfp4)", DefaultValueFactory = _ => "bf16" };
        var allowIdle = new Option<bool>("--allow-idle") { Description = "Let plans leave whole nodes idle when that factorises better" };
        var tpMax = new Option<int?>("--tp-max") { Description = "Largest TP degree (default: the GPUs of an NVLink domain, a node unless the cluster sets nvlink_domain)" };
        var objective = new Option<string>("--objective") { Description = "Rank by throughput (tokens/s), cost (needs price_per_gpu_hour), or with --tokens by the whole run's time, energy or carbon", DefaultValueFactory = _ => "throughput" }.AcceptOnlyFromAmong(PlanTraining.Objectives);
        var tokens = new Option<double?>("--tokens") { Description = "Token budget: report the time (and cost) to train it, and the whole run as 'training'" };
        var training = new TrainingFlags();
        var top = new Option<int>("--top") { Description = "How many plans to show", DefaultValueFactory = _ => 10 };
        var json = new Option<bool>("--json") { Description = "Print {\"plans\": [...], \"search\": {...}}" };
        var outFile = new Option<string?>("--out") { Description = "Write the best plan (with its prediction) to this JSON file for run and export" };
        var force = new Option<bool>("--force") { Description = "Overwrite the --out, --trace and --timeline files if they exist" };
        var trace = new TraceFlags();
        var calibration = new Option<string?>("--calibration") { Description = "Calibration file from profile (default: the cluster's own, if profiled)" };
        var forceCalibration = new Option<bool>("--force-calibration") { Description = "Use a calibration measured on other hardware" };
        var stack = PlanFlags.StackOption();
        var headroomOption = PlanFlags.MemoryHeadroomOption();
        var finetune = new Option<string?>("--finetune") { Description = "Fine-tuning methods to consider, comma-separated: full, lora, qlora (default full)" };
        var loraRank = new Option<int?>("--lora-rank") { Description = $"LoRA's rank r (default {FineTuning.DefaultRank})" };
        var loraTargets = new Option<string?>("--lora-targets") { Description = $"The linear layers LoRA adapts: {FineTuning.TargetNames} (default all)" };
        var optimizer = new Option<string?>("--optimizer") { Description = $"Optimizers to consider, comma-separated: {FineTuning.OptimizerNames} (default adamw)" };
        var allVariants = new Option<bool>("--all-variants") { Description = "List every configuration of a parallel shape (ZeRO stage, micro-batch, interleaving, recompute), not only the best of each shape" };
        var cmd = new Command("plan", "Find the fastest parallel plans for a model on a cluster")
            { model, cluster, stack, headroomOption, gbs, gbsMax, seq, precision, allowIdle, tpMax, objective, tokens, top, json, outFile, force, calibration, forceCalibration, allVariants, finetune, loraRank, loraTargets, optimizer };
        training.AddTo(cmd);
        trace.AddTo(cmd);
        cmd.SetAction(r =>
        {
            var m = ModelLoader.Load(r.GetValue(model)!);
            var c = Profiling.CalibrationFile.Apply(ClusterLoader.Load(r.GetValue(cluster)!), r.GetValue(calibration), r.GetValue(forceCalibration));
            var software = StackLoader.Options(r.GetValue(stack)!);
            double headroom = PlanFlags.ReadHeadroom(r, headroomOption);
            if (r.GetValue(gbs) is not null && r.GetValue(gbsMax) is not null)
                throw new InputException("--gbs and --gbs-max: give one of them");
            int batch = r.GetValue(gbsMax) ?? r.GetValue(gbs) ?? DefaultGbs;
            if (batch < 1 || batch > 100_000_000)
                throw new InputException($"{(r.GetValue(gbsMax) is null ? "--gbs" : "--gbs-max")}: {batch} must be a whole number from 1 to 100000000");
            var seqs = ParseList<int>(r.GetValue(seq), "--seq", s => int.TryParse(s, out int v) && v is >= 1 and <= 10_000_000 ? v : (int?)null)
                       ?? [PlanFlags.DefaultSeq(m)];
            var precisions = ParseList(r.GetValue(precision), "--precision", PrecisionInfo.TryParse)!;
            foreach (var p in precisions)
                if (!c.Gpu.Supports(p))
                    throw new InputException($"--precision: GPU '{c.Gpu.Name}' has no {p.Name()} rate");
            int n = r.GetValue(top);
            if (n is < 1 or > 1000)
                throw new InputException($"--top: {n} must be from 1 to 1000");
            if (r.GetValue(tpMax) is int t && t < 1)
                throw new InputException($"--tp-max: {t} must be at least 1");
            double? budget = r.GetValue(tokens);
            if (budget is <= 0)
                throw new InputException($"--tokens: {budget} must be positive");
            var run = training.Read(r, budget);
            string goal = r.GetValue(objective)!;
            PlanTraining.Check(goal, run);
            string? outPath = r.GetValue(outFile);
            if (outPath is not null && File.Exists(outPath) && !r.GetValue(force))
                throw new InputException($"--out: '{outPath}' exists; pass --force to overwrite it");
            var tracePaths = trace.Read(r, r.GetValue(force));
            // The search sees each GPU's memory less the headroom; the plans it returns are shown on the whole GPU.
            var request = new SearchRequest(m, c.WithMemoryHeadroom(headroom), batch, r.GetValue(gbsMax) is not null, seqs, precisions,
                r.GetValue(allowIdle), r.GetValue(tpMax),
                PlanTraining.SearchObjective(goal), PlanTraining.SearchTop(goal, run, n), Options: software, AllVariants: r.GetValue(allVariants),
                Tunings: Tunings(r.GetValue(finetune), r.GetValue(loraRank), r.GetValue(loraTargets), r.GetValue(optimizer)));
            var result = PlanSearch.Run(request);
            if (result.Plans.Count == 0)
                throw new InputException(Infeasibility.Explain(request, result) + (headroom > 0 ? $" (with --memory-headroom {headroom}: {c.Gpu.MemoryGib * (1 - headroom):F1} of {c.Gpu.MemoryGib:F0} GiB usable)" : ""));
            var (plans, runs) = PlanTraining.Rank(result.Plans.Select(p => Pricer.Price(m, c, p.Plan, software)).ToList(), goal, run, c,
                p => Pricer.Price(m, c, p, software), n);
            result = result with { Plans = plans };
            if (outPath is not null)
                File.WriteAllText(outPath, PlanJson(result.Plans[0]).ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
            TraceFlags.Write(tracePaths, m, c, result.Plans[0], software);
            if (r.GetValue(json))
            {
                var o = new JsonObject
                {
                    ["plans"] = new JsonArray(result.Plans.Select((p, i) => (JsonNode)PlanJson(p, budget, c, runs[i])).ToArray()),
                    ["search"] = new JsonObject
                    {
                        ["evaluated"] = result.Enumerated,
                        ["bounded"] = result.Bounded,
                        ["priced"] = result.Priced,
                        ["seconds"] = result.Seconds,
                    },
                };
                stdout.WriteLine(o.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
                return Cli.Ok;
            }
            Render(stdout, request, result, budget, headroom);
            if (runs[0] is { } first)
                stdout.WriteLine($"#1 {TrainingJson.Line(first)}");
            if (outPath is not null)
                stdout.WriteLine($"best plan written to {outPath}");
            return Cli.Ok;
        });
        return cmd;
    }

    /// <summary>The plan object of CONTRACTS with its prediction (and the time/cost to train a budget).</summary>
    public static JsonObject PlanJson(Prediction p, double? tokens = null, ClusterSpec? cluster = null, TrainingRun? run = null)
    {
        var plan = PredictionJson.Plan(p.Plan, p.Model, p.Cluster, p.Stack);
        var prediction = PredictionJson.Prediction(p);
        if (tokens is double t)
        {
            double seconds = t / p.TokensPerSecond;
            prediction["time_to_train_days"] = seconds / 86400;
            if (cluster?.PricePerGpuHour is double price)
                prediction["cost_to_train"] = seconds / 3600 * p.Plan.Gpus * price;
        }
        plan["prediction"] = prediction;
        if (run is not null)
            plan["training"] = TrainingJson.Of(run);
        return plan;
    }

    private static void Render(TextWriter stdout, SearchRequest req, SearchResult result, double? tokens, double headroom)
    {
        var m = req.Model;
        var c = req.Cluster;
        var console = Tables.Console(stdout);
        console.WriteLine($"{m.Name} ({m.TotalParams / 1e9:F1}B parameters) on {c.Name} ({c.TotalGpus} x {c.Gpu.Name}), " +
                          $"{(req.GbsIsMaximum ? "gbs up to " : "gbs ")}{req.Gbs}, seq {string.Join("/", req.Seqs)}, {string.Join("/", req.Precisions.Select(p => p.Name()))}, " +
                          $"stack {(req.Options ?? PricingOptions.Default).Stack}, memory headroom {headroom:P0}");
        var t = new Table().Border(TableBorder.Rounded).AddColumn("#").AddColumn("plan")
            .AddColumn(new TableColumn("step s").RightAligned()).AddColumn(new TableColumn("tokens/s").RightAligned())
            .AddColumn(new TableColumn("MFU").RightAligned()).AddColumn(new TableColumn("mem GiB").RightAligned())
            .AddColumn(new TableColumn("compute").RightAligned()).AddColumn(new TableColumn("recomp").RightAligned())
            .AddColumn(new TableColumn("tp/cp").RightAligned());
        if (m.IsMoe)
            t.AddColumn(new TableColumn("ep").RightAligned());
        t.AddColumn(new TableColumn("pp").RightAligned())
            .AddColumn(new TableColumn("dp").RightAligned()).AddColumn(new TableColumn("bubble").RightAligned());
        if (tokens is not null)
            t.AddColumn(new TableColumn("days").RightAligned());
        int i = 1;
        foreach (var p in result.Plans)
        {
            var b = p.Breakdown;
            string Share(double v) => $"{v / p.StepTimeSeconds:P0}";
            var row = new List<string>
            {
                $"{i++}", Tables.Describe(p.Plan) + (req.GbsIsMaximum ? $" gbs{p.Plan.Gbs}" : "") + (req.Seqs.Count > 1 ? $" seq{p.Plan.Seq}" : ""),
                $"{p.StepTimeSeconds:F2}", $"{p.TokensPerSecond:N0}", $"{p.Mfu:P1}", $"{p.PeakMemoryGib:F1}",
                Share(b.Compute), Share(b.Recompute), Share(b.TpComm + b.CpComm),
            };
            if (m.IsMoe)
                row.Add(Share(b.EpComm));
            row.AddRange([Share(b.PpComm), Share(b.DpComm), Share(b.Bubble)]);
            if (tokens is double budget)
                row.Add($"{budget / p.TokensPerSecond / 86400:F1}");
            t.AddRow(row.ToArray());
        }
        console.Write(t);
        if (result.Plans.Count > 1)
            console.WriteLine(WhyBest(result.Plans[0], result.Plans[1]));
        console.WriteLine($"searched {result.Enumerated:N0} plans ({result.Bounded:N0} bounded, {result.Priced} priced exactly) in {result.Seconds:F2} s");
    }

    /// <summary>One sentence on why the best plan beats the runner-up: the parts of the step that differ most.</summary>
    public static string WhyBest(Prediction best, Prediction second)
    {
        var a = best.Breakdown;
        var b = second.Breakdown;
        var diffs = new[]
        {
            ("compute", b.Compute - a.Compute), ("recompute", b.Recompute - a.Recompute), ("TP communication", b.TpComm - a.TpComm),
            ("CP communication", b.CpComm - a.CpComm), ("EP communication", b.EpComm - a.EpComm),
            ("pipeline transfers", b.PpComm - a.PpComm), ("data-parallel communication", b.DpComm - a.DpComm),
            ("pipeline bubble", b.Bubble - a.Bubble), ("optimizer", b.Optimizer - a.Optimizer),
        }.OrderByDescending(d => Math.Abs(d.Item2)).Take(2).ToList();
        double gain = (second.StepTimeSeconds / best.StepTimeSeconds - 1) * 100;
        if (Math.Abs(gain) < 0.05)
            return $"#1 and #2 ({Tables.Describe(second.Plan)}) tie on speed ({best.PeakMemoryGib:F1} and {second.PeakMemoryGib:F1} GiB per GPU).";
        string parts = string.Join(", ", diffs.Select(d => $"{d.Item1} {(d.Item2 >= 0 ? "-" : "+")}{Math.Abs(d.Item2):F2} s"));
        return $"#1 is {gain:F1}% faster per token than #2 ({Tables.Describe(second.Plan)}); #1 against #2: {parts}.";
    }

    /// <summary>Every combination of the methods and optimizers listed (with the one rank and target set); null when no
    /// fine-tuning flag is given. A bad value is an <see cref="InputException"/> naming its flag.</summary>
    private static List<FineTuning>? Tunings(string? methods, int? rank, string? targets, string? optimizers)
    {
        if (methods is null && rank is null && targets is null && optimizers is null)
            return null;
        var methodList = ParseList(methods, "--finetune", FineTuning.ParseMethod) ?? [FineTuneMethod.Full];
        var optimizerList = ParseList(optimizers, "--optimizer", FineTuning.ParseOptimizer) ?? [OptimizerKind.AdamW];
        var targetSet = targets is null ? LoraTargets.All
            : FineTuning.ParseTargets(targets) ?? throw new InputException($"--lora-targets: '{targets}' is not {FineTuning.TargetNames}");
        if (rank is < 1)
            throw new InputException($"--lora-rank: {rank} must be at least 1");
        return [.. from m in methodList from o in optimizerList select new FineTuning(m, rank ?? FineTuning.DefaultRank, targetSet, o)];
    }

    private static List<T>? ParseList<T>(string? text, string flag, Func<string, T?> parse) where T : struct
    {
        if (string.IsNullOrWhiteSpace(text))
            return null;
        var list = new List<T>();
        foreach (var item in text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
            list.Add(parse(item) ?? throw new InputException($"{flag}: '{item}' is not a valid value"));
        if (list.Count == 0)
            throw new InputException($"{flag}: no value given");
        return list.Distinct().ToList();
    }
}
