using System.Text.Json.Nodes;
using CliEntry = global::Planner.Cli.Commands.Cli;
using Xunit;

namespace Planner.Cli.Tests;

/// <summary><c>predict --trace/--timeline</c> and <c>plan --trace</c> (docs/timelines.md): the files are written, span the
/// step the command prints, and nothing a user wrote is overwritten without --force.</summary>
public sealed class TraceCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("planner-trace-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static readonly string[] Predict =
        ["predict", "--model", "llama2-7b", "--cluster", "dgx-h100", "--tp", "2", "--pp", "4", "--vpp", "2", "--mbs", "1", "--gbs", "64", "--seq", "4096", "--json"];

    private static (int Code, string Out, string Err) Run(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = CliEntry.Run(args, stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }

    private static double End(string traceFile) => JsonNode.Parse(File.ReadAllText(traceFile))!["traceEvents"]!.AsArray()
        .Where(e => (string?)e!["ph"] == "X").Max(e => (double)e!["ts"]! + (double)e!["dur"]!) / 1e6;

    [Fact]
    public void PredictWritesATraceSpanningItsStepAndAPng()
    {
        string trace = Path.Combine(_dir, "step.json"), png = Path.Combine(_dir, "step.png");
        var (code, output, err) = Run([.. Predict, "--trace", trace, "--timeline", png]);
        Assert.True(code == 0, err);
        double step = (double)JsonNode.Parse(output)!["step_time_s"]!;
        Assert.Equal(step, End(trace), 9);
        byte[] head = File.ReadAllBytes(png)[..8];
        Assert.Equal(new byte[] { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A }, head);
    }

    [Fact]
    public void PlanTracesItsBestPlan()
    {
        string trace = Path.Combine(_dir, "best.json");
        var (code, output, err) = Run("plan", "--model", "llama2-7b", "--cluster", "dgx-h100", "--gbs", "256", "--seq", "4096", "--top", "1", "--json", "--trace", trace);
        Assert.True(code == 0, err);
        double step = (double)JsonNode.Parse(output)!["plans"]![0]!["prediction"]!["step_time_s"]!;
        Assert.Equal(step, End(trace), 9);
    }

    [Fact]
    public void AnExistingFileIsKeptWithoutForceAndABadNameRefused()
    {
        string trace = Path.Combine(_dir, "mine.json");
        File.WriteAllText(trace, "keep me");
        var (code, _, err) = Run([.. Predict, "--trace", trace]);
        Assert.Equal(2, code);
        Assert.Single(err.TrimEnd('\n').Split('\n'));
        Assert.Contains("--trace", err);
        Assert.Equal("keep me", File.ReadAllText(trace));
        (code, _, err) = Run([.. Predict, "--trace", trace, "--force"]);
        Assert.Equal(0, code);
        (code, _, err) = Run([.. Predict, "--timeline", Path.Combine(_dir, "step.svg")]);
        Assert.Equal(2, code);
        Assert.Contains("--timeline", err);
    }
}
