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
    public static int Run(ModelSpec model, ParallelPlan plan, RankEnvironment env, TrainOptions options, ITokenSource data,
        TextWriter output, string? dumpDirectory = null, int threads = 1)
    {
        TorchRuntime.Threads = threads;
        TorchRuntime.Seed(options.Seed);
        using var store = Store.Tcp(env.MasterAddr, env.MasterPort, env.World, env.Rank == 0, TimeSpan.FromMinutes(5));
        bool loopback = env.MasterAddr is "127.0.0.1" or "localhost" or "::1";
        using var trainer = new RankTrainer(model, plan, env.Rank, store, data, options, loopback);
        for (int step = 0; step < options.Steps; step++)
        {
            using var scope = DisposeScope.Begin();
            var metrics = trainer.Step(step);
            var (current, peak) = TorchRuntime.Memory(Device.Cpu);
            output.WriteLine(JsonSerializer.Serialize(new
            {
                rank = env.Rank,
                step = metrics.Step,
                seconds = metrics.Seconds,
                loss = double.IsNaN(metrics.Loss) ? (double?)null : metrics.Loss,
                compute_s = metrics.Compute,
                tp_comm_s = metrics.TpComm,
                pp_wait_s = metrics.PpWait,
                dp_comm_s = metrics.DpComm,
                optimizer_s = metrics.Optimizer,
                memory_bytes = current,
                peak_memory_bytes = peak,
                parameter_bytes = trainer.ResidentParameterBytes,
                overlapped_reduces = trainer.OverlappedReduces,
                gradient_bytes = trainer.GradientBytesAfterBackward,
                loss_scale = trainer.LossScale,
                skipped_steps = trainer.SkippedSteps,
            }));
            output.Flush();
        }
        if (dumpDirectory is not null)
            Dump(trainer, env.Rank, dumpDirectory);
        return 0;
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
            rank, tp = c.Tp, pp = c.Pp, dp = c.Dp, parameters = values,
        }));
    }
}
