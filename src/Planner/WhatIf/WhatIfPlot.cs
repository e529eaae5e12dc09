using System.Diagnostics;
using System.Globalization;
using System.Text;
using Planner.Cli.Rendering;
using Planner.CostModel.Specs;

namespace Planner.Cli.WhatIf;

/// <summary>
/// The what-if figure, drawn by gnuplot: tokens/s against the first swept key (a line per value of the other swept
/// keys; with a token budget also the energy to train it, on the right axis), and per point the memory of the peak rank and the step time, each as stacked bars.
/// </summary>
public static class WhatIfPlot
{
    /// <summary>The one line printed when gnuplot is missing.</summary>
    public const string NotFound = "--plot: gnuplot not found (apt-get install gnuplot-nox)";

    /// <summary>The gnuplot executable on PATH, or null.</summary>
    public static string? FindGnuplot()
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
        {
            foreach (var name in OperatingSystem.IsWindows() ? new[] { "gnuplot.exe" } : ["gnuplot"])
            {
                var path = Path.Combine(dir, name);
                if (File.Exists(path))
                    return path;
            }
        }
        return null;
    }

    /// <summary>Draws the figure into <paramref name="pngPath"/> (replacing it); throws when gnuplot fails.</summary>
    /// <param name="tokens">With a token budget, panel 1 also draws each point's energy to train it (right axis).</param>
    public static void Draw(string gnuplot, string pngPath, string title, IReadOnlyList<SweepAxis> axes, IReadOnlyList<WhatIfRow> rows, double? tokens = null)
    {
        var psi = new ProcessStartInfo(gnuplot)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        OutputFile.Replace(pngPath, temp =>
        {
            using var process = Process.Start(psi) ?? throw new InvalidOperationException("gnuplot did not start");
            var stderr = process.StandardError.ReadToEndAsync();
            var stdout = process.StandardOutput.ReadToEndAsync();
            process.StandardInput.Write(Script(temp, title, axes, rows, tokens));
            process.StandardInput.Close();
            if (!process.WaitForExit(120_000))
            {
                process.Kill(entireProcessTree: true);
                throw new InvalidOperationException("gnuplot did not finish within 120 s");
            }
            string errors = stderr.Result.Trim();
            _ = stdout.Result;
            if (process.ExitCode != 0 || !File.Exists(temp) || new FileInfo(temp).Length == 0)
                throw new InvalidOperationException($"gnuplot failed (exit {process.ExitCode}): {errors.Split('\n').LastOrDefault(l => l.Trim().Length > 0)?.Trim()}");
        }, ".tmp.png");
    }

    /// <summary>The gnuplot script (data inline as datablocks), writing a PNG to <paramref name="output"/>.</summary>
    /// <remarks>Long: one script written top to bottom, the data blocks and then each panel's plot commands.</remarks>
    public static string Script(string output, string title, IReadOnlyList<SweepAxis> axes, IReadOnlyList<WhatIfRow> rows, double? tokens = null)
    {
        var s = new StringBuilder();
        var first = axes[0];
        var others = axes.Skip(1).ToList();

        // Panel 1 data: one block per combination of the other keys, x along the first key.
        bool numericX = first.Values.All(v => v.Value is int or double);
        double X(int i) => numericX ? Convert.ToDouble(first.Values[i].Value, CultureInfo.InvariantCulture) : i;
        var series = rows.GroupBy(r => string.Join(" / ", r.Point.Values.Skip(1).Select(v => v.Value.Text)))
            .Select(g => (Label: g.Key, Rows: g.ToList())).ToList();
        bool anyNoFit = rows.Any(r => r.Prediction is { Fits: false });
        bool anyNoPlan = rows.Any(r => r.Prediction is null);
        double maxTps = rows.Max(r => r.Prediction?.TokensPerSecond ?? 0);
        var (scale, unit) = maxTps >= 1e7 ? (1e6, "million tokens/s") : maxTps >= 1e4 ? (1e3, "thousand tokens/s") : (1.0, "tokens/s");
        // The energy to train the budget, MWh, of each point that fits and gives it (the GPU's power known).
        var energy = new Dictionary<WhatIfRow, double>();
        foreach (var r in rows)
            if (r.Fits && r.Run?.EnergyMwh is double mwh)
                energy[r] = mwh;
        for (int k = 0; k < series.Count; k++)
        {
            s.Append($"$s{k} << EOD\n");
            foreach (var r in series[k].Rows)
            {
                int i = first.Values.ToList().IndexOf(r.Point.Values[0].Value);
                var p = r.Prediction;
                s.Append(F(X(i))).Append(' ')
                    .Append(p is { Fits: true } ? F(p.TokensPerSecond / scale) : "NaN").Append(' ')
                    .Append(p is { Fits: false } ? F(p.TokensPerSecond / scale) : "NaN").Append(' ')
                    .Append(p is null ? "0" : "NaN").Append(' ')
                    .Append(energy.TryGetValue(r, out double mwh) ? F(mwh) : "NaN").Append('\n');
            }
            s.Append("EOD\n");
        }

        // Panels 2 and 3 data: one line per point, label first.
        int n = rows.Count;
        int every = Math.Max(1, (int)Math.Ceiling(n / 30.0));
        s.Append("$bars << EOD\n");
        for (int i = 0; i < n; i++)
        {
            var r = rows[i];
            var p = r.Prediction;
            string label = i % every == 0 ? BarLabel(r) : "";
            var m = p?.PeakStage;
            var b = p?.Breakdown;
            double G(double? v) => (v ?? 0) / Units.GiB;
            s.Append(DataQuote(label));
            foreach (var v in new[]
                     {
                         G(m?.Weights), G(m?.Gradients), G(m?.Optimizer), G(m?.Activations), G(m is null ? null : WhatIfCsv.Other(m)),
                         WhatIfCsv.GpuMemoryGib(r),
                         b?.Compute ?? 0, b?.Recompute ?? 0, (b?.TpComm ?? 0) + (b?.CpComm ?? 0) + (b?.EpComm ?? 0), b?.PpComm ?? 0, b?.DpComm ?? 0, b?.Bubble ?? 0, b?.Optimizer ?? 0,
                     })
                s.Append(' ').Append(F(v));
            s.Append('\n');
        }
        s.Append("EOD\n");

        s.Append("if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n");
        s.Append("  set terminal pngcairo size 1200,800 noenhanced font 'Sans,9'\n");
        s.Append("} else {\n");
        s.Append("  set terminal png size 1200,800 noenhanced\n");
        s.Append("}\n");
        s.Append($"set output {Quote(output)}\n");
        s.Append("set datafile missing 'NaN'\n");
        s.Append($"set multiplot title {Quote(title)}\n");
        s.Append("set grid ytics lc rgb '#dddddd'\n");
        s.Append("set border 3\nset tics nomirror\n");

        // Panel 1: tokens/s.
        s.Append("set origin 0,0.5\nset size 1,0.44\n");
        // The legend: one entry per series (values of the other keys, the keys in its title), in columns of at most
        // 24 entries; the right margin grows with the entries' width.
        int legendRows = Math.Min(24, series.Count + 2);
        int legendColumns = (series.Count + 2 + legendRows - 1) / legendRows;
        int entryWidth = Math.Max(14, Math.Min(24, series.Max(x => x.Label.Length)) + 6);
        string keyTitle = others.Count > 0 ? string.Join(" / ", others.Select(a => a.Key)) : "";
        int energyAxis = energy.Count > 0 ? 12 : 0;
        s.Append($"set lmargin 9\nset rmargin {energyAxis + Math.Max(keyTitle.Length + 4, entryWidth * legendColumns)}\nset bmargin 3.5\nset tmargin 1.5\n");
        s.Append($"set title {Quote($"tokens/s against {first.Key}" + (others.Count > 0 ? $", one line per {string.Join(" × ", others.Select(a => a.Key))}" : ""))}\n");
        s.Append($"set xlabel {Quote(first.Key)}\n");
        s.Append($"set ylabel {Quote(unit)}\n");
        s.Append("set format y '%g'\n");
        s.Append("set yrange [0:*]\n");
        s.Append($"set key outside right top vertical Left reverse samplen 2 maxrows {legendRows} {(series.Count > 12 ? "font ',8' spacing 0.9" : "spacing 1.1")} title {Quote(keyTitle)} left\n");
        if (numericX)
        {
            var xs = Enumerable.Range(0, first.Values.Count).Select(X).ToList();
            bool log = xs.All(x => x > 0) && xs.Max() / xs.Min() >= 8;
            if (log)
                s.Append("set logscale x 2\n");
            double lo = xs.Min(), hi = xs.Max();
            double pad = log ? 1.15 : 0;
            if (log)
                s.Append($"set xrange [{F(lo / pad)}:{F(hi * pad)}]\n");
            else
            {
                double span = hi > lo ? (hi - lo) * 0.04 : Math.Max(1, Math.Abs(lo) * 0.1);
                s.Append($"set xrange [{F(lo - span)}:{F(hi + span)}]\n");
            }
            s.Append("set xtics (" + string.Join(", ", first.Values.Select((v, i) => $"{Quote(v.Text)} {F(X(i))}")) + ")\n");
        }
        else
        {
            s.Append($"set xrange [-0.5:{F(first.Values.Count - 0.5)}]\n");
            s.Append("set xtics (" + string.Join(", ", first.Values.Select((v, i) => $"{Quote(v.Text)} {i}")) + ")\n");
        }
        var plots = new List<string>();
        for (int k = 0; k < series.Count; k++)
        {
            string label = series[k].Label.Length > 0 ? series[k].Label : "tokens/s";
            // Distinct point shapes, earlier series larger, so that series with equal values stay visible.
            int[] shapes = [7, 5, 9, 11, 13, 15];
            double size = Math.Max(0.8, 1.8 - 0.2 * k);
            plots.Add($"$s{k} using 1:2 with linespoints lw 2 pt {shapes[k % shapes.Length]} ps {F(size)} " + (series.Count == 1 ? "notitle" : $"title {Quote(Shorten(label, 24))}"));
        }
        if (energy.Count > 0)
        {
            s.Append($"set y2label {Quote($"MWh to train {tokens:G3} tokens (dashed)")}\nset y2tics nomirror\nset y2range [0:*]\nset format y2 '%g'\n");
            for (int k = 0; k < series.Count; k++)
                plots.Add($"$s{k} using 1:5 axes x1y2 with linespoints dt 2 lw 1.5 pt 4 ps 1 " + (k == 0 ? "title 'energy (MWh)'" : "notitle"));
        }
        for (int k = 0; k < series.Count && anyNoPlan; k++)
            plots.Add($"$s{k} using 1:4 with points pt 6 ps 2 lw 2 lc rgb '#7f7f7f' {(k == 0 ? "title 'no plan'" : "notitle")}");
        for (int k = 0; k < series.Count && anyNoFit; k++)
            plots.Add($"$s{k} using 1:3 with points pt 2 ps 2 lw 2 lc rgb '#d62728' {(k == 0 ? "title 'does not fit'" : "notitle")}");
        s.Append("plot ").Append(string.Join(", \\\n     ", plots)).Append('\n');

        // Panels 2 and 3: stacked bars per point.
        s.Append("unset logscale x\nunset xrange\nset autoscale x\nunset y2tics\nunset y2label\n");
        s.Append("set style data histograms\nset style histogram rowstacked\nset style fill solid 0.85 border rgb '#444444'\n");
        s.Append($"set boxwidth {(n > 24 ? "0.9" : "0.7")}\n");
        s.Append("set xtics rotate by 90 right scale 0 font ',8'\n");
        s.Append("unset xlabel\n");
        string by = string.Join(" / ", axes.Select(a => a.Key));
        s.Append("set format y '%g'\n");
        s.Append("set key default\nset key outside right top vertical Left reverse samplen 1.5 spacing 1.1 title ''\n");
        s.Append("set lmargin 9\nset rmargin 16\n" + $"set bmargin {Math.Min(14, 2 + (int)Math.Ceiling(MaxLabel(rows) * 0.42))}\n");
        s.Append($"set xrange [-0.6:{F(n - 0.4)}]\n");

        double memTop = rows.Max(r => Math.Max(WhatIfCsv.GpuMemoryGib(r), r.Prediction?.PeakStage.Total / Units.GiB ?? 0));
        double stepTop = rows.Max(r => r.Prediction?.Breakdown.Total ?? 0);
        s.Append("set origin 0,0\nset size 0.5,0.5\n");
        s.Append($"set yrange [0:{F(memTop * 1.08)}]\n");
        s.Append($"set title {Quote($"memory of the peak rank (GiB per GPU) by {by}")}\nset ylabel 'GiB'\n");
        s.Append("plot $bars using 2:xtic(1) title 'weights' lc rgb '#1f77b4', '' using 3 title 'gradients' lc rgb '#ff7f0e', " +
                 "'' using 4 title 'optimizer' lc rgb '#2ca02c', '' using 5 title 'activations' lc rgb '#9467bd', '' using 6 title 'other' lc rgb '#8c8c8c', " +
                 "'' using ($0-0.45):7:(0.9):(0) with vectors nohead lw 2 dt 2 lc rgb '#d62728' title 'GPU memory'\n");

        s.Append("set origin 0.5,0\nset size 0.5,0.5\n");
        s.Append(stepTop > 0 ? $"set yrange [0:{F(stepTop * 1.08)}]\n" : "set yrange [0:1]\n");
        s.Append($"set title {Quote($"step time by cause (s, exposed) by {by}")}\nset ylabel 's'\n");
        s.Append("plot $bars using 8:xtic(1) title 'compute' lc rgb '#1f77b4', '' using 9 title 'recompute' lc rgb '#aec7e8', " +
                 "'' using 10 title 'TP/CP/EP comm' lc rgb '#ff7f0e', '' using 11 title 'PP comm' lc rgb '#ffbb78', '' using 12 title 'DP comm' lc rgb '#2ca02c', " +
                 "'' using 13 title 'bubble' lc rgb '#d62728', '' using 14 title 'optimizer' lc rgb '#9467bd'\n");
        s.Append("unset multiplot\nset output\n");
        return s.ToString();
    }

    /// <summary>A point's bar label: its swept values (the keys are in the axis label), marked when it has no plan
    /// or does not fit.</summary>
    private static string BarLabel(WhatIfRow r)
    {
        string label = string.Join(" / ", r.Point.Values.Select(v => v.Value.Text));
        string mark = r.Prediction is null ? " (no plan)" : !r.Prediction.Fits ? " (OOM)" : "";
        return Shorten(label, 26 - mark.Length) + mark;
    }

    private static int MaxLabel(IReadOnlyList<WhatIfRow> rows) => rows.Max(r => BarLabel(r).Length);

    private static string Shorten(string s, int max) => s.Length <= max ? s : s[..(max - 1)] + "…";

    private static string F(double v) => double.IsFinite(v) ? v.ToString("R", CultureInfo.InvariantCulture) : "NaN";

    /// <summary>A string field of a gnuplot datablock (double-quoted; a double quote inside becomes a single one).</summary>
    private static string DataQuote(string s) => "\"" + s.Replace('"', '\'').Replace("\n", " ") + "\"";

    /// <summary>A gnuplot single-quoted string (a quote inside is doubled).</summary>
    private static string Quote(string s) => "'" + s.Replace("'", "''").Replace("\n", " ") + "'";
}
