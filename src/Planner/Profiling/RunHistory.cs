using System.Globalization;
using CsvHelper;
using CsvHelper.Configuration;
using CsvHelper.Configuration.Attributes;
using Planner.CostModel.Specs;

namespace Planner.Cli.Profiling;

/// <summary>One executed run: the plan, what was predicted and what was measured.</summary>
public sealed class HistoryRow
{
    [Name("date")] public string Date { get; set; } = "";
    [Name("host")] public string Host { get; set; } = "";
    [Name("plan_file")] public string PlanFile { get; set; } = "";
    [Name("model")] public string Model { get; set; } = "";
    [Name("cluster")] public string Cluster { get; set; } = "";
    [Name("plan")] public string Plan { get; set; } = "";
    [Name("calibrated")] public bool Calibrated { get; set; }
    [Name("predicted_step_time_s")] public double PredictedStepTime { get; set; }
    [Name("measured_step_time_s")] public double MeasuredStepTime { get; set; }
    [Name("predicted_peak_memory_gib")] public double PredictedMemory { get; set; }
    [Name("measured_peak_memory_gib")] public double MeasuredMemory { get; set; }
}

/// <summary>The history CSV that <c>run</c> appends to and <c>validate --executed</c> reads.</summary>
public static class RunHistory
{
    /// <summary>Default history file.</summary>
    public static string DefaultPath => Path.Combine(Path.GetDirectoryName(CalibrationFile.DefaultPath("x"))!, "..", "history.csv");

    /// <summary>Appends a row, writing the header when the file is new.</summary>
    public static void Append(string path, HistoryRow row)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        bool exists = File.Exists(path) && new FileInfo(path).Length > 0;
        using var writer = new StreamWriter(path, append: true);
        using var csv = new CsvWriter(writer, new CsvConfiguration(CultureInfo.InvariantCulture) { HasHeaderRecord = !exists });
        csv.WriteRecords([row]);
    }

    /// <summary>Reads the history.</summary>
    public static List<HistoryRow> Read(string path)
    {
        if (!File.Exists(path))
            throw new InputException($"--executed: history file '{path}' not found (run 'planner run' first)");
        try
        {
            using var reader = new StreamReader(path);
            using var csv = new CsvReader(reader, CultureInfo.InvariantCulture);
            return csv.GetRecords<HistoryRow>().ToList();
        }
        catch (CsvHelperException e)
        {
            throw new InputException($"{path}: {e.Message.Split('\n')[0].Trim()}");
        }
    }

    /// <summary>Kendall's tau-b between two paired samples: +1 same order, −1 reversed.</summary>
    public static double KendallTau(IReadOnlyList<double> a, IReadOnlyList<double> b)
    {
        long concordant = 0, discordant = 0, tiesA = 0, tiesB = 0;
        for (int i = 0; i < a.Count; i++)
            for (int j = i + 1; j < a.Count; j++)
            {
                int sa = Math.Sign(a[i] - a[j]), sb = Math.Sign(b[i] - b[j]);
                if (sa == 0 && sb == 0)
                    continue;
                if (sa == 0)
                    tiesA++;
                else if (sb == 0)
                    tiesB++;
                else if (sa == sb)
                    concordant++;
                else
                    discordant++;
            }
        double n0 = concordant + discordant;
        double denominator = Math.Sqrt((n0 + tiesA) * (n0 + tiesB));
        return denominator == 0 ? double.NaN : (concordant - discordant) / denominator;
    }
}
