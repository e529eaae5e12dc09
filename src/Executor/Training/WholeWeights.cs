namespace Planner.Executor.Training;

/// <summary>
/// The whole weights (parameters and optimizer-state slots, by the one-process model's names) that a resuming rank
/// holds pieces of, joined from every rank's shard of a checkpoint: the layout-independent form a rank of any layout
/// cuts its own pieces from. Each rank reads the whole of each weight it holds a part of.
/// </summary>
internal sealed class WholeWeights
{
    private readonly Dictionary<(string Name, string Kind), (float[] Values, bool[] Have)> _weights = [];
    private readonly Dictionary<string, HashSet<long>> _steps = [];
    private readonly string _folder;

    private WholeWeights(string folder) => _folder = folder;

    /// <summary>Reads the weights named <paramref name="names"/> from the shards of the checkpoint in <paramref name="folder"/>.</summary>
    public static WholeWeights Read(string folder, CheckpointManifest manifest, IReadOnlySet<string> names)
    {
        var whole = new WholeWeights(folder);
        foreach (string file in manifest.Shards!)
        {
            var (entries, values) = CheckpointShard.Read(Path.Combine(folder, file));
            foreach (var e in entries.Where(e => names.Contains(e.Name)))
                whole.Add(e, values);
        }
        return whole;
    }

    private void Add(ShardEntry e, float[] values)
    {
        if (!_weights.TryGetValue((e.Name, e.Kind), out var w))
        {
            w = (new float[e.Rows * e.Cols], new bool[e.Rows * e.Cols]);
            _weights[(e.Name, e.Kind)] = w;
        }
        if (e.Kind == "param")
        {
            _steps.TryAdd(e.Name, []);
            _steps[e.Name].Add(e.Step);
        }
        for (long i = 0; i < e.Length; i++)
        {
            long at = e.WholeIndex(i);
            if (at < 0 || at >= w.Values.Length)
                throw new InvalidDataException($"{_folder}: a piece of '{e.Name}' lies outside its {e.Rows}x{e.Cols} weight");
            w.Values[at] = values[e.At + i];
            w.Have[at] = true;
        }
    }

    /// <summary>The optimizer's step count of weight <paramref name="name"/> (-1: no optimizer state yet).</summary>
    public long Step(string name)
    {
        if (!_steps.TryGetValue(name, out var steps))
            throw new InvalidDataException($"{_folder}: the checkpoint has no weight '{name}' (was it written for another model or fine-tuning?)");
        if (steps.Count != 1)
            throw new InvalidDataException($"{_folder}: the pieces of '{name}' were stepped {string.Join(" and ", steps)} times");
        return steps.First();
    }

    /// <summary>Fills <paramref name="into"/>[at + e] with element e of a piece of (<paramref name="name"/>,
    /// <paramref name="kind"/>) that <paramref name="piece"/> places in the whole weight.</summary>
    public void Fill(string name, string kind, ShardEntry piece, float[] into, long at)
    {
        if (!_weights.TryGetValue((name, kind), out var w))
            throw new InvalidDataException($"{_folder}: the checkpoint has no {kind} of '{name}' (was it written with another optimizer?)");
        if (w.Values.Length != piece.Rows * piece.Cols)
            throw new InvalidDataException($"{_folder}: '{name}' is {w.Values.Length} elements in the checkpoint, {piece.Rows * piece.Cols} in this model");
        for (long e = 0; e < piece.Length; e++)
        {
            long i = piece.WholeIndex(e);
            if (!w.Have[i])
                throw new InvalidDataException($"{_folder}: no rank's shard holds element {i} of '{name}' ({kind}): the checkpoint is incomplete");
            into[at + e] = w.Values[i];
        }
    }
}
