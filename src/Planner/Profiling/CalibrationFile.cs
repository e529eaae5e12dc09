using System.Globalization;
using CsvHelper;
using CsvHelper.Configuration;
using Planner.CostModel.Specs;
using Cal = Planner.CostModel.Calibration.Calibration;

namespace Planner.Cli.Profiling;

/// <summary>
/// Calibration files: CSV rows of (key, value), written by <c>profile</c> and read by the verbs that price plans.
/// By default a cluster's calibration lives in ~/.cache/planner/calibration/NAME.csv and is used whenever that
/// cluster is named; <c>--calibration FILE</c> gives another. A file measured on other hardware is refused unless forced.
/// </summary>
public static class CalibrationFile
{
    private sealed record Row(string Key, string Value);

    /// <summary>The default file of a cluster name.</summary>
    public static string DefaultPath(string cluster)
    {
        string cache = Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } x
            ? x
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        return Path.Combine(cache, "planner", "calibration", cluster + ".csv");
    }

    /// <summary>This machine's identity: host name and CPU model.</summary>
    public static (string Host, string Cpu) ThisMachine()
    {
        string cpu = "unknown";
        try
        {
            cpu = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? cpu;
        }
        catch (IOException)
        {
        }
        return (Environment.MachineName, $"{cpu} x{Environment.ProcessorCount}");
    }

    /// <summary>Writes a calibration.</summary>
    public static void Write(string path, Cal c)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        var inv = CultureInfo.InvariantCulture;
        var rows = new List<Row>
        {
            new("cluster", c.Cluster), new("host", c.Host), new("cpu", c.Cpu), new("precision", c.Precision),
            new("peak_tflops", c.PeakTflops.ToString("R", inv)), new("gemm_efficiency", c.GemmEfficiency.ToString("R", inv)),
            new("gemm_half_dim", c.GemmHalfDim.ToString("R", inv)), new("kernel_overhead_us", c.KernelOverheadUs.ToString("R", inv)),
            new("memory_bandwidth_gbs", c.MemoryBandwidthGbs.ToString("R", inv)), new("reserved_gib", c.ReservedGib.ToString("R", inv)),
            new("intra_bandwidth_gbs", c.IntraBandwidthGbs.ToString("R", inv)), new("intra_latency_us", c.IntraLatencyUs.ToString("R", inv)),
            new("inter_bandwidth_gbs", c.InterBandwidthGbs.ToString("R", inv)), new("inter_latency_us", c.InterLatencyUs.ToString("R", inv)),
        };
        rows.Add(new("element_rate_g", c.ElementRateG.ToString("R", inv)));
        if (c.OverlapSlowdown is { } slowdown)
            rows.Add(new("overlap_slowdown", slowdown.ToString("R", inv)));
        var residuals = c.GemmResiduals ?? [];
        for (int i = 0; i < residuals.Count; i++)
        {
            var r = residuals[i];
            rows.Add(new($"gemm_residual.{i}", string.Join(' ', new[] { r.D1, r.D2, r.D3, r.Ratio }.Select(v => v.ToString("R", inv)))));
        }
        var profiled = c.Profiled ?? ProfiledCorrections.None;
        foreach (var (name, rate) in profiled.OpRates ?? new Dictionary<string, OpRate>())
            rows.Add(new($"op.{name}", $"{rate.ForwardNs.ToString("R", inv)} {rate.BackwardNs.ToString("R", inv)}"));
        // Measurements a profile may lack (older files, other hardware): written only when measured.
        foreach (var (key, get, _) in ProfiledCorrections.Scalars)
            if (get(profiled) is double v)
                rows.Add(new(key, v.ToString("R", inv)));
        rows.AddRange(c.Versions.Select(kv => new Row("version." + kv.Key, kv.Value)));
        using var writer = new StreamWriter(path);
        using var csv = new CsvWriter(writer, CultureInfo.InvariantCulture);
        csv.WriteRecords(rows);
    }

    /// <summary>Reads a calibration; bad files are <see cref="InputException"/>s naming the file and key.</summary>
    public static Cal Read(string path)
    {
        if (!File.Exists(path))
            throw new InputException($"--calibration: file '{path}' not found");
        Dictionary<string, string> map;
        try
        {
            using var reader = new StreamReader(path);
            using var csv = new CsvReader(reader, new CsvConfiguration(CultureInfo.InvariantCulture));
            map = csv.GetRecords<Row>().ToDictionary(r => r.Key, r => r.Value);
        }
        catch (Exception e) when (e is CsvHelperException or ArgumentException)
        {
            throw new InputException($"{path}: not a calibration file ({e.Message.Split('\n')[0].Trim()})");
        }
        string S(string key) => map.TryGetValue(key, out var v) ? v : throw new InputException($"{path}: missing key '{key}'");
        double D(string key) => double.TryParse(S(key), NumberStyles.Float, CultureInfo.InvariantCulture, out double v) && double.IsFinite(v) && v >= 0
            ? v
            : throw new InputException($"{path}: key '{key}' must be a non-negative number");
        return new Cal(S("cluster"), S("host"), S("cpu"), S("precision"), D("peak_tflops"), D("gemm_efficiency"), D("gemm_half_dim"),
            D("kernel_overhead_us"), D("memory_bandwidth_gbs"), D("reserved_gib"), D("intra_bandwidth_gbs"), D("intra_latency_us"),
            D("inter_bandwidth_gbs"), D("inter_latency_us"),
            map.Where(kv => kv.Key.StartsWith("version.", StringComparison.Ordinal)).ToDictionary(kv => kv.Key[8..], kv => kv.Value),
            map.ContainsKey("element_rate_g") ? D("element_rate_g") : 0, // files from before these keys: not measured
            map.ContainsKey("overlap_slowdown") ? Math.Min(D("overlap_slowdown"), GpuSpec.MaxOverlapSlowdown) : null,
            map.Keys.Where(k => k.StartsWith("gemm_residual.", StringComparison.Ordinal)).Select(k =>
            {
                var v = S(k).Split(' ').Select(x => double.TryParse(x, NumberStyles.Float, CultureInfo.InvariantCulture, out double d) && d > 0 && double.IsFinite(d) ? d : -1).ToArray();
                return v.Length == 4 && v.All(x => x > 0)
                    ? new GemmResidual(v[0], v[1], v[2], v[3])
                    : throw new InputException($"{path}: key '{k}' must hold four positive numbers (three GEMM dimensions and a ratio)");
            }).ToList(),
            Corrections());

        ProfiledCorrections Corrections()
        {
            var profiled = new ProfiledCorrections(OpRates: map.Keys.Where(k => k.StartsWith("op.", StringComparison.Ordinal)).ToDictionary(k => k[3..], k =>
            {
                var v = S(k).Split(' ').Select(x => double.TryParse(x, NumberStyles.Float, CultureInfo.InvariantCulture, out double d) && d >= 0 && double.IsFinite(d) ? d : -1).ToArray();
                return v.Length == 2 && v.All(x => x >= 0)
                    ? new OpRate(v[0], v[1])
                    : throw new InputException($"{path}: key '{k}' must hold two non-negative numbers (ns per element forward and backward)");
            }));
            // A correction of 0 was never written (not measured): read as not measured, but where 0 is a measurement.
            foreach (var (key, _, with) in ProfiledCorrections.Scalars)
                if (map.ContainsKey(key) && (D(key) > 0 || (D(key) == 0 && ProfiledCorrections.ZeroMeasurable.Contains(key))))
                    profiled = with(profiled, D(key));
            return profiled;
        }
    }

    /// <summary>
    /// The cluster as priced: with the calibration given by <paramref name="explicitPath"/>, else with the cluster's
    /// default calibration if one exists. A file from other hardware is an error for an explicit path (unless
    /// <paramref name="force"/>) and is skipped for the default one.
    /// </summary>
    public static ClusterSpec Apply(ClusterSpec cluster, string? explicitPath, bool force, TextWriter? notes = null)
    {
        var (host, cpu) = ThisMachine();
        if (explicitPath is not null)
        {
            var c = Read(explicitPath);
            if (!force && (c.Host != host || c.Cpu != cpu))
                throw new InputException($"--calibration: '{explicitPath}' was measured on {c.Host} ({c.Cpu}), not on this machine {host} ({cpu}); pass --force-calibration to use it anyway");
            return c.Apply(cluster);
        }
        string path = DefaultPath(cluster.Name);
        if (!File.Exists(path))
            return cluster;
        var d = Read(path);
        if (d.Host != host || d.Cpu != cpu)
        {
            notes?.WriteLine($"planner: note: ignoring {path}, measured on other hardware ({d.Host}, {d.Cpu})");
            return cluster;
        }
        return d.Apply(cluster);
    }
}
