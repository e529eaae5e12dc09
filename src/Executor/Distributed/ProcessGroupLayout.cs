using Planner.CostModel.Comm;
using Planner.CostModel.Plans;

namespace Planner.Executor.Distributed;

/// <summary>A rank's position on each axis of the device mesh.</summary>
public readonly record struct MeshCoordinates(int Tp, int Cp, int Dp, int Pp);

/// <summary>
/// The sub-groups the executor creates for a plan, from the cost model's <see cref="Placement"/> so that what runs
/// crosses the network tiers the prediction assumed. c10d requires every rank to create every group in the same
/// order, so <see cref="Groups"/> lists all groups of an axis deterministically, not only the caller's.
/// </summary>
public sealed class ProcessGroupLayout
{
    private readonly Placement _placement;

    /// <summary>Creates the layout of a plan (the node size only matters to the cost model, not to membership).</summary>
    public ProcessGroupLayout(ParallelPlan plan)
    {
        Plan = plan;
        _placement = new Placement(plan, int.MaxValue);
    }

    /// <summary>The plan.</summary>
    public ParallelPlan Plan { get; }

    /// <summary>Ranks in the job: tp · cp · dp · pp.</summary>
    public int WorldSize => Plan.Gpus;

    /// <summary>The coordinates of a rank.</summary>
    public MeshCoordinates Coordinates(int rank)
    {
        Check(rank);
        return new MeshCoordinates(
            rank / _placement.Stride(Axis.Tp) % Plan.Tp,
            rank / _placement.Stride(Axis.Cp) % Plan.Cp,
            rank / _placement.Stride(Axis.Dp) % Plan.Dp,
            rank / _placement.Stride(Axis.Pp) % Plan.Pp);
    }

    /// <summary>The rank at given coordinates.</summary>
    public int Rank(MeshCoordinates c) =>
        c.Tp * _placement.Stride(Axis.Tp) + c.Cp * _placement.Stride(Axis.Cp)
        + c.Dp * _placement.Stride(Axis.Dp) + c.Pp * _placement.Stride(Axis.Pp);

    /// <summary>The members of the caller's group on an axis, in group-rank order.</summary>
    public int[] GroupOf(Axis axis, int rank)
    {
        Check(rank);
        return _placement.GroupOf(axis, rank);
    }

    /// <summary>All groups of an axis, ordered by their lowest rank: the order in which every rank creates them.</summary>
    public IReadOnlyList<int[]> Groups(Axis axis)
    {
        var groups = new List<int[]>();
        var seen = new bool[WorldSize];
        for (int r = 0; r < WorldSize; r++)
        {
            if (seen[r])
                continue;
            var g = _placement.GroupOf(axis, r);
            foreach (int m in g)
                seen[m] = true;
            groups.Add(g);
        }
        return groups;
    }

    /// <summary>The previous and next pipeline stage's rank of <paramref name="rank"/> (null at the ends).</summary>
    public (int? Previous, int? Next) PipelineNeighbours(int rank)
    {
        var c = Coordinates(rank);
        return (c.Pp > 0 ? Rank(c with { Pp = c.Pp - 1 }) : null,
                c.Pp < Plan.Pp - 1 ? Rank(c with { Pp = c.Pp + 1 }) : null);
    }

    private void Check(int rank)
    {
        if (rank < 0 || rank >= WorldSize)
            throw new ArgumentOutOfRangeException(nameof(rank), rank, $"rank must be in [0, {WorldSize})");
    }
}
