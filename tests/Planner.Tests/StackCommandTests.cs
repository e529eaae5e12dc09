using System.Text.Json.Nodes;
using Planner.CostModel.Plans;
using CliEntry = global::Planner.Cli.Commands.Cli;
using Xunit;

namespace Planner.Cli.Tests;

/// <summary>--stack on predict, plan, whatif and ablate; the plan file's stack read by export; validate's stack column.</summary>
public sealed class StackCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("planner-stack-cli-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    private static (int Code, string Out, string Err) Run(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = CliEntry.Run(args, stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }

    private static readonly string[] Predict =
        ["predict", "--model", "gpt3-175b", "--cluster", "dgx-a100-80g", "--tp", "8", "--pp", "4", "--mbs", "1", "--gbs", "384", "--zero", "2",
         "--recompute", "full", "--sequence-parallel"];

    [Fact]
    public void Predict_prices_the_stack_it_is_given_and_says_which()
    {
        var (code, output, error) = Run([.. Predict, "--json"]);
        Assert.True(code == 0, error);
        var core = JsonNode.Parse(output)!;
        Assert.Equal("megatron-core", (string)core["stack"]!);
        (code, output, error) = Run([.. Predict, "--json", "--stack", "deepspeed"]);
        Assert.True(code == 0, error);
        var deepspeed = JsonNode.Parse(output)!;
        Assert.Equal("deepspeed", (string)deepspeed["stack"]!);
        Assert.Equal("deepspeed", (string)deepspeed["plan"]!["stack"]!);
        // DeepSpeed's ZeRO-2 reduces every micro-batch's gradients, not overlapped: slower than Megatron-Core.
        Assert.True((double)deepspeed["step_time_s"]! > (double)core["step_time_s"]!);
        (code, output, _) = Run([.. Predict, "--stack", "megatron-lm-2021"]);
        Assert.Equal(0, code);
        Assert.Contains("stack megatron-lm-2021", output.Split('\n')[0]);
    }

    [Fact]
    public void A_stack_that_is_not_there_is_exit_2_naming_the_flag()
    {
        var (code, output, error) = Run([.. Predict, "--stack", "horovod"]);
        Assert.Equal(2, code);
        Assert.Equal("", output);
        Assert.Single(error.Trim().Split('\n'));
        Assert.Contains("--stack", error);
        Assert.Contains("horovod", error);
    }

    [Fact]
    public void The_plan_file_keeps_the_stack_and_export_warns_when_the_target_runs_another()
    {
        string plan = Path.Combine(_dir, "plan.json");
        var (code, _, error) = Run("plan", "--model", "llama2-7b", "--cluster", "dgx-a100-80g-1node", "--gbs", "32", "--seq", "4096",
            "--stack", "deepspeed", "--top", "1", "--out", plan);
        Assert.True(code == 0, error);
        var contents = PlanFile.Read(plan);
        Assert.Equal("deepspeed", contents.Stack);
        Assert.Equal("deepspeed", (string)JsonNode.Parse(File.ReadAllText(plan))!["prediction"]!["stack"]!);

        var (deepspeedCode, deepspeedText, deepspeedError) = Run("export", "--plan", plan, "--to", "deepspeed");
        Assert.True(deepspeedCode == 0, deepspeedError);
        Assert.Contains("stack deepspeed", deepspeedText);
        Assert.DoesNotContain("was priced for software stack", deepspeedText);
        var (megatronCode, megatronText, megatronError) = Run("export", "--plan", plan, "--to", "megatron");
        Assert.True(megatronCode == 0, megatronError);
        Assert.Contains("was priced for software stack 'deepspeed'", megatronText);
        Assert.Contains("--stack megatron-core", megatronText);
    }

    [Fact]
    public void A_plan_file_without_a_stack_is_megatron_cores()
    {
        string plan = Path.Combine(_dir, "old.json");
        File.WriteAllText(plan, """
            {"model": "llama2-7b", "cluster": "dgx-a100-80g-1node", "tp": 2, "pp": 1, "dp": 4, "cp": 1, "zero": 1, "mbs": 1, "gbs": 32,
             "seq": 4096, "vpp": 1, "recompute": "none", "sequence_parallel": true, "precision": "bf16"}
            """);
        Assert.Equal("megatron-core", PlanFile.Read(plan).Stack);
        var (code, text, _) = Run("export", "--plan", plan, "--to", "torchtitan");
        Assert.Equal(0, code);
        Assert.Contains("was priced for software stack 'megatron-core'; torchtitan runs as stack 'torchtitan'", text);
    }

    [Fact]
    public void Whatif_sweeps_stacks()
    {
        string csv = Path.Combine(_dir, "stacks.csv");
        var (code, _, error) = Run("whatif", "--model", "llama2-7b", "--cluster", "dgx-a100-80g-1node", "--gbs", "32", "--seq", "4096",
            "--tp", "2", "--pp", "1", "--mbs", "1", "--zero", "2", "--sweep", "stack=megatron-core,deepspeed,megatron-lm-2021", "--csv", csv);
        Assert.True(code == 0, error);
        var lines = File.ReadAllLines(csv);
        Assert.Equal(4, lines.Length);
        var header = lines[0].Split(',');
        int stack = Array.IndexOf(header, "stack"), step = Array.IndexOf(header, "step_time_s");
        Assert.True(stack >= 0 && step >= 0, lines[0]);
        var steps = lines.Skip(1).Select(l => l.Split(',')).ToDictionary(f => f[stack], f => double.Parse(f[step], System.Globalization.CultureInfo.InvariantCulture));
        Assert.True(steps["deepspeed"] > steps["megatron-core"]);
        Assert.True(steps["megatron-lm-2021"] > steps["megatron-core"]);
    }

    [Fact]
    public void Ablate_and_plan_name_their_stack()
    {
        var (code, output, error) = Run("ablate", "--model", "gpt2-xl", "--cluster", "dgx-a100-80g-1node", "--gbs", "64", "--stack", "fsdp");
        Assert.True(code == 0, error);
        Assert.Contains("stack fsdp", output.Split('\n')[0]);
        (code, output, error) = Run("plan", "--model", "gpt2-xl", "--cluster", "dgx-a100-80g-1node", "--gbs", "64", "--top", "1", "--stack", "torchtitan");
        Assert.True(code == 0, error);
        Assert.Contains("stack torchtitan", output.Split('\n')[0]);
    }

    [Fact]
    public void Validate_reads_a_rows_stack()
    {
        string source = RepoFiles.Find("validation/published_runs.csv");
        var lines = File.ReadAllLines(source);
        string csv = Path.Combine(_dir, "runs.csv");
        File.WriteAllText(csv, lines[0] + ",stack\n" + lines[1] + ",\n" + lines[1].Replace(lines[1].Split(',')[0], lines[1].Split(',')[0] + "-core") + ",megatron-core\n");
        var (code, output, error) = Run("validate", "--runs", csv, "--json");
        Assert.True(code == 0, error);
        var runs = JsonNode.Parse(output)!["runs"]!.AsArray();
        double asPublished = (double)runs[0]!["predicted_step_time_s"]!, asCore = (double)runs[1]!["predicted_step_time_s"]!;
        Assert.Equal("megatron-lm-2021", (string)runs[0]!["prediction"]!["stack"]!);
        Assert.Equal("megatron-core", (string)runs[1]!["prediction"]!["stack"]!);
        Assert.True(asCore < asPublished, $"megatron-core {asCore} s against megatron-lm-2021 {asPublished} s");

        File.WriteAllText(csv, lines[0] + ",stack\n" + lines[1] + ",apex\n");
        (code, output, error) = Run("validate", "--runs", csv);
        Assert.Equal(2, code);
        Assert.Contains($"row {lines[1].Split(',')[0]}: stack", error);
        Assert.Contains("apex", error);
    }

    [Fact]
    public void Export_writes_the_dispatcher_of_the_stack_the_plan_was_priced_for()
    {
        string plan = Path.Combine(_dir, "moe.json");
        File.WriteAllText(plan, """
            {"model": "qwen3-30b-a3b", "cluster": "dgx-h100", "tp": 2, "pp": 2, "dp": 8, "cp": 1, "zero": 1, "mbs": 1, "gbs": 128,
             "seq": 4096, "vpp": 1, "recompute": "full", "sequence_parallel": true, "precision": "bf16", "ep": 8, "etp": 2, "stack": "STACK"}
            """);
        string Dispatcher(string stack)
        {
            File.WriteAllText(plan, File.ReadAllText(plan).Replace("\"stack\": \"STACK\"", $"\"stack\": \"{stack}\""));
            var (code, text, error) = Run("export", "--plan", plan, "--to", "megatron");
            Assert.True(code == 0, error);
            File.WriteAllText(plan, File.ReadAllText(plan).Replace($"\"stack\": \"{stack}\"", "\"stack\": \"STACK\""));
            var words = text.Split((char[])[' ', '\n', '\\'], StringSplitOptions.RemoveEmptyEntries);
            return words[Array.IndexOf(words, "--moe-token-dispatcher-type") + 1];
        }
        Assert.Equal("flex", Dispatcher("megatron-core"));
        Assert.Equal("alltoall", Dispatcher("megatron-lm-2021"));
    }

    [Fact]
    public void Heads_that_do_not_divide_the_hidden_size_are_exported_with_their_width()
    {
        string config = Path.Combine(_dir, "odd.json");
        File.WriteAllText(config, """
            {"num_hidden_layers": 4, "hidden_size": 2560, "num_attention_heads": 24, "intermediate_size": 10240,
             "vocab_size": 32000, "max_position_embeddings": 2048}
            """);
        string plan = Path.Combine(_dir, "odd-plan.json");
        File.WriteAllText(plan, $$"""
            {"model": "{{config}}", "cluster": "dgx-h100", "tp": 2, "pp": 1, "dp": 4, "cp": 1, "zero": 1, "mbs": 1, "gbs": 32,
             "seq": 2048, "vpp": 1, "recompute": "none", "sequence_parallel": true, "precision": "bf16"}
            """);
        var (code, text, error) = Run("export", "--plan", plan, "--to", "megatron");
        Assert.True(code == 0, error);
        Assert.Contains("--kv-channels 106", text);
    }
}
