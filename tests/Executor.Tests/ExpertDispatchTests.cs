using Planner.Executor.Distributed;
using Planner.Executor.Model;
using Planner.Executor.Parallelize;
using Planner.Executor.Torch;
using Xunit;

namespace Planner.Executor.Tests;

/// <summary>
/// Expert parallelism's dispatch against every expert computed in one process: two EP ranks as threads, each routing
/// its own rows to 4 experts (2 held per rank). Each rank must get back the rows the plain dispatch computes, and the
/// busier rank's busiest expert load must be the busiest load of the two ranks' rows routed together.
/// </summary>
public class ExpertDispatchTests
{
    private const int Experts = 4, Hidden = 3;

    /// <summary>Expert e's output: its rows times e + 1 (which expert computed a row shows in its values).</summary>
    private static Tensor Expert(int e, Tensor rows) => rows * (e + 1.0);

    [Fact]
    public void Rows_come_back_computed_and_the_busiest_load_is_the_groups()
    {
        long[][] counts = [[5, 1, 0, 2], [0, 1, 7, 0]]; // 8 rows each (top-k routes as many per rank); together 5, 2, 7, 2
        var rows = counts.Select((c, r) => Tensor.Normal([c.Sum(), Hidden], 0, 1, (ulong)(21 + r))).ToArray();
        var busiest = new double[2];
        RankThreads.Run(2, "ep", (rank, group) =>
        {
            var (output, load) = ExpertParallelism.Over(group, Experts).Run(rows[rank], counts[rank], Expert);
            var expected = ExpertDispatch.Local.Run(rows[rank], counts[rank], Expert).Output;
            Assert.Equal(expected.ToFloatArray(), output.ToFloatArray());
            busiest[rank] = load;
        });
        long[] together = Enumerable.Range(0, Experts).Select(e => counts[0][e] + counts[1][e]).ToArray();
        using var none = Tensor.Zeros([together.Sum(), Hidden]);
        Assert.Equal(ExpertDispatch.Local.Run(none, together, Expert).BusiestLoad, busiest.Max(), 12);
        Assert.Equal(7 / (16.0 / 4), busiest[1], 12); // rank 1 holds experts 2 and 3: 7 and 2 rows, against a mean of 4
        Assert.Equal(5 / (16.0 / 4), busiest[0], 12); // rank 0 holds experts 0 and 1: 5 and 2 rows
    }
}
