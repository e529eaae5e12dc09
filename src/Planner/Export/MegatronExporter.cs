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
/// <c>add_bias_linear = False</c>). The layout's "m" count must equal <c>--mtp-num-layers</c>
/// (<c>megatron/core/transformer/pipeline_parallel_layer_layout.py</c>, <c>validate_layer_layout</c>). MoE, expert
/// parallelism, latent attention, multi-token prediction, sliding windows and the precision recipes are in
/// <see cref="MegatronModel"/>.
/// </remarks>
public static class MegatronExporter
{
    /// <summary>
    /// Megatron splits the layers evenly unless told otherwise: first/last-stage counts when only the ends differ,
    /// else the (experimental) explicit layout, one "|"-separated stage each of "t" layers, E the embedding, m the
    /// multi-token-prediction modules (after the last block, as Megatron requires), L the loss.
    /// </summary>
    private static void UnevenStages(IReadOnlyList<int> stages, int mtpLayers, MegatronArgs a)
    {
        int pp = stages.Count;
        string split = string.Join("/", stages);
        var middle = stages.Skip(1).Take(pp - 2).Distinct().ToList();
        if (pp == 2)
        {
            a.Arg("--decoder-first-pipeline-num-layers", stages[0]);
            a.Note($"uneven pipeline stages {split}: --decoder-first-pipeline-num-layers puts {stages[0]} layers on the first stage and the rest on the second");
        }
        else if (middle.Count == 1)
        {
            if (stages[0] != middle[0])
                a.Arg("--decoder-first-pipeline-num-layers", stages[0]);
            if (stages[^1] != middle[0])
                a.Arg("--decoder-last-pipeline-num-layers", stages[^1]);
            a.Note($"uneven pipeline stages {split}: first/last-stage layer counts, the {pp - 2} middle stages split the rest evenly ({middle[0]} each)");
        }
        else
        {
            string mtp = mtpLayers switch { 0 => "", 1 => ",m", _ => $",m*{mtpLayers}" };
            string layout = "E," + string.Join("|", stages.Select(n => $"t*{n}")) + mtp + ",L";
            a.Flag("--pipeline-model-parallel-layout", $"\"{layout}\"");
            a.Note($"uneven pipeline stages {split}: --pipeline-model-parallel-layout (experimental in Megatron-LM) lists each stage's layers; E is the embedding, {(mtpLayers > 0 ? "m a multi-token-prediction module, " : "")}L the output layer and loss");
        }
    }

    /// <summary>
    /// The plan's optimizer and method as far as Megatron-LM expresses them. Its <c>--optimizer</c> takes adam or sgd
    /// (arguments.py; later releases add Muon), with <c>--sgd-momentum</c> (default 0.9); its "adam" is Transformer
    /// Engine's or Apex's FusedAdam, whose default adam_w_mode decouples the weight decay, i.e. AdamW (torch's AdamW is
    /// the fallback in megatron/core/optimizer), so AdamW needs no flag. Lion, Adafactor, 8-bit Adam and Sophia have no
    /// flag: a warning. Megatron-LM has no LoRA: PEFT on Megatron models lives in NeMo (nemo.collections.llm.peft.LoRA)
    /// and Megatron-Bridge, whose target modules are Megatron's linear_qkv, linear_proj, linear_fc1 and linear_fc2.
    /// </summary>
    private static void Tuning(FineTuning t, MegatronArgs a)
    {
        switch (t.Optimizer)
        {
            case OptimizerKind.AdamW:
                break;
            case OptimizerKind.Sgd:
                a.Flag("--optimizer", "sgd");
                a.Number("--sgd-momentum", 0.9);
                a.Note("--optimizer sgd --sgd-momentum 0.9: SGD with one momentum buffer, as priced");
                break;
            default:
                a.Note($"warning: the plan steps with {FineTuning.Name(t.Optimizer)}; Megatron-LM's --optimizer takes adam or sgd only, so these arguments train with Adam " +
                       $"(decoupled weight decay, i.e. AdamW: 8 bytes of state per trainable parameter) and the optimizer state will be above the planner's prediction; {FineTuningExport.Library(t.Optimizer)} needs a patched megatron/core/optimizer");
                break;
        }
        if (!t.Adapters)
            return;
        var megatronTargets = new List<string>();
        if ((t.Targets & (LoraTargets.Q | LoraTargets.K | LoraTargets.V)) != 0)
            megatronTargets.Add("linear_qkv");
        if (t.Targets.HasFlag(LoraTargets.O))
            megatronTargets.Add("linear_proj");
        if ((t.Targets & (LoraTargets.Gate | LoraTargets.Up)) != 0)
            megatronTargets.Add("linear_fc1");
        if (t.Targets.HasFlag(LoraTargets.Down))
            megatronTargets.Add("linear_fc2");
        a.Note($"warning: the plan trains {FineTuning.Name(t.Method)} adapters (rank {t.Rank} on {FineTuning.Name(t.Targets)}); Megatron-LM has no LoRA flag, so these arguments train every weight, far above the planner's memory prediction. " +
               $"Train it with NeMo's PEFT (nemo.collections.llm.peft.LoRA(dim={t.Rank}, target_modules=[{string.Join(", ", megatronTargets.Select(n => $"'{n}'"))}])) or Megatron-Bridge's LoRA on this parallelism" +
               (t.QuantizedBase ? "; neither stores the base in 4-bit NF4 (QLoRA is bitsandbytes with Hugging Face PEFT: see the DeepSpeed export), so the base there is bf16" : ""));
    }

    /// <summary>Renders the argument list.</summary>
    /// <remarks>Long: one launch script written top to bottom, its flags grouped as Megatron-LM's arguments.py groups them.</remarks>
    public static string Render(ExportInput x)
    {
        var p = x.Plan;
        var m = x.Model;
        var a = new MegatronArgs();

        if (x.UnresolvedNote() is { } unresolved)
            a.Note(unresolved);
        if (x.StackNote("Megatron-LM", "megatron-core", "megatron-lm-2021") is { } stack)
            a.Note(stack);

        // Parallelism.
        a.Arg("--tensor-model-parallel-size", p.Tp);
        a.Arg("--pipeline-model-parallel-size", p.Pp);
        if (p.Vpp > 1)
        {
            if (x.LayersPerVirtualStage() is int perChunk)
                a.Arg("--num-layers-per-virtual-pipeline-stage", perChunk);
            else
            {
                // Without the layer count, name the chunks per stage instead (the newer, equivalent flag).
                a.Arg("--num-virtual-stages-per-pipeline-rank", p.Vpp);
                a.Note($"vpp {p.Vpp}: --num-virtual-stages-per-pipeline-rank stands for --num-layers-per-virtual-pipeline-stage (layers / (pp x vpp)), which needs the model's layer count");
            }
        }
        else if (p.Pp > 1 && x.StageLayers() is { } stages && stages.Distinct().Count() > 1)
            UnevenStages(stages, m?.MtpLayers ?? 0, a);
        if (p.Cp > 1)
            a.Arg("--context-parallel-size", p.Cp);
        MegatronModel.ExpertParallelism(x, a);

        // Batch and sequence.
        a.Arg("--micro-batch-size", p.Mbs);
        a.Arg("--global-batch-size", p.Gbs);
        a.Arg("--seq-length", p.Seq);
        a.Arg("--max-position-embeddings", m is null ? p.Seq : Math.Max(m.MaxSeq, p.Seq));
        a.Note($"Megatron derives data parallelism from the world size: dp = {p.Gpus} GPUs / (tp x pp x cp) = {p.Dp}, and accumulates gbs / (dp x mbs) = {p.MicroBatches} micro-batches per step");
        if (p.SequenceParallel)
        {
            a.Flag("--sequence-parallel");
            if (p.Tp == 1)
                a.Note("--sequence-parallel has no effect with tp 1 (Megatron turns it off)");
        }
        else if (p.Tp > 1 && m?.IsMoe == true)
            throw new InputException($"{x.Source}: key 'sequence_parallel' is false with tp {p.Tp}: Megatron-Core refuses mixture-of-experts with tp > 1 without --sequence-parallel (planner run trains it, experts whole); set it true and price that plan");

        // Activation recomputation.
        if (x.PerStageRecomputeNote() is { } perStage)
            a.Note(perStage);
        switch (x.RecomputePolicy)
        {
            case Recompute.Selective:
                a.Flag("--recompute-granularity", "selective");
                break;
            case Recompute.Full when p.RecomputeLayers is { } k:
                a.Flag("--recompute-granularity", "full");
                a.Flag("--recompute-method", "block");
                a.Arg("--recompute-num-layers", k);
                a.Note($"--recompute-method block --recompute-num-layers {k}: the first {k} blocks of each model chunk are recomputed, the others keep their activations");
                break;
            case Recompute.Full:
                a.Flag("--recompute-granularity", "full");
                a.Flag("--recompute-method", "uniform");
                a.Arg("--recompute-num-layers", 1);
                break;
        }

        // ZeRO: Megatron's distributed optimizer is the only sharding it has.
        if (p.Zero >= 1)
        {
            a.Flag("--use-distributed-optimizer");
            a.Note("--use-distributed-optimizer: Megatron's distributed optimizer shards the optimizer state over the data-parallel group, i.e. ZeRO-1");
            if (p.Zero >= 2)
                a.Note($"warning: the plan asks for ZeRO-{p.Zero}; ZeRO-2/3 (sharded gradients{(p.Zero == 3 ? " and parameters" : "")}) have no Megatron equivalent, so per-GPU memory will be above the planner's prediction");
        }

        // Optimizer offload: the hybrid CPU/GPU optimizer steps a fraction of the state on the host.
        if (p.OptimizerOffload > 0)
        {
            a.Flag("--optimizer-cpu-offload");
            a.Number("--optimizer-offload-fraction", p.OptimizerOffload);
            a.Flag("--overlap-cpu-optimizer-d2h-h2d");
            a.Flag("--use-precision-aware-optimizer");
            a.Note($"--optimizer-cpu-offload --optimizer-offload-fraction {p.OptimizerOffload}: the CPU steps that share of the optimizer state while the GPU steps the rest; --overlap-cpu-optimizer-d2h-h2d pipelines the copies with the CPU step, as priced");
        }

        Tuning(p.Tuning, a);
        MegatronModel.PrecisionRecipe(x, a);
        if (m is not null)
            MegatronModel.Shape(m, x, a);

        var b = new StringBuilder();
        b.Append("# Megatron-LM arguments (pretrain_gpt.py) for ").Append(ExportInput.OneLine(x.Summary())).Append('\n');
        b.Append("# flag names: NVIDIA/Megatron-LM megatron/training/arguments.py\n");
        foreach (var note in a.Notes)
            b.Append("# ").Append(ExportInput.OneLine(note)).Append('\n');
        for (int i = 0; i < a.Args.Count; i++)
        {
            var (flag, value) = a.Args[i];
            b.Append(flag);
            if (value is not null)
                b.Append(' ').Append(value);
            if (i < a.Args.Count - 1)
                b.Append(" \\");
            b.Append('\n');
        }
        return b.ToString();
    }
}
