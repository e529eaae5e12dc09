using Planner.CostModel.Pipeline;
using Planner.Executor.Distributed;
using Xunit;

namespace Planner.Executor.Tests;

/// <summary>
/// NCCL's point-to-point transfers ignore tags: a pair's sends must be received in the order they are sent, and a
/// communicator's stream must never hold a send behind a receive that waits for the peer's send (1F1B's crossing).
/// </summary>
public class PipelineLinksTests
{
    public static TheoryData<int, int, int> Schedules()
    {
        var data = new TheoryData<int, int, int>();
        foreach (int pp in new[] { 2, 3, 4, 8 })
            foreach (int vpp in new[] { 1, 2, 3 })
                foreach (int m in new[] { 1, 2, 3, 4, 6, 8, 16 })
                    if (ScheduleGenerator.Validate(pp, vpp, m) is null)
                        data.Add(pp, vpp, m);
        return data;
    }

    [Theory]
    [MemberData(nameof(Schedules))]
    public void Each_pair_of_a_group_carries_transfers_one_way_received_in_the_order_sent(int pp, int vpp, int m)
    {
        var schedule = ScheduleGenerator.Generate(pp, vpp, m);
        var all = Enumerable.Range(0, pp).SelectMany(s => PipelineLinks.Transfers(schedule, pp, vpp, s).Select(t => (Stage: s, t.Send, t.Transfer))).ToList();
        Assert.NotEmpty(all);
        // Every transfer is sent once and received once, by the stages it names.
        Assert.All(all, x => Assert.Equal(x.Stage, x.Send ? x.Transfer.From : x.Transfer.To));
        var sent = all.Where(x => x.Send).Select(x => x.Transfer).ToList();
        var received = all.Where(x => !x.Send).Select(x => x.Transfer).ToList();
        Assert.Equal(sent.Count, sent.Distinct().Count());
        Assert.Equal(sent.OrderBy(t => t.ToString()), received.OrderBy(t => t.ToString()));
        Assert.Equal(2 * (pp * vpp - 1) * m, sent.Count);
        // Within a group, a pair of stages is crossed one way only.
        foreach (var pair in sent.GroupBy(t => (t.Link, Math.Min(t.From, t.To), Math.Max(t.From, t.To))))
            Assert.Single(pair.Select(t => t.From).Distinct());
        // And the receiver posts its receives in the order the sender issued the sends.
        foreach (var route in sent.GroupBy(t => (t.Link, t.From, t.To)))
        {
            var receives = received.Where(t => (t.Link, t.From, t.To) == route.Key).ToList();
            Assert.Equal(route.ToList(), receives);
        }
    }

    [Fact]
    public void Directions_and_sender_parities_have_their_own_groups()
    {
        var links = new[] { PipelineLinks.Of(true, 0), PipelineLinks.Of(true, 1), PipelineLinks.Of(false, 0), PipelineLinks.Of(false, 1) };
        Assert.Equal(PipelineLinks.Count, links.Distinct().Count());
        Assert.All(links, l => Assert.InRange(l, 0, PipelineLinks.Count - 1));
        Assert.Equal(PipelineLinks.Of(true, 0), PipelineLinks.Of(true, 2));
    }
}
