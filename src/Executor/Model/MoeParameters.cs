using Planner.CostModel.Specs;

namespace Planner.Executor.Model;

/// <summary>
/// The parameters of a mixture-of-experts block's MLP, named after the cost model's linears (<see cref="BlockLinears"/>:
/// router, shared_gate/up/down, expert_gate/up/down repeated per expert): "mlp.router.w" [experts, hidden], replicated
/// under tensor parallelism; the shared expert's gated MLP "mlp.shared_{gate,up,down}.w" of the shared ffn; and each
/// routed expert's "mlp.experts.{e}.{gate,up,down}.w" of the expert ffn. Gate and up split by rows (column-parallel),
/// down by columns (row-parallel), as the dense MLP: Megatron-LM's expert tensor parallelism equal to TP.
/// </summary>
public static class MoeParameters
{
    /// <summary>The MLP parameters of a MoE block whose names start with <paramref name="prefix"/> ("layers.{i}.");
    /// <paramref name="outStd"/> is the residual projections' initial deviation.</summary>
    public static IEnumerable<ParameterSpec> Mlp(ModelSpec m, string prefix, double outStd)
    {
        var moe = m.Moe ?? throw new InvalidOperationException($"{m.Name} has no mixture-of-experts blocks");
        yield return new ParameterSpec(prefix + "mlp.router.w", [moe.Experts, m.Hidden], Shard.Replicated, 0.02);
        if (moe.SharedFfn > 0)
            foreach (var p in Gated(m, prefix + "mlp.shared_", moe.SharedFfn, outStd))
                yield return p;
        for (int e = 0; e < moe.Experts; e++)
            foreach (var p in Gated(m, $"{prefix}mlp.experts.{e}.", moe.ExpertFfn, outStd))
                yield return p;
    }

    private static IEnumerable<ParameterSpec> Gated(ModelSpec m, string prefix, long ffn, double outStd)
    {
        yield return new ParameterSpec(prefix + "gate.w", [ffn, m.Hidden], Shard.Rows, 0.02);
        yield return new ParameterSpec(prefix + "up.w", [ffn, m.Hidden], Shard.Rows, 0.02);
        yield return new ParameterSpec(prefix + "down.w", [m.Hidden, ffn], Shard.Columns, outStd);
    }
}
