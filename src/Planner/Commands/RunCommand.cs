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
public static partial class RunCommand
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
        var traceFrom = new Option<int?>("--trace-from") { Description = "The first step whose events the rank reports (run --trace)" };
        var cmd = new Command("rank", "One rank process of run (started by run)") { Hidden = true };
        flags.AddTo(cmd);
        var checkpoints = new CheckpointFlags();
        checkpoints.AddToRank(cmd);
        foreach (Option o in new Option[] { rank, world, addr, port, gather, traceFrom })
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
            return RankMain.Run(inputs.Model, inputs.Plan, env, flags.Options(r, args) with { TraceFrom = r.GetValue(traceFrom) }, data, stdout, r.GetValue(flags.Dump), r.GetValue(flags.Threads), r.GetValue(gather),
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
        trace.AddTo(cmd, ownForce: true);
        cmd.SetAction(r =>
        {
            var tracePaths = trace.Read(r, r.GetValue(trace.ForceTrace));
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
            // The token file the ranks read (a resumed run's from its checkpoint unless --data gives one), through its last step.
            if (args.Data is { } tokens)
                TokenFileCheck.Check(tokens, args.DataBytes, plan.Seq, inputs.Model.Vocab, (long)(args.FirstStep + args.Steps) * plan.Gbs);
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
                    traced ? MeasuredTrace.FirstTimed(attemptArgs.FirstStep, attemptArgs.Steps, warm) : null), attemptArgs);
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
                MeasuredTrace.Write(tracePaths, lines, MeasuredTrace.FirstTimed(ran.FirstStep, ran.Steps, warm), plan, inputs.Model.Name,
                    new Dictionary<string, object> { ["plan"] = Rendering.Tables.Describe(plan), ["source"] = "planner run: every rank's timers in the median step after the warm-up" });
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
    /// <param name="traceFrom">The first step whose events the ranks report, or null.</param>
    private static List<JsonObject> RunRanks(Launch launch, ParseResult r, Flags flags, RunArguments args, IEnumerable<string> checkpoints, int world, DeviceChoice device,
        int attempt, int? traceFrom)
    {
        var forwarded = new List<string> { "--plan", args.Plan, "--steps", args.Steps.ToString(),
            "--timeout", r.GetValue(flags.Timeout).ToString("R", System.Globalization.CultureInfo.InvariantCulture),
            "--seed", args.Seed.ToString(), "--lr", args.Lr.ToString("R", System.Globalization.CultureInfo.InvariantCulture),
            "--adam-eps", args.AdamEps.ToString("R", System.Globalization.CultureInfo.InvariantCulture),
            "--data-bytes", args.DataBytes.ToString(), "--threads", r.GetValue(flags.Threads).ToString() };
        forwarded.AddRange(checkpoints);
        if (traceFrom is int k)
            forwarded.AddRange(["--trace-from", k.ToString()]);
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
}
