using Planner.CostModel.Comm;
using Planner.CostModel.Plans;
using Planner.Executor.Torch;

namespace Planner.Executor.Distributed;

/// <summary>
/// One rank's process groups for a plan: its tensor-, context-, pipeline- and data-parallel groups (null where the
/// axis has one rank; with context parallelism the data-parallel group is the dp·cp ranks that hold the same weights),
/// under expert parallelism the expert-parallel and expert-data-parallel groups, the pipeline's point-to-point groups (<see cref="PipelineLinks"/>), and the pair of the first and last stage's
/// ranks that sum a tied embedding's gradients. Every rank creates every group of an axis in the same order (c10d).
/// </summary>
public sealed class RankGroups : IDisposable
{
    private readonly ProcessGroupLayout _layout;
    private readonly Device _device;
    private readonly string? _interface;

    /// <summary>Creates the groups of rank <paramref name="rank"/> through <paramref name="store"/>.</summary>
    /// <param name="loopback">Every rank on this machine: Gloo binds to 127.0.0.1.</param>
    /// <param name="tiedEmbeddings">The model ties its input and output embeddings.</param>
    /// <param name="moe">The model has mixture-of-experts blocks: with ep &gt; 1 the expert-parallel and
    /// expert-data-parallel groups are made.</param>
    /// <param name="timeout">How long every group's collectives and transfers may be waited for (run --timeout).</param>
    public RankGroups(ParallelPlan plan, int rank, Store store, Device device, bool loopback, bool tiedEmbeddings, bool moe, TimeSpan timeout)
    {
        Timeout = timeout;
        _layout = new ProcessGroupLayout(plan);
        _device = device;
        _interface = loopback ? "127.0.0.1" : null;
        Me = _layout.Coordinates(rank);
        Tp = Group(store, Axis.Tp, rank);
        Pp = Group(store, Axis.Pp, rank);
        if (plan.Pp > 1)
            Links = Enumerable.Range(0, PipelineLinks.Count).Select(l => Group(store, Axis.Pp, rank, $"-p2p{l}")!).ToArray();
        Cp = Group(store, Axis.Cp, rank);
        Dp = Group(store, plan.Cp > 1 ? Axis.DpCp : Axis.Dp, rank);
        if (moe && plan.Ep > 1)
        {
            Ep = Group(store, Axis.Ep, rank);
            Edp = Group(store, Axis.Edp, rank);
        }
        // Tied input and output embeddings on different stages: the first and last stage sum their gradients.
        if (tiedEmbeddings && plan.Pp > 1)
        {
            var first = _layout.Rank(Me with { Pp = 0 });
            var last = _layout.Rank(Me with { Pp = plan.Pp - 1 });
            if (rank == first || rank == last)
                Tied = NewGroup(store, $"tied-{first}", rank == first ? 0 : 1, 2);
        }
    }

    /// <summary>How long a collective of any of the groups may be waited for.</summary>
    public TimeSpan Timeout { get; }

    /// <summary>The rank's mesh coordinates.</summary>
    public MeshCoordinates Me { get; }

    /// <summary>Tensor-parallel group, or null.</summary>
    public ProcessGroup? Tp { get; }

    /// <summary>Pipeline-parallel group, or null.</summary>
    public ProcessGroup? Pp { get; }

    /// <summary>Context-parallel group (the ring attention's), or null.</summary>
    public ProcessGroup? Cp { get; }

    /// <summary>The group the dense gradients are reduced over and ZeRO shards over, or null: the data-parallel ranks,
    /// with context parallelism the data- and context-parallel ranks together (Megatron-Core's; each CP rank's loss is
    /// the mean over its tokens, so the mean over the group is the whole batch's).</summary>
    public ProcessGroup? Dp { get; }

    /// <summary>Expert-parallel group (the ranks that split the experts and exchange tokens), or null.</summary>
    public ProcessGroup? Ep { get; }

    /// <summary>Expert-data-parallel group under expert parallelism (the ranks of a stage that hold the same experts), or
    /// null.</summary>
    public ProcessGroup? Edp { get; }

    /// <summary>The first and last stage's ranks of a tied embedding, or null.</summary>
    public ProcessGroup? Tied { get; }

    /// <summary>The pipeline's point-to-point groups (none with one stage).</summary>
    public ProcessGroup[] Links { get; } = [];

    /// <summary>A process group of the rank's backend: NCCL between CUDA devices, Gloo between CPUs.</summary>
    private ProcessGroup NewGroup(Store store, string name, int rank, int size) =>
        _device.Type == DeviceType.Cuda
            ? ProcessGroup.Nccl(store, name, rank, size, Timeout)
            : ProcessGroup.Gloo(store, name, rank, size, Timeout, _interface);

    private ProcessGroup? Group(Store store, Axis axis, int rank, string suffix = "")
    {
        if (_layout.Plan.Gpus == 1)
            return null;
        ProcessGroup? mine = null;
        foreach (var members in _layout.Groups(axis))
        {
            int index = Array.IndexOf(members, rank);
            if (index >= 0 && members.Length > 1)
                mine = NewGroup(store, $"{axis}-{members[0]}{suffix}", index, members.Length);
        }
        return mine;
    }

    /// <summary>Frees the groups.</summary>
    public void Dispose()
    {
        Tp?.Dispose();
        Pp?.Dispose();
        Cp?.Dispose();
        foreach (var link in Links)
            link.Dispose();
        Dp?.Dispose();
        Ep?.Dispose();
        Edp?.Dispose();
        Tied?.Dispose();
    }
}
