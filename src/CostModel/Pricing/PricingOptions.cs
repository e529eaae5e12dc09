using Planner.CostModel.Comm;

namespace Planner.CostModel.Pricing;

/// <summary>
/// Behaviours of the training software that change the price of the same plan on the same hardware: a software stack
/// (<c>stacks/*.yaml</c>, read by <see cref="StackLoader"/>), grouped by concern into named profiles whose enums name
/// each behaviour. The defaults are Megatron-Core's (<c>stacks/megatron-core.yaml</c>).
/// </summary>
public sealed record PricingOptions
{
    /// <summary>The stack priced when none is named.</summary>
    public const string DefaultStack = "megatron-core";

    /// <summary>The stack of this project's executor (<c>planner run</c>), what its runs and profiles are priced with.</summary>
    public const string ExecutorStack = "planner";

    /// <summary>Megatron-Core's facts, the default stack.</summary>
    public static PricingOptions Default { get; } = new();

    /// <summary>The attention, gradient-accumulation and loss kernels.</summary>
    public KernelProfile Kernels { get; init; } = new();

    /// <summary>How data-parallel (and ZeRO) communication runs.</summary>
    public DataParallelProfile DataParallel { get; init; } = new();

    /// <summary>The precision parameters and gradients are kept in.</summary>
    public StatePrecision Precision { get; init; } = new();

    /// <summary>How mixture-of-experts blocks run.</summary>
    public MoeProfile Moe { get; init; } = new();

    /// <summary>What selective recompute redoes and which layers' activations go to the host.</summary>
    public ActivationProfile Activations { get; init; } = new();

    /// <summary>How the ring attention's key and value gradients come home (context parallelism).</summary>
    public CpGradientReturn CpGradients { get; init; } = CpGradientReturn.HiddenInRing;

    /// <summary>How collectives over groups that span nodes run.</summary>
    public CollectiveAlgorithm Algorithm { get; init; } = CollectiveAlgorithm.Ring;

    /// <summary>The name of the stack these facts are (a preset's, or the <c>name</c> a stack file gives): what outputs and
    /// plan files record under <c>stack</c>.</summary>
    public string Stack { get; init; } = DefaultStack;
}

/// <summary>How the ring attention's backward returns each rank's key and value gradients (YAML <c>cp_grad_home_hop</c>).</summary>
public enum CpGradientReturn
{
    /// <summary>[false] In the 2·(cp-1) transfers that the attention core's backward hides.</summary>
    HiddenInRing,

    /// <summary>[true] One hop more than the keys and values: home to their owner after the ring's last block, with no
    /// attention compute left to hide that transfer (the executor: the gradients travel with the blocks they belong to and
    /// come back complete).</summary>
    HomeHop,
}
