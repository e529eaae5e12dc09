using Planner.Executor.Torch;
using Planner.Executor.Training;
using Xunit;

namespace Planner.Executor.Tests;

public class LossScalerTests
{
    [Fact]
    public void An_overflow_halves_the_scale_and_skips_and_clean_steps_double_it()
    {
        var s = new LossScaler(initialScale: 1024, growthInterval: 3);
        Assert.True(s.Update(finite: true));
        Assert.True(s.Update(finite: true));
        Assert.Equal(1024, s.Scale);
        Assert.True(s.Update(finite: true)); // third clean step in a row
        Assert.Equal(2048, s.Scale);
        Assert.False(s.Update(finite: false));
        Assert.Equal(1024, s.Scale);
        Assert.Equal(1, s.SkippedSteps);
        // The count of clean steps restarts after an overflow.
        Assert.True(s.Update(finite: true));
        Assert.True(s.Update(finite: true));
        Assert.False(s.Update(finite: false));
        Assert.Equal(512, s.Scale);
        Assert.Equal(2, s.SkippedSteps);
    }

    [Fact]
    public void AllFinite_finds_an_inf_or_a_nan_in_any_gradient()
    {
        using var scope = DisposeScope.Begin();
        var fine = Tensor.From([1f, -2, 3], 3);
        Assert.True(LossScaler.AllFinite([fine, null, fine.To(DType.BFloat16)]));
        Assert.False(LossScaler.AllFinite([fine, Tensor.From([1f, float.PositiveInfinity], 2)]));
        Assert.False(LossScaler.AllFinite([Tensor.From([float.NaN, 0f], 2), fine]));
        // +inf and -inf in one tensor sum to NaN: still caught.
        Assert.False(LossScaler.AllFinite([Tensor.From([float.PositiveInfinity, float.NegativeInfinity], 2)]));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-1)]
    [InlineData(double.PositiveInfinity)]
    [InlineData(double.NaN)]
    public void A_bad_initial_scale_is_refused(double scale) =>
        Assert.Throws<ArgumentOutOfRangeException>(() => new LossScaler(scale));
}
