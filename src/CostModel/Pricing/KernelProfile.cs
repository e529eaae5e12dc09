namespace Planner.CostModel.Pricing;

/// <summary>The kernels a stack runs where several price differently (YAML keys in the members' docs).</summary>
/// <param name="Attention">The attention kernel (<c>attention</c>).</param>
/// <param name="GradAccumulation">How micro-batches' weight gradients accumulate (<c>fused_grad_accumulation</c>).</param>
/// <param name="Loss">The cross-entropy kernel (<c>fused_cross_entropy</c>).</param>
public sealed record KernelProfile(
    AttentionKernel Attention = AttentionKernel.Fused,
    GradientAccumulation GradAccumulation = GradientAccumulation.FusedIntoGemm,
    CrossEntropyKernel Loss = CrossEntropyKernel.Fused)
{
    /// <summary>The attention kernel is fused (no score matrix in memory).</summary>
    public bool FusedAttention => Attention == AttentionKernel.Fused;
}

/// <summary>The attention kernel (YAML <c>attention</c>).</summary>
public enum AttentionKernel
{
    /// <summary>[flash] Fused attention (FlashAttention 2 and its kin, as current frameworks use). Under it selective
    /// recompute has nothing left to recompute: the fused backward already redoes the scores.</summary>
    Fused,

    /// <summary>[materialized] The materialised softmax over the full scores of Megatron-LM of 2021–22.</summary>
    Materialized,
}

/// <summary>How the weight gradients of the micro-batches accumulate (YAML <c>fused_grad_accumulation</c>).</summary>
public enum GradientAccumulation
{
    /// <summary>[true] Weight-gradient GEMMs add into the accumulated gradients themselves (Megatron-LM's gradient
    /// accumulation fusion).</summary>
    FusedIntoGemm,

    /// <summary>[false] Plain autograd: each micro-batch after the first adds its gradients in a memory-bound pass.</summary>
    SeparatePass,
}

/// <summary>The loss kernel (YAML <c>fused_cross_entropy</c>).</summary>
public enum CrossEntropyKernel
{
    /// <summary>[true] One fused kernel over the logits that writes their gradient in place (Megatron-Core's cross-entropy
    /// fusion): the logits in the training precision are all it keeps, one read and one write of them.</summary>
    Fused,

    /// <summary>[false] A loss that makes fp32 softmax and gradient copies (Megatron-LM of 2021–22, the executor).</summary>
    Fp32Copies,
}
