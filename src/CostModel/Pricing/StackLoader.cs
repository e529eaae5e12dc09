using Planner.CostModel.Specs;

namespace Planner.CostModel.Pricing;

/// <summary>A software stack: its facts for the pricing, what it is, and where the facts come from.</summary>
/// <param name="Options">The facts, <see cref="PricingOptions.Stack"/> naming the stack.</param>
/// <param name="Description">One line on what the stack is.</param>
/// <param name="Sources">Where each fact comes from (code, papers, documentation).</param>
public sealed record SoftwareStack(PricingOptions Options, string Description, IReadOnlyList<string> Sources)
{
    /// <summary>The stack's name or file.</summary>
    public string Name => Options.Stack;
}

/// <summary>
/// Reads software stacks: the presets in <c>stacks/*.yaml</c> or a user's YAML file. A file names its facts (every
/// key optional but <c>name</c>); those it leaves out are its <c>base</c> stack's (default megatron-core). Unknown keys
/// are errors naming the file and key.
/// </summary>
public static class StackLoader
{
    private static readonly string[] Keys =
    [
        "name", "description", "sources", "base", "attention", "overlap_grad_reduce", "overlap_param_gather", "fused_grad_accumulation",
        "fused_cross_entropy", "zero3_prefetch", "gradient_bucket_copies", "reduce_scatter_per_micro_batch", "reduce_scatter_as_all_reduce",
        "fp32_data_parallel", "fp32_params", "grad_reduce_fp32", "tied_embedding_reduced_after_flush", "collective_per_bucket", "moe_dispatcher",
        "moe_expert_overhead_us", "collectives", "moe_cuda_graphs", "moe_expert_overhead_graphed_us", "moe_overlap_expert_comm",
        "activation_offload_layers", "recompute_modules", "cp_grad_home_hop",
    ];

    /// <summary>The keys a stack's facts are given by (all but name, description, sources and base).</summary>
    public static IReadOnlyList<string> FactKeys => Keys[4..];

    /// <summary>Stack preset names.</summary>
    public static IReadOnlyList<string> PresetNames => Presets.Names("stacks/", ".yaml");

    /// <summary>Loads a stack preset by name, or a YAML file by path; <paramref name="context"/> names where it was asked for
    /// (the key <c>stack</c>, which the CLI names by its flag, or a row or file).</summary>
    public static SoftwareStack Load(string nameOrPath, string context = "stack") => Load(nameOrPath, context, 0);

    /// <summary>The facts of a stack (see <see cref="Load(string, string)"/>).</summary>
    public static PricingOptions Options(string nameOrPath, string context = "stack") => Load(nameOrPath, context).Options;

    private static SoftwareStack Load(string nameOrPath, string context, int depth)
    {
        if (depth > 8)
            throw new InputException(context, $"stack '{nameOrPath}': 'base' chains more than 8 stacks (a cycle?)");
        // A bare preset name is the preset even where a file of that name lies about (the repository's ./planner).
        var text = IsBare(nameOrPath) ? Presets.Read($"stacks/{nameOrPath}.yaml") : null;
        if (text is not null)
        {
            var preset = Parse(text, $"stacks/{nameOrPath}.yaml", null, depth);
            return preset.Name == nameOrPath ? preset : throw new InputException($"stacks/{nameOrPath}.yaml: 'name' is {preset.Name}, not the file's name");
        }
        if (File.Exists(nameOrPath))
        {
            var file = Parse(File.ReadAllText(nameOrPath), nameOrPath, Path.GetDirectoryName(Path.GetFullPath(nameOrPath)), depth);
            // A file may take a preset's name only with the preset's facts (a copy of it): outputs go by the name.
            if (PresetNames.Contains(file.Name) && file.Options != Load(file.Name, context, depth + 1).Options)
                throw new InputException($"{nameOrPath}: 'name' {file.Name} is a preset's, with other facts; give the stack a name of its own");
            return file;
        }
        if (!IsBare(nameOrPath) || nameOrPath.EndsWith(".yaml", StringComparison.OrdinalIgnoreCase) || nameOrPath.EndsWith(".yml", StringComparison.OrdinalIgnoreCase))
            throw new InputException(context, $"file '{nameOrPath}' not found");
        throw new InputException(context, $"'{nameOrPath}' is neither a file nor a stack preset (presets: {string.Join(", ", PresetNames)})");
    }

    /// <summary>
    /// A stack named in a file (a stack's <c>base</c>, a validation row's <c>stack</c>): a preset's name stays a preset,
    /// a file named relative to <paramref name="directory"/> (where the naming file lies) lies beside it.
    /// </summary>
    public static string Beside(string nameOrPath, string directory) =>
        Path.IsPathRooted(nameOrPath) || (IsBare(nameOrPath) && Presets.Read($"stacks/{nameOrPath}.yaml") is not null)
            ? nameOrPath
            : Path.Combine(directory, nameOrPath);

    /// <summary>A name without a directory: a preset's, or a file in the working directory.</summary>
    private static bool IsBare(string nameOrPath) => !nameOrPath.Contains('/') && !nameOrPath.Contains('\\');

    /// <summary>Parses stack YAML text; <paramref name="source"/> names the file in errors, <paramref name="directory"/> is
    /// where a relative <c>base</c> file lies (null: the working directory).</summary>
    public static SoftwareStack Parse(string yaml, string source, string? directory) => Parse(yaml, source, directory, 0);

    private static SoftwareStack Parse(string yaml, string source, string? directory, int depth)
    {
        var map = YamlMap.Parse(yaml, source).Allow(Keys);
        string stack = map.String("name");
        string description = map.OptionalString("description") ?? "";
        var sources = map.OptionalStrings("sources") ?? [];
        string? baseName = map.OptionalString("base");
        if (baseName is not null && directory is not null)
            baseName = Beside(baseName, directory);
        var o = baseName is null ? PricingOptions.Default : Load(baseName, $"{source}: key 'base'", depth + 1).Options;
        o = StackFacts.Read(map, o, stack, source);
        map.RejectUnknown(Keys);
        return new SoftwareStack(o, description, sources);
    }
}
