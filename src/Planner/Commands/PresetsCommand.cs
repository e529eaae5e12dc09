using System.CommandLine;
using Planner.CostModel.Specs;

namespace Planner.Cli.Commands;

/// <summary><c>presets</c>: list the model, cluster, GPU and software-stack presets embedded in the planner.</summary>
public static class PresetsCommand
{
    /// <summary>Creates the command.</summary>
    public static Command Create(TextWriter stdout)
    {
        var cmd = new Command("presets", "List model, cluster, GPU and software-stack presets");
        cmd.SetAction(_ =>
        {
            stdout.WriteLine("models:   " + string.Join(", ", ModelLoader.PresetNames));
            stdout.WriteLine("clusters: " + string.Join(", ", ClusterLoader.PresetNames));
            stdout.WriteLine("gpus:     " + string.Join(", ", ClusterLoader.GpuPresetNames));
            stdout.WriteLine("stacks:   " + string.Join(", ", Planner.CostModel.Pricing.StackLoader.PresetNames));
            return Cli.Ok;
        });
        return cmd;
    }
}
