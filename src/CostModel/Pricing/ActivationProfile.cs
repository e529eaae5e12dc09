namespace Planner.CostModel.Pricing;

/// <summary>What a stack does with the activations saved for the backward (YAML keys in the members' docs).</summary>
/// <param name="Recompute">(<c>recompute_modules</c>) What selective recompute redoes (Megatron-Core's
/// <c>recompute_modules</c>, default <c>core_attn</c>): see <see cref="RecomputeModules"/>. Read only when the plan's
/// recompute is selective.</param>
/// <param name="OffloadLayers">(<c>activation_offload_layers</c>) Layers of each model chunk whose saved activations go to
/// host memory during the forward and come back before their backward (Megatron-Core's <c>cpu_offloading_num_layers</c>,
/// activations only): their activations leave device memory, and the copies over the host link run behind the chunk's
/// forward and backward, what those cannot hide exposed. At most the chunk's layers less one (the last layer's backward
/// follows its forward).</param>
public sealed record ActivationProfile(RecomputeModules Recompute = RecomputeModules.CoreAttention, int OffloadLayers = 0);
