using Planner.Executor.Optim;
using Planner.Executor.Torch;
using Planner.Executor.Training;
using Xunit;

namespace Planner.Executor.Tests;

/// <summary>The checkpoint's files (shards addressed by whole-weight position, folders complete by their manifest) and
/// the optimizers' state read and restored.</summary>
public sealed class CheckpointFilesTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), $"planner-ckfiles-{Guid.NewGuid():N}");

    public CheckpointFilesTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void A_shard_reads_back_its_entries_and_places_a_column_shards_elements_in_the_whole_weight()
    {
        // The second of two column shards of a 3x4 weight (2 columns each), its elements 1..4 held (a ZeRO slice).
        var entry = new ShardEntry("w", "param", 3, 4, 0, 2, 2, 1, 4, 7);
        string path = Path.Combine(_dir, CheckpointShard.FileName(1));
        CheckpointShard.Write(path, [(entry, [1f, 2f, 3f, 4f]), (entry with { Kind = "exp_avg" }, [0.5f, -0.25f, 1e-30f, float.MaxValue])]);
        var (entries, values) = CheckpointShard.Read(path);
        Assert.Equal(2, entries.Count);
        Assert.Equal(entry with { At = 0 }, entries[0]);
        Assert.Equal(4, entries[1].At);
        Assert.Equal(new[] { 1f, 2f, 3f, 4f, 0.5f, -0.25f, 1e-30f, float.MaxValue }, values);
        // Shard element 1 is (row 0, col 1) of the shard: whole (0, 3); element 2 is (1, 0): whole (1, 2).
        Assert.Equal(new long[] { 3, 6, 7, 10 }, Enumerable.Range(0, 4).Select(e => entry.WholeIndex(e)).ToArray());
        File.WriteAllBytes(path, File.ReadAllBytes(path)[..20]);
        Assert.Throws<InvalidDataException>(() => CheckpointShard.Read(path));
    }

    [Fact]
    public void The_latest_complete_checkpoint_is_picked_and_pruning_keeps_the_newest()
    {
        foreach (int step in new[] { 2, 4, 6, 8 })
        {
            Directory.CreateDirectory(CheckpointFolders.Of(_dir, step));
            if (step != 8) // step 8 cut short: no manifest
                File.WriteAllText(Path.Combine(CheckpointFolders.Of(_dir, step), CheckpointManifest.FileName), "{}");
        }
        Assert.Equal(CheckpointFolders.Of(_dir, 6), CheckpointFolders.Latest(_dir));
        CheckpointFolders.Prune(_dir, keep: 2);
        Assert.Equal([4, 6, 8], CheckpointFolders.All(_dir).Select(x => x.Step).ToArray()); // 8 may be being written
        Assert.Null(CheckpointFolders.Latest(Path.Combine(_dir, "none")));
    }

    public static TheoryData<string> Optimizers() => ["adamw", "sgd", "lion", "sophia"];

    [Theory]
    [MemberData(nameof(Optimizers))]
    public void An_optimizer_restored_from_anothers_state_steps_as_it_does_bit_for_bit(string kind)
    {
        using var scope = DisposeScope.Begin();
        var init = Tensor.Normal([3, 5], 0, 1, seed: 7);
        var a = init.Clone();
        var b = init.Clone();
        a.RequiresGrad = b.RequiresGrad = true;
        using var first = Create(kind, a);
        using var second = Create(kind, b);
        Assert.Null(first.State(0));
        for (int step = 0; step < 3; step++)
        {
            a.SetGrad(Tensor.Normal([3, 5], 0, 1, seed: (ulong)(100 + step)));
            if (first is Sophia s)
                s.UpdateCurvature();
            first.Step();
        }
        var state = first.State(0)!;
        Assert.Equal(kind == "adamw" ? 3 : 0, state.Step);
        b.Data().CopyFrom(a.Detach());
        second.Restore(0, new TensorState(state.Step, state.Slots.Select(t => Tensor.From(t.ToFloatArray(), t.Shape)).ToList()));
        for (int step = 3; step < 5; step++)
        {
            a.SetGrad(Tensor.Normal([3, 5], 0, 1, seed: (ulong)(100 + step)));
            b.SetGrad(Tensor.Normal([3, 5], 0, 1, seed: (ulong)(100 + step)));
            first.Step();
            second.Step();
        }
        Assert.Equal(a.ToFloatArray(), b.ToFloatArray());
        Assert.NotEqual(init.ToFloatArray(), a.ToFloatArray());
    }

    private static ICheckpointedOptimizer Create(string kind, Tensor p) => kind switch
    {
        "adamw" => Optimizer.AdamW([p], 1e-2),
        "sgd" => Optimizer.Sgd([p], 1e-2),
        "lion" => Optimizer.Lion([p], 1e-2),
        _ => new Sophia([p], 1e-2, tokens: 64),
    };
}
