using CsvHelper.Configuration.Attributes;

namespace Planner.Cli.Validation;

/// <summary>One row of <c>validation/published_runs.csv</c> (its README explains each column).</summary>
public sealed class PublishedRun
{
    [Name("id")] public string Id { get; set; } = "";
    [Name("source")] public string Source { get; set; } = "";
    [Name("gpu")] public string Gpu { get; set; } = "";
    [Name("gpus")] public int Gpus { get; set; }
    [Name("gpus_per_node")] public int GpusPerNode { get; set; }
    [Name("intra_gbs")] public double IntraGbs { get; set; }
    [Name("inter_gbs")] public double InterGbs { get; set; }
    [Name("layers")] public int Layers { get; set; }
    [Name("hidden")] public int Hidden { get; set; }
    [Name("heads")] public int Heads { get; set; }
    [Name("kv_heads")] public int KvHeads { get; set; }
    [Name("ffn")] public int Ffn { get; set; }
    [Name("vocab")] public int Vocab { get; set; }
    [Name("seq")] public int Seq { get; set; }
    [Name("act")] public string Act { get; set; } = "";
    [Name("tied")] public bool Tied { get; set; }
    [Name("tp")] public int Tp { get; set; }
    [Name("pp")] public int Pp { get; set; }
    [Name("dp")] public int Dp { get; set; }
    [Name("cp")] public int Cp { get; set; }
    [Name("vpp")] public int Vpp { get; set; }
    [Name("mbs")] public int Mbs { get; set; }
    [Name("gbs")] public int Gbs { get; set; }
    [Name("recompute")] public string Recompute { get; set; } = "";
    [Name("seq_parallel")] public bool SeqParallel { get; set; }
    [Name("zero")] public int Zero { get; set; }
    [Name("precision")] public string Precision { get; set; } = "";
    [Name("metric")] public string Metric { get; set; } = "";
    [Name("value")] public double Value { get; set; }
    [Name("step_time_s")] public double StepTimeS { get; set; }
    /// <summary>Per-GPU peak memory the source published, GiB (empty when it published none).</summary>
    [Name("peak_memory_gib")][Optional] public double? PeakMemoryGib { get; set; }
    [Name("notes")][Optional] public string Notes { get; set; } = "";
    [Name("stack")][Optional] public string Stack { get; set; } = "";
}
