using CsvHelper.Configuration.Attributes;

namespace Planner.Cli.Validation;

/// <summary>One row of <c>validation/modern_runs.csv</c> (its <c>MODERN.md</c> explains each column): a measured run
/// whose model is a HuggingFace-style config in the <c>models/</c> folder beside the CSV.</summary>
public sealed class ModernRun
{
    [Name("id")] public string Id { get; set; } = "";
    [Name("source")] public string Source { get; set; } = "";
    [Name("system")] public string System { get; set; } = "";
    [Name("gpu")] public string Gpu { get; set; } = "";
    [Name("gpus")] public int Gpus { get; set; }
    [Name("gpus_per_node")] public int GpusPerNode { get; set; }
    [Name("nvlink_domain")] public int? NvlinkDomain { get; set; }
    [Name("intra_gbs")] public double IntraGbs { get; set; }
    [Name("inter_gbs")] public double InterGbs { get; set; }
    [Name("model")] public string Model { get; set; } = "";
    [Name("seq")] public int Seq { get; set; }
    [Name("tp")] public int Tp { get; set; }
    [Name("pp")] public int Pp { get; set; }
    [Name("cp")] public int Cp { get; set; }
    [Name("ep")] public int Ep { get; set; }
    [Name("etp")] public int? Etp { get; set; }
    [Name("vpp")] public int Vpp { get; set; }
    [Name("dp")] public int Dp { get; set; }
    [Name("fsdp")] public int Fsdp { get; set; }
    [Name("mbs")] public int Mbs { get; set; }
    [Name("gbs")] public int Gbs { get; set; }
    [Name("recompute")] public string Recompute { get; set; } = "";
    [Name("precision")] public string Precision { get; set; } = "";
    [Name("moe_balance")] public string MoeBalance { get; set; } = "";
    [Name("metric")] public string Metric { get; set; } = "";
    [Name("value")] public double Value { get; set; }
    [Name("step_time_s")] public double StepTimeS { get; set; }
    [Name("peak_memory_gib")] public double? PeakMemoryGib { get; set; }
    [Name("notes")][Optional] public string Notes { get; set; } = "";
    [Name("stack")][Optional] public string Stack { get; set; } = "";
}
