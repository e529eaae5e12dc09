using System.Globalization;
using Planner.CostModel.Plans;
using Planner.CostModel.Specs;

namespace Planner.Cli.WhatIf;

/// <summary>One value of a sweep: the text as given (echoed in the CSV) and the parsed value.</summary>
public sealed record SweepValue(string Text, object Value);

/// <summary>One <c>--sweep key=v1,v2,...</c>: a key and its values in the order given.</summary>
public sealed record SweepAxis(string Key, IReadOnlyList<SweepValue> Values);

/// <summary>One point of the grid: a value of every axis, in the order of the axes.</summary>
public sealed record GridPoint(int Index, IReadOnlyList<(string Key, SweepValue Value)> Values)
{
    /// <summary>"nodes=2 tp=4", for labels.</summary>
    public string Label => string.Join(' ', Values.Select(v => $"{v.Key}={v.Value.Text}"));
}

/// <summary>The keys a sweep may vary, how their values parse, and how each changes a <see cref="Scenario"/>.</summary>
public static class Sweep
{
    /// <summary>The largest grid a what-if runs.</summary>
    public const int MaxPoints = 10_000;

    private sealed record KeyInfo(string Help, Func<string, object?> Parse, string Expected);

    private static readonly Dictionary<string, KeyInfo> Keys = new(StringComparer.Ordinal)
    {
        ["model"] = new("model preset or config.json path", _ => null, "a model preset or a config.json path"),
        ["gpu"] = new("GPU preset of every node", _ => null, "a GPU preset"),
        ["nodes"] = new("nodes of the cluster", s => Int(s, 1, 1_000_000), "a whole number from 1 to 1000000"),
        ["gpus_per_node"] = new("GPUs per node", s => Int(s, 1, 1024), "a whole number from 1 to 1024"),
        ["intra_gbs"] = new("NVLink bandwidth, GB/s per GPU per direction", s => Number(s, 1e-6, 1e6), "a number of GB/s above 0"),
        ["inter_gbs"] = new("network bandwidth, GB/s per GPU per direction", s => Number(s, 1e-6, 1e6), "a number of GB/s above 0"),
        ["latency"] = new("latency of both tiers, microseconds", s => Number(s, 0, 1e6), "a number of microseconds, 0 or more"),
        ["intra_latency"] = new("NVLink latency, microseconds", s => Number(s, 0, 1e6), "a number of microseconds, 0 or more"),
        ["inter_latency"] = new("network latency, microseconds", s => Number(s, 0, 1e6), "a number of microseconds, 0 or more"),
        ["price"] = new("price per GPU-hour", s => Number(s, 0, 1e6), "a price per GPU-hour, 0 or more"),
        ["carbon"] = new("grid carbon intensity, kg CO2e per kWh (with --tokens)", s => Number(s, 0, 10), "a number of kg per kWh from 0 to 10"),
        ["mtbf"] = new("MTBF of one node, hours (with --tokens)", s => Number(s, 1e-6, 1e9), "a number of hours above 0"),
        ["power_cap"] = new("power limit of every GPU, W (power.cap_w: slows its arithmetic below its most power)", s => Number(s, 1e-6, 1e5), "a number of watts above 0"),
        ["gbs"] = new("global batch, sequences", s => Int(s, 1, 100_000_000), "a whole number from 1 to 100000000"),
        ["seq"] = new("sequence length, tokens", s => Int(s, 1, 10_000_000), "a whole number from 1 to 10000000"),
        ["tp"] = new("tensor-parallel degree", s => Int(s, 1, 1_000_000), "a whole number of at least 1"),
        ["pp"] = new("pipeline-parallel degree", s => Int(s, 1, 1_000_000), "a whole number of at least 1"),
        ["dp"] = new("data-parallel degree", s => Int(s, 1, 10_000_000), "a whole number of at least 1"),
        ["cp"] = new("context-parallel degree", s => Int(s, 1, 1_000_000), "a whole number of at least 1"),
        ["zero"] = new("ZeRO stage", s => Int(s, 0, 3), "a ZeRO stage 0, 1, 2 or 3"),
        ["mbs"] = new("micro-batch size", s => Int(s, 1, 1_000_000), "a whole number of at least 1"),
        ["vpp"] = new("model chunks per pipeline stage", s => Int(s, 1, 10_000), "a whole number of at least 1"),
        ["recompute"] = new("activation recomputation", s => ParallelPlan.ParseRecompute(s), "none, selective or full"),
        ["sequence_parallel"] = new("sequence parallelism", Bool, "true or false"),
        ["precision"] = new("training precision", s => PrecisionInfo.TryParse(s), PrecisionInfo.Names),
        ["stack"] = new("software stack", _ => null, "a stack preset or a stack YAML file"),
    };

    /// <summary>The keys, in a stable order, for help and errors.</summary>
    public static IReadOnlyList<string> KeyNames => Keys.Keys.ToList();

    /// <summary>Help text listing the keys.</summary>
    public static string HelpText =>
        "Values of one key; repeat for a grid (every combination). Keys: " + string.Join(", ", Keys.Keys)
        + " (bandwidths in GB/s per GPU per direction, latencies in microseconds; gpu, model and stack take presets, model and stack also a file path)";

    /// <summary>Parses every <c>--sweep</c>; any bad key or value is an <see cref="InputException"/> naming <c>--sweep</c>.</summary>
    public static IReadOnlyList<SweepAxis> Parse(IReadOnlyList<string> sweeps)
    {
        if (sweeps.Count == 0)
            throw new InputException("--sweep: give at least one, e.g. --sweep nodes=1,2,4");
        var axes = new List<SweepAxis>();
        foreach (var text in sweeps)
        {
            int eq = text.IndexOf('=');
            if (eq <= 0)
                throw new InputException($"--sweep: '{text}' is not key=v1,v2,... (keys: {string.Join(", ", Keys.Keys)})");
            string key = text[..eq].Trim().ToLowerInvariant().Replace('-', '_');
            if (!Keys.TryGetValue(key, out var info))
                throw new InputException($"--sweep: unknown key '{text[..eq].Trim()}' (keys: {string.Join(", ", Keys.Keys)})");
            if (axes.Any(a => a.Key == key))
                throw new InputException($"--sweep: key '{key}' is swept twice; list all its values in one --sweep");
            var items = text[(eq + 1)..].Split(',', StringSplitOptions.TrimEntries);
            if (items.Length == 0 || items.Any(string.IsNullOrEmpty))
                throw new InputException($"--sweep {key}: empty value in '{text}'; expected {info.Expected}, separated by commas");
            var values = new List<SweepValue>();
            foreach (var item in items)
            {
                if (values.Any(v => v.Text == item))
                    throw new InputException($"--sweep {key}: value '{item}' is listed twice");
                values.Add(new SweepValue(item, ParseValue(key, item, info)));
            }
            axes.Add(new SweepAxis(key, values));
        }
        long points = axes.Aggregate(1L, (n, a) => n * a.Values.Count);
        if (points > MaxPoints)
            throw new InputException($"--sweep: the grid has {points:N0} points; at most {MaxPoints:N0}");
        return axes;
    }

    private static object ParseValue(string key, string item, KeyInfo info)
    {
        try
        {
            switch (key)
            {
                case "model":
                    return ModelLoader.Load(item);
                case "gpu":
                    return ClusterLoader.LoadGpu(item, "--sweep gpu");
                case "stack":
                    return Planner.CostModel.Pricing.StackLoader.Options(item, "--sweep stack");
            }
        }
        catch (InputException e)
        {
            string message = e.Field == "model" ? e.Reason : e.Message;
            throw new InputException(message.StartsWith("--sweep", StringComparison.Ordinal) ? message : $"--sweep {key}: {message}");
        }
        return info.Parse(item) ?? throw new InputException($"--sweep {key}: '{item}' is not valid; expected {info.Expected}");
    }

    /// <summary>Rejects sweeps that have no single meaning on this cluster: the node count of a cluster of several
    /// GPU groups (which group would grow?).</summary>
    public static void CheckCluster(IReadOnlyList<SweepAxis> axes, ClusterSpec cluster)
    {
        if (cluster.IsHeterogeneous && axes.Any(a => a.Key == "nodes") && !axes.Any(a => a.Key == "gpu"))
            throw new InputException($"--sweep nodes: cluster '{cluster.Name}' has several GPU groups ({string.Join(", ", cluster.GroupList.Select(g => $"{g.Nodes} x {g.Gpu.Name}"))}); sweep nodes on a single-GPU cluster, or sweep gpu with it");
    }

    /// <summary>Every combination of the axes' values, the first axis outermost (the last varies fastest).</summary>
    public static IReadOnlyList<GridPoint> Grid(IReadOnlyList<SweepAxis> axes)
    {
        var points = new List<GridPoint>();
        var current = new (string, SweepValue)[axes.Count];
        void Walk(int depth)
        {
            if (depth == axes.Count)
            {
                points.Add(new GridPoint(points.Count, current.ToArray()));
                return;
            }
            foreach (var v in axes[depth].Values)
            {
                current[depth] = (axes[depth].Key, v);
                Walk(depth + 1);
            }
        }
        Walk(0);
        return points;
    }

    /// <summary>The scenario with one swept value applied.</summary>
    public static Scenario Apply(Scenario s, string key, object value)
    {
        var applied = Change(s, key, value);
        if (ReferenceEquals(applied.Cluster, s.Cluster))
            return applied;
        // A power cap slows every GPU of the cluster, a swept GPU or cap included.
        try
        {
            return applied with { Cluster = PowerCap.Apply(applied.Cluster) };
        }
        catch (InputException e) when (e.Field == "power.cap_w")
        {
            throw new InputException($"--sweep {key}={value}: power.cap_w {e.Reason}");
        }
    }

    private static Scenario Change(Scenario s, string key, object value)
    {
        var c = s.Cluster;
        var p = s.Plan;
        var ops = c.Operations ?? OperationsSpec.None;
        return key switch
        {
            "model" => s with { Model = (ModelSpec)value },
            "stack" => s with { Software = (Planner.CostModel.Pricing.PricingOptions)value },
            // On a cluster of several GPU groups, a swept GPU replaces every group's: the same nodes, all of one kind.
            "gpu" => s with { Cluster = c with { Gpu = (GpuSpec)value, Groups = null } },
            "nodes" => s with { Cluster = c with { Nodes = (int)value } },
            "gpus_per_node" => ClusterSpec.DomainProblem(c.NvlinkDomainSize, (int)value) is { } problem
                ? throw new InputException($"--sweep gpus_per_node={value}: the cluster's {problem}")
                : s with { Cluster = c with { GpusPerNode = (int)value } },
            "intra_gbs" => s with { Cluster = c with { IntraNode = c.IntraNode with { BandwidthGbs = (double)value } } },
            "inter_gbs" => s with { Cluster = c with { InterNode = c.InterNode with { BandwidthGbs = (double)value } } },
            // The swept latency is every transfer's: a profiled point-to-point latency gives way to it.
            "latency" => s with { Cluster = c with { IntraNode = c.IntraNode with { LatencyUs = (double)value, P2pLatencyUs = null }, InterNode = c.InterNode with { LatencyUs = (double)value, P2pLatencyUs = null } } },
            "intra_latency" => s with { Cluster = c with { IntraNode = c.IntraNode with { LatencyUs = (double)value, P2pLatencyUs = null } } },
            "inter_latency" => s with { Cluster = c with { InterNode = c.InterNode with { LatencyUs = (double)value, P2pLatencyUs = null } } },
            "price" => s with { Cluster = c with { PricePerGpuHour = (double)value } },
            "carbon" => s with { Cluster = c with { Operations = ops with { CarbonKgPerKwh = (double)value } } },
            "mtbf" => s with { Cluster = c with { Operations = ops with { MtbfHoursPerNode = (double)value } } },
            "power_cap" => s with { Cluster = c with { Operations = ops with { Power = (ops.Power ?? new PowerSpec()) with { CapW = (double)value } } } },
            "gbs" => s with { Gbs = (int)value },
            "seq" => s with { Seq = (int)value },
            "tp" => s with { Plan = p with { Tp = (int)value } },
            "pp" => s with { Plan = p with { Pp = (int)value } },
            "dp" => s with { Plan = p with { Dp = (int)value } },
            "cp" => s with { Plan = p with { Cp = (int)value } },
            "zero" => s with { Plan = p with { Zero = (int)value } },
            "mbs" => s with { Plan = p with { Mbs = (int)value } },
            "vpp" => s with { Plan = p with { Vpp = (int)value } },
            "recompute" => s with { Plan = p with { Recompute = (Recompute)value } },
            "sequence_parallel" => s with { Plan = p with { SequenceParallel = (bool)value } },
            "precision" => s with { Plan = p with { Precision = (Precision)value } },
            _ => throw new InvalidOperationException($"sweep key '{key}' has no effect defined"),
        };
    }

    private static object? Int(string s, int min, int max) =>
        int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) && v >= min && v <= max ? v : null;

    private static object? Number(string s, double min, double max) =>
        double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) && double.IsFinite(v) && v >= min && v <= max ? v : null;

    private static object? Bool(string s) => s.ToLowerInvariant() switch
    {
        "true" or "on" or "yes" or "1" => true,
        "false" or "off" or "no" or "0" => false,
        _ => null,
    };
}

/// <summary>The inputs of one what-if point: a model, a cluster, the batch and sequence, and the pinned plan values.</summary>
/// <param name="Seq">The sequence length, or null for the model's default (<see cref="Commands.PlanFlags.DefaultSeq"/>).</param>
public sealed record Scenario(ModelSpec Model, ClusterSpec Cluster, int Gbs, int? Seq, PlanConstraint Plan, Planner.CostModel.Pricing.PricingOptions Software,
    double MemoryHeadroom = 0)
{
    /// <summary>The sequence length of this point.</summary>
    public int SeqOrDefault => Seq ?? Commands.PlanFlags.DefaultSeq(Model);

    /// <summary>The scenario of a grid point.</summary>
    public Scenario At(GridPoint point) =>
        point.Values.Aggregate(this, (s, v) => Sweep.Apply(s, v.Key, v.Value.Value));
}
