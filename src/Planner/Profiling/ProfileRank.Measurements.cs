using System.Diagnostics;
using System.Text.Json;
using Planner.Executor.Distributed;
using Planner.CostModel.Plans;
using Planner.CostModel.Specs;
using Planner.Executor.Torch;
using Planner.Executor.Model;
using Planner.Executor.Parallelize;
using Planner.Executor.Training;

namespace Planner.Cli.Profiling;

/// <summary>The rank's measurements of kernels, layers, the block, whole steps, the overlap and the optimizer.</summary>
public sealed partial class ProfileRank
{
    /// <summary>Training's kernels once, on small tensors: linear layers, norm, GELU, attention and both losses forward
    /// and backward, and an optimizer step.</summary>
    private void WarmUp()
    {
        using var scope = DisposeScope.Begin();
        var w = D(Tensor.Normal([64, 64], 0, 0.02, seed: 8));
        w.RequiresGrad = true;
        var x = D(Tensor.Normal([2, 16, 64], 0, 1, seed: 9));
        var h = F.LayerNorm(x, null, null);
        var q = F.Linear(h, w).View(2, 16, 4, 16).Transpose(1, 2);
        var a = F.CausalAttention(q, q, q).Transpose(1, 2).Reshape(2, 16, 64);
        var logits = F.Linear(a.Gelu(tanhApproximation: true), w).View(32, 64);
        var targets = Enumerable.Range(0, 32).Select(i => (long)(i % 64)).ToArray();
        var loss = F.CrossEntropy(logits, D(Tensor.From(targets, 32))) + TensorParallelism.VocabParallelCrossEntropy(null, logits, targets, 0);
        loss.Backward();
        using var optimizer = Optimizer.AdamW([w], 1e-3);
        optimizer.Step();
        optimizer.ZeroGrad();
        Sync();
    }

    /// <summary>
    /// Median forward and backward seconds of <paramref name="pass"/> on a fresh leaf copy of <paramref name="input"/>
    /// each time (so that the backward writes the input's gradient as training does), the first call untimed; a
    /// non-scalar output is back-propagated with a gradient of ones. <paramref name="uncounted"/>, if given, returns
    /// the seconds spent since its last call in what the pass times leave out (a block's collectives).
    /// </summary>
    private PassTimes TimePasses(Tensor input, Func<Tensor, Tensor> pass, int runs = 7, Func<double>? uncounted = null)
    {
        var forward = new List<double>();
        var backward = new List<double>();
        for (int i = 0; i <= runs; i++)
        {
            using var scope = DisposeScope.Begin();
            var leaf = input.Detach();
            leaf.RequiresGrad = true;
            Sync();
            uncounted?.Invoke();
            var w = Stopwatch.StartNew();
            var y = pass(leaf);
            Sync();
            double f = w.Elapsed.TotalSeconds - (uncounted?.Invoke() ?? 0);
            var grad = y.Shape.Length == 0 ? null : Like(y, Tensor.Full(y.Shape, 1));
            Sync();
            w.Restart();
            y.Backward(grad);
            Sync();
            double b = w.Elapsed.TotalSeconds - (uncounted?.Invoke() ?? 0);
            if (i > 0)
            {
                forward.Add(f);
                backward.Add(b);
            }
        }
        return new PassTimes(Fitting.Median(forward), Fitting.Median(backward));
    }

    /// <summary>
    /// Memory-bound ops that the cost model prices by name, run as the executor runs them (the loss over the whole
    /// vocabulary, and the vocabulary-parallel loss's kernels on one rank's half): nanoseconds per logit, forward and
    /// backward. Each call's logits are a fresh leaf, so that the backward writes their gradient as training does.
    /// </summary>
    private Dictionary<string, OpRate> MeasureOps()
    {
        var result = new Dictionary<string, OpRate>();
        int tokens = _sizes.LossTokens, lossVocab = _sizes.LossVocab;
        foreach (var (name, vocab) in new[] { ("cross_entropy", lossVocab), ("vocab_parallel_cross_entropy", lossVocab / 2) })
        {
            var targets = Enumerable.Range(0, tokens).Select(i => (long)(i * 7919L % lossVocab)).ToArray();
            using var targetTensor = D(Tensor.From(targets, tokens));
            // fp32 logits whatever the precision: the executor's loss converts them first.
            using var source = D(Tensor.Normal([tokens, vocab], 0, 1, seed: 5));
            Tensor Loss(Tensor logits) => name == "cross_entropy"
                ? F.CrossEntropy(logits, targetTensor)
                : TensorParallelism.VocabParallelCrossEntropy(null, logits, targets, 0);
            var times = TimePasses(source, Loss, 8);
            double elements = (double)tokens * vocab;
            result[name] = new OpRate(times.Forward / elements * 1e9, times.Backward / elements * 1e9);
        }
        return result;
    }

    /// <summary>
    /// Linear layers through autograd as the executor runs them (weights stored [out, in], so the forward multiplies
    /// by a transposed matrix; the backward's two GEMMs by others): per shape, tokens, in, out and the median forward
    /// and backward seconds.
    /// </summary>
    private List<LinearTimes> MeasureLinear()
    {
        var result = new List<LinearTimes>();
        foreach (var (t, i, o) in _sizes.LinearShapes)
        {
            using var x0 = D(Tensor.Normal([t, i], 0, 1, seed: 6, _sizes.DType));
            using var w = D(Tensor.Normal([o, i], 0, 0.02, seed: 7, _sizes.DType));
            w.RequiresGrad = true;
            result.Add(new LinearTimes(t, i, o, TimePasses(x0, x => F.Linear(x, w))));
        }
        return result;
    }

    /// <summary>
    /// The reference block split by tensor parallelism over <paramref name="pair"/> (two ranks of one node), as the
    /// executor runs it: median forward and backward seconds without the time inside its collectives (the shim's own
    /// timer), which the pricer prices apart. Null on the other ranks.
    /// </summary>
    private SplitBlockTimes? MeasureTpBlock(Store store, int rank, int[] pair, TimeSpan timeout, string? iface)
    {
        int tpRank = Array.IndexOf(pair, rank);
        if (tpRank < 0)
            return null;
        using var tp = NewGroup(store, "profile-tp", tpRank, 2, timeout, iface);
        var model = _sizes.BlockModel();
        var plan = _sizes.BlockPlan(tp: 2);
        using var stage = ReferenceStage(plan, tp, tpRank);
        using var x0 = Input(plan, model, stage, seed: 11);
        // The collectives' own seconds, kept apart from the passes': the block's two all-reduces per pass as training
        // runs them, between its kernels (on shared cores that includes waking the peer's threads).
        var (passes, perPass) = PassesApart(x0, x => stage.Block(0, x), TensorParallel.TakeCommSeconds);
        return new SplitBlockTimes(passes, perPass.Average());
    }

    /// <summary>
    /// Median forward and backward seconds of 40 passes (after a warm-up) without the communication
    /// <paramref name="takeComm"/> reports (seconds since its last call, then reset), and that communication's seconds
    /// per forward and backward of each pass.
    /// </summary>
    private (PassTimes Passes, List<double> CommPerPass) PassesApart(Tensor x0, Func<Tensor, Tensor> pass, Func<double> takeComm)
    {
        var comm = new List<double>();
        double Uncounted()
        {
            double s = takeComm();
            comm.Add(s);
            return s;
        }
        var passes = TimePasses(x0, pass, 40, Uncounted);
        // PassTimes reads the timer before each pass (nothing to count), after its forward and after its backward;
        // the first run is a warm-up.
        return (passes, comm.Chunk(3).Skip(1).Select(c => c[1] + c[2]).ToList());
    }

    /// <summary>
    /// A MoE block whose experts are split over <paramref name="pair"/> (two ranks of one node, ep 2), as the executor
    /// runs it: median forward and backward seconds without its all-to-alls, and their own seconds per forward and
    /// backward (the counts and the rows, dispatch and combine, as training runs them between the block's kernels).
    /// Each rank routes its own tokens. Null on the other ranks.
    /// </summary>
    private SplitBlockTimes? MeasureEpBlock(Store store, int rank, int[] pair, TimeSpan timeout, string? iface)
    {
        int epRank = Array.IndexOf(pair, rank);
        if (epRank < 0)
            return null;
        using var ep = NewGroup(store, "profile-ep", epRank, 2, timeout, iface);
        var model = _sizes.MoeBlockModel();
        var plan = _sizes.MoeBlockPlan();
        using var stage = Parallelizer.ShardedModel(model, plan, [0], embedding: true, head: true, null, 0, seed: 1, _device, out _, ep: ep);
        var dispatch = (ExpertParallelism)stage.Dispatch;
        using var x0 = Input(plan, model, stage, seed: 13 + (ulong)epRank);
        var (passes, perPass) = PassesApart(x0, x => stage.Block(0, x), dispatch.TakeCommSeconds);
        return new SplitBlockTimes(passes, Fitting.Median(perPass));
    }

    /// <summary>
    /// The block with its sequence split over <paramref name="pair"/> (two ranks of one node, cp 2: ring attention), as
    /// the executor runs it: median forward and backward seconds without the ring's transfers, and their own seconds per
    /// forward and backward. Null on the other ranks.
    /// </summary>
    private SplitBlockTimes? MeasureCpBlock(Store store, int rank, int[] pair, TimeSpan timeout, string? iface)
    {
        int cpRank = Array.IndexOf(pair, rank);
        if (cpRank < 0)
            return null;
        using var cp = NewGroup(store, "profile-cp", cpRank, 2, timeout, iface);
        var model = _sizes.BlockModel();
        var plan = _sizes.CpBlockPlan();
        using var stage = ReferenceStage(plan);
        ContextParallelism.Apply(stage, cp);
        // The rank's half of each sequence.
        using var x0 = D(Tensor.Normal([plan.Mbs, plan.Seq / plan.Cp, model.Hidden], 0, 1, 14 + (ulong)cpRank, stage.Compute));
        var (passes, perPass) = PassesApart(x0, x => stage.Block(0, x), ContextParallel.TakeCommSeconds);
        return new SplitBlockTimes(passes, Fitting.Median(perPass));
    }

    /// <summary>
    /// Training steps of a small GPT as run trains it, every rank at once, each its own one-rank trainer (no
    /// communication): the mean compute seconds per step (the step pays the slow passes too) after warm-up steps.
    /// The pieces timed alone above leave out what a whole step adds: the activations of every block held at once
    /// (a working set beyond the caches, shared with the other ranks' cores), the embedding, gradient accumulation.
    /// </summary>
    private double MeasureStep(ProcessGroup pg, Store store, StepShape shape, int runs)
    {
        using var scope = DisposeScope.Begin();
        var model = _sizes.StepModel(shape);
        var plan = _sizes.StepPlan(shape);
        using var trainer = new RankTrainer(model, plan, 0, store, new SyntheticTokens(model.Vocab, 7), new TrainOptions(StepWarmUp + runs, Device: _device));
        pg.Barrier();
        var compute = new List<double>();
        for (int step = 0; step < StepWarmUp + runs; step++)
        {
            var metrics = trainer.Step(step);
            if (step >= StepWarmUp)
                compute.Add(metrics.Compute);
        }
        // The median: a step the machine's other work slowed says nothing of the software.
        return Fitting.Median(compute);
    }

    /// <summary>Steps of <see cref="MeasureStep"/> before the timed ones (the allocator's pages fault in over the first
    /// steps, as in run's warm-up), timed steps of the small GPT, and of the tiny one (some milliseconds each: more, for
    /// a median the machine's other work moves less).</summary>
    private const int StepWarmUp = 3, StepRuns = 7, SmallStepRuns = 31;

    /// <summary>Blocks of the overlap measurement: the backward passes of one micro-batch through a small stage.</summary>
    private const int OverlapBlocks = 4;

    /// <summary>
    /// How much the data-parallel reduction slows the backward it runs behind, as training overlaps them: the
    /// reference block's backward over <see cref="OverlapBlocks"/> micro-batch graphs, alone; all-reduces of a bucket
    /// of the block's gradient bytes, alone and back to back; and both as training runs them, each block's all-reduce
    /// started as soon as its backward ends, all waited for at the end.
    /// </summary>
    private OverlapTimes MeasureOverlap(ProcessGroup pg, TimeSpan timeout)
    {
        var model = _sizes.BlockModel();
        var plan = _sizes.BlockPlan();
        using var stage = ReferenceStage(plan);
        long bucketElements = stage.Specs.Where(spec => spec.Name.StartsWith("layers.", StringComparison.Ordinal)).Sum(spec => stage[spec.Name].Numel);
        using var x0 = Input(plan, model, stage, seed: 12);
        var buckets = Enumerable.Range(0, OverlapBlocks).Select(_ => Tensor.Zeros([bucketElements], DType.Float32, _device)).ToList();
        double Backward(bool reduce)
        {
            using var scope = DisposeScope.Begin();
            var outputs = Enumerable.Range(0, OverlapBlocks).Select(_ =>
            {
                var leaf = x0.Detach();
                leaf.RequiresGrad = true;
                return stage.Block(0, leaf);
            }).ToList();
            var grad = Like(outputs[0], Tensor.Full(outputs[0].Shape, 1));
            pg.Barrier();
            Sync();
            var w = Stopwatch.StartNew();
            var works = new List<Work>();
            for (int i = 0; i < OverlapBlocks; i++)
            {
                outputs[i].Backward(grad);
                if (reduce)
                    works.Add(pg.AllReduceAsync(buckets[i]));
            }
            foreach (var work in works)
            {
                work.Wait(timeout);
                work.Dispose();
            }
            Sync();
            return w.Elapsed.TotalSeconds;
        }
        double Comm()
        {
            pg.Barrier();
            Sync();
            var w = Stopwatch.StartNew();
            foreach (var b in buckets)
                pg.AllReduce(b);
            Sync();
            return w.Elapsed.TotalSeconds;
        }
        const int runs = 7;
        var alone = new List<double>();
        var comm = new List<double>();
        var together = new List<double>();
        Backward(true);
        for (int i = 0; i < runs; i++)
        {
            alone.Add(Backward(false));
            comm.Add(Comm());
            together.Add(Backward(true));
        }
        foreach (var b in buckets)
            b.Dispose();
        return new OverlapTimes(Fitting.Median(alone), Fitting.Median(comm), Fitting.Median(together), OverlapBlocks);
    }

    /// <summary>The measured model as one stage of one block, embedding and head (this rank's TP shard of it).</summary>
    private GptModel ReferenceStage(ParallelPlan plan, ProcessGroup? tp = null, int tpRank = 0) =>
        Parallelizer.ShardedModel(_sizes.BlockModel(), plan, [0], embedding: true, head: true, tp, tpRank, seed: 1, _device, out _);

    /// <summary>A block's input for <paramref name="plan"/>'s micro-batch, on the rank's device in the stage's compute type.</summary>
    private Tensor Input(ParallelPlan plan, ModelSpec model, GptModel stage, ulong seed) =>
        D(Tensor.Normal([plan.Mbs, plan.Seq, model.Hidden], 0, 1, seed, stage.Compute));

    /// <summary>The executor's own transformer block and its head (final norm, tied LM head and loss; the code paths
    /// training runs), forward and backward: median seconds of each.</summary>
    private BlockTimes MeasureBlock()
    {
        var model = _sizes.BlockModel();
        var plan = _sizes.BlockPlan();
        using var stage = ReferenceStage(plan);
        var targets = Enumerable.Range(0, plan.Mbs * plan.Seq).Select(i => (long)(i * 7919L % model.Vocab)).ToArray();
        using var x0 = Input(plan, model, stage, seed: 11);
        var block = TimePasses(x0, x => stage.Block(0, x), 15);
        var head = TimePasses(x0, x => stage.HeadLoss(x, targets), 15);
        // The block over one short sequence: the same calls on a sixteenth of the tokens, so that its time is mostly
        // the calls' (what a call costs, less exposed to the noise of the kernels' time than a larger size).
        var small = _sizes.SmallPlan();
        using var smallStage = ReferenceStage(small);
        using var x1 = Input(small, model, smallStage, seed: 13);
        return new BlockTimes(block, head, TimePasses(x1, x => smallStage.Block(0, x), 41));
    }

    /// <summary>The executor's optimizer (AdamW, then clearing the gradients) over fp32 parameters (the master weights
    /// of mixed precision): ns per parameter.</summary>
    private double MeasureOptimizer()
    {
        using var scope = DisposeScope.Begin();
        int side = _sizes.OptimizerDim, count = _sizes.OptimizerMatrices;
        var parameters = Enumerable.Range(0, count).Select(i =>
        {
            var p = D(Tensor.Normal([side, side], 0, 0.02, seed: (ulong)(10 + i)));
            p.RequiresGrad = true;
            return p;
        }).ToList();
        using var optimizer = Optimizer.AdamW(parameters, 1e-3);
        var times = new List<double>();
        for (int i = 0; i < 9; i++)
        {
            using (DisposeScope.Begin())
                foreach (var p in parameters)
                    (p * 1.5).Sum().Backward();
            Sync();
            var w = Stopwatch.StartNew();
            optimizer.Step();
            optimizer.ZeroGrad();
            Sync();
            if (i > 0)
                times.Add(w.Elapsed.TotalSeconds);
        }
        times.Sort();
        return times[times.Count / 2] / ((double)count * side * side) * 1e9;
    }
}
