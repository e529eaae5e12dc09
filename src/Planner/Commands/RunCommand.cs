using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Nodes;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;
using Planner.Executor.Training;
using Spectre.Console;

namespace Planner.Cli.Commands;

/// <summary>
/// <c>run</c>: trains the plan's model with the plan's parallelism in real rank processes and reports measured against
/// predicted. <c>rank</c> (hidden) is one of those processes.
/// </summary>
public static class RunCommand
{
    internal sealed record RunInputs(ParallelPlan Plan, string PlanPath, ModelSpec Model, ClusterSpec? Cluster, string ClusterName, string PlanStack);

    /// <summary>Options common to run and rank.</summary>
    internal sealed class Flags
    {
        public Option<string> Plan { get; } = new("--plan") { Description = "Plan file (from plan --out; on --resume: the checkpoint's unless given)" };
        public Option<int> Steps { get; } = new("--steps") { Description = "Optimizer steps", DefaultValueFactory = _ => 5 };
        public Option<ulong> Seed { get; } = new("--seed") { Description = "Seed of the initial weights and synthetic data", DefaultValueFactory = _ => 1234UL };
        public Option<double> Lr { get; } = new("--lr") { Description = "Learning rate of the plan's optimizer", DefaultValueFactory = _ => TrainOptions.DefaultLearningRate };
        public Option<double> AdamEps { get; } = new("--adam-eps") { Description = "Epsilon of AdamW and 8-bit Adam", DefaultValueFactory = _ => 1e-8 };
        public Option<double?> LossScale { get; } = new("--loss-scale") { Description = "First dynamic loss scale (default: 65536 for fp16, none otherwise)" };
        public Option<string?> Data { get; } = new("--data") { Description = "Token file (flat uint16 or uint32 tokens, nanoGPT .bin); default: synthetic tokens" };
        public Option<int> DataBytes { get; } = new("--data-bytes") { Description = "Bytes per token in --data (2 or 4)", DefaultValueFactory = _ => 2 };
        public Option<string?> Dump { get; } = new("--dump-params") { Description = "Write each rank's parameter shards after training to this folder" };
        public Option<int> Threads { get; } = new("--threads") { Description = "Intra-op threads per rank", DefaultValueFactory = _ => 1 };
        public Option<string?> Calibration { get; } = new("--calibration") { Description = "Calibration file for the prediction (default: the cluster's, from profile)" };
        public Option<bool> ForceCalibration { get; } = new("--force-calibration") { Description = "Use a calibration measured on other hardware" };
        public Option<string?> History { get; } = new("--history") { Description = "History CSV the run is appended to (default: ~/.cache/planner/history.csv)" };
        public Option<string> Device { get; } = new("--device")
        {
            Description = "Where the ranks train: auto (CUDA devices when the libtorch shim sees them, else the CPU), cpu, or cuda (one device per rank of this machine; NCCL groups)",
            DefaultValueFactory = _ => "auto",
        };
        public Option<double> Timeout { get; } = new("--timeout")
        {
            Description = "Seconds a collective may wait and a rank may go without a heartbeat before the run ends (docs/executor.md)",
            DefaultValueFactory = _ => TrainOptions.DefaultTimeoutSeconds,
        };

        public void AddTo(Command c)
        {
            foreach (Option o in new Option[] { Plan, Steps, Seed, Lr, AdamEps, LossScale, Data, DataBytes, Dump, Threads, Calibration, ForceCalibration, History, Device, Timeout })
                c.Options.Add(o);
        }

        public RunInputs Read(ParseResult r, RunArguments args)
        {
            string path = args.Plan;
            var (plan, model, cluster, planStack) = PlanFile.Read(path);
            ModelSpec m;
            try
            {
                m = ModelLoader.Load(model);
            }
            catch (InputException e) when (e.Field == "model")
            {
                throw new InputException($"{path}: key 'model': {e.Reason}"); // the plan named it, not --model
            }
            ClusterSpec? c = null;
            try
            {
                c = ClusterLoader.Load(cluster);
            }
            catch (InputException)
            {
                // The prediction needs the cluster; training does not.
            }
            if (r.GetValue(Steps) is < 1 or > 1_000_000)
                throw new InputException($"--steps: {r.GetValue(Steps)} must be from 1 to 1000000");
            if (args.DataBytes is not (2 or 4))
                throw new InputException($"--data-bytes: {args.DataBytes} must be 2 or 4");
            if (args.Data is { } data && !File.Exists(data))
                throw new InputException($"--data: file '{data}' not found");
            if (!(args.Lr is >= 0 and <= 10))
                throw new InputException($"--lr: {args.Lr} must be from 0 (weights that stay) to 10");
            if (!(args.AdamEps is > 0 and < 1))
                throw new InputException($"--adam-eps: {args.AdamEps} must be above 0 and below 1");
            if (args.LossScale is { } scale && !(scale >= 1 && scale <= 3.4e38))
                throw new InputException($"--loss-scale: {scale} must be from 1 to 3.4e38 (fp32's largest number)");
            if (r.GetValue(Threads) is < 1 or > 1024)
                throw new InputException($"--threads: {r.GetValue(Threads)} must be from 1 to 1024");
            if (!(r.GetValue(Timeout) is > 0 and <= MaxTimeoutSeconds))
                throw new InputException($"--timeout: {r.GetValue(Timeout)} must be above 0 and at most {MaxTimeoutSeconds} seconds (a week)");
            DeviceChoice.Parse(r.GetValue(Device)!);
            return new RunInputs(plan, path, m, c, cluster, planStack);
        }

        /// <summary>
        /// The inputs with the cluster as priced: its calibration (--calibration, else the cluster's own). Only the
        /// launcher of rank 0 prices the run, so only it reads the calibration: a file measured on rank 0's machine is
        /// another machine's for the other launchers of a multi-node run.
        /// </summary>
        public RunInputs Calibrated(ParseResult r, RunInputs inputs) => inputs.Cluster is null ? inputs
            : inputs with { Cluster = Profiling.CalibrationFile.Apply(inputs.Cluster, r.GetValue(Calibration), r.GetValue(ForceCalibration)) };

        public static ITokenSource Source(RunArguments args, RunInputs inputs) => args.Data is { } data
            ? new TokenFile(data, inputs.Plan.Seq, args.DataBytes, inputs.Model.Vocab)
            : new SyntheticTokens(inputs.Model.Vocab, args.Seed);

        /// <summary>The options of a rank process (whose --device names its own device: cpu or cuda:N).</summary>
        public TrainOptions Options(ParseResult r, RunArguments args) => new(args.Steps, args.Seed, args.Lr, AdamEps: args.AdamEps, LossScale: args.LossScale,
            Device: DeviceChoice.Parse(r.GetValue(Device)!).Resolve(1, scheduled: true).Of(DeviceChoice.SchedulerLocalRank()), TimeoutSeconds: r.GetValue(Timeout));

        /// <summary>The longest --timeout: a week.</summary>
        private const double MaxTimeoutSeconds = 604800;
    }

    /// <summary>The hidden rank verb.</summary>
    public static Command CreateRank(TextWriter stdout)
    {
        var flags = new Flags();
        var rank = new Option<int>("--rank") { Required = true };
        var world = new Option<int>("--world") { Required = true };
        var addr = new Option<string>("--master-addr") { DefaultValueFactory = _ => "127.0.0.1" };
        var port = new Option<int>("--master-port") { Required = true };
        var gather = new Option<bool>("--gather-report") { Description = "Rank 0 prints every rank's lines (ranks on several machines)" };
        var traceStep = new Option<int?>("--trace-step") { Description = "The step whose events the rank reports (run --trace)" };
        var cmd = new Command("rank", "One rank process of run (started by run)") { Hidden = true };
        flags.AddTo(cmd);
        var checkpoints = new CheckpointFlags();
        checkpoints.AddToRank(cmd);
        foreach (Option o in new Option[] { rank, world, addr, port, gather, traceStep })
            cmd.Options.Add(o);
        cmd.SetAction(r =>
        {
            // First: the launcher hears from the rank while it reads its inputs and meets its peers.
            var liveness = RankLiveness.Start(Console.Error, r.GetValue(rank));
            var args = RunArguments.Of(r, flags, null);
            var inputs = flags.Read(r, args);
            using var data = Flags.Source(args, inputs);
            var env = new RankEnvironment(r.GetValue(rank), r.GetValue(world), r.GetValue(addr)!, r.GetValue(port));
            var model = PlanFile.Read(args.Plan).Model;
            return RankMain.Run(inputs.Model, inputs.Plan, env, flags.Options(r, args) with { TraceStep = r.GetValue(traceStep) }, data, stdout, r.GetValue(flags.Dump), r.GetValue(flags.Threads), r.GetValue(gather),
                liveness, checkpoints.Options(r, args, model), CheckpointFlags.PlanText(args.Plan, model));
        });
        return cmd;
    }

    /// <summary>The run verb.</summary>
    public static Command Create(TextWriter stdout)
    {
        var flags = new Flags();
        var warmup = new Option<int>("--warmup") { Description = "Steps left out of the median step time", DefaultValueFactory = _ => 1 };
        var json = new Option<bool>("--json") { Description = "Print one JSON object (CONTRACTS.md)" };
        var nnodes = new Option<int>("--nnodes") { Description = "Machines of a multi-node run (start the same command on each)", DefaultValueFactory = _ => 1 };
        var nodeRank = new Option<int>("--node-rank") { Description = "This machine's index", DefaultValueFactory = _ => 0 };
        var addr = new Option<string>("--master-addr") { Description = "Host of rank 0 (the rendezvous)", DefaultValueFactory = _ => "127.0.0.1" };
        var port = new Option<int?>("--master-port") { Description = "Rendezvous port (default: a free one on a single machine, 29500 across machines)" };
        var restarts = new Option<int>("--max-restarts") { Description = "After a rank fails or hangs, end and start all ranks again up to N times", DefaultValueFactory = _ => 0 };
        var cmd = new Command("run", "Train the plan for real across rank processes and compare with the prediction") { warmup, json, nnodes, nodeRank, addr, port, restarts };
        flags.AddTo(cmd);
        var checkpoints = new CheckpointFlags();
        checkpoints.AddToRun(cmd);
        var trace = new TraceFlags();
        trace.AddTo(cmd);
        cmd.SetAction(r =>
        {
            var tracePaths = trace.Read(r, r.GetValue(checkpoints.Force));
            bool traced = tracePaths.Trace is not null || tracePaths.Timeline is not null;
            var resumed = checkpoints.Resumed(r);
            var args = RunArguments.Of(r, flags, resumed);
            var inputs = flags.Read(r, args);
            var plan = inputs.Plan;
            int world = plan.Gpus;
            var launch = Launch.From(r.GetValue(nnodes), r.GetValue(nodeRank), r.GetValue(addr)!, r.GetValue(port), world);
            if (launch.LocalRanks.Contains(0))
                inputs = flags.Calibrated(r, inputs);
            var device = DeviceChoice.Parse(r.GetValue(flags.Device)!).Resolve(launch.LocalRanks.Length, launch.Scheduled);
            ExecutorRefusals.Check(inputs.PlanPath, inputs.Model, plan, inputs.ClusterName, inputs.Cluster, device.Of(0));
            if (r.GetValue(flags.Data) is { } tokens)
                TokenFileCheck.Check(tokens, r.GetValue(flags.DataBytes), plan.Seq, inputs.Model.Vocab, (long)r.GetValue(flags.Steps) * plan.Gbs);
            // The plan must suit the model; its cluster only matters to the prediction (ranks may share cores here).
            if (PlanCheck.Problems(inputs.Model, LocalCluster(world), plan) is { Count: > 0 } problems)
                throw new InputException($"{inputs.PlanPath}: {PlanProblem.InPlanFile(problems)}");
            if (device.Type == Executor.Torch.DeviceType.Cpu)
                CheckFitsMachine(inputs);
            int warm = r.GetValue(warmup);
            if (warm < 0 || warm >= r.GetValue(flags.Steps))
                throw new InputException($"--warmup: {warm} must be at least 0 and below --steps ({r.GetValue(flags.Steps)})");
            if (r.GetValue(restarts) is < 0 or > RestartPolicy.MaxRestarts)
                throw new InputException($"--max-restarts: {r.GetValue(restarts)} must be from 0 to {RestartPolicy.MaxRestarts}");
            RankFault.FromEnvironment(); // the test hook's variable is checked here, not in every rank
            string runId = checkpoints.Prepare(r, inputs, resumed, claims: launch.LocalRanks.Contains(0));
            // A restart meets at a port of its own, where no rank of the failed attempt can be reached: a fresh one on one
            // machine, else the agreed one plus the attempt (every launcher of the job counts the same attempts).
            bool freshPort = r.GetValue(port) is null && r.GetValue(nnodes) == 1 && !launch.Scheduled;
            var policy = new RestartPolicy(r.GetValue(restarts), r.GetValue(checkpoints.Directory));
            var ((lines, ran), failures) = policy.Run(attempt =>
            {
                // A restart of a run that keeps checkpoints resumes from its latest (the steps left of the run's total).
                var (from, attemptArgs) = policy.Resume(attempt, runId, resumed, args);
                return (RunRanks(launch with { MasterPort = attempt == 0 ? launch.MasterPort : freshPort ? RankProcesses.FreePort() : launch.MasterPort + attempt },
                    r, flags, attemptArgs, checkpoints.Forwarded(r, runId, from), world, device, attempt,
                    traced ? MeasuredTrace.Step(attemptArgs.FirstStep, attemptArgs.Steps, warm) : null), attemptArgs);
            }, Console.Error);
            if (!launch.LocalRanks.Contains(0))
            {
                // Rank 0 gathers every rank's measurements; its machine reports the run and keeps its history.
                string ranks = launch.LocalRanks.Length == 1 ? $"rank {launch.LocalRanks[0]}" : $"ranks {launch.LocalRanks.Min()}-{launch.LocalRanks.Max()}";
                stdout.WriteLine(r.GetValue(json)
                    ? new JsonObject { ["ranks"] = new JsonArray(launch.LocalRanks.Select(x => (JsonNode)x).ToArray()), ["report"] = "printed where rank 0 runs" }.ToJsonString()
                    : $"{ranks} of {world} trained {r.GetValue(flags.Steps)} steps; the report (measured against predicted, all ranks) is printed where rank 0 runs");
                return Cli.Ok;
            }
            // A restart that resumed near the end may have trained fewer steps than the warm-up leaves out: it keeps its last.
            var (measured, measuredMemory, predicted) = Report(stdout, inputs, lines, Math.Min(warm, ran.Steps - 1), r.GetValue(json), ran, failures);
            if (predicted is not null)
                AppendHistory(r, flags, inputs, predicted, measured, measuredMemory);
            if (traced)
                MeasuredTrace.Write(tracePaths, MeasuredTrace.Of(lines, MeasuredTrace.Step(ran.FirstStep, ran.Steps, warm)), lines, plan,
                    $"{inputs.Model.Name}: {Rendering.Tables.Describe(plan)}, measured step {MeasuredTrace.Step(ran.FirstStep, ran.Steps, warm)}",
                    new Dictionary<string, object> { ["plan"] = Rendering.Tables.Describe(plan), ["source"] = "planner run: every rank's timers in one step after the warm-up" });
            return Cli.Ok;
        });
        return cmd;
    }

    /// <summary>Appends the run to the history closed-loop fits read (docs/closed-loop.md).</summary>
    private static void AppendHistory(ParseResult r, Flags flags, RunInputs inputs, Prediction predicted, double measured, double measuredMemory) =>
        Profiling.RunHistory.Append(r.GetValue(flags.History) ?? Profiling.RunHistory.DefaultPath, new Profiling.HistoryRow
        {
            Date = DateTime.UtcNow.ToString("s", System.Globalization.CultureInfo.InvariantCulture),
            Host = Environment.MachineName,
            PlanFile = Path.GetFullPath(inputs.PlanPath),
            Model = inputs.Model.Name,
            Cluster = inputs.ClusterName,
            Plan = Rendering.Tables.Describe(inputs.Plan) + $" gbs{inputs.Plan.Gbs} seq{inputs.Plan.Seq}",
            Calibrated = r.GetValue(flags.Calibration) is not null || File.Exists(Profiling.CalibrationFile.DefaultPath(inputs.ClusterName)),
            PredictedStepTime = predicted.StepTimeSeconds,
            MeasuredStepTime = measured,
            PredictedMemory = predicted.PeakMemoryGib,
            MeasuredMemory = measuredMemory,
        });

    /// <summary>The pipeline stage whose ranks' lines (<c>rank</c>, <c>compute_s</c>) hold the most compute on average
    /// (the lowest such stage on a tie; 0 without lines).</summary>
    public static int BusiestStage(ParallelPlan plan, IReadOnlyList<JsonNode> lines)
    {
        var layout = new Planner.Executor.Distributed.ProcessGroupLayout(plan);
        return lines.Count == 0 ? 0 : lines.GroupBy(l => layout.Coordinates((int)l["rank"]!).Pp)
            .OrderByDescending(g => g.Average(l => (double?)l["compute_s"] ?? 0)).ThenBy(g => g.Key).First().Key;
    }

    /// <summary>A cluster large enough for any plan: structural checks of a plan against its model only.</summary>
    private static ClusterSpec LocalCluster(int world) =>
        ClusterLoader.Load("local-cpu") with { Nodes = world, GpusPerNode = 1, Gpu = ClusterLoader.LoadGpu("a100-80g") };

    /// <summary>Refuses a model that would not fit this machine (the plan's model is trained at its real size).</summary>
    private static void CheckFitsMachine(RunInputs inputs)
    {
        var m = inputs.Model;
        var plan = inputs.Plan;
        double perRank = m.TotalParams * 16.0 / (plan.Tp * plan.Pp) + 2e8;
        double available = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        int localRanks = plan.Gpus;
        if (perRank * localRanks > available * 0.8)
            throw new InputException($"{inputs.PlanPath}: model '{m.Name}' ({m.TotalParams / 1e6:F0}M parameters) needs about {perRank * localRanks / Units.GiB:F1} GiB for {localRanks} ranks; this machine has {available / Units.GiB:F1} GiB (use a smaller model config)");
    }

    /// <summary>Starts (or is) the local ranks and collects their JSON lines; a failed rank ends the others.</summary>
    /// <param name="attempt">0: the first run, n: the n-th restart.</param>
    /// <param name="traceStep">The step whose events the ranks report, or null.</param>
    private static List<JsonObject> RunRanks(Launch launch, ParseResult r, Flags flags, RunArguments args, IEnumerable<string> checkpoints, int world, DeviceChoice device,
        int attempt, int? traceStep)
    {
        var forwarded = new List<string> { "--plan", args.Plan, "--steps", args.Steps.ToString(),
            "--timeout", r.GetValue(flags.Timeout).ToString("R", System.Globalization.CultureInfo.InvariantCulture),
            "--seed", args.Seed.ToString(), "--lr", args.Lr.ToString("R", System.Globalization.CultureInfo.InvariantCulture),
            "--adam-eps", args.AdamEps.ToString("R", System.Globalization.CultureInfo.InvariantCulture),
            "--data-bytes", args.DataBytes.ToString(), "--threads", r.GetValue(flags.Threads).ToString() };
        forwarded.AddRange(checkpoints);
        if (traceStep is int k)
            forwarded.AddRange(["--trace-step", k.ToString()]);
        if (args.Data is { } data)
            forwarded.AddRange(["--data", data]);
        if (args.LossScale is { } scale)
            forwarded.AddRange(["--loss-scale", scale.ToString("R", System.Globalization.CultureInfo.InvariantCulture)]);
        if (r.GetValue(flags.Dump) is { } dump)
            forwarded.AddRange(["--dump-params", dump]);
        if (launch.Distributed(world))
            forwarded.Add("--gather-report");
        var ranks = launch.LocalRanks.Select((rank, local) => (rank, (IEnumerable<string>)new[] { "rank", "--rank", rank.ToString(), "--world", world.ToString(),
            "--master-addr", launch.MasterAddr, "--master-port", launch.MasterPort.ToString(),
            "--device", device.RankArgument(local) }.Concat(forwarded))).ToList();
        // Training may run long; the ranks' own timeouts end a stuck collective well before this.
        // Rank 0's gathered lines repeat those of the ranks started here: one line per rank and step.
        return RankProcesses.Run(ranks, r.GetValue(flags.Threads), TimeSpan.FromDays(7), pin: !launch.Scheduled,
                watch: new RankWatch(TimeSpan.FromSeconds(r.GetValue(flags.Timeout)), attempt))
            .SelectMany(x => x.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries))
            .Select(l => JsonNode.Parse(l) as JsonObject).Where(o => o is not null).Select(o => o!)
            .DistinctBy(o => ((int)o["rank"]!, (int)o["step"]!)).ToList();
    }

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

/// <summary>A rank process failed; the message names the rank and its error.</summary>
public sealed class RankFailedException(string message) : Exception(message);
