using System.Text.Json.Nodes;
using Xunit;

namespace Planner.Cli.Tests;

/// <summary>
/// <c>run --checkpoint-dir</c> and <c>run --resume</c> end to end (issue 22, items 1, 2 and 6): real rank processes on a
/// tiny fp32 GPT and a real token file. A resume on the same layout gives the uninterrupted run's losses bit for bit, on
/// another layout within 1e-5; a checkpoint cut short is skipped; old ones are pruned; another run's directory and bad
/// values are refused with exit 2 and one line; the same plan twice trains the same losses bit for bit.
/// </summary>
[Collection("executor")]
[Trait("Category", "Slow")] // rank processes: ./test --all
public sealed class CheckpointTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), $"planner-ckpt-{Guid.NewGuid():N}");

    public CheckpointTests()
    {
        Directory.CreateDirectory(_dir);
        File.WriteAllText(Path.Combine(_dir, "config.json"),
            """{"model_type": "gpt2", "n_layer": 2, "n_embd": 64, "n_head": 4, "n_positions": 64, "vocab_size": 256, "n_inner": null, "tie_word_embeddings": true}""");
        var text = File.ReadAllBytes("/usr/share/common-licenses/GPL-3");
        var tokens = new byte[text.Length * 2];
        for (int i = 0; i < text.Length; i++)
            tokens[2 * i] = text[i];
        File.WriteAllBytes(Data, tokens);
    }

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    private string Data => Path.Combine(_dir, "gpl.bin");

    /// <summary>A plan file of the tiny model: the layout's name (dp2, tp2, pp2, zero1; lora: LoRA at DP=2; moe-ep2,
    /// moe-dp2: the tiny MoE model of <see cref="MoeRunTests"/> at EP=2 or EP=1, DP=2) picks its degrees.</summary>
    private string Plan(string layout, string optimizer = "adamw", int gbs = 8)
    {
        var (tp, pp, dp, zero, ep) = layout switch
        {
            "tp2" => (2, 1, 1, 0, 1),
            "pp2" => (1, 2, 1, 0, 1),
            "zero1" => (1, 1, 2, 1, 1),
            "moe-ep2" => (1, 1, 2, 0, 2),
            _ => (1, 1, 2, 0, 1),
        };
        string model = Path.Combine(_dir, "config.json");
        if (layout.StartsWith("moe", StringComparison.Ordinal))
        {
            model = Path.Combine(_dir, "moe.json");
            File.WriteAllText(model, MoeRunTests.Config);
        }
        string tuning = layout == "lora" ? """, "finetune": "lora", "lora_rank": 4""" : "";
        string path = Path.Combine(_dir, $"{layout}-{optimizer}-{gbs}.json");
        File.WriteAllText(path, $$"""
            {"model": "{{model}}", "cluster": "local-cpu", "tp": {{tp}}, "pp": {{pp}}, "dp": {{dp}}, "cp": 1, "ep": {{ep}},
             "zero": {{zero}}, "mbs": 2, "gbs": {{gbs}}, "seq": 32, "vpp": 1, "recompute": "none", "sequence_parallel": false, "precision": "fp32",
             "optimizer": "{{optimizer}}"{{tuning}}}
            """);
        return path;
    }

    private string Checkpoints(string name) => Path.Combine(_dir, name);

    /// <summary>Runs planner run with the token file and returns its JSON's measured losses and first step.</summary>
    private (double[] Losses, int FirstStep) Run(params string[] args)
    {
        var (code, output, error) = ExecutorParityTests.Planner(["run", .. args, "--warmup", "0", "--data", Data, "--json", "--history", Path.Combine(_dir, "history.csv")]);
        Assert.True(code == 0, error);
        var measured = JsonNode.Parse(output)!["measured"]!;
        return (measured["loss"]!.AsArray().Select(v => (double)v!).ToArray(), (int)measured["first_step"]!);
    }

    /// <summary>planner run's exit code and standard error (no token file).</summary>
    private static (int Code, string Error) Refused(params string[] args)
    {
        var (code, _, error) = ExecutorParityTests.Planner(["run", .. args, "--warmup", "0"]);
        return (code, error.Trim());
    }

    [Theory]
    [InlineData("dp2", "adamw")]
    [InlineData("pp2", "adamw")]
    [InlineData("zero1", "adamw")]
    [InlineData("dp2", "sgd")]
    [InlineData("dp2", "lion")]
    [InlineData("zero1", "sophia")]
    [InlineData("lora", "adamw")]
    [InlineData("moe-ep2", "adamw")]
    public void A_resume_on_the_same_layout_gives_the_uninterrupted_losses_bit_for_bit(string layout, string optimizer)
    {
        string plan = Plan(layout, optimizer), ck = Checkpoints("ck");
        var (full, _) = Run("--plan", plan, "--steps", "6");
        var (first, start) = Run("--plan", plan, "--steps", "3", "--checkpoint-dir", ck, "--checkpoint-every", "3");
        var (rest, resumedAt) = Run("--resume", ck, "--steps", "3");
        Assert.Equal(0, start);
        Assert.Equal(3, resumedAt);
        Assert.Equal(full, first.Concat(rest).ToArray()); // exact doubles: the weights and optimizer state came back whole
    }

    [Theory]
    [InlineData("dp2", "tp2")]
    [InlineData("pp2", "dp2")]
    [InlineData("zero1", "pp2")]
    [InlineData("moe-ep2", "moe-dp2")]
    public void A_resume_on_another_layout_agrees_within_1e_5(string from, string to)
    {
        string ck = Checkpoints("ck");
        var (full, _) = Run("--plan", Plan(from), "--steps", "6");
        Run("--plan", Plan(from), "--steps", "3", "--checkpoint-dir", ck);
        var (resharded, resumedAt) = Run("--resume", ck, "--plan", Plan(to), "--steps", "3");
        Assert.Equal(3, resumedAt);
        Assert.Equal(3, resharded.Length);
        for (int i = 0; i < 3; i++)
            Assert.True(Math.Abs(resharded[i] - full[3 + i]) <= 1e-5, $"step {3 + i}: {resharded[i]} resharded {from} -> {to}, {full[3 + i]} uninterrupted");
    }

    [Fact]
    public void A_checkpoint_without_its_manifest_is_skipped_and_old_ones_are_pruned()
    {
        string plan = Plan("dp2"), ck = Checkpoints("ck");
        var (full, _) = Run("--plan", plan, "--steps", "5", "--checkpoint-dir", ck, "--checkpoint-every", "1", "--keep-checkpoints", "2");
        var folders = Directory.GetDirectories(ck).Select(f => Path.GetFileName(f)!).Order().ToArray();
        Assert.Equal(["step-00000004", "step-00000005"], folders); // the last two of five kept
        Assert.True(File.Exists(Path.Combine(ck, "step-00000005", "rank-00001.shard")));
        // Step 5's manifest gone (rank 0 died before writing it): the resume continues from step 4.
        File.Delete(Path.Combine(ck, "step-00000005", "manifest.json"));
        var (rest, resumedAt) = Run("--resume", ck, "--steps", "1");
        Assert.Equal(4, resumedAt);
        Assert.Equal(full[4], rest[0]);
    }

    [Fact]
    public void Another_runs_directory_is_refused_unless_forced_and_a_resume_continues_its_own()
    {
        string plan = Plan("dp2"), ck = Checkpoints("ck");
        Run("--plan", plan, "--steps", "1", "--checkpoint-dir", ck);
        string firstRun = File.ReadAllText(Path.Combine(ck, "run.json"));
        var (code, error) = Refused("--plan", plan, "--steps", "1", "--checkpoint-dir", ck);
        Assert.Equal(2, code);
        Assert.StartsWith("planner: --checkpoint-dir:", error);
        Assert.Contains("--force", error);
        Assert.Single(error.Split('\n'));
        // The run's own restart (its flags plus --resume, as a restarter relaunches it) writes on into the directory.
        var (_, resumedAt) = Run("--plan", plan, "--steps", "1", "--checkpoint-dir", ck, "--resume", ck);
        Assert.Equal(1, resumedAt);
        Assert.True(File.Exists(Path.Combine(ck, "step-00000002", "manifest.json")));
        Assert.Equal(firstRun, File.ReadAllText(Path.Combine(ck, "run.json")));
        // --force replaces the other run's checkpoints.
        Run("--plan", plan, "--steps", "1", "--checkpoint-dir", ck, "--force");
        Assert.NotEqual(firstRun, File.ReadAllText(Path.Combine(ck, "run.json")));
        Assert.Equal(["step-00000001"], Directory.GetDirectories(ck).Select(f => Path.GetFileName(f)!).ToArray());
    }

    [Fact]
    public void Bad_checkpoint_values_exit_2_with_one_line()
    {
        string plan = Plan("dp2"), empty = Checkpoints("empty");
        Directory.CreateDirectory(empty);
        var cases = new (string[] Args, string Start)[]
        {
            (["--plan", plan, "--checkpoint-dir", Checkpoints("a"), "--checkpoint-every", "-1"], "planner: --checkpoint-every:"),
            (["--plan", plan, "--checkpoint-dir", Checkpoints("a"), "--keep-checkpoints", "0"], "planner: --keep-checkpoints:"),
            (["--plan", plan, "--checkpoint-every", "2"], "planner: --checkpoint-every, --keep-checkpoints and --force need --checkpoint-dir"),
            (["--resume", empty], $"planner: --resume: '{empty}' holds no complete checkpoint"),
            (["--resume", Checkpoints("missing")], "planner: --resume: directory"),
            (["--steps", "2"], "planner: --plan:"),
            (["--plan", Plan("dp2", "adafactor"), "--checkpoint-dir", Checkpoints("a")], $"planner: {Plan("dp2", "adafactor")}: key 'optimizer' is adafactor"),
            (["--plan", Plan("dp2", "adam8bit"), "--checkpoint-dir", Checkpoints("a")], $"planner: {Plan("dp2", "adam8bit")}: key 'optimizer' is adam8bit"),
        };
        foreach (var (args, start) in cases)
        {
            var (code, error) = Refused(args);
            Assert.True(code == 2, $"{string.Join(' ', args)}: exit {code}, {error}");
            Assert.StartsWith(start, error);
            Assert.Single(error.Split('\n'));
        }
        Assert.False(Directory.Exists(Checkpoints("a")), "a refused run leaves no checkpoint directory");
        // A resume trains the checkpoint's batch: another gbs is refused, naming the key.
        string ck = Checkpoints("ck");
        Run("--plan", plan, "--steps", "1", "--checkpoint-dir", ck);
        var (c, e) = Refused("--resume", ck, "--plan", Plan("dp2", gbs: 16), "--steps", "1");
        Assert.Equal(2, c);
        Assert.Contains("key 'gbs' is 16", e);
        Assert.Single(e.Split('\n'));
    }

    [Fact]
    public void The_same_plan_twice_trains_the_same_losses_bit_for_bit_on_cpu()
    {
        foreach (string layout in new[] { "pp2", "zero1" })
        {
            var (a, _) = Run("--plan", Plan(layout), "--steps", "4");
            var (b, _) = Run("--plan", Plan(layout), "--steps", "4");
            Assert.Equal(a, b);
            Assert.Equal(4, a.Distinct().Count()); // four steps that trained, not one value repeated
        }
    }
}
