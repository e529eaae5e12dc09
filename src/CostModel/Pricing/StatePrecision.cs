namespace Planner.CostModel.Pricing;

/// <summary>The precision a stack keeps parameters and gradients in, beside the optimizer's fp32 master copy (YAML keys in
/// the members' docs).</summary>
/// <param name="Parameters">(<c>fp32_params</c>) <see cref="Dtype.Fp32"/>: parameters kept in fp32 and cast to the compute
/// precision at each use (the executor), rather than in the training precision beside the optimizer's fp32 master copy:
/// see <see cref="Memory.MemoryModel"/>.</param>
/// <param name="Gradients">(<c>grad_reduce_fp32</c>) <see cref="Dtype.Fp32"/>: gradients accumulate in an fp32 buffer and
/// are reduced in fp32 while the parameters stay in the training precision (Megatron-Core's grad_reduce_in_fp32, on in
/// NeMo's and Megatron-Bridge's mixed-precision recipes; torchtitan's float32 reduce dtype): 4 bytes a gradient in memory
/// and in the data-parallel reductions.</param>
public sealed record StatePrecision(Dtype Parameters = Dtype.TrainingPrecision, Dtype Gradients = Dtype.TrainingPrecision);

/// <summary>A number format the software keeps or moves values in.</summary>
public enum Dtype
{
    /// <summary>[false] The plan's training precision (bf16 or fp16 under mixed precision).</summary>
    TrainingPrecision,

    /// <summary>[true] fp32 whatever the training precision.</summary>
    Fp32,
}
