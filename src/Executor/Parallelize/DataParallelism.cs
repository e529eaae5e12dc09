using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.Executor.Distributed;
using Planner.Executor.Model;
using Planner.Executor.Optim;
using Planner.Executor.Torch;

namespace Planner.Executor.Parallelize;

/// <summary>
/// Data parallelism and ZeRO on one rank's model, and the optimizer it shards. Gradients are reduced in the buckets of
/// <see cref="GradientBuckets"/>: under ZeRO-0/1/2 a bucket's reduction starts as soon as the backward has finished its
/// gradients, during each chunk's last backward (ZeRO-0's all-reduce, ZeRO-1's reduce-scatter) or during every backward
/// (ZeRO-2's reduce-scatter, waited for at the end of that backward). Under ZeRO-3 the rank keeps only its shard of the
/// parameters between uses: a chunk's parameters are all-gathered before each of its passes and freed after it, and its
/// gradients reduce-scattered after each backward. An embedding tied across the first and last pipeline stages is its
/// own group, summed over the pipeline after the flush (so that its shard covers the same elements on both stages).
/// </summary>
public sealed partial class DataParallelism : IDisposable
{
    private readonly GptModel _model;
    private readonly ParallelPlan _plan;
    private readonly ProcessGroup? _dp, _tied;
    private readonly TensorParallelism? _tp;
    private readonly DeviceClock _clock;
    private readonly IOptimizer _optimizer;
    private readonly ShardedParameters? _shards; // ZeRO: this DP rank's slice of the parameters (fp32) and gradients
    private readonly bool _zero3; // parameters gathered per use
    private readonly bool _chunkwise; // ZeRO-2/3: each chunk's gradients reduce-scattered after its backward
    private readonly bool _overlapReduce; // ZeRO-0/1/2 with dp > 1: each bucket reduced during the backward
    private readonly bool _overlapEveryBackward; // ZeRO-2 with dp > 1: during every backward, not only the last
    private readonly int[][] _chunkGroups = []; // ZeRO-1/2/3: each chunk's parameter groups in _shards
    private readonly Dictionary<Tensor, int> _groupOf = new(ReferenceEqualityComparer.Instance); // a parameter's group in _shards
    private readonly int _tiedGroup = -1; // ZeRO: the group of the embedding tied across stages
    private readonly List<(Work Work, Tensor Flat, List<Tensor> Bucket)> _reducing = []; // ZeRO-0's all-reduces
    private readonly List<ShardedParameters.Reduction> _scattering = []; // ZeRO-1/2's reduce-scatters
    private readonly ExpertGradients? _experts; // expert parallelism: the routed experts, reduced and stepped apart
    private readonly List<Tensor> _dense; // the trainable parameters but the routed experts under expert parallelism

    /// <summary>Applies data parallelism to <paramref name="model"/>, the part of pipeline stage <paramref name="stage"/>
    /// this rank holds (its chunks' buckets laid out by <paramref name="layout"/>).</summary>
    /// <param name="tied">The group of the first and last stage's ranks that share a tied embedding, or null.</param>
    /// <param name="tp">The tensor parallelism applied to the model (its sequence-parallel sums), or null.</param>
    /// <param name="experts">Under expert parallelism, the group that reduces the routed experts' gradients (they are
    /// not in the buckets and have an optimizer of their own), else null.</param>
    public DataParallelism(GptModel model, ParallelPlan plan, StageLayout layout, int stage, ProcessGroup? dp, ProcessGroup? tied,
        TensorParallelism? tp, OptimizerSettings optimizer, DeviceClock clock, ExpertGroups? experts = null)
    {
        _model = model;
        _plan = plan;
        _dp = dp;
        _tied = model.Specs.Any(s => s.Name == "wte") && model.IsTrainable("wte") ? tied : null; // a frozen table is not summed
        _tp = tp;
        _clock = clock;
        _overlapReduce = plan.Zero <= 2 && dp is not null;
        _overlapEveryBackward = plan.Zero == 2 && dp is not null;
        var dense = model.TrainableSpecs.Where(s => experts is null || !ExpertParallelism.IsExpert(s.Name)).ToList();
        _dense = dense.Select(s => model[s.Name]).ToList();
        var routed = model.TrainableSpecs.Where(s => ExpertParallelism.IsExpert(s.Name)).ToList();
        if (experts is not null && routed.Count > 0) // a stage of dense blocks only holds no experts
        {
            _experts = new ExpertGradients(routed.Select(s => model[s.Name]).ToList(), experts.Edp,
                Stepping(optimizer, OptimizerLayout.Parameters(model, tp, routed), routed, experts.Edp));
        }
        var buckets = new Buckets(model, layout, stage, plan.Vpp, dense);
        BucketParameters = buckets;
        if (plan.Zero == 0 || dp is null) // one rank holds the weights: nothing to shard
        {
            _optimizer = Stepping(optimizer, OptimizerLayout.Parameters(model, tp, dense), dense, dp);
            return;
        }
        _zero3 = plan.Zero >= 3;
        _chunkwise = plan.Zero >= 2;
        var groups = new List<IReadOnlyList<Tensor>>();
        _chunkGroups = new int[plan.Vpp][];
        for (int c = 0; c < plan.Vpp; c++)
        {
            var mine = new List<int>();
            foreach (var part in _zero3 ? ChunkParameters(buckets, c) : ChunkBuckets(buckets, c))
            {
                if (_tied is not null && part.Contains(model["wte"]))
                    _tiedGroup = groups.Count;
                foreach (var p in part)
                    if (!_groupOf.TryAdd(p, groups.Count))
                        throw new NotSupportedException("ZeRO needs every parameter of the stage in exactly one group (one pipeline stage of several chunks would share the embedding)");
                mine.Add(groups.Count);
                groups.Add(part);
            }
            _chunkGroups[c] = mine.ToArray();
        }
        if (_groupOf.Count != dense.Count)
            throw new NotSupportedException("ZeRO needs every parameter of the stage in exactly one group of one model chunk");
        _shards = new ShardedParameters(groups, dp!);
        if (_zero3)
            for (int g = 0; g < _shards.Groups; g++)
                _shards.Release(g);
        _optimizer = Stepping(optimizer, OptimizerLayout.Sharded(model, tp, _shards, dp!, dense), dense, replicas: null);
    }

    /// <summary>The parameters of each bucket of the rank's chunks.</summary>
    public Buckets BucketParameters { get; }

    /// <summary>Seconds in data-parallel collectives (and ZeRO's gathers) since <see cref="BeginStep"/>.</summary>
    public double CommSeconds { get; private set; }

    /// <summary>Seconds in the optimizer step since <see cref="BeginStep"/>.</summary>
    public double OptimizerSeconds { get; private set; }

    /// <summary>Reductions started during the backward since <see cref="BeginStep"/> (ZeRO-0/1/2 with dp &gt; 1): per
    /// chunk, one per block, and the head's and the embedding's where the chunk has them; under ZeRO-2 in every micro-batch.</summary>
    public int StartedReductions { get; private set; }

    /// <summary>Bytes of the optimizer's state (this rank's: its ZeRO shard's under ZeRO).</summary>
    public long OptimizerStateBytes => _optimizer.StateBytes + (_experts?.Optimizer.StateBytes ?? 0);

    /// <summary>Bytes of the ZeRO master shard (none without ZeRO).</summary>
    public long ShardBytes => _shards?.Master.StorageBytes ?? 0;

    /// <summary>Zeroes the step's timers and counts.</summary>
    public void BeginStep()
    {
        CommSeconds = OptimizerSeconds = 0;
        StartedReductions = 0;
    }

    /// <summary>True when a backward hands each bucket to the reduction as soon as it is final: the chunk's last backward
    /// of the step (<paramref name="lastOfChunk"/>), or every backward under ZeRO-2.</summary>
    public bool ReducesDuring(bool lastOfChunk) => _overlapReduce && (_overlapEveryBackward || lastOfChunk);

    /// <summary>True for the embedding when it is tied between the first and the last pipeline stage.</summary>
    private bool TiedAcrossStages(Tensor p) => _tied is not null && p == _model["wte"];

    /// <summary>
    /// ZeRO-3's groups of chunk <paramref name="chunk"/>: its trainable parameters in the model's order, an embedding tied
    /// across stages as a group of its own (frozen ones stay whole on every rank).
    /// </summary>
    private IEnumerable<List<Tensor>> ChunkParameters(Buckets buckets, int chunk)
    {
        var members = buckets.Of(chunk).SelectMany(b => buckets[b]).ToHashSet(ReferenceEqualityComparer.Instance);
        var parameters = _model.Trainable.Where(members.Contains).ToList();
        if (_tied is not null && parameters.Remove(_model["wte"]))
            yield return [_model["wte"]];
        if (parameters.Count > 0)
            yield return parameters;
    }

    /// <summary>ZeRO-1/2's groups of chunk <paramref name="chunk"/>: its buckets, an embedding tied across stages as a group
    /// of its own.</summary>
    private IEnumerable<List<Tensor>> ChunkBuckets(Buckets buckets, int chunk)
    {
        foreach (var bucket in buckets.Of(chunk).Select(b => buckets[b]))
        {
            var rest = bucket.Where(p => !TiedAcrossStages(p)).ToList();
            if (rest.Count > 0)
                yield return rest;
            if (rest.Count < bucket.Count)
                yield return [_model["wte"]];
        }
    }

    /// <summary>ZeRO-3: all-gathers a chunk's parameters from the DP ranks' shards before its forward or backward.</summary>
    public void Gather(int chunk)
    {
        if (!_zero3)
            return;
        long t0 = _clock.Now();
        foreach (int g in _chunkGroups[chunk])
            _shards!.Gather(g);
        CommSeconds += _clock.Since(t0);
    }

    /// <summary>ZeRO-3: frees a chunk's parameters after its forward or backward (graphs keep them by identity only).</summary>
    public void Release(int chunk)
    {
        if (!_zero3)
            return;
        foreach (int g in _chunkGroups[chunk])
            _shards!.Release(g);
    }

    /// <summary>
    /// The model's parameters by name (this rank's TP shards; NF4 weights dequantized), for checks against the
    /// single-process run. Under ZeRO-3 they are all-gathered for the copy and freed again: every DP rank must call this.
    /// </summary>
    public Dictionary<string, float[]> ParameterValues()
    {
        var groups = _zero3 ? Enumerable.Range(0, _shards!.Groups).ToList() : [];
        foreach (int g in groups)
            _shards!.Gather(g);
        var values = _model.Specs.ToDictionary(s => s.Name, s => _model.Values(s.Name));
        foreach (int g in groups)
            _shards!.Release(g);
        return values;
    }

    /// <summary>Frees the optimizer and the shards.</summary>
    public void Dispose()
    {
        _optimizer.Dispose();
        _experts?.Optimizer.Dispose();
        _shards?.Dispose();
    }
}

/// <summary>The optimizer and its settings (<paramref name="Eps"/>: AdamW's and 8-bit Adam's; <paramref name="TokensPerStep"/>:
/// Sophia's B).</summary>
public sealed record OptimizerSettings(OptimizerKind Kind, double LearningRate, double WeightDecay, double Eps, long TokensPerStep = 0)
{
    /// <summary>True for the optimizers the executor has (<see cref="Create"/>).</summary>
    public static bool Supported(OptimizerKind kind) => kind is OptimizerKind.AdamW or OptimizerKind.Sgd or OptimizerKind.Lion
        or OptimizerKind.Adafactor or OptimizerKind.Adam8bit or OptimizerKind.Sophia;

    /// <summary>The optimizer over what a rank holds: AdamW, SGD with momentum 0.9, Lion (β 0.9, 0.99), Adafactor, 8-bit
    /// AdamW or Sophia.</summary>
    public IOptimizer Create(HeldWeights held) => Kind switch
    {
        OptimizerKind.AdamW => Optimizer.AdamW(held.Tensors, LearningRate, eps: Eps, weightDecay: WeightDecay),
        OptimizerKind.Sgd => Optimizer.Sgd(held.Tensors, LearningRate, weightDecay: WeightDecay),
        OptimizerKind.Lion => Optimizer.Lion(held.Tensors, LearningRate, weightDecay: WeightDecay),
        OptimizerKind.Adafactor => new Adafactor(held, LearningRate, WeightDecay),
        OptimizerKind.Adam8bit => new Adam8bit(held, LearningRate, eps: Eps, weightDecay: WeightDecay),
        OptimizerKind.Sophia => new Sophia(held.Tensors, LearningRate, TokensPerStep, weightDecay: WeightDecay),
        _ => throw new NotSupportedException($"{FineTuning.Name(Kind)}: the executor has no such optimizer yet"),
    };
}
