using System.Globalization;
using System.Text;
using Planner.CostModel.Plans;
using Planner.CostModel.Specs;

namespace Planner.Cli.Export;

/// <summary>
/// A plan as Megatron-LM command-line arguments (for <c>pretrain_gpt.py</c>): comment lines first, then one
/// <c>--flag value \</c> per line, the last line without the continuation, so the block pastes after a launcher line.
/// </summary>
/// <remarks>
/// Flag names and their choices were checked against NVIDIA/Megatron-LM <c>megatron/training/arguments.py</c>
/// (2025 main): <c>--tensor-model-parallel-size</c>, <c>--pipeline-model-parallel-size</c>,
/// <c>--num-layers-per-virtual-pipeline-stage</c>, <c>--num-virtual-stages-per-pipeline-rank</c>,
/// <c>--decoder-first-pipeline-num-layers</c>, <c>--decoder-last-pipeline-num-layers</c>,
/// <c>--pipeline-model-parallel-layout</c> (docs: "Custom Pipeline Model Parallel Layout", e.g.
/// <c>"Et*16|t*16|t*16|t*12,m,L"</c>, experimental), <c>--context-parallel-size</c>, <c>--use-distributed-optimizer</c>,
/// <c>--micro-batch-size</c>, <c>--global-batch-size</c>, <c>--seq-length</c>, <c>--sequence-parallel</c>,
/// <c>--recompute-granularity {full,selective}</c>, <c>--recompute-method {uniform,block}</c>,
/// <c>--recompute-num-layers</c>, <c>--bf16</c>, <c>--fp16</c>, <c>--fp8-format {e4m3,hybrid}</c>,
/// <c>--num-layers</c>, <c>--hidden-size</c>, <c>--ffn-hidden-size</c>, <c>--num-attention-heads</c>,
/// <c>--group-query-attention</c>, <c>--num-query-groups</c>, <c>--max-position-embeddings</c>,
/// <c>--position-embedding-type {learned_absolute,rope,...}</c>, <c>--normalization {LayerNorm,RMSNorm}</c>,
/// <c>--swiglu</c>, <c>--untie-embeddings-and-output-weights</c>, <c>--disable-bias-linear</c> (stores
/// <c>add_bias_linear = False</c>), <c>--num-experts</c>, <c>--moe-router-topk</c>.
/// </remarks>
public static class MegatronExporter
{
    /// <summary>
    /// Megatron splits the layers evenly unless told otherwise: first/last-stage counts when only the ends differ,
    /// else the (experimental) explicit layout, one "|"-separated stage each of "t" layers, E the embedding, L the loss.
    /// </summary>
    private static void UnevenStages(IReadOnlyList<int> stages, Action<string, long> arg, Action<string, string?> flag, List<string> notes)
    {
        int pp = stages.Count;
        string split = string.Join("/", stages);
        var middle = stages.Skip(1).Take(pp - 2).Distinct().ToList();
        if (pp == 2)
        {
            arg("--decoder-first-pipeline-num-layers", stages[0]);
            notes.Add($"uneven pipeline stages {split}: --decoder-first-pipeline-num-layers puts {stages[0]} layers on the first stage and the rest on the second");
        }
        else if (middle.Count == 1)
        {
            if (stages[0] != middle[0])
                arg("--decoder-first-pipeline-num-layers", stages[0]);
            if (stages[^1] != middle[0])
                arg("--decoder-last-pipeline-num-layers", stages[^1]);
            notes.Add($"uneven pipeline stages {split}: first/last-stage layer counts, the {pp - 2} middle stages split the rest evenly ({middle[0]} each)");
        }
        else
        {
            string layout = "E," + string.Join("|", stages.Select(n => $"t*{n}")) + ",L";
            flag("--pipeline-model-parallel-layout", $"\"{layout}\"");
            notes.Add($"uneven pipeline stages {split}: --pipeline-model-parallel-layout (experimental in Megatron-LM) lists each stage's layers; E is the embedding, L the output layer and loss");
        }
    }

    /// <summary>Renders the argument list.</summary>
    public static string Render(ExportInput x)
    {
        var p = x.Plan;
        var m = x.Model;
        var notes = new List<string>();
        var args = new List<(string Flag, string? Value)>();
        void Arg(string flag, long value) => args.Add((flag, value.ToString(CultureInfo.InvariantCulture)));
        void Fraction(string flag, double value) => args.Add((flag, value.ToString("0.##", CultureInfo.InvariantCulture)));
        void Flag(string flag, string? value = null) => args.Add((flag, value));

        if (x.UnresolvedNote() is { } unresolved)
            notes.Add(unresolved);

        // Parallelism.
        Arg("--tensor-model-parallel-size", p.Tp);
        Arg("--pipeline-model-parallel-size", p.Pp);
        if (p.Vpp > 1)
        {
            if (x.LayersPerVirtualStage() is int perChunk)
                Arg("--num-layers-per-virtual-pipeline-stage", perChunk);
            else
            {
                // Without the layer count, name the chunks per stage instead (the newer, equivalent flag).
                Arg("--num-virtual-stages-per-pipeline-rank", p.Vpp);
                notes.Add($"vpp {p.Vpp}: --num-virtual-stages-per-pipeline-rank stands for --num-layers-per-virtual-pipeline-stage (layers / (pp x vpp)), which needs the model's layer count");
            }
        }
        else if (p.Pp > 1 && x.StageLayers() is { } stages && stages.Distinct().Count() > 1)
            UnevenStages(stages, Arg, Flag, notes);
        if (p.Cp > 1)
            Arg("--context-parallel-size", p.Cp);

        // Batch and sequence.
        Arg("--micro-batch-size", p.Mbs);
        Arg("--global-batch-size", p.Gbs);
        Arg("--seq-length", p.Seq);
        Arg("--max-position-embeddings", m is null ? p.Seq : Math.Max(m.MaxSeq, p.Seq));
        notes.Add($"Megatron derives data parallelism from the world size: dp = {p.Gpus} GPUs / (tp x pp x cp) = {p.Dp}, and accumulates gbs / (dp x mbs) = {p.MicroBatches} micro-batches per step");
        if (p.SequenceParallel)
        {
            Flag("--sequence-parallel");
            if (p.Tp == 1)
                notes.Add("--sequence-parallel has no effect with tp 1 (Megatron turns it off)");
        }

        // Activation recomputation.
        if (x.PerStageRecomputeNote() is { } perStage)
            notes.Add(perStage);
        switch (x.RecomputePolicy)
        {
            case Recompute.Selective:
                Flag("--recompute-granularity", "selective");
                break;
            case Recompute.Full when p.RecomputeLayers is { } k:
                Flag("--recompute-granularity", "full");
                Flag("--recompute-method", "block");
                Arg("--recompute-num-layers", k);
                notes.Add($"--recompute-method block --recompute-num-layers {k}: the first {k} blocks of each model chunk are recomputed, the others keep their activations");
                break;
            case Recompute.Full:
                Flag("--recompute-granularity", "full");
                Flag("--recompute-method", "uniform");
                Arg("--recompute-num-layers", 1);
                break;
        }

        // ZeRO: Megatron's distributed optimizer is the only sharding it has.
        if (p.Zero >= 1)
        {
            Flag("--use-distributed-optimizer");
            notes.Add("--use-distributed-optimizer: Megatron's distributed optimizer shards the optimizer state over the data-parallel group, i.e. ZeRO-1");
            if (p.Zero >= 2)
                notes.Add($"warning: the plan asks for ZeRO-{p.Zero}; ZeRO-2/3 (sharded gradients{(p.Zero == 3 ? " and parameters" : "")}) have no Megatron equivalent, so per-GPU memory will be above the planner's prediction");
        }

        // Optimizer offload: the hybrid CPU/GPU optimizer steps a fraction of the state on the host.
        if (p.OptimizerOffload > 0)
        {
            Flag("--optimizer-cpu-offload");
            Fraction("--optimizer-offload-fraction", p.OptimizerOffload);
            Flag("--overlap-cpu-optimizer-d2h-h2d");
            Flag("--use-precision-aware-optimizer");
            notes.Add($"--optimizer-cpu-offload --optimizer-offload-fraction {p.OptimizerOffload}: the CPU steps that share of the optimizer state while the GPU steps the rest; --overlap-cpu-optimizer-d2h-h2d pipelines the copies with the CPU step, as priced");
        }

        // Precision.
        switch (p.Precision)
        {
            case Precision.Bf16:
                Flag("--bf16");
                break;
            case Precision.Fp16:
                Flag("--fp16");
                break;
            case Precision.Fp8:
                Flag("--bf16");
                Flag("--fp8-format", "hybrid");
                notes.Add("fp8: bf16 weights and activations with Transformer Engine fp8 GEMMs (--fp8-format hybrid: e4m3 forward, e5m2 gradients)");
                break;
            case Precision.Fp32:
                notes.Add("fp32: no precision flag (Megatron trains in fp32 without --bf16/--fp16)");
                break;
            case Precision.Tf32:
                notes.Add("tf32: no precision flag (fp32 training; TF32 matmuls follow PyTorch's torch.backends.cuda.matmul.allow_tf32)");
                break;
        }

        // Model shape.
        if (m is not null)
        {
            Arg("--num-layers", m.Layers);
            Arg("--hidden-size", m.Hidden);
            Arg("--num-attention-heads", m.Heads);
            Arg("--ffn-hidden-size", m.Ffn);
            if (m.KvHeads < m.Heads)
            {
                Flag("--group-query-attention");
                Arg("--num-query-groups", m.KvHeads);
            }
            if (m.Mlp == MlpKind.SwiGlu)
                Flag("--swiglu");
            if (m.Norm == NormKind.RmsNorm)
                Flag("--normalization", "RMSNorm");
            if (m.Positions == PositionKind.Rotary)
                Flag("--position-embedding-type", "rope");
            if (!m.TiedEmbeddings)
                Flag("--untie-embeddings-and-output-weights");
            if (!m.Biases)
                Flag("--disable-bias-linear");
            if (m.IsMoe)
            {
                Arg("--num-experts", m.Experts);
                Arg("--moe-router-topk", m.ExpertsPerToken);
            }
            notes.Add($"vocabulary ({m.Vocab} tokens) comes from the tokenizer: add --tokenizer-type and --tokenizer-model for '{m.Name}'");
        }

        var b = new StringBuilder();
        b.Append("# Megatron-LM arguments (pretrain_gpt.py) for ").Append(ExportInput.OneLine(x.Summary())).Append('\n');
        b.Append("# flag names: NVIDIA/Megatron-LM megatron/training/arguments.py\n");
        foreach (var note in notes)
            b.Append("# ").Append(ExportInput.OneLine(note)).Append('\n');
        for (int i = 0; i < args.Count; i++)
        {
            var (flag, value) = args[i];
            b.Append(flag);
            if (value is not null)
                b.Append(' ').Append(value);
            if (i < args.Count - 1)
                b.Append(" \\");
            b.Append('\n');
        }
        return b.ToString();
    }
}
