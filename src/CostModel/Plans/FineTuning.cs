namespace Planner.CostModel.Plans;

/// <summary>What a training run updates: every weight, or low-rank adapters beside a frozen base.</summary>
public enum FineTuneMethod
{
    /// <summary>Every weight trains (pre-training and full fine-tuning).</summary>
    Full,
    /// <summary>LoRA (Hu et al. 2021): rank-r adapters on the targeted linear layers, the base frozen in the training precision.</summary>
    Lora,
    /// <summary>QLoRA (Dettmers et al. 2023): LoRA over a base stored in 4-bit NF4, dequantized to bf16 for each GEMM.</summary>
    Qlora,
}

/// <summary>The linear layers of a block that LoRA adapts (Q, K, V, O of attention; gate, up, down of the MLP, where a
/// non-gated MLP's fc1 is "up" and its fc2 "down").</summary>
[Flags]
public enum LoraTargets
{
    /// <summary>The query projection (under latent attention: the query's down and up projections).</summary>
    Q = 1,
    /// <summary>The key projection (under latent attention: with V, the key/value down and up projections).</summary>
    K = 2,
    /// <summary>The value projection.</summary>
    V = 4,
    /// <summary>The attention output projection.</summary>
    O = 8,
    /// <summary>A gated MLP's gate projection.</summary>
    Gate = 16,
    /// <summary>The MLP's up projection (fc1).</summary>
    Up = 32,
    /// <summary>The MLP's down projection (fc2).</summary>
    Down = 64,
    /// <summary>Every linear layer of attention.</summary>
    Attention = Q | K | V | O,
    /// <summary>Every linear layer of the MLP (each expert's too; not the router).</summary>
    Mlp = Gate | Up | Down,
    /// <summary>Every linear layer of the blocks (QLoRA's choice; the embedding and the head stay frozen).</summary>
    All = Attention | Mlp,
}

/// <summary>The optimizer that steps the trainable weights.</summary>
public enum OptimizerKind
{
    /// <summary>AdamW (Loshchilov and Hutter 2019): two fp32 moments.</summary>
    AdamW,
    /// <summary>8-bit Adam (Dettmers et al. 2022): both moments block-quantized to 8 bits.</summary>
    Adam8bit,
    /// <summary>Adafactor (Shazeer and Stern 2018): a factored second moment, no first moment.</summary>
    Adafactor,
    /// <summary>Lion (Chen et al. 2023): one fp32 moment.</summary>
    Lion,
    /// <summary>SGD with momentum: one fp32 momentum buffer.</summary>
    Sgd,
    /// <summary>Sophia (Liu et al. 2023): an fp32 moment and an fp32 Hessian diagonal refreshed every k steps.</summary>
    Sophia,
}

/// <summary>
/// How a plan trains: the method (full, LoRA, QLoRA), LoRA's rank and target layers, and the optimizer. The default
/// (full training with AdamW) is what every plan meant before fine-tuning existed.
/// </summary>
/// <param name="Method">Full training or adapters over a frozen base.</param>
/// <param name="Rank">LoRA's rank r (adapters only).</param>
/// <param name="Targets">The linear layers LoRA adapts (adapters only).</param>
/// <param name="Optimizer">The optimizer of the trainable weights.</param>
public sealed record FineTuning(
    FineTuneMethod Method = FineTuneMethod.Full,
    int Rank = FineTuning.DefaultRank,
    LoraTargets Targets = LoraTargets.All,
    OptimizerKind Optimizer = OptimizerKind.AdamW)
{
    /// <summary>LoRA's rank when none is given (a common PEFT choice).</summary>
    public const int DefaultRank = 16;

    /// <summary>Full training with AdamW.</summary>
    public static readonly FineTuning Default = new();

    /// <summary>True when the base weights are frozen and only adapters train.</summary>
    public bool Adapters => Method != FineTuneMethod.Full;

    /// <summary>True when the base's block linear weights are stored in 4-bit NF4.</summary>
    public bool QuantizedBase => Method == FineTuneMethod.Qlora;

    /// <summary>
    /// True when the trainable weights keep an fp32 master copy under mixed precision. QLoRA's recipe does not: its
    /// adapters are bf16 weights stepped in place, the optimizer's moments fp32 (Dettmers et al. 2023, section 3: "one
    /// storage data type ... one computation data type that is usually BFloat16"; their training script casts the LoRA
    /// layers to bf16 and pages a 32-bit AdamW).
    /// </summary>
    public bool MasterCopy => Method != FineTuneMethod.Qlora;

    /// <summary>Sophia refreshes its Hessian diagonal every this many steps (Liu et al. 2023, k = 10 in their runs).</summary>
    public const int SophiaHessianInterval = 10;

    /// <summary>Bytes per NF4 weight with QLoRA's double quantization (Dettmers et al. 2023, section 3): 4 bits, plus an
    /// fp8 absmax per 64-weight block, plus an fp32 constant per 256 of those: 8/64 + 32/(64·256) = 0.127 bits.</summary>
    public const double Nf4BytesPerWeight = (4 + 8.0 / Nf4Block + 32.0 / (Nf4Block * 256)) / 8;

    /// <summary>Weights per NF4 block, each with its own absolute maximum (QLoRA's block size; the executor's too).</summary>
    public const int Nf4Block = 64;

    /// <summary>8-bit Adam's block size (Dettmers et al. 2022, "8-bit Optimizers via Block-wise Quantization": blocks of
    /// 2048 values, one fp32 absmax each).</summary>
    public const int Adam8bitBlock = 2048;

    /// <summary>
    /// Optimizer state bytes per trainable parameter besides an fp32 master copy, for an element-wise optimizer:
    /// AdamW two fp32 moments (8); 8-bit Adam two 8-bit moments with an fp32 absmax per block (2 + 8/2048); Lion one
    /// fp32 moment (4); SGD one fp32 momentum (4); Sophia an fp32 moment and an fp32 Hessian diagonal (8). Adafactor's
    /// factored second moment depends on the matrices' shapes: 0 here, see <see cref="FactoredStateBytes"/>.
    /// </summary>
    public static double StateBytes(OptimizerKind o) => o switch
    {
        OptimizerKind.AdamW => 8,
        OptimizerKind.Adam8bit => 2 + 2 * 4.0 / Adam8bitBlock,
        OptimizerKind.Lion => 4,
        OptimizerKind.Sgd => 4,
        OptimizerKind.Sophia => 8,
        _ => 0,
    };

    /// <summary>Adafactor's state of a matrix of <paramref name="rows"/> × <paramref name="cols"/>: fp32 row and column
    /// sums of the squared gradients (Shazeer and Stern 2018, section 3); a vector (cols = 1) keeps a full fp32 second moment.</summary>
    public static double FactoredStateBytes(double rows, double cols) => cols <= 1 || rows <= 1 ? 4 * rows * cols : 4 * (rows + cols);

    /// <summary>
    /// Bytes the optimizer step reads and writes per trainable parameter, besides the weights themselves (read and
    /// written, with a master copy where there is one): the gradient read once for its norm and once for the update,
    /// the state read and written. Adafactor reads the gradient once more (its squared row and column sums) and its
    /// factored state is negligible per parameter; Sophia's Hessian refresh writes its diagonal once every k steps.
    /// </summary>
    public static double StepStateBytes(OptimizerKind o, double gradBytes) => o switch
    {
        OptimizerKind.Adafactor => 3 * gradBytes,
        OptimizerKind.Sophia => 2 * gradBytes + 2 * StateBytes(o) + 4.0 / SophiaHessianInterval,
        _ => 2 * gradBytes + 2 * StateBytes(o),
    };

    /// <summary>Lower-case name of a method.</summary>
    public static string Name(FineTuneMethod m) => m.ToString().ToLowerInvariant();

    /// <summary>Lower-case name of an optimizer.</summary>
    public static string Name(OptimizerKind o) => o.ToString().ToLowerInvariant();

    /// <summary>Name of a target set: attention, mlp, all, or a comma list such as "q,v".</summary>
    public static string Name(LoraTargets t) => t switch
    {
        LoraTargets.All => "all",
        LoraTargets.Attention => "attention",
        LoraTargets.Mlp => "mlp",
        _ => string.Join(',', Enum.GetValues<LoraTargets>().Where(v => v is not (LoraTargets.All or LoraTargets.Attention or LoraTargets.Mlp) && t.HasFlag(v))
            .Select(v => v.ToString().ToLowerInvariant())),
    };

    /// <summary>The method names accepted.</summary>
    public const string MethodNames = "full, lora or qlora";

    /// <summary>The optimizer names accepted.</summary>
    public const string OptimizerNames = "adamw, adam8bit, adafactor, lion, sgd or sophia";

    /// <summary>The target names accepted.</summary>
    public const string TargetNames = "attention, mlp, all, or a comma list of q, k, v, o, gate, up, down";

    /// <summary>Parses a method name; null if unknown.</summary>
    public static FineTuneMethod? ParseMethod(string s) => s.ToLowerInvariant() switch
    {
        "full" => FineTuneMethod.Full,
        "lora" => FineTuneMethod.Lora,
        "qlora" => FineTuneMethod.Qlora,
        _ => null,
    };

    /// <summary>Parses an optimizer name; null if unknown.</summary>
    public static OptimizerKind? ParseOptimizer(string s) =>
        Enum.GetValues<OptimizerKind>().Select(o => (OptimizerKind?)o).FirstOrDefault(o => Name(o!.Value) == s.ToLowerInvariant());

    /// <summary>Parses a target set (see <see cref="TargetNames"/>); null if unknown or empty.</summary>
    public static LoraTargets? ParseTargets(string s)
    {
        LoraTargets t = 0;
        foreach (string part in s.ToLowerInvariant().Split(',', StringSplitOptions.TrimEntries))
        {
            LoraTargets? one = part switch
            {
                "all" => LoraTargets.All,
                "attention" => LoraTargets.Attention,
                "mlp" => LoraTargets.Mlp,
                "q" => LoraTargets.Q,
                "k" => LoraTargets.K,
                "v" => LoraTargets.V,
                "o" => LoraTargets.O,
                "gate" => LoraTargets.Gate,
                "up" => LoraTargets.Up,
                "down" => LoraTargets.Down,
                _ => null,
            };
            if (one is null)
                return null;
            t |= one.Value;
        }
        return t == 0 ? null : t;
    }
}
