using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;

namespace Planner.CostModel.Training;

/// <summary>
/// Prices a whole run of a plan (docs/run-level.md): the schedule's steps at each batch and length, checkpoints and
/// failures on the plan's nodes, then GPU-hours, cost, energy and carbon over the wall time.
/// </summary>
public static class TrainingEstimate
{
    /// <summary>The run of <paramref name="tokens"/> tokens at the plan's own batch and length throughout (no ramp-up or
    /// warm-up: what whatif and ablate price).</summary>
    public static TrainingRun Unscheduled(Prediction final, ClusterSpec cluster, double tokens) =>
        Estimate(final, cluster, new TrainingRequest(tokens), _ => throw new InvalidOperationException("a run without a schedule prices no other batch"));

    /// <summary>The run of <paramref name="final"/> (the plan at its own batch and length) on <paramref name="cluster"/>;
    /// <paramref name="price"/> prices the plan at another batch or length (the schedules').</summary>
    public static TrainingRun Estimate(Prediction final, ClusterSpec cluster, TrainingRequest req, Func<ParallelPlan, Prediction> price)
    {
        if (!double.IsFinite(req.Tokens) || req.Tokens <= 0)
            throw new InputException("tokens", $"{req.Tokens} must be a positive number of tokens");
        var ops = cluster.Operations ?? OperationsSpec.None;
        var segments = RunSchedule.Segments(final, req, price);
        int gpus = final.Plan.Gpus, nodes = (gpus + cluster.GpusPerNode - 1) / cluster.GpusPerNode;
        var defaults = new List<string>();
        var omitted = new List<string>();
        var inputs = new Dictionary<string, object> { ["tokens"] = req.Tokens, ["gpus"] = gpus, ["nodes"] = nodes };
        double useful = segments.Sum(s => s.Seconds);

        double mtbfNode = ops.MtbfHoursPerNode ?? Default(defaults, "mtbf_hours_per_node", OperationsSpec.DefaultMtbfHoursPerNode,
            "Llama 3 405B's 419 unexpected interruptions in 54 days on 2,048 nodes");
        double restart = ops.RestartSeconds ?? Default(defaults, "restart_s", 0, "not given: restarts cost nothing");
        double mtbf = mtbfNode * 3600 / nodes;
        inputs["mtbf_hours_per_node"] = mtbfNode;
        inputs["restart_s"] = restart;
        inputs["async_checkpoint"] = req.AsyncCheckpoint;
        var ck = Checkpoints(final, cluster, req, ops, mtbf, restart, useful, inputs, defaults);
        double wall = ck.Wall;
        double failures = wall / mtbf;

        double? cost = cluster.PricePerGpuHour is double perHour ? wall * gpus / 3600 * perHour : Omit<double>(omitted, "cost", "the cluster gives no price_per_gpu_hour");
        if (cluster.PricePerGpuHour is double ph)
            inputs["price_per_gpu_hour"] = ph;
        var energy = Energy(segments, cluster, ops, gpus, nodes, useful, wall, ck.PauseTotal + failures * restart, inputs, defaults, omitted);
        double? co2 = null;
        if (energy.Mwh is double mwh)
        {
            if (ops.CarbonKgPerKwh is double kg)
            {
                co2 = mwh * 1000 * kg / 1000;
                inputs["carbon_kg_per_kwh"] = kg;
            }
            else
                omitted.Add("co2_t: the cluster gives no carbon_kg_per_kwh (grid intensity is the site's)");
        }
        else
            omitted.Add("co2_t: no energy");
        AddSchedule(req, inputs);
        return new TrainingRun(req.Tokens, segments.Sum(s => s.Steps), useful, wall, gpus, nodes, cost, energy.Mwh, co2, energy.MeanGpuW,
            ck.Bytes, ck.Write, ck.Pause, ck.Interval, ck.Young, mtbf, failures, ck.Goodput, segments, inputs, defaults, omitted);
    }

    private sealed record CheckpointFigures(double Bytes, double Write, double Pause, double Interval, double Young, double Wall, double Goodput,
        double PauseTotal);

    private static CheckpointFigures Checkpoints(Prediction final, ClusterSpec cluster, TrainingRequest req, OperationsSpec ops, double mtbf,
        double restart, double useful, Dictionary<string, object> inputs, List<string> defaults)
    {
        double bytes = Checkpointing.Bytes(final);
        inputs["checkpoint_bytes"] = bytes;
        int gpus = final.Plan.Gpus;
        double gbs = ops.CheckpointGbs ?? Default(defaults, "storage.checkpoint_gbs", OperationsSpec.DefaultCheckpointGbsPerGpu * gpus,
            $"Llama 3's checkpoint store, 2 TB/s sustained for 16,384 GPUs, at the plan's {gpus}");
        inputs["checkpoint_gbs"] = gbs;
        double write = bytes / (gbs * 1e9);
        double pause = req.AsyncCheckpoint ? Checkpointing.SnapshotSeconds(final, cluster) : write;
        double young = Checkpointing.Young(pause, mtbf);
        // An async write must finish before the next begins; until it does, the one before is the last on disk.
        double interval = Math.Max(Checkpointing.Daly(pause, mtbf), req.AsyncCheckpoint ? write : 0);
        // A failure falls anywhere in an interval and its pause alike (Daly's first order): half of both is lost on
        // average; an async write still in flight when it falls leaves the checkpoint before it.
        double lost = (interval + pause) / 2 + (req.AsyncCheckpoint ? write : 0);
        double wall = Checkpointing.WallSeconds(useful, pause, interval, lost, restart, mtbf);
        return new CheckpointFigures(bytes, write, pause, interval, young, wall, useful / wall, useful / interval * pause);
    }

    private sealed record EnergyFigures(double? Mwh, double? MeanGpuW);

    /// <summary>Energy over the wall time: the steps at each stretch's mean GPU draw, work redone after failures at the
    /// steps' mean, pauses and restarts at the wait draw; plus the nodes' own draw; times the PUE.</summary>
    private static EnergyFigures Energy(IReadOnlyList<RunSegment> segments, ClusterSpec cluster, OperationsSpec ops, int gpus, int nodes, double useful,
        double wall, double waiting, Dictionary<string, object> inputs, List<string> defaults, List<string> omitted)
    {
        var power = ops.Power ?? new PowerSpec();
        // Each stage's GPUs draw their own group's power (a cluster of several GPU kinds): the plan's mean.
        var plan = segments[0].Prediction.Plan;
        var stageGpus = Enumerable.Range(0, plan.Pp).Select(st => cluster.GroupList[plan.GroupOf(st)].Gpu).ToList();
        if (stageGpus.FirstOrDefault(g => PowerCap.MostWatts(power, g) is null) is { } unknown)
        {
            omitted.Add($"energy_mwh: neither power.gpu_w nor the GPU '{unknown.Name}' gives a maximum power (tdp_w)");
            return new EnergyFigures(null, null);
        }
        var most = stageGpus.Select(g => PowerCap.MostWatts(power, g)!.Value).ToList();
        double w = most.Average();
        inputs["gpu_w"] = w;
        if (power.GpuW is null)
            defaults.Add($"power.gpu_w = {w:G4} (the GPU preset's spec-sheet tdp_w{(most.Distinct().Count() > 1 ? ", the mean over the plan's stages" : "")})");
        double wait = power.WaitFraction ?? Default(defaults, "power.wait_fraction", OperationsSpec.DefaultWaitFraction,
            "an assumption: waiting GPUs between idle and busy draw, docs/run-level.md");
        double nodeW = power.NodeW ?? Default(defaults, "power.node_w", 0, "not given: the GPUs alone, no CPUs, NICs or fans");
        double pue = power.Pue ?? Default(defaults, "power.pue", 1, "not given: IT energy, no cooling or conversion losses");
        inputs["wait_fraction"] = wait;
        inputs["node_w"] = nodeW;
        inputs["pue"] = pue;
        double busyW = most.Average(m => PowerCap.BusyWatts(m, power)), waitW = wait * w;
        if (power.CapW is double cap)
            inputs["cap_w"] = cap;
        double stepJoules = segments.Sum(s => s.Seconds * StepPower.GpuWatts(s.Prediction.Breakdown, busyW, waitW));
        double stepW = useful > 0 ? stepJoules / useful : waitW;
        double redone = Math.Max(0, wall - useful - waiting);
        double gpuJoules = stepJoules + redone * stepW + waiting * waitW;
        double joules = pue * (gpus * gpuJoules + nodes * nodeW * wall);
        return new EnergyFigures(joules / 3.6e9, gpuJoules / wall);
    }

    private static void AddSchedule(TrainingRequest req, Dictionary<string, object> inputs)
    {
        if (req.Rampup is { } r)
            inputs["batch_rampup"] = $"{r.Start},{r.Increment},{r.Samples:R}";
        if (req.Warmup is { } w)
            inputs["seq_warmup"] = $"{w.Start},{w.Steps}";
        if (req.Schedule is { } f)
            inputs["batch_schedule"] = f.Source;
    }

    private static double Default(List<string> defaults, string key, double value, string why)
    {
        defaults.Add($"{key} = {value:G4} ({why})");
        return value;
    }

    private static T? Omit<T>(List<string> omitted, string figure, string why) where T : struct
    {
        omitted.Add($"{figure}: {why}");
        return null;
    }
}
