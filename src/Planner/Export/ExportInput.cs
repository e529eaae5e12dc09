using System.Globalization;
using System.Text;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;

namespace Planner.Cli.Export;

/// <summary>
/// What an exporter works from: the plan read from a plan file, and the model's shape when the plan's model
/// name resolves (a preset name, or a path to a config that exists from here).
/// </summary>
/// <param name="Plan">The plan as read.</param>
/// <param name="ModelName">The plan's <c>model</c> key.</param>
/// <param name="ClusterName">The plan's <c>cluster</c> key.</param>
/// <param name="Model">The model's shape, or null when <paramref name="ModelName"/> does not resolve.</param>
/// <param name="ModelProblem">Why the model did not resolve (null when it did).</param>
/// <param name="Source">The plan file, for error messages and comments.</param>
/// <param name="Stack">The software stack the plan was priced for (the plan's <c>stack</c>).</param>
public sealed record ExportInput(
    ParallelPlan Plan,
    string ModelName,
    string ClusterName,
    ModelSpec? Model,
    string? ModelProblem,
    string Source,
    string Stack = PricingOptions.DefaultStack)
{
    /// <summary>Reads a plan file and resolves its model with <see cref="ModelLoader.Load"/> when it can.</summary>
    public static ExportInput Read(string planPath)
    {
        var (plan, model, cluster, stack) = PlanFile.Read(planPath);
        return Resolve(plan, model, cluster, planPath, stack);
    }

    /// <summary>Resolves the model of a plan already read; a model that does not load is recorded, not raised.</summary>
    public static ExportInput Resolve(ParallelPlan plan, string model, string cluster, string source, string stack = PricingOptions.DefaultStack)
    {
        ModelSpec spec;
        try
        {
            spec = ModelLoader.Load(model);
        }
        catch (InputException e)
        {
            return new ExportInput(plan, model, cluster, null, Reason(e), source, stack);
        }
        Check(plan, spec, source);
        return new ExportInput(plan, model, cluster, spec, null, source, stack);
    }

    /// <summary>
    /// The facts of the stack the plan was priced for, to export as priced; a stack this machine cannot load (a file
    /// of another machine) gives Megatron-Core's, said through <paramref name="note"/>.
    /// </summary>
    public PricingOptions Software(Action<string> note)
    {
        try
        {
            return StackLoader.Options(Stack, $"{Source}: key 'stack'");
        }
        catch (InputException e)
        {
            note($"the plan's stack could not be loaded here ({e.Message}); its MoE dispatcher is written as {PricingOptions.DefaultStack}'s");
            return PricingOptions.Default;
        }
    }

    /// <summary>
    /// The warning that the plan was priced for another software stack than the target runs (null when it was priced
    /// for one of <paramref name="targetStacks"/>): the prediction is the other stack's, the target's own speed differs.
    /// </summary>
    public string? StackNote(string target, params string[] targetStacks) =>
        targetStacks.Contains(Stack)
            ? null
            : $"warning: the plan was priced for software stack '{Stack}'; {target} runs as stack {string.Join(" or ", targetStacks.Select(t => $"'{t}'"))}, so its step time will differ from that prediction (plan again with --stack {targetStacks[0]})";

    /// <summary>The plan must be able to shard the model it names: a config a framework rejects is bad input here,
    /// every reason on the one line.</summary>
    private static void Check(ParallelPlan plan, ModelSpec model, string source)
    {
        var problems = PlanCheck.TpProblems(model, plan.Tp).Select(p => p.InPlanFile()).ToList();
        if ((long)plan.Pp * plan.Vpp > model.Layers)
            problems.Add($"keys 'pp'·'vpp' = {(long)plan.Pp * plan.Vpp} model chunks for the {model.Layers} layers of '{model.Name}'");
        if (plan.Stages is { } st && st.Layers.Sum() != model.Layers)
            problems.Add($"key 'stages.layers' ({string.Join(",", st.Layers)}) adds up to {st.Layers.Sum()}, not the {model.Layers} layers of '{model.Name}'");
        problems.AddRange(PlanCheck.ExpertProblems(model, plan).Select(p => p.InPlanFile()));
        var t = plan.Tuning;
        if (t.Adapters && t.Rank > model.Hidden)
            problems.Add($"key 'lora_rank' is {t.Rank}, above the hidden size {model.Hidden} of '{model.Name}'");
        // As the planner refuses it: bitsandbytes' NF4 base is not sharded by ZeRO-3.
        if (t.QuantizedBase && plan.Zero >= 3)
            problems.Add("key 'finetune' is qlora with 'zero' 3; qlora keeps its 4-bit base whole on each rank: use zero 0, 1 or 2");
        if (problems.Count > 0)
            throw new InputException($"{source}: {string.Join("; ", problems)}");
    }

    /// <summary>The loader's message without its flag prefix and preset list (the plan file named the model, not --model).</summary>
    private static string Reason(InputException e)
    {
        string s = e.Reason;
        int presets = s.IndexOf(" (presets:", StringComparison.Ordinal);
        return presets >= 0 ? s[..presets] : s;
    }

    /// <summary>One line describing the plan, for the first comment of every export.</summary>
    public string Summary()
    {
        var p = Plan;
        return $"plan {Source}: model {ModelName} on {ClusterName}, {p.Gpus} GPUs = tp {p.Tp} x pp {p.Pp} x cp {p.Cp} x dp {p.Dp}, " +
               $"ZeRO-{p.Zero}, mbs {p.Mbs}, gbs {p.Gbs}, seq {p.Seq}, vpp {p.Vpp}, recompute {p.RecomputeLabel}, " +
               $"sequence parallel {(p.SequenceParallel ? "on" : "off")}, {p.Precision.Name()}" +
               (p.Ep > 1 || p.Etp > 1 ? $", ep {p.Ep} x etp {p.Etp}" : "") +
               (p.MoeCapacity is double c ? $", moe capacity {c.ToString("0.####", CultureInfo.InvariantCulture)}" : "") +
               (p.MoeImbalance != 1 ? $", moe imbalance {p.MoeImbalance.ToString("0.##", CultureInfo.InvariantCulture)}" : "") +
               (p.Stages is { } st ? $", stages {st}" : "") +
               (FineTuningExport.IsDefault(p.Tuning) ? "" : $", finetune {FineTuningExport.Describe(p.Tuning)}") +
               $", stack {Stack}";
    }

    /// <summary>
    /// Transformer blocks per physical pipeline stage when the plan does not interleave: the plan's own uneven split,
    /// or the planner's even split (remainder on the first stages) when the model is known; null otherwise.
    /// </summary>
    public IReadOnlyList<int>? StageLayers()
    {
        if (Plan.Vpp != 1)
            return null;
        if (Plan.Stages is { } st)
            return st.Layers;
        if (Model is null)
            return null;
        return Enumerable.Range(0, Plan.Pp).Select(s => Model.Layers / Plan.Pp + (s < Model.Layers % Plan.Pp ? 1 : 0)).ToList();
    }

    /// <summary>
    /// The recompute policy to configure: the plan's, or with a policy per stage the strongest of them, because the
    /// frameworks apply one policy to every stage and a weaker one would not fit the stage that needs the strongest.
    /// </summary>
    public Recompute RecomputePolicy => Plan.Stages is { } st ? st.Recompute.Max() : Plan.Recompute;

    /// <summary>The note on a per-stage recompute policy the frameworks cannot express (null when there is none).</summary>
    public string? PerStageRecomputeNote()
    {
        if (Plan.Stages is not { } st || st.Recompute.Distinct().Count() <= 1)
            return null;
        return $"warning: the plan recomputes per stage ({string.Join("/", st.Recompute.Select(ParallelPlan.Name))}); one policy applies to every stage here, " +
               $"the strongest ('{ParallelPlan.Name(RecomputePolicy)}'), so the stages that need less recompute more than the planner priced";
    }

    /// <summary>The comment line saying the model did not resolve (null when it did).</summary>
    public string? UnresolvedNote() => Model is null
        ? $"model '{ModelName}' could not be resolved ({ModelProblem}); only the parallelism and batch settings are emitted, add the model-shape settings by hand"
        : null;

    /// <summary>
    /// Transformer blocks per virtual pipeline stage (model chunk) when the plan interleaves (vpp above 1) and the
    /// model is known; null otherwise. Frameworks need the blocks to split evenly over pp · vpp chunks, so an uneven
    /// split is bad input naming the plan's <c>vpp</c> key.
    /// </summary>
    public int? LayersPerVirtualStage()
    {
        if (Plan.Vpp <= 1 || Model is null)
            return null;
        int chunks = Plan.Pp * Plan.Vpp;
        if (Model.Layers % chunks != 0)
            throw new InputException(
                $"{Source}: key 'vpp' is {Plan.Vpp}; the {Model.Layers} layers of '{Model.Name}' do not split evenly over " +
                $"pp·vpp = {Plan.Pp}·{Plan.Vpp} = {chunks} model chunks, which interleaved pipelines need");
        return Model.Layers / chunks;
    }

    /// <summary>Collapses a note to one line without control characters, so that it stays a single comment line.</summary>
    public static string OneLine(string s)
    {
        var b = new StringBuilder(s.Length);
        foreach (char c in s)
            b.Append(char.IsControl(c) ? ' ' : c);
        return b.ToString();
    }
}
