using System.Text.Json;
using System.Text.Json.Nodes;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;
using Spectre.Console;

namespace Planner.Cli.Commands;

/// <summary>run's report: the steps measured (the slowest rank's time, the last stage's loss) against the prediction,
/// as tables or JSON.</summary>
public static partial class RunCommand
{
    private static JsonNode? Num(double v) => double.IsNaN(v) ? null : v;

    private static (double Step, double Memory, Prediction? Predicted) Report(TextWriter stdout, RunInputs inputs, List<JsonObject> lines, int warmup, bool json, RunArguments args,
        IReadOnlyList<string> failures)
    {
        var plan = inputs.Plan;
        int first = args.FirstStep, steps = args.Steps, last = first + steps - 1;
        // Per step: the slowest rank's time, and the loss the last stage reported.
        var perStep = Enumerable.Range(first, steps).Select(s =>
        {
            var rows = lines.Where(l => (int)l["step"]! == s).ToList();
            double seconds = rows.Max(l => (double)l["seconds"]!);
            double? loss = rows.Select(l => (double?)l["loss"]).FirstOrDefault(v => v is not null);
            return (Step: s, Seconds: seconds, Loss: loss);
        }).ToList();
        double median = Profiling.Fitting.Median(perStep.Skip(warmup).Select(x => x.Seconds));
        var peakByRank = lines.GroupBy(l => (int)l["rank"]!).OrderBy(g => g.Key)
            .Select(g => g.Max(l => (long)l["peak_memory_bytes"]!) / Units.GiB).ToList();
        double peak = peakByRank.Max();
        var lastLine = lines.Last(l => (int)l["step"]! == last);
        double? lossScale = (double?)lastLine["loss_scale"];
        int skipped = (int)lastLine["skipped_steps"]!;
        double tokensPerS = (double)plan.Gbs * plan.Seq / median;
        Prediction? predicted = null;
        if (inputs.Cluster is not null && PlanCheck.Problem(inputs.Model, inputs.Cluster, plan) is null)
            predicted = Pricer.Price(inputs.Model, inputs.Cluster, plan, ExecutorSoftware.Options);
        double? stepError = predicted is null ? null : (predicted.StepTimeSeconds - median) / median * 100;
        // Measured components: each rank's timers, averaged over ranks and the steps after warm-up.
        var timedLines = lines.Where(l => (int)l["step"]! >= first + warmup).ToList();
        // The prediction's breakdown is its busiest pipeline stage's: compared with the ranks of the stage whose
        // measured compute is the largest (every rank when there is one stage), not with a mean over stages.
        var layout = new Planner.Executor.Distributed.ProcessGroupLayout(plan);
        int busiestStage = BusiestStage(plan, timedLines);
        var stageLines = timedLines.Where(l => layout.Coordinates((int)l["rank"]!).Pp == busiestStage).ToList();
        double Part(string key) => stageLines.Count == 0 || stageLines.Any(l => l[key] is null) ? double.NaN : stageLines.Average(l => (double)l[key]!);
        var parts = new (string Name, double Measured, double? Predicted)[]
        {
            ("compute (incl. recompute)", Part("compute_s"), predicted is null ? null : predicted.Breakdown.Compute + predicted.Breakdown.Recompute),
            ("tensor-parallel communication", Part("tp_comm_s"), predicted?.Breakdown.TpComm),
            ("pipeline waits (bubble, transfers)", Part("pp_wait_s"), predicted is null ? null : predicted.Breakdown.Bubble + predicted.Breakdown.PpComm),
            ("data-parallel communication", Part("dp_comm_s"), predicted?.Breakdown.DpComm),
            ("optimizer", Part("optimizer_s"), predicted?.Breakdown.Optimizer),
            ("context-parallel communication", Part("cp_comm_s"), predicted?.Breakdown.CpComm),
            ("expert-parallel communication", Part("ep_comm_s"), predicted?.Breakdown.EpComm),
        };
        double? memError = predicted is null ? null : (predicted.PeakMemoryGib - peak) / peak * 100;
        var run = new RunSummary(plan, perStep, median, tokensPerS, peakByRank, peak, lossScale, skipped, predicted, stepError, memError, busiestStage, parts,
            RoutingReport.MoeImbalance(plan, timedLines), failures);
        if (json)
            WriteJson(stdout, inputs, run, lines, timedLines, first, last);
        else
            WriteTables(stdout, inputs, run);
        return (median, peak, predicted);
    }

    /// <summary>What a run measured (the slowest rank's step times after warm-up, peak memory, the busiest stage's
    /// components) against its prediction (null: none), as its report prints it.</summary>
    private sealed record RunSummary(ParallelPlan Plan, List<(int Step, double Seconds, double? Loss)> PerStep, double Median, double TokensPerS,
        List<double> PeakByRank, double Peak, double? LossScale, int Skipped, Prediction? Predicted, double? StepError, double? MemError,
        int BusiestStage, (string Name, double Measured, double? Predicted)[] Parts, double? MoeImbalance, IReadOnlyList<string> Failures);

    /// <summary>A mixture-of-experts model's load-balancing loss per step (its blocks' summed, without the coefficient):
    /// each stage's averaged over its ranks (data-parallel replicas differ), summed over the stages; null for a dense model.</summary>
    private static JsonArray? AuxLosses(List<JsonObject> lines, int first, int last)
    {
        if (lines.All(l => l["aux_loss"] is null))
            return null;
        return new JsonArray(Enumerable.Range(first, last - first + 1).Select(s => (JsonNode)lines.Where(l => (int)l["step"]! == s)
            .GroupBy(l => (int)l["stage"]!).Sum(g => g.Average(l => (double)l["aux_loss"]!))).ToArray());
    }

    /// <summary>The report as one JSON object; <paramref name="timedLines"/>: the ranks' lines after warm-up.</summary>
    /// <param name="first">The first step's number (a resumed run's checkpoint's steps), <paramref name="last"/> the last's.</param>
    private static void WriteJson(TextWriter stdout, RunInputs inputs, RunSummary run, List<JsonObject> lines, List<JsonObject> timedLines, int first, int last)
    {
        // What the parameters (and ZeRO's master shard) hold after the last step, per rank: ZeRO-3's sharding shows here.
        JsonArray LastStepByRank(string key) => new(lines.GroupBy(l => (int)l["rank"]!).OrderBy(g => g.Key)
            .Select(g => g.Last(l => (int)l["step"]! == last)[key]!.DeepClone()).ToArray());
        var o = new JsonObject
        {
            ["plan"] = PredictionJson.Plan(run.Plan, inputs.Model.Source ?? inputs.Model.Name, inputs.ClusterName, inputs.PlanStack),
            ["predicted"] = run.Predicted is null ? null : PredictionJson.Prediction(run.Predicted),
            ["measured"] = new JsonObject
            {
                ["first_step"] = first,
                // Seconds writing checkpoints (the slowest rank's, all of them), null without --checkpoint-dir.
                ["checkpoint_s"] = lines.Any(l => l["checkpoint_s"] is not null)
                    ? lines.GroupBy(l => (int)l["rank"]!).Max(g => g.Sum(l => (double?)l["checkpoint_s"] ?? 0)) : null,
                ["step_time_s"] = run.Median,
                ["tokens_per_s"] = run.TokensPerS,
                ["peak_memory_gib"] = run.Peak,
                ["peak_memory_gib_by_rank"] = new JsonArray(run.PeakByRank.Select(v => (JsonNode)v).ToArray()),
                // Each stage's trainable parameters counted whole, summed over the stages: what the model trains.
                ["trainable_parameters"] = lines.Where(l => (int)l["step"]! == first).GroupBy(l => (int)l["stage"]!)
                    .Sum(g => (long)g.First()["trainable_parameters"]!),
                ["parameter_bytes_by_rank"] = LastStepByRank("parameter_bytes"),
                // The optimizer's state tensors (moments, momentum), without ZeRO's master shard (in parameter_bytes).
                ["optimizer_state_bytes_by_rank"] = LastStepByRank("optimizer_state_bytes"),
                ["overlapped_reduces_by_rank"] = LastStepByRank("overlapped_reduces"),
                ["gradient_bytes_by_rank"] = LastStepByRank("gradient_bytes"),
                ["compute_s_by_rank"] = new JsonArray(timedLines.GroupBy(l => (int)l["rank"]!).OrderBy(g => g.Key)
                    .Select(g => (JsonNode)Profiling.Fitting.Median(g.Select(l => (double)l["compute_s"]!))).ToArray()),
                ["loss_scale"] = run.LossScale,
                ["skipped_steps"] = run.Skipped,
                ["loss"] = new JsonArray(run.PerStep.Select(x => (JsonNode?)x.Loss).ToArray()),
                ["aux_loss"] = AuxLosses(lines, first, last),
                // The router's spread over the experts as the plan key moe_imbalance prices it (null: dense model).
                ["moe_imbalance"] = run.MoeImbalance,
                ["step_times_s"] = new JsonArray(run.PerStep.Select(x => (JsonNode)x.Seconds).ToArray()),
                // --max-restarts: how often every rank was started again, and the line of each failure that caused it.
                ["restarts"] = run.Failures.Count,
                ["failures"] = new JsonArray(run.Failures.Select(f => (JsonNode)f).ToArray()),
                ["breakdown_stage"] = run.BusiestStage,
                ["breakdown"] = new JsonObject
                {
                    ["compute"] = Num(run.Parts[0].Measured),
                    ["tp_comm"] = Num(run.Parts[1].Measured),
                    ["pp_wait"] = Num(run.Parts[2].Measured),
                    ["dp_comm"] = Num(run.Parts[3].Measured),
                    ["optimizer"] = Num(run.Parts[4].Measured),
                    ["cp_comm"] = Num(run.Parts[5].Measured),
                    ["ep_comm"] = Num(run.Parts[6].Measured),
                },
            },
            ["error_pct"] = new JsonObject { ["step_time"] = run.StepError, ["peak_memory"] = run.MemError },
        };
        stdout.WriteLine(o.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    /// <summary>The report as tables: the steps, then the measured against the predicted.</summary>
    private static void WriteTables(TextWriter stdout, RunInputs inputs, RunSummary run)
    {
        var console = Rendering.Tables.Console(stdout);
        console.WriteLine($"{inputs.Model.Name}: {Rendering.Tables.Describe(run.Plan)}, gbs {run.Plan.Gbs}, seq {run.Plan.Seq}, {run.Plan.Gpus} ranks");
        if (inputs.PlanStack != PricingOptions.ExecutorStack)
            console.WriteLine($"the plan was priced for stack {inputs.PlanStack}; this run is the executor's and is predicted as stack {PricingOptions.ExecutorStack}");
        var t = new Table().Border(TableBorder.Rounded).AddColumn("step").AddColumn(new TableColumn("loss").RightAligned()).AddColumn(new TableColumn("seconds").RightAligned());
        foreach (var x in run.PerStep)
            t.AddRow(x.Step.ToString(), x.Loss is double l ? $"{l:F5}" : "-", $"{x.Seconds:F3}");
        console.Write(t);
        var s = new Table().Border(TableBorder.Rounded).AddColumn("").AddColumn(new TableColumn("measured").RightAligned()).AddColumn(new TableColumn("predicted").RightAligned()).AddColumn(new TableColumn("error").RightAligned());
        s.AddRow("step time (median after warm-up)", $"{run.Median:F3} s", run.Predicted is null ? "-" : $"{run.Predicted.StepTimeSeconds:F3} s", run.StepError is double e1 ? $"{e1:+0.0;-0.0}%" : "-");
        s.AddRow("tokens/s", $"{run.TokensPerS:N0}", run.Predicted is null ? "-" : $"{run.Predicted.TokensPerSecond:N0}", "");
        s.AddRow("peak memory per rank", $"{run.Peak:F2} GiB", run.Predicted is null ? "-" : $"{run.Predicted.PeakMemoryGib:F2} GiB", run.MemError is double e2 ? $"{e2:+0.0;-0.0}%" : "-");
        foreach (var (name, measuredPart, predictedPart) in run.Parts)
            if (!double.IsNaN(measuredPart))
                s.AddRow($"  {name} (s per step, {(run.Plan.Pp > 1 ? $"stage {run.BusiestStage}, the busiest" : "rank mean")})", $"{measuredPart:F3}", predictedPart is double pp ? $"{pp:F3}" : "-", "");
        console.Write(s);
        if (run.MoeImbalance is double imbalance)
            console.WriteLine($"routing: the busiest expert took {imbalance:F2}x the mean rows" + (run.Predicted is null ? "" : Math.Abs(imbalance - run.Plan.MoeImbalance) < 0.005
                ? $" (priced at the plan's moe_imbalance {run.Plan.MoeImbalance:F2})"
                : $" (priced at the plan's moe_imbalance {run.Plan.MoeImbalance:F2}; the plan key prices the measured spread)"));
        if (run.Failures.Count > 0)
            console.WriteLine($"restarted every rank {run.Failures.Count} time(s) after: {string.Join("; ", run.Failures)}");
        if (run.Predicted is null)
            console.WriteLine($"no prediction: cluster '{inputs.ClusterName}' could not be loaded or does not fit the plan");
    }
}
