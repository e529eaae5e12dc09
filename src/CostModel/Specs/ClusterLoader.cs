namespace Planner.CostModel.Specs;

/// <summary>
/// Reads clusters (<c>topologies/*.yaml</c> presets or a user's YAML file) and GPU presets (<c>topologies/gpus/*.yaml</c>).
/// The schema is in CONTRACTS.md; unknown keys are errors.
/// </summary>
public static class ClusterLoader
{
    /// <summary>Bus-bandwidth efficiency of an NVLink/NVSwitch domain when the file does not give one. Fitted once to
    /// the published runs (validation/README.md) together with the GPU defaults below; the same for every row.</summary>
    public const double DefaultIntraNodeEfficiency = 0.70;

    /// <summary>Bus-bandwidth efficiency of an InfiniBand/RoCE network when the file does not give one (fitted likewise).</summary>
    public const double DefaultInterNodeEfficiency = 0.85;

    /// <summary>All-to-all efficiency of an NVLink domain when the file gives no link efficiency: the tier's collective
    /// efficiency (the published MoE runs do not identify an all-to-all efficiency of its own: docs/validation.md).</summary>
    public const double DefaultIntraNodeAllToAllEfficiency = DefaultIntraNodeEfficiency;

    /// <summary>All-to-all efficiency of the network between domains when the file gives no link efficiency (likewise).</summary>
    public const double DefaultInterNodeAllToAllEfficiency = DefaultInterNodeEfficiency;

    private static readonly string[] ClusterKeys = ["name", "gpu", "nodes", "gpus_per_node", "nvlink_domain", "intra_node", "inter_node", "price_per_gpu_hour", "groups", "host", "power", "carbon_kg_per_kwh", "mtbf_hours_per_node", "restart_s", "storage"];
    private static readonly string[] PowerKeys = ["gpu_w", "node_w", "pue", "wait_fraction", "cap_w"];
    private static readonly string[] StorageKeys = ["checkpoint_gbs"];
    private static readonly string[] HostKeys = ["memory_gib", "pcie_gbs", "memory_bandwidth_gbs"];
    private static readonly string[] GroupKeys = ["gpu", "nodes"];
    private static readonly string[] LinkKeys = ["bandwidth_gbs", "latency_us", "efficiency", "all_to_all_efficiency"];
    private static readonly string[] GpuKeys = ["name", "peak_tflops", "memory_gib", "memory_bandwidth_gbs", "gemm_efficiency", "gemm_half_dim", "memory_efficiency", "kernel_overhead_us", "overlap_slowdown", "reserved_gib", "element_rate_g", "grouped_gemm_efficiency", "quantized_gemm_efficiency", "host_link_gbs", "tdp_w"];
    private static readonly string[] QuantizedKeys = ["fp8", "mxfp8", "nvfp4"];
    private static readonly string[] PrecisionKeys = ["fp32", "tf32", "fp16", "bf16", "fp8", "mxfp8", "nvfp4"];

    /// <summary>Cluster preset names.</summary>
    public static IReadOnlyList<string> PresetNames => Presets.Names("topologies/", ".yaml");

    /// <summary>GPU preset names.</summary>
    public static IReadOnlyList<string> GpuPresetNames => Presets.Names("gpus/", ".yaml");

    /// <summary>Loads a cluster preset by name, or a YAML file by path.</summary>
    public static ClusterSpec Load(string nameOrPath)
    {
        if (File.Exists(nameOrPath))
            return Parse(File.ReadAllText(nameOrPath), nameOrPath) with { Source = Path.GetFullPath(nameOrPath) };
        var text = Presets.Read($"topologies/{nameOrPath}.yaml");
        if (text is not null)
            return Parse(text, $"topologies/{nameOrPath}.yaml") with { Source = nameOrPath };
        if (nameOrPath.Contains('/') || nameOrPath.Contains('\\') || nameOrPath.EndsWith(".yaml", StringComparison.OrdinalIgnoreCase) || nameOrPath.EndsWith(".yml", StringComparison.OrdinalIgnoreCase))
            throw new InputException("cluster", $"file '{nameOrPath}' not found");
        throw new InputException("cluster", $"'{nameOrPath}' is neither a file nor a preset (presets: {string.Join(", ", PresetNames)})");
    }

    /// <summary>Loads a GPU preset by name.</summary>
    public static GpuSpec LoadGpu(string name, string context = "gpu")
    {
        var text = Presets.Read($"gpus/{name}.yaml")
            ?? throw new InputException($"{context}: unknown GPU preset '{name}' (presets: {string.Join(", ", GpuPresetNames)})");
        return ParseGpu(YamlMap.Parse(text, $"topologies/gpus/{name}.yaml"));
    }

    /// <summary>Parses cluster YAML text; <paramref name="source"/> names the file in errors.</summary>
    public static ClusterSpec Parse(string yaml, string source)
    {
        var map = YamlMap.Parse(yaml, source).Allow(ClusterKeys);
        string name = map.OptionalString("name") ?? Path.GetFileNameWithoutExtension(source);
        List<GpuGroup>? groups = null;
        GpuSpec gpu;
        int nodes;
        if (map.Has("groups"))
        {
            if (map.Has("gpu") || map.Has("nodes"))
                throw new InputException($"{source}: give either 'groups' or 'gpu' and 'nodes', not both");
            groups = map.OptionalMapList("groups")!.Select(g =>
            {
                g.Allow(GroupKeys);
                var groupGpu = g.IsMap("gpu") ? ParseGpu(g.Map("gpu")) : LoadGpu(g.String("gpu"), $"{source}: key 'groups.gpu'");
                return new GpuGroup(groupGpu, g.Int("nodes", 1_000_000));
            }).ToList();
            gpu = groups[0].Gpu;
            nodes = groups.Sum(g => g.Nodes);
        }
        else
        {
            gpu = map.IsMap("gpu") ? ParseGpu(map.Map("gpu")) : LoadGpu(map.String("gpu"), $"{source}: key 'gpu'");
            nodes = map.Int("nodes", 1_000_000);
        }
        int perNode = map.Int("gpus_per_node", 1024);
        int? domain = map.Has("nvlink_domain") ? map.Int("nvlink_domain", 1_000_000) : null;
        if (ClusterSpec.DomainProblem(domain, perNode) is { } domainProblem)
            throw new InputException($"{source}: {domainProblem}");
        if (domain is int wide && wide > perNode && groups is { Count: > 1 })
            throw new InputException($"{source}: 'nvlink_domain' with 'groups' is not priced (a domain holding nodes of different GPUs); give one or the other");
        var intra = ParseLink(map.Map("intra_node"), DefaultIntraNodeEfficiency, DefaultIntraNodeAllToAllEfficiency);
        var inter = ParseLink(map.Map("inter_node"), DefaultInterNodeEfficiency, DefaultInterNodeAllToAllEfficiency);
        double? price = map.OptionalNumber("price_per_gpu_hour", 1e6);
        HostSpec? host = null;
        if (map.Has("host"))
        {
            var h = map.Map("host").Allow(HostKeys);
            host = new HostSpec(h.Number("memory_gib", 1e7), h.Number("pcie_gbs", 1e4), h.Number("memory_bandwidth_gbs", 1e5));
            h.RejectUnknown(HostKeys);
        }
        var operations = ParseOperations(map);
        map.RejectUnknown(ClusterKeys);
        var cluster = new ClusterSpec(name, gpu, nodes, perNode, intra, inter, price, groups is { Count: > 1 } ? groups : null, Host: host,
            NvlinkDomainSize: domain, Operations: operations);
        try
        {
            return PowerCap.Apply(cluster);
        }
        catch (InputException e) when (e.Field == "power.cap_w")
        {
            throw new InputException($"{source}: 'power.cap_w' {e.Reason}");
        }
    }

    /// <summary>The run-level keys (power, carbon, reliability, checkpoint storage), all optional.</summary>
    private static OperationsSpec ParseOperations(YamlMap map)
    {
        PowerSpec? power = null;
        if (map.Has("power"))
        {
            var p = map.Map("power").Allow(PowerKeys);
            power = new PowerSpec(p.OptionalNumber("gpu_w", 1e5, min: 1e-9), p.OptionalNumber("node_w", 1e6, min: -1e-9), p.OptionalNumber("pue", 10, min: 1 - 1e-9),
                p.OptionalNumber("wait_fraction", 1, min: -1e-9), p.OptionalNumber("cap_w", 1e5, min: 1e-9));
            p.RejectUnknown(PowerKeys);
        }
        double? storage = null;
        if (map.Has("storage"))
        {
            var st = map.Map("storage").Allow(StorageKeys);
            storage = st.OptionalNumber("checkpoint_gbs", 1e8, min: 1e-9);
            st.RejectUnknown(StorageKeys);
        }
        return new OperationsSpec(power, map.OptionalNumber("carbon_kg_per_kwh", 10, min: -1e-9), map.OptionalNumber("mtbf_hours_per_node", 1e9, min: 1e-9),
            map.OptionalNumber("restart_s", 1e7, min: -1e-9), storage);
    }

    private static LinkSpec ParseLink(YamlMap m, double defaultEfficiency, double defaultAllToAll)
    {
        m.Allow(LinkKeys);
        var link = new LinkSpec(
            m.Number("bandwidth_gbs", 1e6),
            m.Number("latency_us", 1e6),
            m.OptionalNumber("efficiency", 1) ?? defaultEfficiency,
            m.OptionalNumber("all_to_all_efficiency", 1) ?? m.OptionalNumber("efficiency", 1) ?? defaultAllToAll);
        m.RejectUnknown(LinkKeys);
        return link;
    }

    private static GpuSpec ParseGpu(YamlMap m)
    {
        m.Allow(GpuKeys);
        string name = m.String("name");
        var peaksMap = m.Map("peak_tflops").Allow(PrecisionKeys);
        var peaks = new Dictionary<Precision, double>();
        foreach (var key in PrecisionKeys)
            if (peaksMap.OptionalNumber(key, 1e6) is double v)
                peaks[PrecisionInfo.TryParse(key)!.Value] = v;
        peaksMap.RejectUnknown(PrecisionKeys);
        if (peaks.Count == 0)
            throw new InputException($"{m.Source}: 'peak_tflops' lists no rate (expected some of: {string.Join(", ", PrecisionKeys)})");
        var gpu = new GpuSpec(
            name,
            peaks,
            MemoryGib: m.Number("memory_gib", 1e5),
            MemoryBandwidthGbs: m.Number("memory_bandwidth_gbs", 1e6),
            GemmEfficiency: m.OptionalNumber("gemm_efficiency", 1) ?? DefaultGpu.GemmEfficiency,
            GemmHalfDim: m.OptionalNumber("gemm_half_dim", 1e6, min: -1e-9) ?? DefaultGpu.GemmHalfDim,
            MemoryEfficiency: m.OptionalNumber("memory_efficiency", 1) ?? DefaultGpu.MemoryEfficiency,
            KernelOverheadUs: m.OptionalNumber("kernel_overhead_us", 1e6, min: -1e-9) ?? DefaultGpu.KernelOverheadUs,
            OverlapSlowdown: m.OptionalNumber("overlap_slowdown", 0.9, min: -1e-9) ?? DefaultGpu.OverlapSlowdown,
            ReservedGib: m.OptionalNumber("reserved_gib", 1e5, min: -1e-9) ?? DefaultGpu.ReservedGib,
            ElementRateG: m.OptionalNumber("element_rate_g", 1e6, min: -1e-9) ?? 0,
            GroupedGemmEfficiency: m.OptionalNumber("grouped_gemm_efficiency", 1) ?? DefaultGpu.GroupedGemmEfficiency,
            HostLinkGbs: m.OptionalNumber("host_link_gbs", 1e4) ?? 0,
            TdpW: m.OptionalNumber("tdp_w", 1e5, min: 1e-9));
        var quantized = new Dictionary<Precision, double>(DefaultGpu.QuantizedGemmEfficiency);
        if (m.Has("quantized_gemm_efficiency"))
        {
            var q = m.Map("quantized_gemm_efficiency").Allow(QuantizedKeys);
            foreach (var key in QuantizedKeys)
                if (q.OptionalNumber(key, 2) is double v)
                    quantized[PrecisionInfo.TryParse(key)!.Value] = v;
            q.RejectUnknown(QuantizedKeys);
        }
        m.RejectUnknown(GpuKeys);
        return gpu with { QuantizedGemmEfficiency = quantized };
    }

    /// <summary>
    /// Efficiency defaults for a GPU that gives none. They were fitted once, by a grid search over these five
    /// values and the two network efficiencies, to the 30 published A100 runs of validation/published_runs.csv
    /// (the same values for every row; see README "Validation"); the data-centre GPU presets inherit them.
    /// </summary>
    public static class DefaultGpu
    {
        /// <summary>See <see cref="GpuSpec.GemmEfficiency"/>.</summary>
        public const double GemmEfficiency = 0.70;
        /// <summary>See <see cref="GpuSpec.GemmHalfDim"/>.</summary>
        public const double GemmHalfDim = 8;
        /// <summary>See <see cref="GpuSpec.MemoryEfficiency"/>.</summary>
        public const double MemoryEfficiency = 0.9;
        /// <summary>See <see cref="GpuSpec.KernelOverheadUs"/>.</summary>
        public const double KernelOverheadUs = 12;
        /// <summary>See <see cref="GpuSpec.OverlapSlowdown"/>.</summary>
        public const double OverlapSlowdown = 0.3;
        /// <summary>See <see cref="GpuSpec.ReservedGib"/>.</summary>
        public const double ReservedGib = 0.75;
        /// <summary>See <see cref="GpuSpec.GroupedGemmEfficiency"/>: fitted to the MoE runs of validation/modern_runs.csv
        /// (`planner validate --runs validation/modern_runs.csv --fit`, docs/validation.md).</summary>
        public const double GroupedGemmEfficiency = 0.52;
        /// <summary>See <see cref="GpuSpec.QuantizedGemmEfficiency"/>, for a GPU whose file gives none: the mean of the values
        /// fitted for the B200, GB200, GB300 and H100 presets (0.81), MXFP8 at the fitted 0.853 of FP8's, NVFP4 (no run to
        /// fit) at MXFP8's.</summary>
        public static IReadOnlyDictionary<Precision, double> QuantizedGemmEfficiency { get; } = new Dictionary<Precision, double>
        {
            [Precision.Fp8] = 0.81,
            [Precision.Mxfp8] = 0.69,
            [Precision.Nvfp4] = 0.69,
        };
    }
}
