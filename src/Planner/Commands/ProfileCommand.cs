using System.CommandLine;
using System.Diagnostics;
using System.Text.Json.Nodes;
using Planner.Cli.Profiling;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;
using Spectre.Console;
using Cal = Planner.CostModel.Calibration.Calibration;

namespace Planner.Cli.Commands;

/// <summary>
/// <c>profile</c>: measures this machine through the executor's binding (GEMMs by shape, memory bandwidth, the cost of a
/// kernel call, and collectives between real rank processes), fits the cost model's parameters and writes a calibration.
/// </summary>
public static class ProfileCommand
{
    /// <summary>Above this peak per device (TFLOP/s) a cluster's devices are GPUs, measured on CUDA devices; at or below
    /// it CPU cores, measured on the CPU (one core's FMA units give about 0.1; a GPU 15 and more).</summary>
    public const double CpuCoreTflopsLimit = 2;

    /// <summary>Creates the verb and its hidden rank verb.</summary>
    /// <remarks>Long: the verbs' options declared beside the handlers that read them, as System.CommandLine builds a verb.</remarks>
    public static IEnumerable<Command> Create(TextWriter stdout)
    {
        var cluster = new Option<string>("--cluster") { Description = "The cluster this machine belongs to (its calibration is stored under its name)", DefaultValueFactory = _ => "local-cpu" };
        var outFile = new Option<string?>("--out") { Description = "Calibration file (default: ~/.cache/planner/calibration/NAME.csv, used automatically for that cluster)" };
        var ranks = new Option<int>("--ranks") { Description = "Rank processes on this machine for the collective measurements", DefaultValueFactory = _ => 2 };
        var nnodes = new Option<int>("--nnodes") { Description = "Machines profiled together, collectives across them priced as the inter-node tier (start the same command on each)", DefaultValueFactory = _ => 1 };
        var nodeRank = new Option<int>("--node-rank") { Description = "This machine's index among --nnodes (0 writes the calibration)", DefaultValueFactory = _ => 0 };
        var addr = new Option<string>("--master-addr") { Description = "Address of node 0 (rendezvous)", DefaultValueFactory = _ => "127.0.0.1" };
        var port = new Option<int?>("--master-port") { Description = "Rendezvous port on node 0 (default: a free port on one machine, 29500 on several)" };
        var device = new Option<string>("--device")
        {
            Description = "What the ranks measure: auto (the cluster's kind of device: CUDA devices for a GPU cluster, else the CPU), cpu, or cuda (one device per rank of this machine; NCCL groups)",
            DefaultValueFactory = _ => "auto",
        };
        var keep = new Option<string?>("--keep-measurements") { Description = "Also write the raw measurements (JSON) to this file, to fit again later with --from-measurements" };
        var from = new Option<string?>("--from-measurements") { Description = "Measure nothing: fit the calibration from measurements a profile kept (--keep-measurements), on any machine" };
        var cmd = new Command("profile", "Measure this machine (or several) and write a calibration the cost model uses for the cluster") { cluster, outFile, ranks, nnodes, nodeRank, addr, port, device, keep, from };
        cmd.SetAction(r =>
        {
            var c = ClusterLoader.Load(r.GetValue(cluster)!);
            if (r.GetValue(from) is { } fromPath)
            {
                var saved = ReadMeasurements(fromPath);
                var refit = FitSaved(c, saved, fromPath, out var refitReport);
                string refitPath = r.GetValue(outFile) ?? CalibrationFile.DefaultPath(c.Name);
                WriteReadable(refitPath, refit, fromPath);
                var refitConsole = Rendering.Tables.Console(stdout);
                refitReport(refitConsole);
                refitConsole.WriteLine($"calibration for '{c.Name}' fitted from {fromPath} (measured on {refit.Machine.Host}, {refit.Machine.Cpu}) written to {refitPath}");
                return Cli.Ok;
            }
            var choice = DeviceChoice.Parse(r.GetValue(device)!);
            int perNode = r.GetValue(ranks);
            if (perNode is < 1 or > 64)
                throw new InputException($"--ranks: {perNode} must be from 1 to 64");
            if (r.GetValue(nnodes) is < 1 or > 1024)
                throw new InputException($"--nnodes: {r.GetValue(nnodes)} must be from 1 to 1024");
            int world = Launch.SchedulerWorld() ?? perNode * r.GetValue(nnodes);
            if (world < 2)
                throw new InputException($"--ranks: {perNode} rank on one machine measures no collective; use 2 or more (or several machines)");
            var launch = Launch.From(r.GetValue(nnodes), r.GetValue(nodeRank), r.GetValue(addr)!, r.GetValue(port), world, "the profile");
            var measured = MeasuredDevice(c, choice, launch.LocalRanks.Length, launch.Scheduled);
            var precision = ProfileSizes.PrecisionFor(c, measured.Type == Executor.Torch.DeviceType.Cuda);
            string path = r.GetValue(outFile) ?? CalibrationFile.DefaultPath(c.Name);
            var watch = Stopwatch.StartNew();
            var console = Rendering.Tables.Console(stdout);
            if (!launch.LocalRanks.Contains(0))
            {
                // Another machine's ranks: they measure with rank 0, which fits and writes the calibration.
                RunRanks(launch, world, r.GetValue(nodeRank), measured, precision, (_, _) => { });
                console.WriteLine($"ranks {launch.LocalRanks.Min()}-{launch.LocalRanks.Max()} of {world} measured; the calibration is written where rank 0 runs");
                return Cli.Ok;
            }
            JsonObject? result = null;
            AnsiConsole.Console.Profile.Out = new AnsiConsoleOutput(Console.Error);
            AnsiConsole.Progress().AutoClear(true).Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
                .Start(ctx =>
                {
                    var task = ctx.AddTask($"profiling on {world} ranks", maxValue: 1);
                    result = RunRanks(launch, world, r.GetValue(nodeRank), measured, precision, (done, what) =>
                    {
                        task.Value = done;
                        task.Description = $"profiling on {world} ranks: {what}";
                    });
                    task.Value = 1;
                });
            if (r.GetValue(keep) is { } keepPath)
            {
                Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(keepPath))!);
                File.WriteAllText(keepPath, result!.ToJsonString() + "\n");
            }
            var cal = ProfileFit.Fit(c, result!, out var report);
            CalibrationFile.Write(path, cal);
            report(console);
            console.WriteLine($"calibration for '{c.Name}' written to {path} in {watch.Elapsed.TotalSeconds:F0} s");
            return Cli.Ok;
        });

        var rank = new Option<int>("--rank") { Required = true };
        var worldOpt = new Option<int>("--world") { Required = true };
        var rankAddr = new Option<string>("--master-addr") { DefaultValueFactory = _ => "127.0.0.1" };
        var rankPort = new Option<int>("--master-port") { Required = true };
        var node = new Option<string>("--node") { DefaultValueFactory = _ => "0" };
        var rankDevice = new Option<string>("--device") { DefaultValueFactory = _ => "cpu" };
        var rankPrecision = new Option<string>("--precision") { DefaultValueFactory = _ => "fp32" };
        var rankCmd = new Command("profile-rank", "One rank of profile") { Hidden = true };
        foreach (Option o in new Option[] { rank, worldOpt, rankAddr, rankPort, node, rankDevice, rankPrecision })
            rankCmd.Options.Add(o);
        rankCmd.SetAction(r =>
        {
            Executor.Training.RankLiveness.Start(Console.Error, r.GetValue(rank));
            string host = r.GetValue(rankAddr)!;
            var own = DeviceChoice.Parse(r.GetValue(rankDevice)!);
            var p = PrecisionInfo.TryParse(r.GetValue(rankPrecision)!) ?? throw new InputException($"--precision: '{r.GetValue(rankPrecision)}' is not fp32, tf32, fp16, bf16 or fp8");
            return ProfileRank.Run(r.GetValue(rank), r.GetValue(worldOpt), host, r.GetValue(rankPort), stdout, Console.Error, r.GetValue(node)!,
                loopback: Planner.Executor.Distributed.Store.IsLoopback(host), device: own.Of(0), precision: p);
        });
        return [cmd, rankCmd];
    }

    /// <summary>
    /// The device the ranks measure for <paramref name="cluster"/>: its kind of device (CUDA devices for a GPU cluster,
    /// CPU cores else) unless --device names one, checked against what this machine has. A calibration measured on the
    /// other kind would price every plan of the cluster with the wrong device's rates (and be used for it by default).
    /// </summary>
    /// <exception cref="InputException">The device is not the cluster's kind, or CUDA is asked for where the shim sees none.</exception>
    public static DeviceChoice MeasuredDevice(ClusterSpec cluster, DeviceChoice choice, int localRanks, bool scheduled, Func<int>? cudaDevices = null)
    {
        double specPeak = cluster.Gpu.PeakTflops.Values.Max();
        bool gpus = specPeak > CpuCoreTflopsLimit;
        var resolved = choice.Type is null && !gpus ? new DeviceChoice(Executor.Torch.DeviceType.Cpu) : choice.Resolve(localRanks, scheduled, cudaDevices);
        bool cuda = resolved.Type == Executor.Torch.DeviceType.Cuda;
        if (gpus && !cuda)
            throw new InputException(choice.Type is null
                ? $"--cluster {cluster.Name}: its devices ({cluster.Gpu.Name}, {specPeak:G3} TFLOP/s) are GPUs, and the libtorch shim sees {(cudaDevices ?? (() => Executor.Torch.TorchRuntime.CudaDevices))()} CUDA device(s) for {localRanks} rank(s) here (profile a GPU cluster on its GPU nodes with a CUDA build of the shim, README 'Training on GPUs'; on this machine, a CPU cluster such as local-cpu)"
                : $"--cluster {cluster.Name}: its devices ({cluster.Gpu.Name}, {specPeak:G3} TFLOP/s) are GPUs, not the CPU cores --device cpu measures; profile a CPU cluster such as local-cpu, or the GPUs with --device cuda");
        if (!gpus && cuda)
            throw new InputException($"--cluster {cluster.Name}: its devices ({cluster.Gpu.Name}, {specPeak:G3} TFLOP/s) are CPU cores, not the CUDA devices --device {(choice.Type is null ? "auto" : "cuda")} measures; use --device cpu, or a GPU cluster");
        return resolved;
    }

    /// <summary>Starts this machine's ranks (or is the scheduler's one) and returns rank 0's measurements when it ran here.</summary>
    /// <param name="device">What the ranks measure (each local rank its own CUDA device).</param>
    /// <param name="precision">The precision they measure in on CUDA.</param>
    /// <param name="progress">Called with rank 0's progress reports: the share done and what it measures.</param>
    private static JsonObject? RunRanks(Launch launch, int world, int nodeRank, DeviceChoice device, Precision precision, Action<double, string> progress)
    {
        // The ranks learn which of them share a machine from the name each gives its own: the launcher's node index,
        // or under a scheduler its node id (Slurm) or the host name.
        string nodeName = !launch.Scheduled ? $"node{nodeRank}"
            : Environment.GetEnvironmentVariable("SLURM_NODEID") is { Length: > 0 } id ? $"slurm-node{id}" : Environment.MachineName;
        var ranks = launch.LocalRanks.Select((rank, local) => (rank, (IEnumerable<string>)
            ["profile-rank", "--rank", rank.ToString(), "--world", world.ToString(), "--master-addr", launch.MasterAddr,
             "--master-port", launch.MasterPort.ToString(), "--node", nodeName, "--device", device.RankArgument(local), "--precision", precision.Name()])).ToList();
        // The sweeps grow with the ranks (the all-reduce over every smaller group); the ranks' own timeouts end a stuck collective.
        var outputs = RankProcesses.Run(ranks, threads: 1, TimeSpan.FromMinutes(5) + TimeSpan.FromSeconds(20 * world), pin: !launch.Scheduled,
            watch: new RankWatch(ProfileRank.Timeout), progress: (rank, line) =>
        {
            int space = line.IndexOf(' ');
            if (rank == 0 && space > 0 && double.TryParse(line[..space], System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double done))
                progress(done, line[(space + 1)..]);
        });
        return launch.LocalRanks.Contains(0) ? (JsonNode.Parse(outputs.First(o => o.Rank == 0).Output.Trim().Split('\n').Last()) as JsonObject)! : null;
    }

    /// <summary>Measurements a profile kept (rank 0's JSON).</summary>
    /// <exception cref="InputException">The file is missing or not a JSON object.</exception>
    public static JsonObject ReadMeasurements(string path)
    {
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InputException($"--from-measurements: cannot read '{path}': {e.Message}");
        }
        try
        {
            var o = JsonNode.Parse(text) as JsonObject ?? throw new InputException($"--from-measurements: '{path}' is not a JSON object of profile's measurements");
            _ = o.Count; // reads the members now: a key given twice throws here, not in the fit
            return o;
        }
        catch (System.Text.Json.JsonException e)
        {
            throw new InputException($"--from-measurements: '{path}' is not JSON: {e.Message.Split('\n')[0]}");
        }
        catch (ArgumentException e)
        {
            throw new InputException($"--from-measurements: '{path}' gives a key twice ({e.Message.Split('\n')[0]})");
        }
    }

    /// <summary><see cref="ProfileFit.Fit"/> of kept measurements, a file that lacks one of them named as bad input.</summary>
    /// <exception cref="InputException">A measurement is missing or of the wrong kind.</exception>
    public static Cal FitSaved(ClusterSpec cluster, JsonObject m, string path, out Action<IAnsiConsole> report)
    {
        // Measurements of the other kind of device would price every plan of the cluster with the wrong device's rates.
        bool cuda = (Text(m, "device", path) ?? "cpu") == "cuda";
        double specPeak = cluster.Gpu.PeakTflops.Values.Max();
        if (cuda != specPeak > CpuCoreTflopsLimit)
            throw new InputException($"--from-measurements: '{path}' was measured on {(cuda ? "CUDA devices" : "CPU cores")}, but --cluster {cluster.Name}'s devices ({cluster.Gpu.Name}, {specPeak:G3} TFLOP/s) are {(cuda ? "CPU cores" : "GPUs")}");
        if (cuda && Text(m, "precision", path) is { } mp && PrecisionInfo.TryParse(mp) is { } p && !cluster.Gpu.Supports(p))
            throw new InputException($"--from-measurements: '{path}' was measured in {p.Name()}, which --cluster {cluster.Name}'s devices ({cluster.Gpu.Name}) have no rate for");
        foreach (var key in ProfileFit.RequiredMeasurements)
            if (m[key] is null)
                throw new InputException($"--from-measurements: '{path}' lacks '{key}' (not the measurements of this version's profile --keep-measurements)");
        // The report sets each collective's rows beside the others': a profile measures them at the same sizes.
        foreach (string[] series in (string[][])[["all_reduce_loaded", "send_recv"], ["all_gather", "reduce_scatter", "all_to_all"]])
            if (series.Select(k => (m[k] as JsonArray)?.Count).Distinct().Count() > 1)
                throw new InputException($"--from-measurements: '{path}' measures {string.Join(", ", series.Select(k => $"'{k}' at {(m[k] as JsonArray)?.Count.ToString() ?? "no"} sizes"))}; a profile measures them at the same sizes");
        try
        {
            var cal = ProfileFit.Fit(cluster, m, out var inner);
            report = console => Guarded(() => inner(console), path);
            return cal;
        }
        catch (Exception e) when (WrongForm(e))
        {
            throw new InputException($"--from-measurements: '{path}' holds a measurement of the wrong form ({e.Message.Split('\n')[0]})");
        }
    }

    /// <summary>Writes a calibration fitted from kept measurements only if the calibration reader takes it back: a
    /// measurement out of range (a negative GEMM time) fits a file every later verb would refuse.</summary>
    private static void WriteReadable(string path, Cal calibration, string measurements)
    {
        string trial = path + ".trial";
        try
        {
            CalibrationFile.Write(trial, calibration);
            CalibrationFile.Read(trial);
        }
        catch (InputException e)
        {
            File.Delete(trial);
            throw new InputException($"--from-measurements: '{measurements}' holds a measurement out of range: the calibration fitted from it would be refused ({e.Message.Replace($"{trial}: ", "")})");
        }
        File.Move(trial, path, overwrite: true);
    }

    private static bool WrongForm(Exception e) =>
        e is InvalidOperationException or FormatException or InvalidCastException or NullReferenceException or IndexOutOfRangeException or ArgumentException;

    /// <summary>Runs the report of kept measurements: a measurement of the wrong form is bad input there too.</summary>
    private static void Guarded(Action report, string path)
    {
        try
        {
            report();
        }
        catch (Exception e) when (WrongForm(e))
        {
            throw new InputException($"--from-measurements: '{path}' holds a measurement of the wrong form ({e.Message.Split('\n')[0]})");
        }
    }

    /// <summary>A text member of kept measurements, or null when absent.</summary>
    private static string? Text(JsonObject m, string key, string path) => m[key] switch
    {
        null => null,
        JsonValue v when v.TryGetValue(out string? s) => s,
        var other => throw new InputException($"--from-measurements: '{path}' key '{key}' is {other.ToJsonString()}; expected text"),
    };

}
