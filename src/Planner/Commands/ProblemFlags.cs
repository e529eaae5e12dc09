using Planner.CostModel.Plans;

namespace Planner.Cli.Commands;

/// <summary>
/// Names the plan check's problems by the flags that set their fields: the one place where a plan key
/// (<c>sequence_parallel</c>) becomes a flag (<c>--sequence-parallel</c>).
/// </summary>
public static class ProblemFlags
{
    /// <summary>The flag of each plan key that has one; the keys missing here (<c>stages</c>, <c>stages.layers</c>,
    /// <c>stages.groups</c>) only come from plan files and keep their key.</summary>
    private static readonly Dictionary<string, string> Flags = new()
    {
        ["model"] = "--model",
        ["cluster"] = "--cluster",
        ["plan"] = "--plan",
        ["tp"] = "--tp",
        ["pp"] = "--pp",
        ["dp"] = "--dp",
        ["cp"] = "--cp",
        ["ep"] = "--ep",
        ["etp"] = "--etp",
        ["moe_imbalance"] = "--moe-imbalance",
        ["moe_capacity"] = "--moe-capacity",
        ["zero"] = "--zero",
        ["mbs"] = "--mbs",
        ["gbs"] = "--gbs",
        ["seq"] = "--seq",
        ["vpp"] = "--vpp",
        ["recompute"] = "--recompute",
        ["recompute_layers"] = "--recompute-layers",
        ["optimizer_offload"] = "--optimizer-offload",
        ["sequence_parallel"] = "--sequence-parallel",
        ["precision"] = "--precision",
        ["stack"] = "--stack",
        ["finetune"] = "--finetune",
        ["lora_rank"] = "--lora-rank",
        ["lora_targets"] = "--lora-targets",
        ["optimizer"] = "--optimizer",
        ["tokens"] = "--tokens",
        ["batch_rampup"] = "--batch-rampup",
        ["batch_schedule"] = "--batch-schedule",
        ["seq_warmup"] = "--seq-warmup",
        ["async_checkpoint"] = "--async-checkpoint",
    };

    /// <summary>The flag that sets a plan key, or the key itself when no flag does.</summary>
    public static string Flag(string key) => Flags.GetValueOrDefault(key, key);

    /// <summary>One problem named by its flags: "--tp: 3 does not divide ...", "--tp·--pp·--dp·--cp: 256 GPUs, ...".</summary>
    public static string Describe(PlanProblem problem) => $"{string.Join("·", problem.Keys.Select(Flag))}: {problem.Reason}";

    /// <summary>A bad input as the user gave it: the cost model's key (<c>model</c>) named by its flag (<c>--model</c>).</summary>
    public static string Message(CostModel.Specs.InputException e) => e.Field is { } field ? $"{Flag(field)}: {e.Reason}" : e.Message;

    /// <summary>Every problem on one line, for an <see cref="CostModel.Specs.InputException"/>.</summary>
    public static string Line(IEnumerable<PlanProblem> problems) => string.Join("; ", problems.Select(Describe));
}
