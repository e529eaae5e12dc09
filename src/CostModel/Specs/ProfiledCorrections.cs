namespace Planner.CostModel.Specs;

/// <summary>
/// What a profile measures of the training software as it runs on the hardware, beyond the kernel curves: each value
/// corrects part of the price and is null where it was not measured (the price then stands uncorrected).
/// </summary>
/// <param name="OpRates">Measured nanoseconds per element, forward and backward, of memory-bound ops by the cost
/// model's op name (e.g. "cross_entropy": per logit); they replace the bandwidth and element-rate estimate for those ops.</param>
/// <param name="OptimizerNsPerParam">Nanoseconds of one optimizer step per parameter (null: priced as a pass over the
/// optimizer's bytes at the memory bandwidth).</param>
/// <param name="LinearForward">Measured time of a linear layer's forward GEMM over the GEMM curve's (weights
/// transposed as layers store them).</param>
/// <param name="LinearBackward">The same for its two backward GEMMs.</param>
/// <param name="BlockForward">Measured time of a whole transformer block's forward, as the training software runs it,
/// over its price from the kernels (what the kernel list leaves out: launch and framework overheads, layout copies).</param>
/// <param name="BlockBackward">The same for the block's backward.</param>
/// <param name="TpBlockForward">The block's factor when tensor parallelism splits it (measured at 2 ranks, its
/// collectives left out): the split block runs narrower GEMMs and the parallel layers' own ops. Null: the whole
/// block's factor.</param>
/// <param name="TpBlockBackward">The same for its backward.</param>
/// <param name="StepCompute">Compute of whole training steps of a small model, every rank training at once, over
/// their price with the corrections above (what timing the pieces alone leaves out: all the blocks' activations held
/// at once beyond the caches, ranks sharing the memory system, the embedding and gradient accumulation). Scales every
/// pass's compute.</param>
/// <param name="TpComm">The tensor-parallel block's collectives as training runs them (between its kernels) over
/// their price from the fitted latency and bandwidth. Scales every tensor-parallel collective.</param>
/// <param name="EpComm">The expert-parallel all-to-alls of a MoE block (the counts and the rows, dispatch and combine)
/// as training runs them, between the block's kernels, over their price from the fitted links. Scales every
/// expert-parallel exchange.</param>
/// <param name="CpBlockForward">The block's factor when context parallelism splits its sequence (measured at 2 ranks,
/// the ring's transfers left out): ring attention's blocks and their online softmax. Null: the whole block's factor.</param>
/// <param name="CpBlockBackward">The same for its backward.</param>
/// <param name="CpComm">Ring attention's transfers (context parallelism) as training runs them, between the block's
/// kernels, over their price from the fitted links. Scales every context-parallel exchange.</param>
/// <param name="MoeExpertOverheadUs">Microseconds each pass of a MoE block spends per local expert beyond its kernels'
/// price, as the training software runs it on the machine measured (routing on the host, each expert's own calls):
/// replaces the stack's value (<see cref="Pricing.MoeProfile.EagerExpertOverheadSeconds"/>).</param>
/// <param name="MemoryFactor">Memory a training step of a small model adds to its process over the bytes the memory
/// model allocates for it: the allocator's fragmentation and the pages it keeps (replaces the default share).</param>
/// <param name="P2pLatencyUs">A point-to-point transfer's latency on the machine measured (ping-pong between two idle
/// ranks: the wait for a peer still computing is the pipeline simulator's, not the transfer's), microseconds. Null: the
/// link's collective latency.</param>
/// <param name="ArrivalUs">What a collective right after compute waits for its peers beyond the link's latency (the
/// machine's links then carry the latency of idle ranks), microseconds, once per collective
/// (<see cref="LinkSpec.ArrivalUs"/>). Null: folded into the links' latency.</param>
/// <param name="HeadForward">The same for the final norm, LM head and loss, forward.</param>
/// <param name="HeadBackward">The same for their backward.</param>
public sealed record ProfiledCorrections(
    IReadOnlyDictionary<string, OpRate>? OpRates = null,
    double? OptimizerNsPerParam = null,
    double? LinearForward = null,
    double? LinearBackward = null,
    double? BlockForward = null,
    double? BlockBackward = null,
    double? HeadForward = null,
    double? HeadBackward = null,
    double? TpBlockForward = null,
    double? TpBlockBackward = null,
    double? StepCompute = null,
    double? TpComm = null,
    double? MemoryFactor = null,
    double? P2pLatencyUs = null,
    double? ArrivalUs = null,
    double? EpComm = null,
    double? MoeExpertOverheadUs = null,
    double? CpComm = null,
    double? CpBlockForward = null,
    double? CpBlockBackward = null)
{
    /// <summary>Nothing measured.</summary>
    public static ProfiledCorrections None { get; } = new();

    /// <summary>The scalar corrections by their calibration-file key: one list for reading, writing and merging.</summary>
    public static IReadOnlyList<(string Key, Func<ProfiledCorrections, double?> Get, Func<ProfiledCorrections, double?, ProfiledCorrections> With)> Scalars { get; } =
    [
        ("optimizer_ns_per_param", c => c.OptimizerNsPerParam, (c, v) => c with { OptimizerNsPerParam = v }),
        ("linear_forward_factor", c => c.LinearForward, (c, v) => c with { LinearForward = v }),
        ("linear_backward_factor", c => c.LinearBackward, (c, v) => c with { LinearBackward = v }),
        ("block_forward_factor", c => c.BlockForward, (c, v) => c with { BlockForward = v }),
        ("block_backward_factor", c => c.BlockBackward, (c, v) => c with { BlockBackward = v }),
        ("head_forward_factor", c => c.HeadForward, (c, v) => c with { HeadForward = v }),
        ("head_backward_factor", c => c.HeadBackward, (c, v) => c with { HeadBackward = v }),
        ("tp_block_forward_factor", c => c.TpBlockForward, (c, v) => c with { TpBlockForward = v }),
        ("tp_block_backward_factor", c => c.TpBlockBackward, (c, v) => c with { TpBlockBackward = v }),
        ("step_compute_factor", c => c.StepCompute, (c, v) => c with { StepCompute = v }),
        ("tp_comm_factor", c => c.TpComm, (c, v) => c with { TpComm = v }),
        ("ep_comm_factor", c => c.EpComm, (c, v) => c with { EpComm = v }),
        ("cp_comm_factor", c => c.CpComm, (c, v) => c with { CpComm = v }),
        ("cp_block_forward_factor", c => c.CpBlockForward, (c, v) => c with { CpBlockForward = v }),
        ("cp_block_backward_factor", c => c.CpBlockBackward, (c, v) => c with { CpBlockBackward = v }),
        ("moe_expert_overhead_us", c => c.MoeExpertOverheadUs, (c, v) => c with { MoeExpertOverheadUs = v }),
        ("memory_factor", c => c.MemoryFactor, (c, v) => c with { MemoryFactor = v }),
        ("p2p_latency_us", c => c.P2pLatencyUs, (c, v) => c with { P2pLatencyUs = v }),
        ("arrival_us", c => c.ArrivalUs, (c, v) => c with { ArrivalUs = v }),
    ];

    /// <summary>The scalar keys whose value may be measured as 0 (others read 0 as not measured, as older files wrote it):
    /// a MoE block with no overhead beyond its kernels.</summary>
    public static IReadOnlySet<string> ZeroMeasurable { get; } = new HashSet<string> { "moe_expert_overhead_us" };

    /// <summary>Each value measured here, else <paramref name="fallback"/>'s.</summary>
    public ProfiledCorrections Over(ProfiledCorrections? fallback)
    {
        if (fallback is null)
            return this;
        var merged = this with { OpRates = OpRates is { Count: > 0 } ? OpRates : fallback.OpRates };
        foreach (var (_, get, with) in Scalars)
            merged = with(merged, get(this) ?? get(fallback));
        return merged;
    }
}

/// <summary>A memory-bound op's measured cost: nanoseconds per element forward and backward.</summary>
public readonly record struct OpRate(double ForwardNs, double BackwardNs);
