using System.CommandLine;
using System.Text.Json;
using Planner.Cli.Rendering;
using Planner.CostModel.Pricing;

namespace Planner.Cli.Commands;

/// <summary><c>predict</c>: price one plan given by flags.</summary>
public static class PredictCommand
{
    /// <summary>Creates the command.</summary>
    public static Command Create(TextWriter stdout)
    {
        var flags = new PlanFlags();
        var json = new Option<bool>("--json") { Description = "Print one JSON object (CONTRACTS.md keys)" };
        var cmd = new Command("predict", "Price one parallel plan: step time, throughput, MFU, memory per GPU");
        flags.AddTo(cmd);
        cmd.Options.Add(json);
        cmd.SetAction(r =>
        {
            var (model, cluster, plan) = flags.Read(r);
            double headroom = PlanFlags.ReadHeadroom(r, flags.MemoryHeadroom);
            var prediction = Pricer.Price(model, cluster, plan, StackLoader.Options(r.GetValue(flags.Stack)!));
            if (r.GetValue(json))
            {
                var o = PredictionJson.Prediction(prediction);
                o["memory_headroom"] = headroom;
                o["within_headroom"] = prediction.Fits && Tables.WithinHeadroom(prediction, headroom);
                stdout.WriteLine(o.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            }
            else
                Tables.Prediction(stdout, prediction, headroom);
            return Cli.Ok;
        });
        return cmd;
    }
}
