using System.Text;
using Planner.Executor.Distributed;
using Planner.Executor.Optim;
using Planner.Executor.Parallelize;
using Planner.Executor.Torch;

namespace Planner.Executor.Training;

/// <summary>What a rank does about checkpoints.</summary>
/// <param name="Directory">Where checkpoints are written, or null for none.</param>
/// <param name="Every">A checkpoint after every this many steps (counted from the run's start), and at the end; 0: at the end only.</param>
/// <param name="Keep">Complete checkpoints kept (the newest).</param>
/// <param name="ResumeFrom">The checkpoint folder to continue from, or null to start at step 0.</param>
/// <param name="Run">The run-level fields of every manifest written (its id, plan, model, data, flags).</param>
public sealed record CheckpointOptions(string? Directory, int Every, int Keep, string? ResumeFrom, CheckpointManifest Run)
{
    /// <summary>True when a checkpoint is due after <paramref name="done"/> steps (<paramref name="last"/>: the
    /// invocation's last step).</summary>
    public bool Due(int done, bool last) => Directory is not null && (last || (Every > 0 && done % Every == 0));
}

/// <summary>
/// Writes and reads a rank's part of a checkpoint: every piece of every weight its optimizers step (the parameters, or
/// under ZeRO the master shard) with the optimizer's state of it, addressed by parameter name and place in the whole
/// weight (<see cref="ShardEntry"/>), so that a rank of any layout can read it back. Pieces that data-parallel replicas
/// hold alike are written by the first replica only. Frozen weights (a LoRA base) are not
/// written: they are made again from the run's seed.
/// </summary>
public static class RankCheckpoint
{
    private const string Written = "planner/checkpoint/";
    private const string Cleared = "planner/checkpoint-cleared/";

    /// <summary>
    /// Writes this rank's shard of the checkpoint after <paramref name="step"/> steps; rank 0 then waits for every
    /// rank's, writes the plan's copy and the manifest (the checkpoint is complete from then on) and prunes old ones.
    /// </summary>
    public static void Save(RankTrainer trainer, RankEnvironment env, Store store, CheckpointOptions options, int step, string planText)
    {
        string folder = CheckpointFolders.Of(options.Directory!, step);
        System.IO.Directory.CreateDirectory(folder);
        // A folder written before (a restart training again up to a step it had reached) loses its manifest before any
        // shard changes: it is never complete with shards of two runs in it.
        if (env.Rank == 0)
        {
            File.Delete(Path.Combine(folder, CheckpointManifest.FileName));
            store.Set($"{Cleared}{step}", [1]);
        }
        else
            store.Get($"{Cleared}{step}");
        using (var scope = DisposeScope.Begin())
            CheckpointShard.Write(Path.Combine(folder, CheckpointShard.FileName(env.Rank)), Pieces(trainer.Stepped));
        store.Set($"{Written}{step}/{env.Rank}", [1]);
        if (env.Rank != 0)
            return;
        for (int r = 1; r < env.World; r++)
            store.Get($"{Written}{step}/{r}");
        CheckpointFolders.WriteAtomically(Path.Combine(folder, CheckpointManifest.PlanCopy), Encoding.UTF8.GetBytes(planText));
        var plan = trainer.Plan;
        var manifest = options.Run with
        {
            Step = step,
            Layout = new CheckpointLayout(plan.Tp, plan.Pp, plan.Dp, plan.Cp, plan.Ep, plan.Zero, plan.Vpp, env.World),
            Optimizer = CostModel.Plans.FineTuning.Name(plan.Tuning.Optimizer),
            Scaler = trainer.ScalerState,
            Samples = (long)step * plan.Gbs,
            Shards = Enumerable.Range(0, env.World).Select(CheckpointShard.FileName).ToList(),
            Created = DateTime.UtcNow.ToString("s", System.Globalization.CultureInfo.InvariantCulture),
        };
        CheckpointFolders.WriteAtomically(Path.Combine(folder, CheckpointManifest.FileName), Encoding.UTF8.GetBytes(manifest.ToJson()));
        CheckpointFolders.Prune(options.Directory!, options.Keep);
    }

    /// <summary>Every piece of what the optimizers step, and of their state, with its values.</summary>
    private static List<(ShardEntry Entry, float[] Values)> Pieces(IReadOnlyList<SteppedWeights> stepped)
    {
        var pieces = new List<(ShardEntry, float[])>();
        foreach (var s in stepped.Where(s => s.Replicas is not { Rank: > 0 })) // one copy of replicated pieces
        {
            var optimizer = Checkpointed(s.Optimizer);
            for (int i = 0; i < s.Held.Tensors.Count; i++)
            {
                var flat = s.Held.Tensors[i].Detach().Reshape(-1);
                var state = optimizer.State(i);
                var slots = state?.Slots.Select(t => t.Detach().Reshape(-1)).ToList() ?? [];
                foreach (var p in s.Held.Pieces[i])
                {
                    var w = s.Held.Weights[p.Weight];
                    var entry = new ShardEntry(s.Names[p.Weight], "param", w.Rows, w.Cols, p.RowOffset, p.ColOffset, p.LocalCols, p.Start, p.Length, state?.Step ?? -1);
                    pieces.Add((entry, flat.Narrow(0, p.At, p.Length).ToFloatArray()));
                    for (int k = 0; k < slots.Count; k++)
                        pieces.Add((entry with { Kind = optimizer.SlotNames[k] }, slots[k].Narrow(0, p.At, p.Length).ToFloatArray()));
                }
            }
        }
        return pieces;
    }

    private static ICheckpointedOptimizer Checkpointed(IOptimizer optimizer) => optimizer as ICheckpointedOptimizer
        ?? throw new NotSupportedException($"{optimizer.GetType().Name}: its state is not checkpointed");

    /// <summary>
    /// Continues from the checkpoint in <paramref name="folder"/>, written on this layout or another: each stepped
    /// tensor and its optimizer state are cut from the whole weights, the parameters gathered again from ZeRO's shards
    /// (every rank must call this), the loss scale restored. Returns the steps the checkpoint had done.
    /// </summary>
    public static int Load(RankTrainer trainer, string folder)
    {
        try
        {
            return Restore(trainer, folder);
        }
        catch (InvalidDataException e)
        {
            // A damaged or foreign checkpoint is bad input: the rank exits 2 and the run is not restarted over it.
            throw new CostModel.Specs.InputException($"--resume: {e.Message}");
        }
    }

    private static int Restore(RankTrainer trainer, string folder)
    {
        var manifest = CheckpointManifest.Read(folder);
        var names = trainer.Stepped.SelectMany(s => s.Names).ToHashSet();
        var whole = WholeWeights.Read(folder, manifest, names);
        foreach (var s in trainer.Stepped)
        {
            var optimizer = Checkpointed(s.Optimizer);
            for (int i = 0; i < s.Held.Tensors.Count; i++)
                Restore(s, optimizer, i, whole);
        }
        trainer.Restored(manifest.Scaler);
        return manifest.Step;
    }

    private static void Restore(SteppedWeights s, ICheckpointedOptimizer optimizer, int i, WholeWeights whole)
    {
        using var scope = DisposeScope.Begin();
        var tensor = s.Held.Tensors[i];
        var values = tensor.Detach().Reshape(-1).ToFloatArray(); // what no piece covers (ZeRO's padding) stays
        var slots = optimizer.SlotNames.Select(_ => new float[tensor.Numel]).ToArray();
        var steps = new HashSet<long>();
        foreach (var p in s.Held.Pieces[i])
        {
            string name = s.Names[p.Weight];
            var w = s.Held.Weights[p.Weight];
            var piece = new ShardEntry(name, "param", w.Rows, w.Cols, p.RowOffset, p.ColOffset, p.LocalCols, p.Start, p.Length, 0);
            long step = whole.Step(name);
            steps.Add(step);
            whole.Fill(name, "param", piece, values, p.At);
            if (step >= 0)
                for (int k = 0; k < slots.Length; k++)
                    whole.Fill(name, optimizer.SlotNames[k], piece, slots[k], p.At);
        }
        tensor.Data().CopyFrom(values);
        if (steps.Count > 1)
            throw new InvalidDataException($"the weights one optimizer tensor holds were stepped {string.Join(" and ", steps)} times in the checkpoint");
        if (steps.Count == 1 && steps.First() is long done && done >= 0)
            optimizer.Restore(i, new TensorState(done, slots.Select(a => Tensor.From(a, tensor.Shape).On(tensor.Device)).ToList()));
    }
}
