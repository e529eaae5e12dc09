using System.Globalization;
using Planner.Executor.Distributed;
using Planner.Executor.Model;
using Planner.Executor.Torch;

namespace Planner.Executor.Parallelize;

/// <summary>
/// Expert parallelism as Megatron-Core lays it out, on a plain <see cref="GptModel"/>: the routed experts of every MoE
/// block split into equal consecutive ranges over the ranks of the EP group (rank r holds experts r·E/ep to
/// (r+1)·E/ep − 1; the other ranks' are dropped before the model is made), and each block's routed rows dispatched to
/// the ranks that hold their experts and combined back with all-to-alls over the group. Under tensor parallelism with
/// experts held whole (expert-TP 1) each rank dispatches its own part of the sequence and the EP group may span the TP
/// ranks; with experts split as the dense MLP (expert-TP = TP) every rank of a TP group dispatches the same rows, each
/// computing its part of the experts. The experts' gradients are reduced over the expert-data-parallel group by
/// <see cref="DataParallelism"/>.
/// </summary>
public sealed class ExpertParallelism : ExpertDispatch
{
    private const string Marker = ".mlp.experts.";
    private readonly ProcessGroup _group;
    private readonly int _first, _count;
    private double _countSeconds;

    private ExpertParallelism(ProcessGroup group, int first, int count)
    {
        _group = group;
        _first = first;
        _count = count;
    }

    /// <summary>Keeps this rank's experts of <paramref name="model"/> (its place in <paramref name="ep"/> decides which)
    /// and sets its dispatch; with no group (ep = 1) or a dense model leaves the model whole and returns null.</summary>
    public static ExpertParallelism? Apply(GptModel model, ProcessGroup? ep)
    {
        if (ep is not { Size: > 1 } || model.Spec.Moe is not { } moe)
            return null;
        if (moe.Experts % ep.Size != 0)
            throw new NotSupportedException($"ep {ep.Size} does not divide the {moe.Experts} experts");
        int count = moe.Experts / ep.Size, first = ep.Rank * count;
        model.Keep(spec => ExpertOf(spec.Name) is not { } e || (e >= first && e < first + count));
        var parallelism = new ExpertParallelism(ep, first, count);
        model.Dispatch = parallelism;
        return parallelism;
    }

    /// <summary>The dispatch alone over <paramref name="group"/> for <paramref name="experts"/> experts (tests: no model).</summary>
    public static ExpertParallelism Over(ProcessGroup group, int experts) =>
        new(group, group.Rank * (experts / group.Size), experts / group.Size);

    /// <summary>True for a routed expert's parameter ("layers.{i}.mlp.experts.{e}.…").</summary>
    public static bool IsExpert(string name) => name.Contains(Marker, StringComparison.Ordinal);

    /// <summary>The routed expert a parameter belongs to, or null.</summary>
    public static int? ExpertOf(string name)
    {
        int at = name.IndexOf(Marker, StringComparison.Ordinal);
        if (at < 0)
            return null;
        string rest = name[(at + Marker.Length)..];
        return int.Parse(rest[..rest.IndexOf('.', StringComparison.Ordinal)], CultureInfo.InvariantCulture);
    }

    /// <summary>The EP group.</summary>
    public ProcessGroup Group => _group;

    /// <summary>Seconds in the dispatch's all-to-alls (rows and counts) since the last call (then reset).</summary>
    public double TakeCommSeconds()
    {
        double seconds = _countSeconds + ExpertParallel.TakeCommSeconds();
        _countSeconds = 0;
        return seconds;
    }

    /// <summary>
    /// Sends each expert's rows to the rank that holds it (the counts per expert exchanged first), computes the rows this
    /// rank's experts received from every rank, expert by expert, and sends the results back in the order they came.
    /// Its busiest expert's load counts the rows every rank of the group sent it; every rank routes as many rows as
    /// this one, so the mean expert's is the group's size times this rank's routed rows over the experts.
    /// </summary>
    public override Dispatched Run(Tensor rows, long[] counts, Func<int, Tensor, Tensor> expert)
    {
        int ranks = _group.Size;
        // received[s·count + l]: the rows rank s sends to this rank's local expert l.
        long[] received = ExchangeCounts(counts, rows.Device);
        var send = Enumerable.Range(0, ranks).Select(q => counts.Skip(q * _count).Take(_count).Sum()).ToArray();
        var recv = Enumerable.Range(0, ranks).Select(s => received.Skip(s * _count).Take(_count).Sum()).ToArray();
        var got = ExpertParallel.AllToAll(_group, rows, send, recv); // by source rank, then local expert
        // Each local expert's rows from every source, source by source, and where each row came from.
        var start = new long[ranks * _count];
        for (int i = 1; i < start.Length; i++)
            start[i] = start[i - 1] + received[i - 1];
        var byExpert = new List<long>();
        var outputs = new List<Tensor>(_count);
        for (int l = 0; l < _count; l++)
        {
            int from = byExpert.Count;
            for (int s = 0; s < ranks; s++)
                for (long r = 0; r < received[s * _count + l]; r++)
                    byExpert.Add(start[s * _count + l] + r);
            var index = byExpert.Skip(from).ToArray();
            outputs.Add(expert(_first + l, F.Embedding(got, Tensor.From(index, index.Length).On(rows.Device))));
        }
        var computed = Tensor.Cat(outputs, 0);
        // Back into the order the rows came in (by source rank), then home.
        var back = new long[byExpert.Count];
        for (int i = 0; i < back.Length; i++)
            back[byExpert[i]] = i;
        var returned = F.Embedding(computed, Tensor.From(back, back.Length).On(rows.Device));
        var loads = Enumerable.Range(0, _count).Select(l => Enumerable.Range(0, ranks).Sum(s => received[s * _count + l])).ToArray();
        return new Dispatched(ExpertParallel.AllToAll(_group, returned, recv, send), BusiestOverMean(loads, ranks * counts.Sum(), counts.Length));
    }

    /// <summary>The number of rows each rank of the group sends to each of this rank's experts (rank-major).</summary>
    private long[] ExchangeCounts(long[] counts, Device device)
    {
        long t0 = TorchRuntime.NowNanoseconds();
        using var mine = Tensor.From(counts, counts.Length).On(device);
        using var theirs = _group.AllToAll(mine);
        var result = theirs.ToLongArray();
        _countSeconds += (TorchRuntime.NowNanoseconds() - t0) / 1e9;
        return result;
    }
}
