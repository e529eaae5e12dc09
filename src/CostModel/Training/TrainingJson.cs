using System.Globalization;
using System.Text.Json.Nodes;
using Planner.CostModel.Specs;

namespace Planner.CostModel.Training;

/// <summary>The <c>training</c> object (docs/run-level.md) and its one-line summary for the text output.</summary>
public static class TrainingJson
{
    /// <summary>The JSON object: figures (null ones left out, <c>omitted</c> says why), then what they were computed from.</summary>
    public static JsonObject Of(TrainingRun t)
    {
        var o = new JsonObject
        {
            ["tokens"] = t.Tokens,
            ["steps"] = Math.Ceiling(t.Steps),
            ["days"] = t.Days,
            ["gpu_hours"] = t.GpuHours,
            ["useful_days"] = t.UsefulSeconds / 86400,
        };
        Put(o, "cost", t.Cost);
        Put(o, "energy_mwh", t.EnergyMwh);
        Put(o, "co2_t", t.Co2Tonnes);
        Put(o, "mean_gpu_w", t.MeanGpuWatts);
        o["checkpoint_gib"] = t.CheckpointBytes / Units.GiB;
        Put(o, "checkpoint_write_s", t.CheckpointWriteSeconds);
        Put(o, "checkpoint_pause_s", t.CheckpointPauseSeconds);
        Put(o, "checkpoint_interval_s", t.CheckpointIntervalSeconds);
        Put(o, "young_interval_s", t.YoungIntervalSeconds);
        o["cluster_mtbf_h"] = t.ClusterMtbfSeconds / 3600;
        o["expected_failures"] = t.ExpectedFailures;
        Put(o, "goodput", t.Goodput);
        o["schedule"] = new JsonArray(t.Segments.Select(s => (JsonNode)new JsonObject
        {
            ["gbs"] = s.Prediction.Plan.Gbs,
            ["seq"] = s.Prediction.Plan.Seq,
            ["vpp"] = s.Prediction.Plan.Vpp,
            ["steps"] = s.Steps,
            ["step_time_s"] = s.Prediction.StepTimeSeconds,
        }).ToArray());
        var inputs = new JsonObject();
        foreach (var (k, v) in t.Inputs)
            inputs[k] = v switch
            {
                double d => d,
                int i => i,
                bool b => b,
                _ => Convert.ToString(v, CultureInfo.InvariantCulture),
            };
        o["inputs"] = inputs;
        o["defaults"] = new JsonArray(t.Defaults.Select(d => (JsonNode)d).ToArray());
        o["omitted"] = new JsonArray(t.Omitted.Select(d => (JsonNode)d).ToArray());
        return o;
    }

    /// <summary>One line: days, GPU-hours and whichever of cost, energy, CO2, checkpointing and goodput are known.</summary>
    public static string Line(TrainingRun t)
    {
        var parts = new List<string> { $"training {Tokens(t.Tokens)} tokens: {t.Days:F1} days", $"{t.GpuHours / 1e6:0.###}M GPU-hours" };
        if (t.Cost is double c)
            parts.Add($"cost {c:N0}");
        if (t.EnergyMwh is double e)
            parts.Add($"{e:N0} MWh");
        if (t.Co2Tonnes is double co2)
            parts.Add($"{co2:N0} t CO2e");
        parts.Add($"checkpoint every {t.CheckpointIntervalSeconds / 60:F0} min ({t.CheckpointWriteSeconds:F1} s to write)");
        parts.Add($"{t.ExpectedFailures:F0} failures expected");
        parts.Add($"goodput {t.Goodput:P1}");
        return string.Join(", ", parts) + (t.Defaults.Count + t.Omitted.Count > 0 ? " (defaults and omissions: --json)" : "");
    }

    private static void Put(JsonObject o, string key, double? v)
    {
        if (v is double d)
            o[key] = d;
    }

    private static string Tokens(double t) => t switch
    {
        >= 1e12 => $"{t / 1e12:0.##}T",
        >= 1e9 => $"{t / 1e9:0.##}B",
        >= 1e6 => $"{t / 1e6:0.##}M",
        _ => t.ToString("N0", CultureInfo.InvariantCulture),
    };
}
