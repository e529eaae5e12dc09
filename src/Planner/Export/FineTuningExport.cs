using Planner.CostModel.Plans;
using Planner.CostModel.Specs;

namespace Planner.Cli.Export;

/// <summary>
/// What the three exporters share about a plan's fine-tuning: the Hugging Face PEFT spelling of its LoRA adapters and
/// QLoRA's 4-bit base, and the library each optimizer the frameworks lack comes from.
/// </summary>
/// <remarks>
/// PEFT: huggingface/peft <c>LoraConfig(r, target_modules, ...)</c>, whose <c>target_modules</c> entries match a module
/// whose name is the entry or ends with "." + the entry. transformers <c>BitsAndBytesConfig(load_in_4bit,
/// bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant, bnb_4bit_compute_dtype)</c> is QLoRA's base (Dettmers et al.
/// 2023) and <c>peft.prepare_model_for_kbit_training</c> readies it. Module names: transformers' Llama family
/// (<c>self_attn.q_proj/k_proj/v_proj/o_proj</c>, <c>mlp.gate_proj/up_proj/down_proj</c>) for a gated MLP, GPT-2
/// (<c>attn.c_attn</c> holding Q, K and V in one matrix, <c>attn.c_proj</c>, <c>mlp.c_fc</c>, <c>mlp.c_proj</c>) otherwise.
/// </remarks>
internal static class FineTuningExport
{
    /// <summary>True when the plan trains every weight with AdamW, the default, which adds no export line.</summary>
    public static bool IsDefault(FineTuning t) => t == FineTuning.Default;

    /// <summary>A short description of the plan's method and optimizer, for the summary line and notes.</summary>
    public static string Describe(FineTuning t) =>
        (t.Adapters ? $"{FineTuning.Name(t.Method)} rank {t.Rank} on {FineTuning.Name(t.Targets)}" : "full") + $", optimizer {FineTuning.Name(t.Optimizer)}";

    /// <summary>
    /// PEFT's <c>target_modules</c> for the plan's targets, in the model's Hugging Face module names, and the caveat
    /// when those names cannot say exactly the plan's set (GPT-2's fused Q/K/V matrix), else null.
    /// </summary>
    public static (IReadOnlyList<string> Modules, string? Caveat) PeftTargets(LoraTargets t, ModelSpec? m)
    {
        var modules = new List<string>();
        string? caveat = null;
        if (m is null || m.Mlp == MlpKind.SwiGlu)
        {
            (LoraTargets Flag, string Name)[] llama =
            [
                (LoraTargets.Q, "q_proj"), (LoraTargets.K, "k_proj"), (LoraTargets.V, "v_proj"), (LoraTargets.O, "o_proj"),
                (LoraTargets.Gate, "gate_proj"), (LoraTargets.Up, "up_proj"), (LoraTargets.Down, "down_proj"),
            ];
            modules.AddRange(llama.Where(x => t.HasFlag(x.Flag)).Select(x => x.Name));
            if (m is null)
                caveat = "module names as in transformers' Llama models (the model did not resolve)";
            else if (m.IsMoe)
                caveat = "the experts' linear layers carry their model's own names (Mixtral: w1, w2, w3): add them for MLP targets";
            return (modules, caveat);
        }
        LoraTargets qkv = t & (LoraTargets.Q | LoraTargets.K | LoraTargets.V);
        if (qkv != 0)
        {
            modules.Add("attn.c_attn");
            if (qkv != (LoraTargets.Q | LoraTargets.K | LoraTargets.V))
                caveat = "GPT-2's attn.c_attn holds Q, K and V in one matrix, so the adapter covers all three, more than the planned targets";
        }
        if (t.HasFlag(LoraTargets.O))
            modules.Add("attn.c_proj");
        if (t.HasFlag(LoraTargets.Up))
            modules.Add("mlp.c_fc");
        if (t.HasFlag(LoraTargets.Down))
            modules.Add("mlp.c_proj");
        return (modules, caveat);
    }

    /// <summary>
    /// The Python that puts the plan's adapters on a Hugging Face model before the framework wraps it (null for full
    /// training): QLoRA's 4-bit NF4 load with double quantization, then PEFT's LoraConfig with the rank and targets.
    /// </summary>
    public static string? PeftRecipe(FineTuning t, ModelSpec? m, string before)
    {
        if (!t.Adapters)
            return null;
        var (modules, caveat) = PeftTargets(t.Targets, m);
        string targets = "[" + string.Join(", ", modules.Select(s => $"\"{s}\"")) + "]";
        string load = t.QuantizedBase
            ? "load the base with quantization_config=transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=\"nf4\", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16) and call peft.prepare_model_for_kbit_training(model), then "
            : "";
        return $"{FineTuning.Name(t.Method)}: {load}model = peft.get_peft_model(model, peft.LoraConfig(r={t.Rank}, target_modules={targets}, task_type=\"CAUSAL_LM\")) before {before}; " +
               "the base is frozen and only the adapters train, as priced" + (caveat is null ? "" : $" ({caveat})");
    }

    /// <summary>
    /// Where an optimizer comes from when a framework does not build it: bitsandbytes' 8-bit Adam, transformers'
    /// Adafactor (first moment off, as priced), the lion-pytorch package, torch's SGD, and the Sophia authors' SophiaG.
    /// </summary>
    public static string Library(OptimizerKind o) => o switch
    {
        OptimizerKind.Adam8bit => "bitsandbytes.optim.Adam8bit (block-wise 8-bit moments)",
        OptimizerKind.Adafactor => "transformers.optimization.Adafactor (beta1=None: no first moment, as priced)",
        OptimizerKind.Lion => "lion_pytorch.Lion",
        OptimizerKind.Sgd => "torch.optim.SGD(momentum=0.9)",
        OptimizerKind.Sophia => $"SophiaG from the Sophia authors' code (github.com/Liuhong99/Sophia; its Hessian estimate every k = {FineTuning.SophiaHessianInterval} steps is the training loop's)",
        _ => "torch.optim.AdamW",
    };
}
