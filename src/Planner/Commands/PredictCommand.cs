using System.CommandLine;
using System.Text.Json;
using Planner.Cli.Rendering;
using Planner.CostModel.Pricing;
using Planner.CostModel.Training;

namespace Planner.Cli.Commands;

/// <summary><c>predict</c>: price one plan given by flags.</summary>
public static class PredictCommand
{
    /// <summary>Creates the command.</summary>
    public static Command Create(TextWriter stdout)
    {
        var flags = new PlanFlags();
        var json = new Option<bool>("--json") { Description = "Print one JSON object (CONTRACTS.md keys)" };
        var tokens = new Option<double?>("--tokens") { Description = "Token budget: add the whole run (days, GPU-hours, cost, energy, CO2, checkpoints, failures) as 'training'" };
        var training = new TrainingFlags();
        var trace = new TraceFlags();
        var force = new Option<bool>("--force") { Description = "Overwrite the --trace and --timeline files if they exist" };
        var cmd = new Command("predict", "Price one parallel plan: step time, throughput, MFU, memory per GPU");
        flags.AddTo(cmd);
        cmd.Options.Add(json);
        cmd.Options.Add(tokens);
        training.AddTo(cmd);
        trace.AddTo(cmd);
        cmd.Options.Add(force);
        cmd.SetAction(r =>
        {
            var (model, cluster, plan) = flags.Read(r);
            double headroom = PlanFlags.ReadHeadroom(r, flags.MemoryHeadroom);
            var request = training.Read(r, r.GetValue(tokens));
            var software = StackLoader.Options(r.GetValue(flags.Stack)!);
            var tracePaths = trace.Read(r, r.GetValue(force));
            var prediction = Pricer.Price(model, cluster, plan, software);
            var run = request is null ? null : TrainingEstimate.Estimate(prediction, cluster, request, p => Pricer.Price(model, cluster, p, software));
            // Written once every input was read and priced: a refused flag leaves no file behind.
            TraceFlags.Write(tracePaths, model, cluster, prediction, software);
            if (r.GetValue(json))
            {
                var o = PredictionJson.Prediction(prediction);
                o["memory_headroom"] = headroom;
                o["within_headroom"] = prediction.Fits && Tables.WithinHeadroom(prediction, headroom);
                if (run is not null)
                    o["training"] = TrainingJson.Of(run);
                stdout.WriteLine(o.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            }
            else
            {
                Tables.Prediction(stdout, prediction, headroom);
                if (run is not null)
                    stdout.WriteLine(TrainingJson.Line(run));
            }
            return Cli.Ok;
        });
        return cmd;
    }
}
