using System.Text.Json;
using Planner.CostModel.Plans;
using Planner.CostModel.Specs;
using Planner.Executor.Distributed;
using Planner.Executor.Torch;

namespace Planner.Executor.Training;

/// <summary>Where a rank finds its peers and what it reports.</summary>
/// <param name="Rank">Global rank.</param>
/// <param name="World">World size (tp·pp·dp·cp).</param>
/// <param name="MasterAddr">Host of the TCPStore (served by rank 0).</param>
/// <param name="MasterPort">Its port.</param>
public sealed record RankEnvironment(int Rank, int World, string MasterAddr, int MasterPort);

/// <summary>The body of one rank process: train, print one JSON line per step, optionally dump parameters.</summary>
public static class RankMain
{
    /// <summary>Runs the rank; returns the process exit code.</summary>
    /// <param name="gatherReport">Rank 0 also prints every other rank's lines after training (through the rendezvous
    /// store), so that the machine of rank 0 reports a run whose ranks span several machines.</param>
    /// <param name="liveness">The heartbeat to its launcher, told each step as it starts (null: none).</param>
    /// <param name="checkpoint">Checkpoints to write and the one to resume from, or null for none.</param>
    /// <param name="planText">The plan file's text with its model as an absolute path (what checkpoints copy).</param>
    public static int Run(ModelSpec model, ParallelPlan plan, RankEnvironment env, TrainOptions options, ITokenSource data,
        TextWriter output, string? dumpDirectory = null, int threads = 1, bool gatherReport = false, RankLiveness? liveness = null,
        CheckpointOptions? checkpoint = null, string planText = "")
    {
        TorchRuntime.Threads = threads;
        TorchRuntime.Seed(options.Seed);
        using var store = Store.Tcp(env.MasterAddr, env.MasterPort, env.World, env.Rank == 0, options.Timeout);
        bool loopback = Store.IsLoopback(env.MasterAddr);
        DeviceClash.Check(store, env.Rank, env.World, RankDevice.Of(options.Device, env.Rank));
        using var trainer = new RankTrainer(model, plan, env.Rank, store, data, options, loopback);
        var lines = new System.Text.StringBuilder();
        int first = checkpoint?.ResumeFrom is { } folder ? RankCheckpoint.Load(trainer, folder) : 0;
        for (int step = first; step < first + options.Steps; step++)
        {
            liveness?.Reached(step);
            using var scope = DisposeScope.Begin();
            var metrics = trainer.Step(step, trace: step >= options.TraceFrom);
            double? saved = null;
            if (checkpoint is not null && checkpoint.Due(step + 1, step == first + options.Steps - 1))
            {
                long t0 = TorchRuntime.NowNanoseconds();
                RankCheckpoint.Save(trainer, env, store, checkpoint, step + 1, planText);
                saved = (TorchRuntime.NowNanoseconds() - t0) / 1e9;
            }
            var (current, peak) = TorchRuntime.Memory(options.Device);
            string line = JsonSerializer.Serialize(new
            {
                rank = env.Rank,
                stage = trainer.Coordinates.Pp,
                step = metrics.Step,
                seconds = metrics.Seconds,
                loss = double.IsNaN(metrics.Loss) ? (double?)null : metrics.Loss,
                compute_s = metrics.Compute,
                tp_comm_s = metrics.TpComm,
                ep_comm_s = metrics.EpComm,
                cp_comm_s = metrics.CpComm,
                pp_wait_s = metrics.PpWait,
                dp_comm_s = metrics.DpComm,
                optimizer_s = metrics.Optimizer,
                memory_bytes = current,
                peak_memory_bytes = peak,
                parameter_bytes = trainer.ResidentParameterBytes,
                trainable_parameters = trainer.TrainableParameters,
                optimizer_state_bytes = trainer.OptimizerStateBytes,
                overlapped_reduces = trainer.OverlappedReduces,
                gradient_bytes = trainer.GradientBytesAfterBackward,
                loss_scale = trainer.LossScale,
                skipped_steps = trainer.SkippedSteps,
                aux_loss = trainer.AuxLoss,
                moe_loads = metrics.RoutingLoads is { Count: > 0 } loads ? loads : null,
                checkpoint_s = saved,
                trace = metrics.Trace?.Select(e => new { name = e.Name, lane = e.Lane.ToString(), start_s = e.Start, dur_s = e.Duration }),
                trace_origin_ns = metrics.Trace is null ? (long?)null : metrics.TraceOriginNs,
                trace_host = metrics.Trace is null ? null : Environment.MachineName,
            });
            output.WriteLine(line);
            output.Flush();
            lines.AppendLine(line);
        }
        if (dumpDirectory is not null)
            Dump(trainer, env.Rank, dumpDirectory);
        if (gatherReport)
            GatherReport(store, env, lines.ToString(), output);
        return 0;
    }

    private const string ReportKey = "planner/report/";

    /// <summary>Every rank leaves its lines in the store; rank 0 (the store's server, so it outlives the others'
    /// writes) prints them all.</summary>
    private static void GatherReport(Store store, RankEnvironment env, string lines, TextWriter output)
    {
        if (env.Rank != 0)
        {
            store.Set(ReportKey + env.Rank, System.Text.Encoding.UTF8.GetBytes(lines));
            return;
        }
        for (int rank = 1; rank < env.World; rank++)
            output.Write(System.Text.Encoding.UTF8.GetString(store.Get(ReportKey + rank)));
        output.Flush();
    }

    /// <summary>
    /// Writes the rank's parameters (its TP shards; ZeRO-3 gathers them over DP first, so every rank must call this)
    /// as JSON {name: [values]} to DIR/rank-N.json.
    /// </summary>
    public static void Dump(RankTrainer trainer, int rank, string directory)
    {
        Directory.CreateDirectory(directory);
        var values = trainer.ParameterValues();
        var c = trainer.Coordinates;
        File.WriteAllText(Path.Combine(directory, $"rank-{rank}.json"), JsonSerializer.Serialize(new
        {
            rank,
            tp = c.Tp,
            pp = c.Pp,
            dp = c.Dp,
            parameters = values,
        }));
    }
}
