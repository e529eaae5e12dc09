using System.Text.Json.Nodes;
using Planner.CostModel.Specs;
using Planner.Executor.Model;
using Planner.Executor.Training;
using Xunit;

namespace Planner.Cli.Tests;

/// <summary>`planner run` end to end: training on a real token file, mixed precision, failures and the JSON report.</summary>
[Collection("executor")]
[Trait("Category", "Slow")] // rank processes: ./test --all
public sealed class ExecutorRunTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), $"planner-run-{Guid.NewGuid():N}");

    public ExecutorRunTests()
    {
        Directory.CreateDirectory(_dir);
        File.WriteAllText(Path.Combine(_dir, "config.json"),
            """{"model_type": "gpt2", "n_layer": 2, "n_embd": 64, "n_head": 4, "n_positions": 64, "vocab_size": 256, "n_inner": null, "tie_word_embeddings": true}""");
    }

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    private string Plan(string name, int tp, int pp, int dp, int zero, string precision, int mbs = 4, int gbs = 16)
    {
        string path = Path.Combine(_dir, name + ".json");
        File.WriteAllText(path, $$"""
            {"model": "{{Path.Combine(_dir, "config.json")}}", "cluster": "local-cpu", "tp": {{tp}}, "pp": {{pp}}, "dp": {{dp}}, "cp": 1,
             "zero": {{zero}}, "mbs": {{mbs}}, "gbs": {{gbs}}, "seq": 32, "vpp": 1, "recompute": "none", "sequence_parallel": false, "precision": "{{precision}}"}
            """);
        return path;
    }

    /// <summary>Bytes of a text the machine has (the GPL, from Debian's base-files) as uint16 tokens.</summary>
    private string TokenFile()
    {
        var text = File.ReadAllBytes("/usr/share/common-licenses/GPL-3");
        var tokens = new byte[text.Length * 2];
        for (int i = 0; i < text.Length; i++)
            tokens[2 * i] = text[i];
        string path = Path.Combine(_dir, "gpl.bin");
        File.WriteAllBytes(path, tokens);
        return path;
    }

    private string History => Path.Combine(_dir, "history.csv");

    private static double[] Losses(string output) =>
        JsonNode.Parse(output)!["measured"]!["loss"]!.AsArray().Select(v => (double)v!).ToArray();

    [Fact]
    public void A_plan_priced_for_another_stack_runs_and_is_predicted_as_the_executor()
    {
        string path = Plan("stack", 1, 1, 1, 0, "fp32");
        var plan = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        plan["stack"] = "megatron-core";
        File.WriteAllText(path, plan.ToJsonString());
        var (code, output, error) = ExecutorParityTests.Planner(["run", "--plan", path, "--steps", "2", "--history", History]);
        Assert.True(code == 0, error);
        Assert.Contains("the plan was priced for stack megatron-core; this run is the executor's and is predicted as stack planner", output);
        (code, output, error) = ExecutorParityTests.Planner(["run", "--plan", path, "--steps", "2", "--json", "--history", History]);
        Assert.True(code == 0, error);
        var report = JsonNode.Parse(output)!;
        Assert.Equal("megatron-core", (string)report["plan"]!["stack"]!);
        Assert.Equal("planner", (string)report["predicted"]!["stack"]!);
    }

    [Fact]
    public void Loss_falls_on_a_real_token_file()
    {
        var (code, output, error) = ExecutorParityTests.Planner(["run", "--plan", Plan("data", 1, 1, 2, 1, "fp32"), "--steps", "40",
            "--lr", "3e-3", "--data", TokenFile(), "--json", "--history", History]);
        Assert.True(code == 0, error);
        var loss = Losses(output);
        Assert.Equal(40, loss.Length);
        // Byte-level text starts near ln(256) = 5.5; forty steps must learn the byte statistics.
        Assert.InRange(loss[0], 5.0, 6.0);
        Assert.True(loss[^1] < loss[0] - 1.5, $"loss went from {loss[0]:F3} to {loss[^1]:F3}");
    }

    [Fact]
    public void Bf16_training_runs_and_learns()
    {
        var (code, output, error) = ExecutorParityTests.Planner(["run", "--plan", Plan("bf16", 2, 1, 1, 0, "bf16"), "--steps", "20",
            "--lr", "3e-3", "--data", TokenFile(), "--json", "--history", History]);
        Assert.True(code == 0, error);
        var loss = Losses(output);
        Assert.All(loss, l => Assert.True(double.IsFinite(l)));
        Assert.True(loss[^1] < loss[0] - 0.5, $"loss went from {loss[0]:F3} to {loss[^1]:F3}");
    }

    [Fact]
    public void Zero3_keeps_only_its_parameter_shard_between_steps()
    {
        // The run's ranks measure the bytes their parameter tensors' storage and ZeRO's fp32 master shard hold after
        // each step. ZeRO-2 keeps the full parameters beside the shard; ZeRO-3 frees them between uses.
        var m = new ModelSpec("gpt", 2, 64, 4, 4, 256, 256, 64, MlpKind.Gelu, NormKind.LayerNorm, PositionKind.Learned, true, true);
        long flat = GptParameters.Embedding(m).Concat(Enumerable.Range(0, m.Layers).SelectMany(l => GptParameters.Block(m, l)))
            .Concat(GptParameters.Head(m)).Sum(p => p.Shape.Aggregate(1L, (a, b) => a * b));
        long shard = (flat + 1) / 2;
        long[] Bytes(int zero)
        {
            var (code, output, error) = ExecutorParityTests.Planner(["run", "--plan", Plan($"zero{zero}", 1, 1, 2, zero, "fp32", mbs: 2, gbs: 8),
                "--steps", "2", "--json", "--history", History]);
            Assert.True(code == 0, error);
            return JsonNode.Parse(output)!["measured"]!["parameter_bytes_by_rank"]!.AsArray().Select(v => (long)v!).ToArray();
        }
        Assert.All(Bytes(2), b => Assert.Equal(4 * (flat + shard), b));
        Assert.All(Bytes(3), b => Assert.Equal(4 * shard, b));
    }

    [Fact]
    public void Zero2_keeps_no_full_gradients_after_the_backward()
    {
        // ZeRO-2 reduce-scatters each chunk's gradients into the rank's shard after its backward and drops them;
        // ZeRO-1 keeps the full gradients until the step.
        var m = new ModelSpec("gpt", 2, 64, 4, 4, 256, 256, 64, MlpKind.Gelu, NormKind.LayerNorm, PositionKind.Learned, true, true);
        long flat = GptParameters.Embedding(m).Concat(Enumerable.Range(0, m.Layers).SelectMany(l => GptParameters.Block(m, l)))
            .Concat(GptParameters.Head(m)).Sum(p => p.Shape.Aggregate(1L, (a, b) => a * b));
        long[] Bytes(int zero)
        {
            var (code, output, error) = ExecutorParityTests.Planner(["run", "--plan", Plan($"grads-zero{zero}", 1, 1, 2, zero, "fp32", mbs: 2, gbs: 8),
                "--steps", "2", "--json", "--history", History]);
            Assert.True(code == 0, error);
            return JsonNode.Parse(output)!["measured"]!["gradient_bytes_by_rank"]!.AsArray().Select(v => (long)v!).ToArray();
        }
        Assert.All(Bytes(1), b => Assert.Equal(4 * flat, b));
        Assert.All(Bytes(2), b => Assert.Equal(0, b));
    }

    [Fact]
    public void Zero0_starts_each_blocks_all_reduce_during_the_last_backward()
    {
        // 2 blocks, the embedding and the head (tied to it, on one stage): on each DP rank one all-reduce per block
        // starts as its backward ends, the head's after the loss, and the embedding's after its own backward.
        int[] Reduces(int dp, int pp)
        {
            var (code, output, error) = ExecutorParityTests.Planner(["run", "--plan", Plan($"overlap-dp{dp}-pp{pp}", 1, pp, dp, 0, "fp32", mbs: 2, gbs: 8),
                "--steps", "2", "--json", "--history", History]);
            Assert.True(code == 0, error);
            return JsonNode.Parse(output)!["measured"]!["overlapped_reduces_by_rank"]!.AsArray().Select(v => (int)v!).ToArray();
        }
        Assert.Equal([4, 4], Reduces(2, 1)); // 2 blocks + head (ln_f) + embedding (wte, wpe)
        Assert.Equal([0], Reduces(1, 1));    // nothing to reduce without data parallelism
        // Two stages: stage 0 has a block and the embedding; stage 1 a block and the head. The tied copies of the
        // embedding wait for their sum across the stages, after the flush; wpe still goes with the embedding chunk.
        var staged = Reduces(2, 2);
        Assert.Equal(4, staged.Length);
        Assert.All(staged, r => Assert.Equal(2, r));
    }

    [Fact]
    public void Loss_scaling_leaves_the_losses_and_backs_off_on_overflow()
    {
        (double[] Loss, JsonNode Measured) Run(string name, params string[] extra)
        {
            var (code, output, error) = ExecutorParityTests.Planner(["run", "--plan", Plan(name, 1, 2, 2, 1, "fp32", mbs: 2, gbs: 8),
                "--steps", "4", "--json", "--history", History, .. extra]);
            Assert.True(code == 0, error);
            return (Losses(output), JsonNode.Parse(output)!["measured"]!);
        }
        var (plain, plainMeasured) = Run("unscaled");
        Assert.Null(plainMeasured["loss_scale"]);
        // A power-of-two scale is exact in fp32: the scaled and unscaled runs train alike (ZeRO-1 over DP, a pipeline).
        var (scaled, scaledMeasured) = Run("scaled", "--loss-scale", "1024");
        for (int i = 0; i < plain.Length; i++)
            Assert.True(Math.Abs(plain[i] - scaled[i]) <= 1e-5, $"step {i}: {scaled[i]} against {plain[i]}");
        Assert.Equal(1024, (double)scaledMeasured["loss_scale"]!);
        Assert.Equal(0, (int)scaledMeasured["skipped_steps"]!);
        // A scale near fp32's largest number overflows the loss: those steps are skipped and the scale halves each time.
        var (_, overflow) = Run("overflow", "--loss-scale", "3e38");
        int skipped = (int)overflow["skipped_steps"]!;
        Assert.InRange(skipped, 1, 4);
        Assert.Equal(3e38 / Math.Pow(2, skipped), (double)overflow["loss_scale"]!, 1e25);
    }

    [Fact]
    public void Fp16_is_refused_on_cpu_with_one_line()
    {
        var (code, _, error) = ExecutorParityTests.Planner(["run", "--plan", Plan("fp16", 1, 1, 2, 0, "fp16"), "--steps", "2", "--history", History]);
        Assert.Equal(2, code);
        Assert.Contains("fp16", error);
        Assert.Single(error.Trim().Split('\n'));
        (code, _, error) = ExecutorParityTests.Planner(["run", "--plan", Plan("scale", 1, 1, 1, 0, "fp32"), "--loss-scale", "0.5"]);
        Assert.Equal(2, code);
        Assert.Contains("--loss-scale", error);
        foreach (var (flag, value) in new[] { ("--lr", "-1"), ("--lr", "NaN"), ("--adam-eps", "0") })
        {
            (code, _, error) = ExecutorParityTests.Planner(["run", "--plan", Plan("scale", 1, 1, 1, 0, "fp32"), flag, value]);
            Assert.Equal(2, code);
            Assert.StartsWith($"planner: {flag}:", error.Trim());
            Assert.Single(error.Trim().Split('\n'));
        }
    }

    [Fact]
    public void Cuda_is_refused_with_one_line_where_the_shim_sees_no_device()
    {
        var (code, output, error) = ExecutorParityTests.Planner(["run", "--plan", Plan("cuda", 1, 1, 2, 0, "fp32"), "--steps", "2", "--device", "cuda", "--json", "--history", History]);
        if (Planner.Executor.Torch.TorchRuntime.CudaDevices >= 2)
        {
            // A CUDA build with two devices: the DP=2 plan trains on them, with the CPU's losses (fp32; GEMMs may round differently).
            Assert.True(code == 0, error);
            var (cpuCode, cpuOutput, cpuError) = ExecutorParityTests.Planner(["run", "--plan", Plan("cuda-cpu", 1, 1, 2, 0, "fp32"), "--steps", "2", "--device", "cpu", "--json", "--history", History]);
            Assert.True(cpuCode == 0, cpuError);
            foreach (var (gpu, cpu) in Losses(output).Zip(Losses(cpuOutput)))
                Assert.Equal(cpu, gpu, 1e-4);
        }
        else
        {
            // A CPU build (this machine's): asking for CUDA names the flag and what to build; auto trains on the CPU.
            Assert.Equal(2, code);
            Assert.StartsWith("planner: --device cuda:", error.Trim());
            Assert.Contains(Planner.Executor.Torch.TorchRuntime.CudaDevices == 0 ? "PLANNER_WITH_CUDA" : "one device per rank", error);
            Assert.Single(error.Trim().Split('\n'));
        }
        (code, _, error) = ExecutorParityTests.Planner(["run", "--plan", Plan("gpu", 1, 1, 2, 0, "fp32"), "--device", "gpu"]);
        Assert.Equal(2, code);
        Assert.Contains("--device: 'gpu'", error);
        // fp16 is refused on the CPU whichever way the CPU was chosen.
        (code, _, error) = ExecutorParityTests.Planner(["run", "--plan", Plan("fp16cpu", 1, 1, 1, 0, "fp16"), "--device", "cpu"]);
        Assert.Equal(2, code);
        Assert.Contains("fp16", error);
        var (ok, autoOutput, err) = ExecutorParityTests.Planner(["run", "--plan", Plan("auto", 1, 1, 1, 0, "fp32"), "--steps", "1", "--warmup", "0", "--device", "auto", "--json", "--history", History]);
        Assert.True(ok == 0, err);
        Assert.Single(Losses(autoOutput));
    }

    [Fact]
    public void Zero3_in_bf16_reproduces_zero2s_losses()
    {
        // bf16 weights are cast from the gathered fp32 parameters, as ZeRO-2 casts its resident ones.
        double[] Run(int zero)
        {
            var (code, output, error) = ExecutorParityTests.Planner(["run", "--plan", Plan($"bf16-zero{zero}", 1, 1, 2, zero, "bf16", mbs: 2, gbs: 8),
                "--steps", "3", "--adam-eps", "1e-4", "--json", "--history", History]);
            Assert.True(code == 0, error);
            return Losses(output);
        }
        var zero2 = Run(2);
        var zero3 = Run(3);
        for (int s = 0; s < zero2.Length; s++)
            Assert.True(Math.Abs(zero3[s] - zero2[s]) <= 1e-5, $"step {s}: ZeRO-3 loss {zero3[s]:R} against ZeRO-2's {zero2[s]:R}");
    }

    [Fact]
    public void The_report_has_the_contract_keys_and_a_prediction()
    {
        var (code, output, error) = ExecutorParityTests.Planner(["run", "--plan", Plan("report", 1, 2, 1, 0, "fp32"), "--steps", "3", "--json", "--history", History]);
        Assert.True(File.Exists(History), "the run was not appended to the history");
        Assert.True(code == 0, error);
        var o = JsonNode.Parse(output)!;
        foreach (var key in new[] { "step_time_s", "tokens_per_s", "peak_memory_gib", "loss" })
            Assert.NotNull(o["measured"]![key]);
        Assert.NotNull(o["predicted"]!["step_time_s"]);
        Assert.NotNull(o["error_pct"]!["step_time"]);
        Assert.Equal(2, (int)o["plan"]!["pp"]!);
        double step = (double)o["measured"]!["step_time_s"]!;
        Assert.Equal(16.0 * 32 / step, (double)o["measured"]!["tokens_per_s"]!, 6);
    }

    [Fact]
    public void A_failing_rank_is_named_and_ends_the_run()
    {
        // The ranks cannot write their parameters into a file that is there already: every rank fails after training
        // (a token outside the vocabulary, which this test used, is now refused by the launcher: TokenFileTests).
        string taken = Path.Combine(_dir, "taken");
        File.WriteAllText(taken, "");
        var (code, _, error) = ExecutorParityTests.Planner(["run", "--plan", Plan("bad", 1, 1, 2, 0, "fp32"), "--steps", "2", "--dump-params", taken]);
        Assert.Equal(1, code);
        Assert.Matches(@"rank \d failed \(exit code \d+\) at step \d+: .*already exists", error);
        Assert.Single(error.Trim().Split('\n'));
    }

    [Fact]
    public void Bad_run_input_is_exit_2()
    {
        var (code, _, error) = ExecutorParityTests.Planner(["run", "--plan", Path.Combine(_dir, "missing.json")]);
        Assert.Equal(2, code);
        Assert.Contains("missing.json", error);
        (code, _, error) = ExecutorParityTests.Planner(["run", "--plan", Plan("steps", 1, 1, 1, 0, "fp32"), "--steps", "0"]);
        Assert.Equal(2, code);
        Assert.Contains("--steps", error);
        // Optimizer offload needs a host link the CPU ranks do not have.
        string offload = Plan("offload", 1, 1, 2, 1, "fp32");
        File.WriteAllText(offload, File.ReadAllText(offload).TrimEnd().TrimEnd('}') + ", \"optimizer_offload\": 0.5}");
        (code, _, error) = ExecutorParityTests.Planner(["run", "--plan", offload, "--steps", "2"]);
        Assert.Equal(2, code);
        Assert.Contains("'optimizer_offload'", error);
        Assert.Single(error.Trim().Split('\n'));
    }
}
