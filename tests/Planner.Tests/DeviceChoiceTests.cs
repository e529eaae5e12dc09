using Planner.Cli.Commands;
using Planner.CostModel.Specs;
using Planner.Executor.Torch;
using Xunit;

namespace Planner.Cli.Tests;

/// <summary>run's --device: parsing, and the choice against the CUDA devices a shim sees (given here, not asked).</summary>
public sealed class DeviceChoiceTests
{
    [Theory]
    [InlineData("auto", null, null)]
    [InlineData("cpu", DeviceType.Cpu, null)]
    [InlineData("CUDA", DeviceType.Cuda, null)]
    [InlineData("cuda:3", DeviceType.Cuda, 3)]
    public void Parses_the_four_forms(string value, DeviceType? type, int? index) =>
        Assert.Equal(new DeviceChoice(type, index), DeviceChoice.Parse(value));

    [Theory]
    [InlineData("gpu")]
    [InlineData("cuda:")]
    [InlineData("cuda:-1")]
    [InlineData("cuda:x")]
    [InlineData("")]
    public void Refuses_anything_else_naming_the_flag(string value) =>
        Assert.StartsWith("--device:", Assert.Throws<InputException>(() => DeviceChoice.Parse(value)).Message);

    [Fact]
    public void Auto_takes_cuda_only_when_every_local_rank_has_a_device()
    {
        var auto = DeviceChoice.Parse("auto");
        Assert.Equal(DeviceType.Cpu, auto.Resolve(2, scheduled: false, () => 0).Type);
        Assert.Equal(DeviceType.Cpu, auto.Resolve(2, scheduled: false, () => 1).Type);
        var cuda = auto.Resolve(2, scheduled: false, () => 2);
        Assert.Equal(DeviceType.Cuda, cuda.Type);
        // Each local rank its own device, named to the rank process.
        Assert.Equal(["cuda:0", "cuda:1"], new[] { cuda.RankArgument(0), cuda.RankArgument(1) });
        Assert.Equal(Device.Cuda(1), cuda.Of(1));
        Assert.Equal("cpu", DeviceChoice.Parse("cpu").RankArgument(1));
    }

    [Fact]
    public void Cuda_asked_for_is_checked_against_the_devices()
    {
        var cuda = DeviceChoice.Parse("cuda");
        Assert.Contains("no CUDA device", Assert.Throws<InputException>(() => cuda.Resolve(1, false, () => 0)).Message);
        Assert.Contains("2 ranks on this machine but the shim sees 1", Assert.Throws<InputException>(() => cuda.Resolve(2, false, () => 1)).Message);
        Assert.Equal(cuda, cuda.Resolve(2, false, () => 8));
        var one = DeviceChoice.Parse("cuda:1");
        Assert.Contains("names one device for 2 ranks", Assert.Throws<InputException>(() => one.Resolve(2, false, () => 8)).Message);
        Assert.Contains("0 to 0", Assert.Throws<InputException>(() => one.Resolve(1, true, () => 1)).Message);
        Assert.Equal("cuda:1", one.Resolve(1, true, () => 2).RankArgument(0));
        // The CPU needs no device count.
        Assert.Equal(DeviceType.Cpu, DeviceChoice.Parse("cpu").Resolve(4, false, () => throw new InvalidOperationException("not asked")).Type);
    }

    [Fact]
    public void A_scheduled_task_takes_its_local_rank_device_or_the_one_bound_to_it()
    {
        var cuda = DeviceChoice.Parse("cuda");
        // Every GPU of the machine visible to each task: the local rank indexes them.
        Assert.Equal("cuda:3", cuda.Resolve(1, scheduled: true, () => 8, () => 3).RankArgument(0));
        // One GPU bound to each task (Slurm --gpus-per-task=1): it is device 0 of the task, whatever its local rank.
        Assert.Equal("cuda:0", cuda.Resolve(1, scheduled: true, () => 1, () => 3).RankArgument(0));
        Assert.Equal("cuda:0", DeviceChoice.Parse("auto").Resolve(1, scheduled: true, () => 1, () => 5).RankArgument(0));
        // Some but not all: no device of its own.
        Assert.Contains("local rank is 3 but the shim sees 2", Assert.Throws<InputException>(() => cuda.Resolve(1, true, () => 2, () => 3)).Message);
        Assert.Equal(DeviceType.Cpu, DeviceChoice.Parse("auto").Resolve(1, true, () => 2, () => 3).Type);
        Assert.Equal(DeviceType.Cpu, DeviceChoice.Parse("auto").Resolve(1, true, () => 0, () => 0).Type);
    }
}
