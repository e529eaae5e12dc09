using System.Globalization;
using CsvHelper;
using CsvHelper.Configuration;
using Planner.CostModel.Memory;
using Planner.CostModel.Plans;
using Planner.CostModel.Specs;
using Planner.CostModel.Training;

namespace Planner.Cli.WhatIf;

/// <summary>
/// The what-if CSV: one row per grid point, snake_case columns in a fixed order. The swept keys come first, in the
/// order of the <c>--sweep</c> flags, with the values as given; then the standard columns, less any a swept key
/// already put first (a sweep on <c>tp</c> puts <c>tp</c> first instead of repeating it).
/// </summary>
public static class WhatIfCsv
{
    /// <summary>The standard columns, in order (before the optional token-budget columns and <c>note</c>).</summary>
    public static readonly IReadOnlyList<string> Standard =
    [
        "model", "cluster", "gpus", "tp", "pp", "dp", "cp", "ep", "etp", "zero", "mbs", "gbs", "seq", "vpp", "recompute", "optimizer_offload", "sequence_parallel", "precision", "stages",
        "step_time_s", "tokens_per_s", "mfu", "peak_memory_gib", "fits",
        "compute_s", "recompute_s", "tp_comm_s", "cp_comm_s", "ep_comm_s", "pp_comm_s", "dp_comm_s", "bubble_s", "optimizer_s",
        "gpu_memory_gib", "mem_weights_gib", "mem_gradients_gib", "mem_optimizer_gib", "mem_activations_gib", "mem_other_gib", "mem_host_gib",
    ];

    /// <summary>The whole run's columns with a token budget (docs/run-level.md): empty where the cluster lacks the key.</summary>
    public static readonly IReadOnlyList<string> RunColumns =
        ["training_days", "gpu_hours", "energy_mwh", "co2_t", "checkpoint_interval_s", "expected_failures", "goodput"];

    /// <summary>The header for a set of swept keys.</summary>
    /// <param name="tokens">True when a token budget was given: adds the whole run's columns and <c>time_to_train_days</c>.</param>
    /// <param name="cost">True when a token budget was given and a point's cluster has a price: adds <c>cost_to_train</c>.</param>
    public static IReadOnlyList<string> Header(IReadOnlyList<string> swept, bool tokens, bool cost)
    {
        var h = new List<string>(swept);
        h.AddRange(Standard.Where(c => !swept.Contains(c)));
        if (tokens)
            h.AddRange(RunColumns);
        if (tokens)
            h.Add("time_to_train_days");
        if (tokens && cost)
            h.Add("cost_to_train");
        h.Add("note");
        return h;
    }

    /// <summary>Writes the CSV to a stream writer.</summary>
    public static void Write(TextWriter writer, IReadOnlyList<string> swept, IReadOnlyList<WhatIfRow> rows, double? tokens)
    {
        bool cost = tokens is not null && rows.Any(r => r.Scenario.Cluster.PricePerGpuHour is not null);
        var header = Header(swept, tokens is not null, cost);
        using var csv = new CsvWriter(writer, new CsvConfiguration(CultureInfo.InvariantCulture), leaveOpen: true);
        foreach (var h in header)
            csv.WriteField(h);
        csv.NextRecord();
        foreach (var row in rows)
        {
            foreach (var h in header)
                csv.WriteField(Cell(row, h, tokens, row.Run));
            csv.NextRecord();
        }
        csv.Flush();
    }

    /// <summary>The value of one cell: invariant culture, shortest round-trip numbers, empty when unknown.</summary>
    /// <param name="run">The point's whole run over the token budget (<see cref="Run"/>), read by the run columns.</param>
    public static string Cell(WhatIfRow row, string column, double? tokens, TrainingRun? run)
    {
        foreach (var (key, value) in row.Point.Values)
            if (key == column)
                return value.Text;
        var s = row.Scenario;
        var plan = row.Plan;
        var p = row.Prediction;
        var b = p?.Breakdown;
        var m = p?.PeakStage;
        return column switch
        {
            "model" => s.Model.Name,
            "cluster" => s.Cluster.Name,
            "gpus" => Int(row.Gpus),
            "tp" => Int(plan?.Tp),
            "pp" => Int(plan?.Pp),
            "dp" => Int(plan?.Dp),
            "cp" => Int(plan?.Cp),
            "ep" => Int(plan?.Ep),
            "etp" => Int(plan?.Etp),
            "zero" => Int(plan?.Zero),
            "mbs" => Int(plan?.Mbs),
            "gbs" => Int(plan?.Gbs ?? s.Gbs),
            "seq" => Int(plan?.Seq ?? s.SeqOrDefault),
            "vpp" => Int(plan?.Vpp),
            "recompute" => plan is null ? "" : plan.RecomputeLabel,
            "optimizer_offload" => Num(plan?.OptimizerOffload),
            "sequence_parallel" => plan is null ? "" : plan.SequenceParallel ? "true" : "false",
            "precision" => plan?.Precision.Name() ?? "",
            "stages" => plan?.Stages?.ToString() ?? "",
            "step_time_s" => Num(p?.StepTimeSeconds),
            "tokens_per_s" => Num(p?.TokensPerSecond),
            "mfu" => Num(p?.Mfu),
            "peak_memory_gib" => Num(p?.PeakMemoryGib),
            "fits" => row.Fits ? "true" : "false",
            "compute_s" => Num(b?.Compute),
            "recompute_s" => Num(b?.Recompute),
            "tp_comm_s" => Num(b?.TpComm),
            "cp_comm_s" => Num(b?.CpComm),
            "ep_comm_s" => Num(b?.EpComm),
            "pp_comm_s" => Num(b?.PpComm),
            "dp_comm_s" => Num(b?.DpComm),
            "bubble_s" => Num(b?.Bubble),
            "optimizer_s" => Num(b?.Optimizer),
            "gpu_memory_gib" => Num(GpuMemoryGib(row)),
            "mem_weights_gib" => Gib(m?.Weights),
            "mem_gradients_gib" => Gib(m?.Gradients),
            "mem_optimizer_gib" => Gib(m?.Optimizer),
            "mem_activations_gib" => Gib(m?.Activations),
            "mem_other_gib" => Gib(m is null ? null : Other(m)),
            "mem_host_gib" => Gib(m?.Host),
            "time_to_train_days" => Num(TrainSeconds(row, tokens) / 86400),
            "cost_to_train" => Num(TrainSeconds(row, tokens) / 3600 * row.Gpus * s.Cluster.PricePerGpuHour),
            "note" => row.Note ?? "",
            _ when RunColumns.Contains(column) => RunCell(run, column),
            _ => throw new InvalidOperationException($"no CSV column '{column}'"),
        };
    }

    /// <summary>A whole-run cell of <paramref name="run"/> (empty without one).</summary>
    private static string RunCell(TrainingRun? run, string column)
    {
        if (run is null)
            return "";
        return column switch
        {
            "training_days" => Num(run.Days),
            "gpu_hours" => Num(run.GpuHours),
            "energy_mwh" => Num(run.EnergyMwh),
            "co2_t" => Num(run.Co2Tonnes),
            "checkpoint_interval_s" => Num(run.CheckpointIntervalSeconds),
            "expected_failures" => Num(run.ExpectedFailures),
            _ => Num(run.Goodput),
        };
    }

    /// <summary>The memory of the point's GPU (the smallest, on a cluster of several GPU groups), GiB.</summary>
    public static double GpuMemoryGib(WhatIfRow row) =>
        row.Prediction?.GpuMemoryGib ?? row.Scenario.Cluster.GroupList.Min(g => g.Gpu.MemoryGib);

    /// <summary>Memory outside weights, gradients, optimizer state and activations: transient peaks, buffers, overhead.</summary>
    public static double Other(MemoryBreakdown m) => m.Working + m.Buffers + m.Overhead;

    /// <summary>Seconds to train the token budget at the point's throughput, or null.</summary>
    public static double? TrainSeconds(WhatIfRow row, double? tokens) =>
        tokens is double t && row.Prediction is { } p ? t / p.TokensPerSecond : null;

    private static string Int(int? v) => v?.ToString(CultureInfo.InvariantCulture) ?? "";
    private static string Num(double? v) => v?.ToString("R", CultureInfo.InvariantCulture) ?? "";
    private static string Gib(double? bytes) => Num(bytes / Units.GiB);
}
