namespace Planner.Cli.Export;

/// <summary>The export targets by name.</summary>
public static class Exporters
{
    /// <summary>Names accepted by <c>export --to</c>.</summary>
    public static readonly string[] Targets = ["megatron", "deepspeed", "torchtitan"];

    /// <summary>Renders a plan for a target named in <see cref="Targets"/>.</summary>
    public static string Render(string target, ExportInput input) => target switch
    {
        "megatron" => MegatronExporter.Render(input),
        "deepspeed" => DeepSpeedExporter.Render(input),
        "torchtitan" => TorchtitanExporter.Render(input),
        _ => throw new ArgumentOutOfRangeException(nameof(target), target, "unknown export target"),
    };
}
