using Planner.CostModel.Pipeline;
using Xunit;

namespace Planner.CostModel.Tests;

public class InFlightBoundTests
{
    [Fact]
    public void Closed_form_equals_the_generated_schedule_over_a_grid()
    {
        int checkedCases = 0;
        foreach (int pp in new[] { 1, 2, 3, 4, 6, 8 })
            foreach (int vpp in new[] { 1, 2, 3, 4 })
                foreach (int m in new[] { 1, 2, 3, 4, 6, 8, 12, 16, 24, 32 })
                {
                    if (ScheduleGenerator.Validate(pp, vpp, m) is not null)
                        continue;
                    var schedule = ScheduleGenerator.Generate(pp, vpp, m);
                    for (int s = 0; s < pp; s++)
                    {
                        Assert.Equal(ScheduleGenerator.MaxInFlight(schedule, s), ScheduleGenerator.InFlightBound(pp, vpp, m, s));
                        checkedCases++;
                    }
                }
        Assert.True(checkedCases > 300);
    }
}
