using Xunit;
using Planner.CostModel.Specs;

namespace Planner.CostModel.Tests;

/// <summary>Cluster and GPU YAML: presets, the inline GPU form, and strict-key errors (CONTRACTS.md "Cluster input").</summary>
public class ClusterLoaderTests
{
    private const string Valid = """
        name: test-cluster
        gpu: a100-80g
        nodes: 4
        gpus_per_node: 8
        intra_node:
          bandwidth_gbs: 300
          latency_us: 3
        inter_node:
          bandwidth_gbs: 25
          latency_us: 6
        """;

    private const string InlineGpu = """
        name: custom
        gpu:
          name: my-gpu
          peak_tflops: {fp32: 10, bf16: 100}
          memory_gib: 24
          memory_bandwidth_gbs: 1000
        nodes: 2
        gpus_per_node: 4
        intra_node: {bandwidth_gbs: 100, latency_us: 2}
        inter_node: {bandwidth_gbs: 10, latency_us: 5, efficiency: 0.5}
        """;

    public static TheoryData<string> Presets()
    {
        var data = new TheoryData<string>();
        foreach (var n in ClusterLoader.PresetNames)
            data.Add(n);
        return data;
    }

    [Fact]
    public void PresetNames_AreNonEmpty()
    {
        Assert.NotEmpty(ClusterLoader.PresetNames);
        foreach (var gpu in new[] { "v100-32g", "a100-40g", "a100-80g", "h100-sxm", "h200", "b200", "local-cpu" })
            Assert.Contains(gpu, ClusterLoader.GpuPresetNames);
    }

    [Theory]
    [MemberData(nameof(Presets))]
    public void EveryPreset_Loads(string name)
    {
        var c = ClusterLoader.Load(name);
        Assert.True(c.Nodes >= 1);
        Assert.True(c.GpusPerNode >= 1);
        Assert.Equal(c.Nodes * c.GpusPerNode, c.TotalGpus);
        Assert.True(c.IntraNode.EffectiveBytesPerSecond > 0);
        Assert.True(c.InterNode.EffectiveBytesPerSecond > 0);
        Assert.True(c.Gpu.MemoryGib > 0);
        Assert.NotEmpty(c.Gpu.PeakTflops);
    }

    [Fact]
    public void DgxA100_80g_Has128Gpus_AndA100Peaks()
    {
        var c = ClusterLoader.Load("dgx-a100-80g");
        Assert.Equal(16, c.Nodes);
        Assert.Equal(8, c.GpusPerNode);
        Assert.Equal(128, c.TotalGpus);
        Assert.Equal(300, c.IntraNode.BandwidthGbs);
        Assert.Equal(25, c.InterNode.BandwidthGbs);
        Assert.Equal("a100-80g", c.Gpu.Name);
        Assert.Equal(312, c.Gpu.PeakTflops[Precision.Bf16]);
    }

    [Fact]
    public void LoadGpu_A100_80g()
    {
        var g = ClusterLoader.LoadGpu("a100-80g");
        Assert.Equal(312, g.PeakTflops[Precision.Bf16]);
        Assert.Equal(312, g.PeakTflops[Precision.Fp16]);
        Assert.Equal(19.5, g.PeakTflops[Precision.Fp32]);
        Assert.False(g.PeakTflops.ContainsKey(Precision.Fp8));
        Assert.Equal(312e12, g.PeakFlops(Precision.Bf16));
        Assert.Equal(80, g.MemoryGib);
        Assert.Equal(80.0 * 1024 * 1024 * 1024, g.MemoryBytes);
        Assert.Throws<InputException>(() => g.PeakFlops(Precision.Fp8));
    }

    [Fact]
    public void Parse_ValidFile_ReadsEveryField_AndDefaultsEfficiencies()
    {
        var c = ClusterLoader.Parse(Valid, "test.yaml");
        Assert.Equal("test-cluster", c.Name);
        Assert.Equal(4, c.Nodes);
        Assert.Equal(32, c.TotalGpus);
        Assert.Equal(3, c.IntraNode.LatencyUs);
        Assert.Equal(3e-6, c.IntraNode.LatencySeconds, 15);
        Assert.Equal(ClusterLoader.DefaultIntraNodeEfficiency, c.IntraNode.Efficiency);
        Assert.Equal(ClusterLoader.DefaultInterNodeEfficiency, c.InterNode.Efficiency);
        Assert.Equal(300e9 * ClusterLoader.DefaultIntraNodeEfficiency, c.IntraNode.EffectiveBytesPerSecond, 1e-3);
        Assert.Null(c.PricePerGpuHour);
    }

    [Fact]
    public void Parse_HostBlock_IsOptional_AndRead()
    {
        Assert.Null(ClusterLoader.Parse(Valid, "test.yaml").Host);
        var c = ClusterLoader.Parse(Valid + "\nhost:\n  memory_gib: 1024\n  pcie_gbs: 12\n  memory_bandwidth_gbs: 410\n", "test.yaml");
        Assert.Equal(new HostSpec(1024, 12, 410), c.Host);
        Assert.Equal(1024 * Units.GiB * HostSpec.UsableFraction, c.Host!.UsableBytes);
        var e = Assert.Throws<InputException>(() => ClusterLoader.Parse(Valid + "\nhost:\n  memory_gib: 1024\n  pcie: 12\n  memory_bandwidth_gbs: 410\n", "test.yaml"));
        Assert.Contains("pcie", e.Message);
        e = Assert.Throws<InputException>(() => ClusterLoader.Parse(Valid + "\nhost:\n  memory_gib: 1024\n  memory_bandwidth_gbs: 410\n", "test.yaml"));
        Assert.Contains("pcie_gbs", e.Message);
        Assert.NotNull(ClusterLoader.Load("dgx-h100").Host);
        Assert.Null(ClusterLoader.Load("local-cpu").Host);
    }

    [Fact]
    public void Parse_NameDefaultsToFileName()
    {
        var c = ClusterLoader.Parse(Valid.Replace("name: test-cluster\n", ""), "dir/my-cluster.yaml");
        Assert.Equal("my-cluster", c.Name);
    }

    [Fact]
    public void Parse_InlineGpuMapping()
    {
        var c = ClusterLoader.Parse(InlineGpu, "test.yaml");
        Assert.Equal("my-gpu", c.Gpu.Name);
        Assert.Equal(2, c.Gpu.PeakTflops.Count);
        Assert.Equal(100, c.Gpu.PeakTflops[Precision.Bf16]);
        Assert.Equal(10, c.Gpu.PeakTflops[Precision.Fp32]);
        Assert.False(c.Gpu.PeakTflops.ContainsKey(Precision.Fp16));
        Assert.Equal(24, c.Gpu.MemoryGib);
        Assert.Equal(1000, c.Gpu.MemoryBandwidthGbs);
        Assert.Equal(ClusterLoader.DefaultGpu.GemmEfficiency, c.Gpu.GemmEfficiency);
        Assert.Equal(ClusterLoader.DefaultGpu.KernelOverheadUs, c.Gpu.KernelOverheadUs);
        Assert.Equal(ClusterLoader.DefaultGpu.ReservedGib, c.Gpu.ReservedGib);
        Assert.Equal(8, c.TotalGpus);
        Assert.Equal(100, c.IntraNode.BandwidthGbs);
        Assert.Equal(ClusterLoader.DefaultIntraNodeEfficiency, c.IntraNode.Efficiency);
        Assert.Equal(0.5, c.InterNode.Efficiency);
        Assert.Equal(10e9 * 0.5, c.InterNode.EffectiveBytesPerSecond, 1e-3);
    }

    [Fact]
    public void Parse_InlineGpu_OptionalEfficiencies()
    {
        var yaml = InlineGpu.Replace("  memory_bandwidth_gbs: 1000\n",
            "  memory_bandwidth_gbs: 1000\n  gemm_efficiency: 0.8\n  kernel_overhead_us: 4\n  reserved_gib: 1.5\n");
        var g = ClusterLoader.Parse(yaml, "test.yaml").Gpu;
        Assert.Equal(0.8, g.GemmEfficiency);
        Assert.Equal(4, g.KernelOverheadUs);
        Assert.Equal(1.5, g.ReservedGib);
    }

    [Fact]
    public void Parse_PricePerGpuHour()
    {
        var c = ClusterLoader.Parse(Valid + "\nprice_per_gpu_hour: 2.5\n", "test.yaml");
        Assert.Equal(2.5, c.PricePerGpuHour);
    }

    private static InputException Fails(string yaml) =>
        Assert.Throws<InputException>(() => ClusterLoader.Parse(yaml, "test.yaml"));

    [Fact]
    public void UnknownTopLevelKey_NamesKey()
    {
        var e = Fails(Valid + "\nrack_count: 3\n");
        Assert.Contains("rack_count", e.Message);
        Assert.Contains("test.yaml", e.Message);
    }

    [Fact]
    public void UnknownKeyInsideIntraNode_NamesKey()
    {
        var e = Fails(Valid.Replace("  latency_us: 3", "  latency_us: 3\n  bandwith_gbs: 300"));
        Assert.Contains("bandwith_gbs", e.Message);
        Assert.Contains("test.yaml", e.Message);
    }

    [Fact]
    public void UnknownKeyInsideInterNode_NamesKey()
    {
        var e = Fails(Valid.Replace("  latency_us: 6", "  latency_us: 6\n  hops: 2"));
        Assert.Contains("hops", e.Message);
    }

    [Fact]
    public void UnknownKeyInsideGpuMapping_NamesKey()
    {
        var e = Fails(InlineGpu.Replace("  memory_gib: 24", "  memory_gib: 24\n  tdp_watts: 700"));
        Assert.Contains("tdp_watts", e.Message);
        Assert.Contains("test.yaml", e.Message);
    }

    [Fact]
    public void UnknownKeyInsidePeakTflops_NamesKey()
    {
        var e = Fails(InlineGpu.Replace("{fp32: 10, bf16: 100}", "{fp32: 10, bf16: 100, fp64: 5}"));
        Assert.Contains("fp64", e.Message);
        Assert.Contains("test.yaml", e.Message);
    }

    [Fact]
    public void MissingNodes_NamesKey()
    {
        var e = Fails(Valid.Replace("nodes: 4\n", ""));
        Assert.Contains("'nodes'", e.Message);
        Assert.Contains("test.yaml", e.Message);
    }

    [Fact]
    public void MissingIntraNode_NamesKey()
    {
        var e = Fails("""
            gpu: a100-80g
            nodes: 4
            gpus_per_node: 8
            inter_node: {bandwidth_gbs: 25, latency_us: 6}
            """);
        Assert.Contains("intra_node", e.Message);
    }

    [Fact]
    public void NegativeBandwidth_Rejected()
    {
        var e = Fails(Valid.Replace("bandwidth_gbs: 25", "bandwidth_gbs: -25"));
        Assert.Contains("bandwidth_gbs", e.Message);
    }

    [Fact]
    public void ZeroBandwidth_Rejected()
    {
        var e = Fails(Valid.Replace("bandwidth_gbs: 300", "bandwidth_gbs: 0"));
        Assert.Contains("bandwidth_gbs", e.Message);
    }

    [Fact]
    public void NonNumericNodes_Rejected()
    {
        var e = Fails(Valid.Replace("nodes: 4", "nodes: four"));
        Assert.Contains("nodes", e.Message);
    }

    [Fact]
    public void FractionalNodes_Rejected()
    {
        var e = Fails(Valid.Replace("nodes: 4", "nodes: 2.5"));
        Assert.Contains("nodes", e.Message);
    }

    [Fact]
    public void EfficiencyAboveOne_Rejected()
    {
        var e = Fails(Valid.Replace("  latency_us: 6", "  latency_us: 6\n  efficiency: 1.5"));
        Assert.Contains("efficiency", e.Message);
    }

    [Theory]
    [InlineData("nodes: [1, 2")]
    [InlineData("nodes: {a: 1")]
    [InlineData("a: b: c\n")]
    [InlineData("nodes: 'abc\n")]
    [InlineData("nodes: 4\nnodes: 5\n")]
    [InlineData("gpu: *undefined_anchor\n")]
    [InlineData("gpu: a100-80g\n  nodes: 4\n bad: : :\n")]
    public void InvalidYaml_NamesFile(string yaml)
    {
        var e = Assert.Throws<InputException>(() => ClusterLoader.Parse(yaml, "broken.yaml"));
        Assert.Contains("broken.yaml", e.Message);
    }

    [Fact]
    public void InvalidYaml_UnclosedFlowSequenceBeforeMoreKeys_NamesFile()
    {
        var e = Assert.Throws<InputException>(() => ClusterLoader.Parse("nodes: [1, 2\ngpu: a100-80g\n", "broken.yaml"));
        Assert.Contains("broken.yaml", e.Message);
    }

    [Fact]
    public void NonMappingDocument_NamesFile()
    {
        var e = Assert.Throws<InputException>(() => ClusterLoader.Parse("- a\n- b\n", "list.yaml"));
        Assert.Contains("list.yaml", e.Message);
    }

    [Fact]
    public void UnknownGpuPreset_ListsPresets()
    {
        var e = Fails(Valid.Replace("gpu: a100-80g", "gpu: a100-99g"));
        Assert.Contains("a100-99g", e.Message);
        Assert.Contains("a100-80g", e.Message);
        Assert.Contains("h100-sxm", e.Message);
    }

    [Fact]
    public void LoadGpu_UnknownPreset_ListsPresets()
    {
        var e = Assert.Throws<InputException>(() => ClusterLoader.LoadGpu("tpu-v9"));
        Assert.Contains("tpu-v9", e.Message);
        Assert.Contains("b200", e.Message);
    }

    [Fact]
    public void InlineGpu_EmptyPeakTflops_Rejected()
    {
        var e = Fails(InlineGpu.Replace("{fp32: 10, bf16: 100}", "{}"));
        Assert.Contains("peak_tflops", e.Message);
    }

    [Fact]
    public void Load_UnknownPresetName_ListsPresets()
    {
        var e = Assert.Throws<InputException>(() => ClusterLoader.Load("no-such-cluster"));
        Assert.Contains("no-such-cluster", e.Message);
        Assert.Contains("dgx-a100-80g", e.Message);
    }
}
