using System.Text.Json.Nodes;
using Planner.CostModel.Pipeline;
using Xunit;

namespace Planner.Cli.Tests;

/// <summary><c>run --trace/--timeline</c> (docs/timelines.md): a PP=2 run's measured trace holds every rank's forward and
/// backward events of the traced step in the schedule generator's order, named as predict's are.</summary>
[Collection("executor")]
[Trait("Category", "Slow")] // rank processes: ./test --all
public sealed class MeasuredTraceTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("planner-mtrace-").FullName;

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    [Fact]
    public void A_pp2_run_traces_both_stages_passes_in_schedule_order()
    {
        File.WriteAllText(Path.Combine(_dir, "config.json"),
            """{"model_type": "gpt2", "n_layer": 2, "n_embd": 64, "n_head": 4, "n_positions": 64, "vocab_size": 256, "n_inner": null, "tie_word_embeddings": true}""");
        string plan = Path.Combine(_dir, "pp2.json");
        File.WriteAllText(plan, $$"""
            {"model": "{{Path.Combine(_dir, "config.json")}}", "cluster": "local-cpu", "tp": 1, "pp": 2, "dp": 1, "cp": 1,
             "zero": 0, "mbs": 2, "gbs": 8, "seq": 32, "vpp": 1, "recompute": "none", "sequence_parallel": false, "precision": "fp32"}
            """);
        string trace = Path.Combine(_dir, "measured.json"), png = Path.Combine(_dir, "measured.png");
        var (code, _, error) = ExecutorParityTests.Planner(["run", "--plan", plan, "--steps", "3", "--trace", trace, "--timeline", png,
            "--history", Path.Combine(_dir, "history.csv")]);
        Assert.True(code == 0, error);
        var events = JsonNode.Parse(File.ReadAllText(trace))!["traceEvents"]!.AsArray();
        var names = events.Where(e => (string?)e!["name"] == "process_name").Select(e => (string)e!["args"]!["name"]!).ToList();
        Assert.Equal(["rank 0 (stage 0 of 2)", "rank 1 (stage 1 of 2)"], names);
        var schedule = ScheduleGenerator.Generate(2, 1, 4);
        for (int rank = 0; rank < 2; rank++)
        {
            var passes = events.Where(e => (string?)e!["ph"] == "X" && (int)e!["pid"]! == rank && (string?)e["cat"] == "Compute")
                .OrderBy(e => (double)e!["ts"]!).Select(e => (string)e!["name"]!).ToList();
            var expected = schedule.Stages[rank].Select(a => $"{(a.Kind == PassKind.Forward ? "forward" : "backward")} mb {a.MicroBatch} chunk {a.Chunk}");
            Assert.Equal(expected, passes);
        }
        // Stage 1 waits for stage 0's activations: its first wait is on the transfer row, before its first forward ends.
        Assert.Contains(events, e => (int?)e!["pid"] == 1 && (string?)e["name"] == "wait for stage 0");
        Assert.Equal(new byte[] { 0x89, 0x50, 0x4E, 0x47 }, File.ReadAllBytes(png)[..4]);
        // The trace is of one timed step (not the warm-up's step 0), the one the metadata names.
        int step = (int)JsonNode.Parse(File.ReadAllText(trace))!["metadata"]!["step"]!;
        Assert.InRange(step, 1, 2);
    }
}
