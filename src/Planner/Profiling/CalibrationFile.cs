using System.Globalization;
using CsvHelper;
using CsvHelper.Configuration;
using Planner.CostModel.Calibration;
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

    /// <summary>Writes a calibration: the keys of <see cref="CalibrationKey.Fields"/>, then the GEMM residuals, the op
    /// rates, the profiled corrections and the versions.</summary>
    public static void Write(string path, Cal c)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        static string R(double v) => v.ToString("R", CultureInfo.InvariantCulture);
        var rows = new List<Row>();
        foreach (var field in CalibrationKey.Fields)
            if ((field.GetText?.Invoke(c) ?? (field.GetNumber!(c) is double v ? R(v) : null)) is { } value)
                rows.Add(new(field.Key, value));
        var residuals = c.Gemm.Residuals ?? [];
        for (int i = 0; i < residuals.Count; i++)
        {
            var r = residuals[i];
            rows.Add(new(CalibrationKey.ResidualPrefix + i, string.Join(' ', new[] { r.D1, r.D2, r.D3, r.Ratio }.Select(R))));
        }
        var profiled = c.Profiled ?? ProfiledCorrections.None;
        foreach (var (name, rate) in profiled.OpRates ?? new Dictionary<string, OpRate>())
            rows.Add(new(CalibrationKey.OpPrefix + name, $"{R(rate.ForwardNs)} {R(rate.BackwardNs)}"));
        // Measurements a profile may lack (older files, other hardware): written only when measured.
        foreach (var (key, get, _) in ProfiledCorrections.Scalars)
            if (get(profiled) is double v)
                rows.Add(new(key, R(v)));
        rows.AddRange(c.Versions.Select(kv => new Row(CalibrationKey.VersionPrefix + kv.Key, kv.Value)));
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
        // A rate is divided by: one as small as a denormal prices an infinite time (the least taken as a cluster's).
        double Number(CalibrationKey field) => D(field.Key) is var v && (v >= InputLimits.Tiny || !field.Positive)
            ? v
            : throw new InputException($"{path}: key '{field.Key}' must be a positive rate (at least {InputLimits.Tiny}), got {S(field.Key)}");
        // Numbers of a key holding several: each positive (or non-negative), else -1.
        double[] Numbers(string key, bool zero) => S(key).Split(' ')
            .Select(x => double.TryParse(x, NumberStyles.Float, CultureInfo.InvariantCulture, out double d) && (d > 0 || (zero && d == 0)) && double.IsFinite(d) ? d : -1).ToArray();
        IEnumerable<string> Keys(string prefix) => map.Keys.Where(k => k.StartsWith(prefix, StringComparison.Ordinal));
        var cal = CalibrationKey.Blank;
        foreach (var field in CalibrationKey.Fields)
            if (field.Required || map.ContainsKey(field.Key))
                cal = field.SetText is { } setText ? setText(cal, S(field.Key)) : field.SetNumber!(cal, Number(field));
        var versions = Keys(CalibrationKey.VersionPrefix).ToDictionary(k => k[CalibrationKey.VersionPrefix.Length..], k => map[k]);
        var residuals = Keys(CalibrationKey.ResidualPrefix).Select(k => Numbers(k, zero: false) is { Length: 4 } v && v.All(x => x > 0)
            ? new GemmResidual(v[0], v[1], v[2], v[3])
            : throw new InputException($"{path}: key '{k}' must hold four positive numbers (three GEMM dimensions and a ratio)")).ToList();
        var profiled = new ProfiledCorrections(OpRates: Keys(CalibrationKey.OpPrefix).ToDictionary(k => k[CalibrationKey.OpPrefix.Length..],
            k => Numbers(k, zero: true) is { Length: 2 } v && v.All(x => x >= 0)
                ? new OpRate(v[0], v[1])
                : throw new InputException($"{path}: key '{k}' must hold two non-negative numbers (ns per element forward and backward)")));
        // A correction of 0 was never written (not measured): read as not measured, but where 0 is a measurement.
        foreach (var (key, _, with) in ProfiledCorrections.Scalars)
            if (map.ContainsKey(key) && (D(key) > 0 || (D(key) == 0 && ProfiledCorrections.ZeroMeasurable.Contains(key))))
                profiled = with(profiled, D(key));
        return cal with { Gemm = cal.Gemm with { Residuals = residuals }, Versions = versions, Profiled = profiled };
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
            if (!force && (c.Machine.Host != host || c.Machine.Cpu != cpu))
                throw new InputException($"--calibration: '{explicitPath}' was measured on {c.Machine.Host} ({c.Machine.Cpu}), not on this machine {host} ({cpu}); pass --force-calibration to use it anyway");
            return c.Apply(cluster);
        }
        string path = DefaultPath(cluster.Name);
        if (!File.Exists(path))
            return cluster;
        var d = Read(path);
        if (d.Machine.Host != host || d.Machine.Cpu != cpu)
        {
            notes?.WriteLine($"planner: note: ignoring {path}, measured on other hardware ({d.Machine.Host}, {d.Machine.Cpu})");
            return cluster;
        }
        return d.Apply(cluster);
    }
}
