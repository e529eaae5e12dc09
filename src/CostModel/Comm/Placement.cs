using Planner.CostModel.Plans;
using Planner.CostModel.Specs;

namespace Planner.CostModel.Comm;

/// <summary>The parallel axes of the device mesh.</summary>
public enum Axis { Tp, Cp, Dp, Pp }

/// <summary>
/// Rank placement: global rank = ((pp_index · dp + dp_index) · cp + cp_index) · tp + tp_index, i.e. TP innermost,
/// then CP, DP and PP outermost, so that the chattiest group stays inside the NVLink domain.
/// From it follows which network tier each group's collectives cross and how many GPUs of a group share a node.
/// </summary>
public sealed record Placement(ParallelPlan Plan, int GpusPerNode)
{
    /// <summary>Distance in global ranks between neighbours of an axis' group.</summary>
    public int Stride(Axis axis) => axis switch
    {
        Axis.Tp => 1,
        Axis.Cp => Plan.Tp,
        Axis.Dp => Plan.Tp * Plan.Cp,
        Axis.Pp => Plan.Tp * Plan.Cp * Plan.Dp,
        _ => throw new ArgumentOutOfRangeException(nameof(axis)),
    };

    /// <summary>Size of an axis' group.</summary>
    public int Size(Axis axis) => axis switch
    {
        Axis.Tp => Plan.Tp,
        Axis.Cp => Plan.Cp,
        Axis.Dp => Plan.Dp,
        Axis.Pp => Plan.Pp,
        _ => throw new ArgumentOutOfRangeException(nameof(axis)),
    };

    /// <summary>Members of one group that sit on the same node (at least 1).</summary>
    public int MembersPerNode(Axis axis)
    {
        int stride = Stride(axis);
        if (stride >= GpusPerNode)
            return 1;
        // Nodes hold GpusPerNode consecutive ranks; a group's members are stride apart.
        return Math.Max(1, Math.Min(Size(axis), GpusPerNode / stride));
    }

    /// <summary>True when one group of this axis spans more than one node.</summary>
    public bool CrossesNodes(Axis axis) => Size(axis) > MembersPerNode(axis);

    /// <summary>Global ranks of the group of an axis that contains <paramref name="rank"/>.</summary>
    public int[] GroupOf(Axis axis, int rank)
    {
        int stride = Stride(axis), size = Size(axis);
        int index = rank / stride % size;
        int first = rank - index * stride;
        var members = new int[size];
        for (int i = 0; i < size; i++)
            members[i] = first + i * stride;
        return members;
    }
}
