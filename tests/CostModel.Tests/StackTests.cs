using Xunit;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;

namespace Planner.CostModel.Tests;

/// <summary>Software stacks: the presets, user files built on a base, and what each fact does to a price.</summary>
public sealed class StackTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("planner-stacks-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    private string Write(string name, string text)
    {
        string path = Path.Combine(_dir, name);
        File.WriteAllText(path, text);
        return path;
    }

    [Fact]
    public void Every_preset_states_every_fact_and_cites_its_sources()
    {
        Assert.Contains("megatron-core", StackLoader.PresetNames);
        foreach (var name in new[] { "megatron-lm-2021", "megatron-deepspeed", "deepspeed", "fsdp", "torchtitan", "planner" })
            Assert.Contains(name, StackLoader.PresetNames);
        string dir = Path.Combine(RepoRoot(), "stacks");
        foreach (var name in StackLoader.PresetNames)
        {
            var stack = StackLoader.Load(name);
            Assert.Equal(name, stack.Name);
            Assert.NotEmpty(stack.Description);
            Assert.NotEmpty(stack.Sources);
            // A preset names each fact itself, so that reading it says everything (no fact silently from a base).
            var keys = File.ReadAllLines(Path.Combine(dir, name + ".yaml")).Where(l => l.Length > 0 && !char.IsWhiteSpace(l[0]) && l[0] != '#')
                .Select(l => l[..l.IndexOf(':')]).ToHashSet();
            foreach (var fact in StackLoader.FactKeys)
                Assert.True(keys.Contains(fact), $"stacks/{name}.yaml does not state '{fact}'");
            Assert.DoesNotContain("base", keys);
        }
    }

    [Fact]
    public void The_executors_stack_states_what_the_executor_does()
    {
        // What run priced before the stacks (RunCommand's options): materialised attention, autograd accumulation, per-block
        // fp32 all-reduces of copies (Gloo has no bf16 reduction and no reduce-scatter), ZeRO-2 every micro-batch,
        // fp32 parameters, gathers after the step, ZeRO-3 in line, the loss unfused; the ring attention's gradients one
        // hop home after its last block.
        var executor = new PricingOptions
        {
            Kernels = new(AttentionKernel.Materialized, GradientAccumulation.SeparatePass, CrossEntropyKernel.Fp32Copies),
            DataParallel = new(GradientReduction.OverlappedWithBackward, ParameterGather.AfterStep, ReductionBuffer.BucketCopies,
                Zero2Reduction.PerMicroBatch, ScatterCollective.AllReduce, Dtype.Fp32, CollectiveGranularity.PerBucket, Zero3Schedule.Serial,
                TiedEmbeddingReduction.AfterFlush),
            Precision = new(Parameters: Dtype.Fp32),
            Moe = new(Dispatcher: ExpertDispatcher.AllToAll),
            CpGradients = CpGradientReturn.HomeHop,
            Stack = "planner",
        };
        Assert.Equal(executor, StackLoader.Options("planner"));
    }

    [Fact]
    public void Megatron_core_is_the_default_pricing()
    {
        Assert.Equal(PricingOptions.Default, StackLoader.Options("megatron-core"));
        Assert.Equal(PricingOptions.DefaultStack, PricingOptions.Default.Stack);
    }

    [Fact]
    public void A_users_stack_takes_its_bases_facts_and_overrides_some()
    {
        string path = Write("mine.yaml", "name: mine\nbase: deepspeed\noverlap_grad_reduce: true\nmoe_expert_overhead_us: 50\n");
        var mine = StackLoader.Options(path);
        var deepspeed = StackLoader.Options("deepspeed");
        Assert.Equal(deepspeed with
        {
            DataParallel = deepspeed.DataParallel with { GradReduce = GradientReduction.OverlappedWithBackward },
            Moe = deepspeed.Moe with { EagerExpertOverheadSeconds = 50e-6 },
            Stack = "mine",
        }, mine);
        // Without a base: megatron-core's facts.
        string plain = Write("plain.yaml", "name: plain\nattention: materialized\n");
        Assert.Equal(PricingOptions.Default with { Kernels = new(Attention: AttentionKernel.Materialized), Stack = "plain" }, StackLoader.Options(plain));
        // A relative base lies beside the file that names it, wherever the planner runs.
        Directory.CreateDirectory(Path.Combine(_dir, "nested"));
        Write("nested/child.yaml", "name: child\nbase: ../mine.yaml\nfused_cross_entropy: true\n");
        Assert.Equal(mine with { Kernels = mine.Kernels with { Loss = CrossEntropyKernel.Fused }, Stack = "child" }, StackLoader.Options(Path.Combine(_dir, "nested", "child.yaml")));
    }

    [Fact]
    public void A_file_may_take_a_presets_name_only_with_its_facts()
    {
        string copy = Write("deepspeed.yaml", File.ReadAllText(Path.Combine(RepoRoot(), "stacks", "deepspeed.yaml")));
        Assert.Equal(StackLoader.Options("deepspeed"), StackLoader.Options(copy));
        string other = Write("impostor.yaml", "name: deepspeed\nbase: deepspeed\noverlap_grad_reduce: true\n");
        var e = Assert.Throws<InputException>(() => StackLoader.Load(other));
        Assert.Contains(other, e.Message);
        Assert.Contains("name of its own", e.Message);
    }

    [Theory]
    [InlineData("name: x\noverlap_grad_reduc: true\n", "overlap_grad_reduc")]
    [InlineData("name: x\nattention: fused\n", "attention")]
    [InlineData("name: x\noverlap_grad_reduce: maybe\n", "overlap_grad_reduce")]
    [InlineData("name: x\nmoe_expert_overhead_us: -3\n", "moe_expert_overhead_us")]
    [InlineData("name: x\nbase: no-such-stack\n", "no-such-stack")]
    [InlineData("attention: flash\n", "name")]
    public void A_bad_stack_file_is_refused_naming_the_file_and_key(string yaml, string named)
    {
        string path = Write("bad.yaml", yaml);
        var e = Assert.Throws<InputException>(() => StackLoader.Load(path));
        Assert.Contains(path, e.Message);
        Assert.Contains(named, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void A_base_cycle_is_refused()
    {
        string a = Path.Combine(_dir, "a.yaml"), b = Path.Combine(_dir, "b.yaml");
        File.WriteAllText(a, $"name: a\nbase: {b}\n");
        File.WriteAllText(b, $"name: b\nbase: {a}\n");
        Assert.Contains("cycle", Assert.Throws<InputException>(() => StackLoader.Load(a)).Message);
    }

    [Fact]
    public void An_unknown_preset_lists_the_presets()
    {
        var e = Assert.Throws<InputException>(() => StackLoader.Load("megatron-lm-1999"));
        Assert.Equal("stack", e.Field); // the CLI names it --stack
        Assert.Contains("megatron-core", e.Message);
    }

    [Fact]
    public void Each_stack_prices_what_its_software_does()
    {
        // GPT-3 175B on 128 A100s, TP8 PP4 DP4, 96 micro-batches: Megatron-LM of 2021 exposes its gradient all-reduce
        // and materialises attention; DeepSpeed's ZeRO-2 reduces every micro-batch; torchtitan reduces in fp32.
        var m = ModelLoader.Load("gpt3-175b");
        var c = ClusterLoader.Load("dgx-a100-80g");
        var plan = new ParallelPlan(8, 4, 4, 1, 1, 1, 384, 2048, 1, Recompute.Full, true, Precision.Bf16);
        Prediction Price(string stack, ParallelPlan? p = null) => Pricer.Price(m, c, p ?? plan, StackLoader.Options(stack));
        var core = Price("megatron-core");
        var old = Price("megatron-lm-2021");
        Assert.Equal("megatron-core", core.Stack);
        Assert.Equal("megatron-lm-2021", old.Stack);
        Assert.True(old.Breakdown.DpComm > 2 * core.Breakdown.DpComm, $"dp_comm {old.Breakdown.DpComm} (2021) against {core.Breakdown.DpComm}");
        Assert.True(old.StepTimeSeconds > core.StepTimeSeconds);

        var zero2 = plan with { Zero = 2 };
        var deepspeed = Price("deepspeed", zero2);
        var coreZero2 = Price("megatron-core", zero2);
        Assert.True(deepspeed.Breakdown.DpComm > 10 * coreZero2.Breakdown.DpComm,
            $"ZeRO-2 every micro-batch: dp_comm {deepspeed.Breakdown.DpComm} against {coreZero2.Breakdown.DpComm} once per step");

        // fp32 gradients: twice the bytes held and reduced.
        var fp32Grads = Pricer.Price(m, c, plan, PricingOptions.Default with { Precision = new(Gradients: Dtype.Fp32) });
        Assert.Equal(2 * core.PeakStage.Gradients, fp32Grads.PeakStage.Gradients, 6);
        // An exposed all-reduce (ZeRO-0) of fp32 gradients takes about twice as long.
        var exposed = PricingOptions.Default with { DataParallel = new(GradReduce: GradientReduction.AfterBackward) };
        var allReduce = plan with { Zero = 0 };
        double ratio = Pricer.Price(m, c, allReduce, exposed with { Precision = new(Gradients: Dtype.Fp32) }).Breakdown.DpComm
                       / Pricer.Price(m, c, allReduce, exposed).Breakdown.DpComm;
        Assert.InRange(ratio, 1.8, 2.0);
    }

    private static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (Directory.Exists(Path.Combine(dir.FullName, "stacks")) && File.Exists(Path.Combine(dir.FullName, "Planner.sln")))
                return dir.FullName;
        throw new DirectoryNotFoundException($"the repository root (stacks/) not found above {AppContext.BaseDirectory}");
    }
}
