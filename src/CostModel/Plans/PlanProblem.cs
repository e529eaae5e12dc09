namespace Planner.CostModel.Plans;

/// <summary>
/// One reason a plan cannot run on a model and cluster, as data: the caller names the field in its own terms
/// (a CLI flag, a plan-file key, a CSV column).
/// </summary>
/// <param name="Field">The plan's key as in the plan object of CONTRACTS.md (<c>tp</c>, <c>gbs</c>,
/// <c>sequence_parallel</c>, <c>stages.layers</c>, ...), or keys joined by '·' when the problem is their product
/// (<c>tp·pp·dp·cp</c>); <c>cluster</c> when the plan lacks what the cluster needs.</param>
/// <param name="Value">The offending value as text (the product for joined keys).</param>
/// <param name="Reason">What is wrong, written to follow the field's name ("3 does not divide the 32 attention
/// heads of 'x'"); plain words and plan keys, no CLI syntax.</param>
public sealed record PlanProblem(string Field, string Value, string Reason)
{
    /// <summary>The keys of <see cref="Field"/>: one, or several for a product.</summary>
    public IEnumerable<string> Keys => Field.Split('·');

    /// <summary>The problem as a plan file names it: "key 'tp': 3 does not divide ...".</summary>
    public string InPlanFile() =>
        Field.Contains('·') ? $"keys {string.Join("·", Keys.Select(k => $"'{k}'"))}: {Reason}" : $"key '{Field}': {Reason}";

    /// <summary>Several problems on one line, as a plan file names them.</summary>
    public static string InPlanFile(IEnumerable<PlanProblem> problems) => string.Join("; ", problems.Select(p => p.InPlanFile()));

    /// <summary>The problem with its field as the plan key: "tp: 3 does not divide ...".</summary>
    public override string ToString() => $"{Field}: {Reason}";
}
