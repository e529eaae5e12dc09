using System.Globalization;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using Planner.CostModel.Plans;
using Planner.CostModel.Specs;

namespace Planner.Cli.Export;

/// <summary>
/// A plan as a DeepSpeed JSON config (<c>--deepspeed_config</c>). Notes go in a top-level <c>"_comment"</c> array:
/// JSON has no comments and DeepSpeed ignores top-level keys it does not know.
/// </summary>
/// <remarks>
/// Keys checked against the DeepSpeed configuration reference, deepspeedai/DeepSpeed <c>docs/_pages/config-json.md</c>
/// (https://www.deepspeed.ai/docs/config-json/): <c>train_batch_size</c> (= micro batch × accumulation steps ×
/// data-parallel GPUs), <c>train_micro_batch_size_per_gpu</c>, <c>gradient_accumulation_steps</c>,
/// <c>gradient_clipping</c>, <c>zero_optimization.stage</c> (0–3), <c>bf16.enabled</c>, <c>fp16.enabled</c> and
/// <c>fp16.loss_scale</c> (0.0 = dynamic loss scaling), and <c>activation_checkpointing</c>
/// (<c>partition_activations</c>, <c>cpu_checkpointing</c>, <c>contiguous_memory_optimization</c>,
/// <c>number_checkpoints</c>, <c>synchronize_checkpoint_boundary</c>, <c>profile</c>).
/// Tensor and pipeline degrees are not DeepSpeed config keys: Megatron-DeepSpeed takes them on its command line.
/// Neither are the expert count and expert-parallel degree: deepspeedai/DeepSpeed <c>deepspeed/moe/layer.py</c>
/// <c>MoE(hidden_size, expert, num_experts, ep_size, k, capacity_factor, eval_capacity_factor, min_capacity,
/// use_residual, noisy_gate_policy, drop_tokens, use_rts, use_tutel, enable_expert_tensor_parallelism, ...)</c> takes
/// them in the model code (<c>drop_tokens=False</c> is "equivalent to infinite capacity"; top-k above 2 goes through
/// <c>topkgating</c> in <c>deepspeed/moe/sharded_moe.py</c>), and <c>deepspeed/runtime/engine.py</c> asserts "MoE not
/// supported with Stage 3". FP8/FP4 training is Transformer Engine's, with its recipes
/// (<c>transformer_engine/common/recipe/__init__.py</c>: DelayedScaling, Float8CurrentScaling, MXFP8BlockScaling,
/// NVFP4BlockScaling) in the model code; the config reference has no key for it.
/// </remarks>
public static class DeepSpeedExporter
{
    /// <summary>Renders the config, indented, with a trailing newline.</summary>
    /// <remarks>Long: one file written top to bottom, section by section as DeepSpeed's config names them.</remarks>
    public static string Render(ExportInput x)
    {
        var p = x.Plan;
        var m = x.Model;
        var notes = new List<string>
        {
            "DeepSpeed config for " + x.Summary(),
            "keys: DeepSpeed docs/_pages/config-json.md (https://www.deepspeed.ai/docs/config-json/)",
        };
        if (x.UnresolvedNote() is { } unresolved)
            notes.Add(unresolved);
        if (x.StackNote("DeepSpeed", "deepspeed", "megatron-deepspeed") is { } stack)
            notes.Add(stack);
        int layersPerChunk = x.LayersPerVirtualStage() ?? 0; // validates vpp against the model's layers when known

        if (p.Tp > 1 || p.Pp > 1 || p.Cp > 1 || p.SequenceParallel || p.Vpp > 1)
        {
            var launcher = new List<string>
            {
                $"--tensor-model-parallel-size {p.Tp}",
                $"--pipeline-model-parallel-size {p.Pp}",
            };
            if (p.Vpp > 1)
                launcher.Add(layersPerChunk > 0 ? $"--num-layers-per-virtual-pipeline-stage {layersPerChunk}" : $"--num-virtual-stages-per-pipeline-rank {p.Vpp}");
            if (p.Cp > 1)
                launcher.Add($"--context-parallel-size {p.Cp}");
            if (p.SequenceParallel)
                launcher.Add("--sequence-parallel");
            notes.Add($"TP/PP are not DeepSpeed config keys: they come from the launcher (Megatron-DeepSpeed {string.Join(' ', launcher)}); " +
                      $"DeepSpeed takes the data-parallel size from the model-parallel groups: dp = {p.Gpus} / (tp x pp x cp) = {p.Dp}");
        }
        if (p.Stages is { } st)
            notes.Add($"uneven pipeline stages: {string.Join("/", st.Layers)} layers per stage; set the launcher's pipeline partition to match (Megatron-LM --pipeline-model-parallel-layout, DeepSpeed PipelineModule partition_method)");
        notes.Add($"gradient_accumulation_steps = gbs / (dp x mbs) = {p.Gbs} / ({p.Dp} x {p.Mbs}) = {p.MicroBatches}");
        if (p.Pp > 1 && p.Zero >= 2)
            notes.Add($"warning: DeepSpeed's pipeline engine asserts 'ZeRO-2 and ZeRO-3 are incompatible with pipeline parallelism' (deepspeed/runtime/pipe/engine.py); ZeRO-{p.Zero} with pp {p.Pp} needs stage 0 or 1 there");

        var config = new JsonObject
        {
            ["_comment"] = null, // filled last, kept first
            ["train_batch_size"] = p.Gbs,
            ["train_micro_batch_size_per_gpu"] = p.Mbs,
            ["gradient_accumulation_steps"] = p.MicroBatches,
            ["gradient_clipping"] = JsonNode.Parse("1.0"), // kept as written: 1.0, not 1
            ["zero_optimization"] = new JsonObject { ["stage"] = p.Zero },
        };

        if (p.OptimizerOffload > 0)
        {
            var zero = (JsonObject)config["zero_optimization"]!;
            if (p.Zero == 0)
                notes.Add($"warning: the plan offloads {p.OptimizerOffload:0.##} of the optimizer state with ZeRO-0; DeepSpeed offloads the optimizer only under ZeRO 1-3, so offload_optimizer is not set and GPU memory will be above the planner's prediction");
            else
            {
                var offload = new JsonObject { ["device"] = "cpu", ["pin_memory"] = true };
                if (p.OptimizerOffload < 1 && p.Zero == 3)
                    offload["ratio"] = p.OptimizerOffload;
                else if (p.OptimizerOffload < 1)
                    notes.Add($"warning: the plan offloads {p.OptimizerOffload:0.##} of the optimizer state; DeepSpeed's partial offload (offload_optimizer.ratio) needs ZeRO-3, so all of it is offloaded here: less GPU memory and a slower optimizer step than predicted");
                zero["offload_optimizer"] = offload;
                notes.Add(p.Tuning.Optimizer == OptimizerKind.Lion
                    ? "offload_optimizer: the optimizer state lives in pinned host memory and DeepSpeed's CPU Lion (DeepSpeedCPULion) steps it"
                    : "offload_optimizer: the optimizer state lives in pinned host memory and DeepSpeed's CPU Adam steps it");
            }
        }

        Tuning(x, config, notes);

        switch (p.Precision)
        {
            case Precision.Bf16:
                config["bf16"] = new JsonObject { ["enabled"] = true };
                break;
            case Precision.Fp16:
                config["fp16"] = new JsonObject { ["enabled"] = true, ["loss_scale"] = 0 };
                notes.Add("fp16.loss_scale 0 selects dynamic loss scaling");
                break;
            case Precision.Fp8:
            case Precision.Fp8Cs:
            case Precision.Mxfp8:
            case Precision.Nvfp4:
                config["bf16"] = new JsonObject { ["enabled"] = true };
                notes.Add($"{p.Precision.Name()}: DeepSpeed's config has no fp8 or fp4 training key, so none is invented; bf16 is enabled and the {(p.Precision == Precision.Nvfp4 ? "fp4" : "fp8")} GEMMs come from Transformer Engine in the model code: " +
                          $"its linear layers run under te.fp8_autocast(enabled=True, fp8_recipe=transformer_engine.common.recipe.{TransformerEngineRecipe(p.Precision)})");
                break;
            case Precision.Fp32:
            case Precision.Tf32:
                notes.Add($"{p.Precision.Name()}: neither bf16 nor fp16 is enabled (fp32 training)");
                break;
        }

        if (x.PerStageRecomputeNote() is { } perStage)
            notes.Add(perStage);
        switch (x.RecomputePolicy)
        {
            case Recompute.Full:
                var ckpt = new JsonObject
                {
                    ["partition_activations"] = p.Tp > 1,
                    ["cpu_checkpointing"] = false,
                    ["contiguous_memory_optimization"] = false,
                };
                if (p.RecomputeLayers is { } k)
                {
                    ckpt["number_checkpoints"] = k;
                    notes.Add($"recompute {k} blocks per model chunk: the model code checkpoints only the first {k} blocks of each chunk (Megatron-DeepSpeed --recompute-method block --recompute-num-layers {k}); number_checkpoints sizes the buffers for them");
                }
                else if (x.StageLayers() is { } stageLayers)
                    ckpt["number_checkpoints"] = stageLayers.Max();
                else if (m is not null)
                    ckpt["number_checkpoints"] = CostModel.Pricing.StageLayout.MostBlocksPerChunk(m.Layers, p.Pp, p.Vpp);
                ckpt["synchronize_checkpoint_boundary"] = false;
                ckpt["profile"] = false;
                config["activation_checkpointing"] = ckpt;
                notes.Add("recompute full: activation_checkpointing applies where the model code calls deepspeed.checkpointing " +
                          "(Megatron-DeepSpeed --checkpoint-activations --deepspeed-activation-checkpointing); " +
                          (p.Tp > 1 ? "partition_activations splits the kept block inputs over the tensor-parallel group" : "partition_activations is off: there is no tensor-parallel group to split over"));
                break;
            case Recompute.Selective:
                notes.Add("recompute selective: no DeepSpeed config key; it comes from the model code (Megatron-DeepSpeed --recompute-granularity selective)");
                break;
        }

        if (m?.Moe is { } moe)
            Experts(moe, m, p, notes);
        else if (p.Ep > 1 || p.Etp > 1)
            notes.Add($"expert parallelism ep {p.Ep} x etp {p.Etp}: DeepSpeed takes it in the model code (deepspeed.moe.layer.MoE(..., ep_size={p.Ep})), not in this config; the model did not resolve, so its MoE arguments are not spelled out");
        if (m is not null && (m.Mla is not null || m.MtpLayers > 0 || m.Window is not null))
        {
            var parts = new[]
            {
                m.Mla is not null ? "multi-head latent attention" : null,
                m.MtpLayers > 0 ? $"multi-token prediction ({m.MtpLayers} module{(m.MtpLayers > 1 ? "s" : "")})" : null,
                m.Window is { } w ? $"sliding-window attention ({w.Window} keys)" : null,
            }.OfType<string>().ToList();
            notes.Add($"the model's {string.Join(", ", parts)} {(parts.Count > 1 ? "are" : "is")} the model code's: the DeepSpeed config has no architecture keys");
        }

        config["_comment"] = new JsonArray(notes.Select(n => (JsonNode?)JsonValue.Create(ExportInput.OneLine(n))).ToArray());
        // Relaxed escaping keeps the notes readable ('<', '+' and apostrophes as written); the output is JSON, not HTML.
        return config.ToJsonString(new JsonSerializerOptions { WriteIndented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }) + "\n";
    }

    /// <summary>
    /// The plan's optimizer as DeepSpeed's <c>optimizer.type</c> where DeepSpeed builds it, and its method as the PEFT
    /// recipe to apply before <c>deepspeed.initialize</c>. config-json: <c>optimizer.type</c> names Adam, AdamW, Lamb,
    /// OneBitAdam, ZeroOneAdam, OneBitLamb and Lion (deepspeed/runtime/config.py DEEPSPEED_OPTIMIZERS, compared
    /// lower-cased; engine.py builds Lion as FusedLion, or DeepSpeedCPULion with offload); any other type is looked up
    /// as <c>getattr(torch.optim, type)</c>, so "SGD" is torch's SGD. Optimizers neither has (8-bit Adam, Adafactor,
    /// Sophia) are client optimizers passed as <c>deepspeed.initialize(optimizer=...)</c>. ZeRO refuses an optimizer
    /// outside deepspeed/runtime/zero/utils.py ZERO_SUPPORTED_OPTIMIZERS (Adam, AdamW, Adagrad, Lion and their DeepSpeed
    /// kernels) unless <c>zero_allow_untested_optimizer</c> is true, and with offload_optimizer it insists on its own CPU
    /// optimizer unless <c>zero_force_ds_cpu_optimizer</c> is false (deepspeed/runtime/config.py).
    /// </summary>
    private static void Tuning(ExportInput x, JsonObject config, List<string> notes)
    {
        var p = x.Plan;
        var t = p.Tuning;
        switch (t.Optimizer)
        {
            case OptimizerKind.AdamW:
                break;
            case OptimizerKind.Lion:
                config["optimizer"] = new JsonObject { ["type"] = "Lion", ["params"] = new JsonObject() };
                notes.Add("optimizer.type Lion: DeepSpeed's own Lion (FusedLion on the GPU, DeepSpeedCPULion with offload), one moment as priced; set params.lr and betas for the run");
                break;
            case OptimizerKind.Sgd:
                config["optimizer"] = new JsonObject { ["type"] = "SGD", ["params"] = new JsonObject { ["momentum"] = JsonNode.Parse("0.9") } };
                notes.Add("optimizer.type SGD: not a DeepSpeed optimizer, so DeepSpeed builds torch.optim.SGD with these params; momentum 0.9 keeps the one momentum buffer priced; set params.lr for the run");
                break;
            default:
                notes.Add($"optimizer {FineTuning.Name(t.Optimizer)}: DeepSpeed's optimizer.type has no such optimizer, so none is set; build {FineTuningExport.Library(t.Optimizer)} over the trainable parameters and pass it as deepspeed.initialize(model=model, optimizer=optimizer, config=...)");
                break;
        }
        bool untested = t.Optimizer is not (OptimizerKind.AdamW or OptimizerKind.Lion);
        if (untested && p.Zero >= 1)
        {
            config["zero_allow_untested_optimizer"] = true;
            notes.Add($"zero_allow_untested_optimizer: ZeRO otherwise refuses {FineTuning.Name(t.Optimizer)}, which is not among its tested optimizers (Adam, AdamW, Adagrad, Lion)");
        }
        if (untested && p.Zero >= 1 && p.OptimizerOffload > 0)
        {
            config["zero_force_ds_cpu_optimizer"] = false;
            notes.Add($"zero_force_ds_cpu_optimizer false: with offload_optimizer DeepSpeed otherwise insists on its CPU Adam; {FineTuning.Name(t.Optimizer)} then steps on the host copies" +
                      (t.Optimizer == OptimizerKind.Adam8bit ? " (warning: bitsandbytes' 8-bit Adam runs on the GPU only, so drop the offload for it)" : ""));
        }
        if (FineTuningExport.PeftRecipe(t, x.Model, "deepspeed.initialize, which then gets only the trainable parameters") is { } recipe)
            notes.Add(recipe);
        if (t.QuantizedBase)
            notes.Add("qlora: ZeRO-3 would shard the 4-bit base, which the planner does not price and refuses (export a plan with zero 0, 1 or 2)");
    }

    /// <summary>Transformer Engine's recipe class (transformer_engine.common.recipe) for a quantized precision.</summary>
    private static string TransformerEngineRecipe(Precision precision) => precision switch
    {
        Precision.Fp8 => "DelayedScaling()",
        Precision.Fp8Cs => "Float8CurrentScaling()",
        Precision.Mxfp8 => "MXFP8BlockScaling()",
        _ => "NVFP4BlockScaling()",
    };

    /// <summary>
    /// DeepSpeed's MoE layer takes the expert count and the expert-parallel degree as constructor arguments in the model
    /// code, so they go in a note with the exact call; the JSON config has no key for them.
    /// </summary>
    private static void Experts(MoeSpec moe, ModelSpec m, ParallelPlan p, List<string> notes)
    {
        string capacity = p.MoeCapacity is double c
            ? $"capacity_factor={c.ToString("0.####", CultureInfo.InvariantCulture)}, eval_capacity_factor={c.ToString("0.####", CultureInfo.InvariantCulture)}, drop_tokens=True"
            : "drop_tokens=False";
        string expertTp = p.Etp == 1 ? "False" : "True";
        string blocks = moe.MoeLayers == m.Layers ? "every block" : $"the {moe.MoeLayers} MoE blocks (pattern {LayerPattern.Expression(moe.Pattern)}, 1 = MoE; the others keep a dense MLP of ffn {m.Ffn})";
        notes.Add($"MoE: expert parallelism is not a DeepSpeed config key; the model code builds {blocks} as deepspeed.moe.layer.MoE(hidden_size={m.Hidden}, expert=<{(m.Mlp == MlpKind.SwiGlu ? "SwiGLU" : "GeLU")} MLP of ffn {moe.ExpertFfn}>, " +
                  $"num_experts={moe.Experts}, ep_size={p.Ep}, k={moe.TopK}, {capacity}, enable_expert_tensor_parallelism={expertTp}) (deepspeed/moe/layer.py)" +
                  (p.MoeCapacity is null ? "; drop_tokens=False is dropless, as planned" : ""));
        if (p.Etp != 1 && p.Etp != p.Tp)
            notes.Add($"warning: etp {p.Etp} has no DeepSpeed equivalent: its experts are split either over the whole tensor-parallel group (tp {p.Tp}, enable_expert_tensor_parallelism=True) or not at all");
        if (moe.SharedFfn > 0)
            notes.Add($"shared experts (ffn {moe.SharedFfn}): a dense MLP beside the MoE layer in the model code; DeepSpeed's use_residual=True is Residual-MoE, which mixes the two outputs with a learned coefficient, not the same block");
        notes.Add("MoE optimizer: wrap the parameter groups in deepspeed.moe.utils.split_params_into_different_moe_groups_for_optimizer so that the expert gradients are reduced over the expert data-parallel group");
        if (p.Zero == 3)
            notes.Add("warning: DeepSpeed asserts 'MoE not supported with Stage 3' (deepspeed/runtime/engine.py); a MoE model needs ZeRO stage 0-2 there");
        if (p.MoeImbalance != 1)
            notes.Add($"the planner priced the busiest expert at {p.MoeImbalance.ToString("0.##", CultureInfo.InvariantCulture)} times the mean load");
    }
}
