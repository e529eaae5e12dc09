using System.CommandLine;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;

namespace Planner.Cli.Commands;

/// <summary>The flags that describe a model, a cluster and one plan (shared by predict and later verbs).</summary>
public sealed class PlanFlags
{
    /// <summary>--model</summary>
    public Option<string> Model { get; } = new("--model") { Description = "Preset name or path to a HuggingFace config.json", Required = true };
    /// <summary>--cluster</summary>
    public Option<string> Cluster { get; } = new("--cluster") { Description = "Preset name or path to a cluster YAML file", Required = true };
    /// <summary>--tp</summary>
    public Option<int> Tp { get; } = new("--tp") { Description = "Tensor-parallel degree", Required = true };
    /// <summary>--pp</summary>
    public Option<int> Pp { get; } = new("--pp") { Description = "Pipeline-parallel degree", Required = true };
    /// <summary>--dp</summary>
    public Option<int?> Dp { get; } = new("--dp") { Description = "Data-parallel degree (default: the cluster's GPUs / (tp·pp·cp))" };
    /// <summary>--cp</summary>
    public Option<int> Cp { get; } = new("--cp") { Description = "Context-parallel degree", DefaultValueFactory = _ => 1 };
    /// <summary>--ep</summary>
    public Option<int> Ep { get; } = new("--ep") { Description = "Expert-parallel degree (MoE models): experts split over this many ranks of a stage", DefaultValueFactory = _ => 1 };
    /// <summary>--etp</summary>
    public Option<int> Etp { get; } = new("--etp") { Description = "Expert-tensor-parallel degree (MoE models): each expert split over this many ranks", DefaultValueFactory = _ => 1 };
    /// <summary>--moe-imbalance</summary>
    public Option<double> MoeImbalance { get; } = new("--moe-imbalance") { Description = "The busiest expert's token load over the mean (MoE models; 1 = balanced)", DefaultValueFactory = _ => 1 };
    /// <summary>--moe-capacity</summary>
    public Option<double?> MoeCapacity { get; } = new("--moe-capacity") { Description = "Capacity factor: each expert takes at most this times its mean load, the rest dropped (default: dropless)" };
    /// <summary>--zero</summary>
    public Option<int> Zero { get; } = new("--zero") { Description = "ZeRO stage 0-3", DefaultValueFactory = _ => 0 };
    /// <summary>--mbs</summary>
    public Option<int> Mbs { get; } = new("--mbs") { Description = "Micro-batch size (sequences)", Required = true };
    /// <summary>--gbs</summary>
    public Option<int> Gbs { get; } = new("--gbs") { Description = "Global batch size (sequences per step)", Required = true };
    /// <summary>--seq</summary>
    public Option<int?> Seq { get; } = new("--seq") { Description = "Sequence length (default: the model's maximum, at most 8192)" };

    /// <summary>The sequence length when none is given: the model's context, capped at 8192 (long-context models
    /// such as Llama 3.1 pre-train at 8192 and extend their context later).</summary>
    public static int DefaultSeq(ModelSpec model) => Math.Min(model.MaxSeq, 8192);
    /// <summary>--vpp</summary>
    public Option<int> Vpp { get; } = new("--vpp") { Description = "Model chunks per pipeline stage (interleaved 1F1B above 1)", DefaultValueFactory = _ => 1 };
    /// <summary>--recompute</summary>
    public Option<string> Recompute { get; } = new Option<string>("--recompute") { Description = "Activation recomputation", DefaultValueFactory = _ => "none" }.AcceptOnlyFromAmong("none", "selective", "full");
    /// <summary>--recompute-layers</summary>
    public Option<int?> RecomputeLayers { get; } = new("--recompute-layers") { Description = "With --recompute full: recompute only the first K blocks of each model chunk" };
    /// <summary>--optimizer-offload</summary>
    public Option<double> OptimizerOffload { get; } = new("--optimizer-offload") { Description = "Fraction 0-1 of the optimizer state kept in host memory and stepped by the CPU (needs the cluster's 'host')", DefaultValueFactory = _ => 0 };
    /// <summary>--sequence-parallel</summary>
    public Option<bool> SequenceParallel { get; } = new("--sequence-parallel") { Description = "Shard norm/dropout activations along the sequence over the TP group" };
    /// <summary>--calibration</summary>
    public Option<string?> Calibration { get; } = new("--calibration") { Description = "Calibration file from profile (default: the cluster's own, if profiled)" };
    /// <summary>--force-calibration</summary>
    public Option<bool> ForceCalibration { get; } = new("--force-calibration") { Description = "Use a calibration measured on other hardware" };
    /// <summary>--precision</summary>
    public Option<string> Precision { get; } = new Option<string>("--precision") { Description = "Training precision (fp8: delayed scaling, fp8-cs: current scaling, mxfp8 and nvfp4: block scaling)", DefaultValueFactory = _ => "bf16" }.AcceptOnlyFromAmong(PrecisionInfo.All.Select(p => p.Name).ToArray());

    /// <summary>--finetune</summary>
    public Option<string?> FineTune { get; } = new Option<string?>("--finetune") { Description = "What trains: full (every weight, the default), lora (rank-r adapters over a frozen bf16 base) or qlora (over a 4-bit NF4 base)" }.AcceptOnlyFromAmong("full", "lora", "qlora");
    /// <summary>--lora-rank</summary>
    public Option<int?> LoraRank { get; } = new("--lora-rank") { Description = $"LoRA's rank r (default {FineTuning.DefaultRank})" };
    /// <summary>--lora-targets</summary>
    public Option<string?> LoraTargets { get; } = new("--lora-targets") { Description = $"The linear layers LoRA adapts: {FineTuning.TargetNames} (default all)" };
    /// <summary>--optimizer</summary>
    public Option<string?> Optimizer { get; } = new Option<string?>("--optimizer") { Description = "Optimizer of the trainable weights (default adamw)" }.AcceptOnlyFromAmong(Enum.GetValues<OptimizerKind>().Select(FineTuning.Name).ToArray());

    /// <summary>The fine-tuning flags as a <see cref="FineTuning"/>; null when none is given (full training with AdamW).</summary>
    public FineTuning? ReadFineTuning(ParseResult r)
    {
        string? method = r.GetValue(FineTune), targets = r.GetValue(LoraTargets), optimizer = r.GetValue(Optimizer);
        int? rank = r.GetValue(LoraRank);
        if (method is null && targets is null && optimizer is null && rank is null)
            return null;
        var parsedTargets = targets is null ? CostModel.Plans.LoraTargets.All
            : FineTuning.ParseTargets(targets) ?? throw new InputException($"--lora-targets: '{targets}' is not {FineTuning.TargetNames}");
        return new FineTuning(
            method is null ? FineTuneMethod.Full : FineTuning.ParseMethod(method)!.Value,
            rank ?? FineTuning.DefaultRank,
            parsedTargets,
            optimizer is null ? OptimizerKind.AdamW : FineTuning.ParseOptimizer(optimizer)!.Value);
    }

    /// <summary>--stack</summary>
    public Option<string> Stack { get; } = StackOption();

    /// <summary>A <c>--stack</c> option: the software the plan runs on (a preset or a stack YAML file).</summary>
    public static Option<string> StackOption() => new("--stack")
    {
        Description = $"Software stack: a preset ({string.Join(", ", StackLoader.PresetNames)}) or a stack YAML file",
        DefaultValueFactory = _ => PricingOptions.DefaultStack,
    };

    /// <summary>--memory-headroom</summary>
    public Option<double> MemoryHeadroom { get; } = MemoryHeadroomOption();

    /// <summary>A <c>--memory-headroom</c> option: the share of each GPU's memory a plan leaves free.</summary>
    public static Option<double> MemoryHeadroomOption() => new("--memory-headroom")
    {
        Description = $"Share of each GPU's memory plans leave free for what the model does not count (NCCL buffers, allocator spikes), 0 to 0.5 (default {ClusterSpec.DefaultMemoryHeadroom})",
        DefaultValueFactory = _ => ClusterSpec.DefaultMemoryHeadroom,
    };

    /// <summary>The headroom given, checked: 0 to 0.5.</summary>
    public static double ReadHeadroom(ParseResult r, Option<double> option)
    {
        double f = r.GetValue(option);
        if (!(f >= 0 && f <= 0.5))
            throw new InputException($"--memory-headroom: {f} must be a fraction from 0 to 0.5");
        return f;
    }

    /// <summary>Adds the flags to a command.</summary>
    public void AddTo(Command c)
    {
        foreach (Option o in new Option[] { Model, Cluster, Stack, MemoryHeadroom, Tp, Pp, Dp, Cp, Ep, Etp, MoeImbalance, MoeCapacity, Zero, Mbs, Gbs, Seq, Vpp, Recompute, RecomputeLayers, OptimizerOffload, SequenceParallel, Precision, FineTune, LoraRank, LoraTargets, Optimizer, Calibration, ForceCalibration })
            c.Options.Add(o);
    }

    /// <summary>Reads model, cluster and plan; bad values raise <see cref="InputException"/> naming every offending flag.</summary>
    public (ModelSpec Model, ClusterSpec Cluster, ParallelPlan Plan) Read(ParseResult r)
    {
        var model = ModelLoader.Load(r.GetValue(Model)!);
        var cluster = Profiling.CalibrationFile.Apply(ClusterLoader.Load(r.GetValue(Cluster)!), r.GetValue(Calibration), r.GetValue(ForceCalibration));
        int tp = Positive(r.GetValue(Tp), "--tp"), pp = Positive(r.GetValue(Pp), "--pp"), cp = Positive(r.GetValue(Cp), "--cp");
        long modelParallel = (long)tp * pp * cp;
        bool tooMany = modelParallel > cluster.TotalGpus, noDp = r.GetValue(Dp) is null && cluster.TotalGpus % modelParallel != 0;
        // Without a data-parallel degree there is no plan to check: a TP degree the model cannot take is the likelier
        // culprit, and said instead.
        if ((tooMany || noDp) && PlanCheck.TpProblems(model, tp) is { Count: > 0 } tpProblems)
            throw new InputException(ProblemFlags.Line(tpProblems));
        if (tooMany)
            throw new InputException($"--tp·--pp·--cp = {modelParallel} GPUs, more than the {cluster.TotalGpus} of cluster '{cluster.Name}'");
        if (noDp)
            throw new InputException($"--dp: tp·pp·cp = {modelParallel} does not divide the {cluster.TotalGpus} GPUs of cluster '{cluster.Name}'; give --dp explicitly");
        int dp = r.GetValue(Dp) is int d ? Positive(d, "--dp") : (int)(cluster.TotalGpus / modelParallel);
        var plan = new ParallelPlan(
            tp, pp, dp, cp,
            Zero: r.GetValue(Zero),
            Mbs: Positive(r.GetValue(Mbs), "--mbs"),
            Gbs: Positive(r.GetValue(Gbs), "--gbs"),
            Seq: r.GetValue(Seq) is int s ? Positive(s, "--seq") : DefaultSeq(model),
            Vpp: Positive(r.GetValue(Vpp), "--vpp"),
            Recompute: ParallelPlan.ParseRecompute(r.GetValue(Recompute)!)!.Value,
            SequenceParallel: r.GetValue(SequenceParallel),
            Precision: PrecisionInfo.TryParse(r.GetValue(Precision)!)!.Value,
            RecomputeLayers: r.GetValue(RecomputeLayers),
            OptimizerOffload: r.GetValue(OptimizerOffload),
            Ep: r.GetValue(Ep),
            Etp: r.GetValue(Etp),
            MoeImbalance: r.GetValue(MoeImbalance),
            MoeCapacity: r.GetValue(MoeCapacity),
            FineTuning: ReadFineTuning(r));
        if (PlanCheck.Problems(model, cluster, plan) is { Count: > 0 } problems)
            throw new InputException(ProblemFlags.Line(problems));
        return (model, cluster, plan);
    }

    private static int Positive(int v, string flag) =>
        v is >= 1 and <= 10_000_000 ? v : throw new InputException($"{flag}: {v} is out of range; expected a whole number from 1 to 10000000");
}
