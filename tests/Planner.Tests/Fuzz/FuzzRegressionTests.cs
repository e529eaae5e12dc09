using System.Text.Json.Nodes;
using Planner.Cli.Commands;
using CliEntry = global::Planner.Cli.Commands.Cli;
using Xunit;

namespace Planner.Cli.Tests.Fuzz;

/// <summary>
/// The crashes the fuzzers found (exit 1, an internal error), each with the smallest change to a valid file that gave it:
/// now exit 2 and one line naming the file and what is wrong.
/// </summary>
public sealed class FuzzRegressionTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("planner-fuzz-regressions-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Write(string name, string text)
    {
        string path = Path.Combine(_dir, name);
        File.WriteAllText(path, text);
        return path;
    }

    /// <summary>Runs the CLI; asserts exit 2 with one line that names <paramref name="path"/> and holds <paramref name="phrase"/>.</summary>
    private static void Refused(string[] args, string path, string phrase)
    {
        var stderr = new StringWriter();
        int code = CliEntry.Run(args, new StringWriter(), stderr);
        Fuzzer.Verdict(code, stderr.ToString(), [path]);
        Assert.Equal(2, code);
        Assert.Contains(path, stderr.ToString());
        Assert.Contains(phrase, stderr.ToString());
    }

    private static string Measurements() => File.ReadAllText(RepoFiles.Find("tests/Planner.Tests/Fuzz/fixtures/local-cpu-measurements.json"));

    private void Refit(string text, string phrase)
    {
        string path = Write("m.json", text);
        Refused(["profile", "--cluster", "local-cpu", "--from-measurements", path, "--out", Path.Combine(_dir, "c.csv")], path, phrase);
    }

    [Fact]
    public void Kept_measurements_that_give_a_key_twice() =>
        // Was: ArgumentException "An item with the same key has already been added. Key: device_name".
        Refit(Measurements().Insert(1, "\"device_name\": null, "), "gives a key twice");

    [Fact]
    public void Kept_measurements_whose_device_is_a_number() =>
        // Was: InvalidOperationException reading 'device' as text.
        Refit(Measurements().Replace("\"device\":\"cpu\"", "\"device\":-1e308"), "key 'device' is -1e308");

    [Fact]
    public void Kept_measurements_with_a_collective_measured_at_fewer_sizes()
    {
        // Was: ArgumentOutOfRangeException in the report, which sets the collectives' rows side by side.
        var m = JsonNode.Parse(Measurements())!.AsObject();
        m["reduce_scatter"]!.AsArray().RemoveAt(2);
        Refit(m.ToJsonString(), "'reduce_scatter' at 5 sizes");
    }

    [Fact]
    public void Kept_measurements_with_a_negative_gemm_time()
    {
        // Was: exit 0, writing a calibration that every verb then refused ('gemm_residual.7' not four positive numbers).
        var m = JsonNode.Parse(Measurements())!.AsObject();
        m["gemm"]![7]![3] = -1;
        Refit(m.ToJsonString(), "holds a measurement out of range: the calibration fitted from it would be refused (key 'gemm_residual.7'");
        Assert.False(File.Exists(Path.Combine(_dir, "c.csv")));
    }

    [Fact]
    public void A_validation_row_whose_id_reads_as_markup()
    {
        // Was: InvalidOperationException "Encountered malformed markup tag" from the report's table.
        string path = Write("runs.csv", Header + "\n[],test,a100-80g,32,8,300,25,24,2304,24,24,9216,51200,2048,gelu,false,1,1,32,1,1,16,512,full,false,0,fp16,hfu_tflops_per_gpu,137,3.5280,x\n");
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        Assert.True(CliEntry.Run(["validate", "--runs", path], stdout, stderr) == 0, stderr.ToString());
        Assert.Contains("│ []", stdout.ToString());
    }

    [Theory]
    [InlineData("0")]
    [InlineData("1e-320")]
    public void A_calibration_with_no_memory_bandwidth(string bandwidth)
    {
        // Was: ArgumentException "duration ... must be finite and >= 0 (got NaN)" from the pipeline simulator.
        string valid = File.ReadAllText(RepoFiles.Find("tests/Planner.Tests/Fuzz/fixtures/local-cpu-calibration.csv"));
        string path = Write("c.csv", System.Text.RegularExpressions.Regex.Replace(valid, "memory_bandwidth_gbs,[0-9.]+", "memory_bandwidth_gbs," + bandwidth));
        Refused(["predict", "--model", "gpt2", "--cluster", "local-cpu", "--tp", "1", "--pp", "1", "--dp", "2", "--mbs", "1", "--gbs", "4",
            "--seq", "64", "--precision", "fp32", "--calibration", path, "--force-calibration"], path,
            $"key 'memory_bandwidth_gbs' must be a positive rate (at least 1E-06), got {bandwidth}");
    }

    private string PlanWith(string name, string members) => Write(name, $$"""
        {"model": "gpt2", "cluster": "local-cpu", "tp": 1, "pp": 1, "dp": 1, "cp": 1, "zero": 0, "mbs": 2, "gbs": 8, "seq": 64, "vpp": 1,
         "sequence_parallel": false, "precision": "fp32", {{members}}}
        """);

    [Fact]
    public void A_cluster_link_of_a_denormal_bandwidth()
    {
        // Was: ArgumentException "duration ... must be finite and >= 0 (got Infinity)" from the pipeline simulator.
        string path = Write("cluster.yaml", "name: x\ngpu: h100-sxm\nnodes: 2\ngpus_per_node: 8\n"
            + "intra_node: {bandwidth_gbs: 1e-320, latency_us: 3}\ninter_node: {bandwidth_gbs: 50, latency_us: 5}\n");
        Refused(["predict", "--model", "gpt2", "--cluster", path, "--tp", "2", "--pp", "1", "--mbs", "1", "--gbs", "8"], path, "'intra_node.bandwidth_gbs' is 1e-320; expected a number above 1E-06");
    }

    [Fact]
    public void A_plan_value_with_a_line_break()
    {
        // Was: the value written as it was, its line break splitting the error in two lines.
        string path = PlanWith("break.json", "\"recompute\": \"\\n\"");
        Refused(["export", "--plan", path, "--to", "megatron"], path, "key 'recompute' is \"\\n\"; expected none, selective or full");
    }

    [Fact]
    public void A_plan_key_given_twice()
    {
        // Was: accepted, the last value kept without a word.
        string path = PlanWith("twice.json", "\"recompute\": \"none\", \"tp\": 2");
        Refused(["export", "--plan", path, "--to", "megatron"], path, "Duplicate property 'tp'");
    }

    private const string Header = "id,source,gpu,gpus,gpus_per_node,intra_gbs,inter_gbs,layers,hidden,heads,kv_heads,ffn,vocab,seq,act,tied,tp,pp,dp,cp,vpp,mbs,gbs,recompute,seq_parallel,zero,precision,metric,value,step_time_s,notes";

    [Theory]
    // Was: PlanCheck's "vpp: -1 must be at least 1" without the file.
    [InlineData("vpp", "-1", "vpp: -1 must be at least 1")]
    // Was: NaN durations (hidden 3 gives 24 heads no width).
    [InlineData("hidden", "3", "'hidden' 3 is below 'heads' 24")]
    [InlineData("intra_gbs", "nan", "intra_gbs NaN must be a positive bandwidth")]
    [InlineData("intra_gbs", "1e-320", "intra_gbs 1E-320 must be a positive bandwidth")]
    // Was: exit 0, the error taken against a negative step time (-201.5 %).
    [InlineData("step_time_s", "-3.5", "step_time_s -3.5 and peak_memory_gib (none) must be positive numbers")]
    public void A_validation_row_the_cost_model_cannot_price(string column, string value, string phrase)
    {
        string row = "r1,test,a100-80g,32,8,300,25,24,2304,24,24,9216,51200,2048,gelu,false,1,1,32,1,1,16,512,full,false,0,fp16,hfu_tflops_per_gpu,137,3.5280,x";
        var cells = row.Split(',');
        cells[Array.IndexOf(Header.Split(','), column)] = value;
        string path = Write("runs.csv", Header + "\n" + string.Join(',', cells) + "\n");
        Refused(["validate", "--runs", path], path, phrase);
        string good = Write("good.csv", Header + "\n" + row + "\n");
        Assert.Equal(0, CliEntry.Run(["validate", "--runs", good], new StringWriter(), new StringWriter()));
    }

    [Theory]
    [InlineData(40, 556, "holds token 556 at position 0, outside the vocabulary of 512")]
    [InlineData(0, 1, "holds 0 tokens, fewer than one sample of seq + 1 = 17")]
    [InlineData(20, -1, "is 41 bytes, not a whole number of 2-byte tokens")]
    public void A_token_file_the_ranks_could_not_read(int tokens, int token, string phrase)
    {
        // Was: a rank failing mid-run (exit 1) on a token outside the vocabulary; now the launcher's check refuses it.
        // A token of -1: tokens of 1 and one stray byte.
        var bytes = Enumerable.Repeat(token, tokens).SelectMany(t => new[] { (byte)Math.Abs(t), (byte)(Math.Abs(t) >> 8) });
        string path = Path.Combine(_dir, "tokens.bin");
        File.WriteAllBytes(path, [.. bytes, .. token < 0 ? new byte[] { 7 } : []]);
        var stderr = new StringWriter();
        int code = CliEntry.Guard(() => { TokenFileCheck.Check(path, 2, 16, 512, 8); return 0; }, stderr);
        Assert.Equal(2, code);
        Assert.Contains($"--data: '{path}' {phrase}", stderr.ToString());
    }
}
