namespace Planner.CostModel.Pricing;

/// <summary>
/// The submodules selective recompute redoes in the backward instead of keeping their outputs (Megatron-Core's
/// <c>recompute_modules</c>; YAML names in brackets).
/// </summary>
[Flags]
public enum RecomputeModules
{
    /// <summary>Nothing.</summary>
    None = 0,
    /// <summary>[core_attn] The attention core: nothing to redo under fused attention, which redoes its scores anyway.</summary>
    CoreAttention = 1,
    /// <summary>[layernorm] The two norms of a block: their outputs (the attention's and the MLP's or router's inputs) are
    /// not kept; the norms run again.</summary>
    LayerNorm = 2,
    /// <summary>[moe_act] The experts' activation function: its output (the second expert GEMM's input) is not kept.</summary>
    MoeAct = 4,
    /// <summary>[mla_up_proj] Latent attention's up-projections (and their rotary embedding): the queries, keys and values
    /// are not kept; the up-projection GEMMs run again.</summary>
    MlaUpProj = 8,
    /// <summary>[mlp] A dense block's MLP (the dense first blocks of a MoE model, every block of a dense one): only its
    /// input is kept; the MLP's forward runs again.</summary>
    Mlp = 16,
}

/// <summary>The YAML names of <see cref="RecomputeModules"/>.</summary>
public static class RecomputeModuleNames
{
    /// <summary>Name and flag of each module.</summary>
    public static IReadOnlyList<(string Name, RecomputeModules Module)> All { get; } =
    [
        ("core_attn", RecomputeModules.CoreAttention), ("layernorm", RecomputeModules.LayerNorm), ("moe_act", RecomputeModules.MoeAct),
        ("mla_up_proj", RecomputeModules.MlaUpProj), ("mlp", RecomputeModules.Mlp),
    ];

    /// <summary>The flag of a name, or null when the model does not price that module.</summary>
    public static RecomputeModules? Parse(string name) =>
        All.FirstOrDefault(m => m.Name == name) is { Name: not null } found ? found.Module : null;
}
