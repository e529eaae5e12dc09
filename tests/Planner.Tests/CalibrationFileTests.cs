using Planner.Cli.Profiling;
using Planner.CostModel.Calibration;
using Planner.CostModel.Specs;
using Xunit;

namespace Planner.Cli.Tests;

/// <summary>The calibration file's format: files of earlier versions read, and files written now carry the same keys in
/// the same order.</summary>
public sealed class CalibrationFileTests
{
    /// <summary>The calibration a file of <paramref name="text"/> reads as.</summary>
    private static Calibration Read(string text)
    {
        string path = Path.GetTempFileName();
        try
        {
            File.WriteAllText(path, text);
            return CalibrationFile.Read(path);
        }
        finally
        {
            File.Delete(path);
        }
    }

    /// <summary>The lines of the file <paramref name="cal"/> is written as.</summary>
    private static string[] Written(Calibration cal)
    {
        string path = Path.GetTempFileName();
        try
        {
            CalibrationFile.Write(path, cal);
            return File.ReadAllText(path).TrimEnd().ReplaceLineEndings("\n").Split('\n');
        }
        finally
        {
            File.Delete(path);
        }
    }

    /// <summary>A file as the version before the calibration's sub-records wrote it (keys in its order).</summary>
    private const string Earlier = """
        Key,Value
        cluster,local-cpu
        host,vm
        cpu,AMD EPYC x2
        precision,fp32
        peak_tflops,0.096
        gemm_efficiency,0.78
        gemm_half_dim,12
        kernel_overhead_us,49.5
        memory_bandwidth_gbs,25.1
        reserved_gib,0.19
        intra_bandwidth_gbs,0.56
        intra_latency_us,239.5
        inter_bandwidth_gbs,0.5
        inter_latency_us,300
        element_rate_g,0.117
        overlap_slowdown,2
        gemm_residual.0,64 64 64 1.04
        gemm_residual.1,128 128 128 0.74
        op.cross_entropy,3.74 3.81
        optimizer_ns_per_param,8.6
        block_forward_factor,1.27
        tp_comm_factor,0.18
        moe_expert_overhead_us,0
        p2p_latency_us,109.5
        arrival_us,12492
        version.libtorch,1.13.0
        version.date,2026-12-07

        """;

    [Fact]
    public void A_file_of_the_earlier_version_reads_and_writes_back_the_same_rows()
    {
        var cal = Read(Earlier);
        Assert.Equal(new MeasuredMachine("local-cpu", "vm", "AMD EPYC x2"), cal.Machine);
        Assert.Equal(("fp32", 0.096, 0.78, 12.0), (cal.Gemm.Precision, cal.Gemm.PeakTflops, cal.Gemm.Efficiency, cal.Gemm.HalfDim));
        Assert.Equal([new GemmResidual(64, 64, 64, 1.04), new GemmResidual(128, 128, 128, 0.74)], cal.Gemm.Residuals!);
        Assert.Equal(new MeasuredKernels(49.5, 0.117, 2), cal.Kernels);
        Assert.Equal(new MeasuredMemory(25.1, 0.19), cal.Memory);
        Assert.Equal((new MeasuredLink(0.56, 239.5), new MeasuredLink(0.5, 300)), (cal.Intra, cal.Inter));
        Assert.Equal(new OpRate(3.74, 3.81), cal.Profiled!.OpRates!["cross_entropy"]);
        Assert.Equal((8.6, 1.27, 0.18, 0.0, 109.5, 12492.0), (cal.Profiled.OptimizerNsPerParam, cal.Profiled.BlockForward, cal.Profiled.TpComm,
            cal.Profiled.MoeExpertOverheadUs, cal.Profiled.P2pLatencyUs, cal.Profiled.ArrivalUs));
        Assert.Null(cal.Profiled.BlockBackward);
        Assert.Equal("2026-12-07", cal.Versions["date"]);
        Assert.Equal(Earlier.TrimEnd().Split('\n'), Written(cal));
    }

    [Fact]
    public void Keys_measured_later_are_optional_and_a_slowdown_is_held_within_its_bound()
    {
        var cal = Read(string.Join('\n', Earlier.Split('\n').Where(l => !l.StartsWith("element_rate_g") && !l.StartsWith("overlap_slowdown")))
            .Replace("gemm_residual.0,64 64 64 1.04\n", ""));
        Assert.Equal(new MeasuredKernels(49.5), cal.Kernels);
        Assert.Single(cal.Gemm.Residuals!);
        Assert.Equal(GpuSpec.MaxOverlapSlowdown, Read(Earlier.Replace("overlap_slowdown,2", "overlap_slowdown,50")).Kernels.OverlapSlowdown);
        Assert.Contains("missing key 'intra_latency_us'", Assert.Throws<InputException>(() => Read(Earlier.Replace("intra_latency_us,239.5\n", ""))).Message);
    }
}
