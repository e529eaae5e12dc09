using Planner.CostModel.Comm;
using Planner.CostModel.Pipeline;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;
using Planner.Executor.Distributed;
using Planner.Executor.Torch;

namespace Planner.Executor.Training;

/// <summary>What one rank measured in one optimizer step.</summary>
/// <param name="Loss">The global batch's mean loss (reported by the last pipeline stage; NaN elsewhere).</param>
/// <param name="TpComm">Seconds in tensor-parallel collectives.</param>
/// <param name="PpWait">Seconds blocked receiving from neighbouring stages (bubble and transfers).</param>
/// <param name="DpComm">Seconds reducing gradients (and ZeRO's gathers).</param>
/// <param name="Optimizer">Seconds in the optimizer step.</param>
public sealed record StepMetrics(int Step, double Seconds, double Loss, double TpComm = 0, double PpWait = 0, double DpComm = 0, double Optimizer = 0)
{
    /// <summary>What remains: forward and backward kernels (and recompute).</summary>
    public double Compute => Math.Max(0, Seconds - TpComm - PpWait - DpComm - Optimizer);
}

/// <summary>Options of a training run.</summary>
/// <param name="LossScale">The first dynamic loss scale; null scales only fp16 (from 2^16).</param>
/// <param name="Device">Where the rank trains: the CPU (Gloo groups) or a CUDA device (NCCL groups).</param>
public sealed record TrainOptions(int Steps, ulong Seed = 1234, double LearningRate = 1e-3, double WeightDecay = 0.0, double AdamEps = 1e-8, double? LossScale = null,
    Device Device = default);

/// <summary>
/// One rank of a training run: builds its groups from the plan's placement, its stage of the model, runs the plan's
/// pipeline schedule (the cost model's <see cref="ScheduleGenerator"/>) with point-to-point transfers, reduces
/// gradients over data parallelism (ZeRO-1/2/3 shard the optimizer step) and steps AdamW. Under ZeRO-0/1/2 the
/// reduction of each block's gradients (and the head's, the embedding's) starts as soon as the backward has finished
/// them: during each chunk's last backward (ZeRO-0's all-reduce, ZeRO-1's reduce-scatter) or during every backward
/// (ZeRO-2's reduce-scatter, waited for at the end of that backward). Under ZeRO-3 the rank keeps only its shard of the
/// parameters between uses: a model chunk's parameters are all-gathered before each forward and backward of the chunk
/// and freed after it, and its gradients are reduce-scattered after each backward.
/// </summary>
public sealed partial class RankTrainer : IDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromMinutes(5);
    private readonly ModelSpec _m;
    private readonly ParallelPlan _plan;
    private readonly ProcessGroupLayout _layout;
    private readonly MeshCoordinates _me;
    private readonly ProcessGroup? _tp, _pp, _dp, _tied;
    private readonly ProcessGroup[] _links = []; // the pipeline's point-to-point groups (PipelineLinks)
    private readonly GptStage _stage;
    private readonly ITokenSource _data;
    private readonly TrainOptions _options;
    private readonly IReadOnlyList<Tensor> _params;
    private readonly AdamW _optimizer;
    private readonly ShardedParameters? _shards; // ZeRO: this DP rank's slice of the parameters (fp32) and gradients
    private readonly bool _zero3; // parameters gathered per use
    private readonly bool _chunkwise; // ZeRO-2/3: each chunk's gradients reduce-scattered after its backward
    private readonly int[][] _chunkGroups = []; // ZeRO-1/2/3: each chunk's parameter groups in _shards
    private readonly Dictionary<Tensor, int> _groupOf = new(ReferenceEqualityComparer.Instance); // a parameter's group in _shards
    private readonly int _tiedGroup = -1; // ZeRO: the group of the embedding tied across stages (its own group)
    private readonly string? _interface;
    private readonly Device _device;
    private double _ppWait, _dpComm, _optimizerSeconds;
    private readonly LossScaler? _scaler;

    /// <summary>The dynamic loss scale, or null without loss scaling.</summary>
    public double? LossScale => _scaler?.Scale;

    /// <summary>Steps skipped because their scaled gradients overflowed.</summary>
    public int SkippedSteps => _scaler?.SkippedSteps ?? 0;

    private double Since(long t0) => (Now() - t0) / 1e9;

    /// <summary>The clock, after the device's queued work (CUDA runs asynchronously; the CPU's ops are done when they return).</summary>
    private long Now()
    {
        if (_device.Type == DeviceType.Cuda)
            TorchRuntime.Synchronize(_device);
        return TorchRuntime.NowNanoseconds();
    }

    /// <summary>Why the executor cannot train this plan of this model, or null.</summary>
    /// <param name="device">Where it would train (fp16 needs a CUDA device).</param>
    public static string? Unsupported(ModelSpec model, ParallelPlan plan, Device device = default)
    {
        if (model.Vocab % plan.Tp != 0)
            return $"the executor needs tp ({plan.Tp}) to divide the vocabulary ({model.Vocab}); pad the vocabulary in the model config";
        if (plan.Precision == Precision.Fp16 && device.Type == DeviceType.Cpu)
            return "fp16: the executor trains on CPU, where libtorch has no fp16 matrix multiply ('addmm' is not implemented for Half); train in bf16 or fp32 (--loss-scale exercises the fp16 loss scaling in any precision)";
        if (plan.Cp != 1)
            return "the executor does not run context parallelism yet (cp must be 1)";
        if (model.KvHeads % plan.Tp != 0)
            return $"the executor needs tp ({plan.Tp}) to divide the {model.KvHeads} key/value heads";
        if (model.IsMoe)
            return "the executor does not run mixture-of-experts models yet";
        if (plan.Precision.IsQuantized())
            return $"{plan.Precision.Name()}: the executor has no low-precision GEMMs (its libtorch binding runs fp32, bf16 and fp16); train in bf16";
        if (model.Mla is not null)
            return "the executor does not run multi-head latent attention (the model's kv_lora_rank) yet";
        if (model.MtpLayers > 0)
            return "the executor does not run multi-token prediction (num_nextn_predict_layers) yet";
        if (model.Window is not null)
            return "the executor does not run sliding-window attention (sliding_window) yet";
        if (model.HeadDim * model.Heads != model.Hidden)
            return $"the executor needs heads that split the hidden size {model.Hidden} exactly; the model's {model.Heads} heads are {model.HeadDim} wide (head_dim, or hidden // heads)";
        return null;
    }

    /// <summary>Sets up the rank: groups (every rank creates them in the same order), parameters and optimizer.</summary>
    public RankTrainer(ModelSpec model, ParallelPlan plan, int rank, Store store, ITokenSource data, TrainOptions options, bool loopback = true)
    {
        _interface = loopback ? "127.0.0.1" : null;
        if (Unsupported(model, plan, options.Device) is { } reason)
            throw new NotSupportedException(reason);
        _device = options.Device;
        TorchRuntime.SetDevice(_device);
        _m = model;
        _plan = plan;
        _options = options;
        if (plan.Precision == Precision.Fp16 || options.LossScale is not null)
            _scaler = new LossScaler(options.LossScale ?? 65536);
        _data = data;
        _layout = new ProcessGroupLayout(plan);
        _me = _layout.Coordinates(rank);
        _tp = Group(store, Axis.Tp, rank);
        _pp = Group(store, Axis.Pp, rank);
        if (plan.Pp > 1)
            _links = Enumerable.Range(0, PipelineLinks.Count).Select(l => Group(store, Axis.Pp, rank, $"-p2p{l}")!).ToArray();
        _dp = Group(store, Axis.Dp, rank);
        // Tied input and output embeddings on different stages: the first and last stage sum their gradients.
        if (model.TiedEmbeddings && plan.Pp > 1)
        {
            var first = _layout.Rank(_me with { Pp = 0 });
            var last = _layout.Rank(_me with { Pp = plan.Pp - 1 });
            if (rank == first || rank == last)
                _tied = NewGroup(store, $"tied-{first}", rank == first ? 0 : 1, 2);
        }
        var layout = StageLayout.Of(model, plan);
        var chunks = new List<int[]>();
        for (int c = 0; c < plan.Vpp; c++)
        {
            int v = c * plan.Pp + _me.Pp, first = 0;
            for (int u = 0; u < v; u++)
                first += layout.LayersOf(u);
            chunks.Add(Enumerable.Range(first, layout.LayersOf(v)).ToArray());
        }
        _stage = new GptStage(model, plan, chunks, _me.Pp == 0, _me.Pp == plan.Pp - 1, _tp, _me.Tp, options.Seed, _device);
        _params = _stage.Parameters;
        _overlapReduce = plan.Zero <= 2 && _dp is not null;
        _overlapEveryBackward = plan.Zero == 2 && _dp is not null;
        foreach (var spec in _stage.Specs)
        {
            var p = _stage[spec.Name];
            if (spec.Name.StartsWith("layers.", StringComparison.Ordinal))
            {
                int layer = int.Parse(spec.Name.Split('.')[1], System.Globalization.CultureInfo.InvariantCulture);
                if (!_blockParameters.TryGetValue(layer, out var list))
                    _blockParameters[layer] = list = [];
                list.Add(p);
            }
            else if (spec.Name == "wpe" || (spec.Name == "wte" && _stage.HasEmbedding))
                _embeddingParameters.Add(p); // with tied embeddings on one stage the head's use of wte comes first
            else
                _headParameters.Add(p);
        }
        if (plan.Zero == 0 || plan.Dp == 1)
            _optimizer = new AdamW(_params, options.LearningRate, eps: options.AdamEps, weightDecay: options.WeightDecay);
        else
        {
            _zero3 = plan.Zero >= 3;
            _chunkwise = plan.Zero >= 2;
            var groups = new List<IReadOnlyList<Tensor>>();
            _chunkGroups = new int[plan.Vpp][];
            for (int c = 0; c < plan.Vpp; c++)
            {
                var mine = new List<int>();
                foreach (var part in _zero3 ? ChunkParameters(c).Select(names => names.Select(n => _stage[n]).ToList()) : ChunkBuckets(c))
                {
                    if (_tied is not null && part.Contains(_stage["wte"]))
                        _tiedGroup = groups.Count;
                    foreach (var p in part)
                        if (!_groupOf.TryAdd(p, groups.Count))
                            throw new NotSupportedException("ZeRO needs every parameter of the stage in exactly one group (one pipeline stage of several chunks would share the embedding)");
                    mine.Add(groups.Count);
                    groups.Add(part);
                }
                _chunkGroups[c] = mine.ToArray();
            }
            if (_groupOf.Count != _params.Count)
                throw new NotSupportedException("ZeRO needs every parameter of the stage in exactly one group of one model chunk");
            _shards = new ShardedParameters(groups, _dp!, Timeout);
            if (_zero3)
                for (int g = 0; g < _shards.Groups; g++)
                    _shards.Release(g);
            _optimizer = new AdamW([_shards.Master], options.LearningRate, eps: options.AdamEps, weightDecay: options.WeightDecay);
        }
    }

    /// <summary>
    /// ZeRO-3's groups of chunk <paramref name="chunk"/>'s parameter names, in the stage's order: its blocks', with the
    /// embedding on the first virtual stage and the final norm and head on the last. An embedding tied across stages
    /// is a group of its own, so that its shard covers the same elements on the first and the last stage.
    /// </summary>
    private IEnumerable<List<string>> ChunkParameters(int chunk)
    {
        int pp = _plan.Pp, v = chunk * pp + _me.Pp;
        var layers = _stage.ChunkLayers[chunk].Select(l => $"layers.{l}.").ToArray();
        bool Mine(string name) => name switch
        {
            "wte" => v == 0 || (v == pp * _plan.Vpp - 1 && _m.TiedEmbeddings),
            "wpe" => v == 0,
            "lm_head" => v == pp * _plan.Vpp - 1,
            _ when name.StartsWith("ln_f.", StringComparison.Ordinal) => v == pp * _plan.Vpp - 1,
            _ => layers.Any(l => name.StartsWith(l, StringComparison.Ordinal)),
        };
        var names = _stage.Specs.Select(s => s.Name).Where(Mine).ToList();
        if (_tied is not null && names.Remove("wte"))
            yield return ["wte"];
        if (names.Count > 0)
            yield return names;
    }

    /// <summary>
    /// ZeRO-1/2's groups of chunk <paramref name="chunk"/>: the buckets whose reductions start during the backward as
    /// soon as it has finished their gradients (each block's, the head's on the last virtual stage, the embedding's on
    /// the first), and an embedding tied across stages as a group of its own (summed with the other stage after the
    /// flush, so that its shard covers the same elements on the first and the last stage).
    /// </summary>
    private IEnumerable<List<Tensor>> ChunkBuckets(int chunk)
    {
        int pp = _plan.Pp, v = chunk * pp + _me.Pp;
        var buckets = _stage.ChunkLayers[chunk].Select(l => _blockParameters[l]).ToList();
        if (v == pp * _plan.Vpp - 1)
            buckets.Add(_headParameters);
        if (v == 0)
            buckets.Add(_embeddingParameters);
        foreach (var bucket in buckets)
        {
            var rest = bucket.Where(p => !TiedAcrossStages(p)).ToList();
            if (rest.Count > 0)
                yield return rest;
            if (rest.Count < bucket.Count)
                yield return [_stage["wte"]];
        }
    }

    /// <summary>True for the embedding when it is tied between the first and the last pipeline stage.</summary>
    private bool TiedAcrossStages(Tensor p) => _tied is not null && p == _stage["wte"];

    /// <summary>A process group of the rank's backend: NCCL between CUDA devices, Gloo between CPUs.</summary>
    private ProcessGroup NewGroup(Store store, string name, int rank, int size) =>
        _device.Type == DeviceType.Cuda
            ? ProcessGroup.Nccl(store, name, rank, size, Timeout)
            : ProcessGroup.Gloo(store, name, rank, size, Timeout, _interface);

    private ProcessGroup? Group(Store store, Axis axis, int rank, string suffix = "")
    {
        if (_layout.Plan.Gpus == 1)
            return null;
        ProcessGroup? mine = null;
        // c10d: every rank creates every group of an axis in the same order; members keep theirs.
        foreach (var members in _layout.Groups(axis))
        {
            int index = Array.IndexOf(members, rank);
            if (index >= 0 && members.Length > 1)
                mine = NewGroup(store, $"{axis}-{members[0]}{suffix}", index, members.Length);
        }
        return mine;
    }

    /// <summary>
    /// The stage's parameters by name (this rank's TP shards), for checks against the single-process run. Under
    /// ZeRO-3 they are all-gathered for the copy and freed again: every DP rank must call this.
    /// </summary>
    public Dictionary<string, float[]> ParameterValues()
    {
        var groups = _zero3 ? Enumerable.Range(0, _shards!.Groups).ToList() : [];
        foreach (int g in groups)
            _shards!.Gather(g);
        var values = _stage.Specs.ToDictionary(s => s.Name, s => _stage[s.Name].ToFloatArray());
        foreach (int g in groups)
            _shards!.Release(g);
        return values;
    }

    /// <summary>
    /// Bytes of memory the stage's parameter tensors and the ZeRO master shard hold now (between steps: the full
    /// parameters and the shard under ZeRO-1/2, only the shard under ZeRO-3).
    /// </summary>
    public long ResidentParameterBytes => _params.Sum(p => p.StorageBytes) + (_shards?.Master.StorageBytes ?? 0);

    /// <summary>Bytes the full-size gradients of the stage held when the last step's pipeline ended (before the
    /// data-parallel reduction): all of them under ZeRO-0/1, none under ZeRO-2/3 (reduce-scattered chunk by chunk).</summary>
    public long GradientBytesAfterBackward { get; private set; }

    /// <summary>The rank's mesh coordinates.</summary>
    public MeshCoordinates Coordinates => _me;

    /// <summary>Runs one optimizer step.</summary>
    public StepMetrics Step(int step)
    {
        long t0 = Now();
        TensorParallel.TakeCommSeconds();
        _ppWait = _dpComm = _optimizerSeconds = 0;
        _started = 0;
        double lossSum = RunPipeline(step);
        OverlappedReduces = _started;
        GradientBytesAfterBackward = _params.Sum(p => p.Grad?.StorageBytes ?? 0);
        double tpComm = TensorParallel.TakeCommSeconds();
        ReduceGradientsAndStep();
        double loss = double.NaN;
        if (_stage.HasHead)
        {
            using var l = Tensor.From([lossSum / _plan.MicroBatches], 1).On(_device);
            _dp?.AllReduce(l);
            loss = l.Item() / (_dp?.Size ?? 1);
        }
        double seconds = (Now() - t0) / 1e9;
        return new StepMetrics(step, seconds, loss, tpComm, _ppWait, _dpComm, _optimizerSeconds);
    }

    // ---- pipeline ---------------------------------------------------------------------------------------------

    private (long[] Ids, long[] Targets) Batch(int step, int microBatch)
    {
        int seq = _plan.Seq, mbs = _plan.Mbs;
        var ids = new long[mbs * seq];
        var targets = new long[mbs * seq];
        var buffer = new long[seq + 1];
        long first = (long)step * _plan.Gbs + (long)_me.Dp * (_plan.Gbs / _plan.Dp) + (long)microBatch * mbs;
        for (int i = 0; i < mbs; i++)
        {
            _data.Sample(first + i, buffer);
            Array.Copy(buffer, 0, ids, i * seq, seq);
            Array.Copy(buffer, 1, targets, i * seq, seq);
        }
        return (ids, targets);
    }

    // ---- data parallelism and the optimizer --------------------------------------------------------------------

    /// <summary>Frees everything.</summary>
    public void Dispose()
    {
        _optimizer.Dispose();
        _shards?.Dispose();
        _stage.Dispose();
        _tp?.Dispose();
        _pp?.Dispose();
        foreach (var link in _links)
            link.Dispose();
        _dp?.Dispose();
        _tied?.Dispose();
    }
}
