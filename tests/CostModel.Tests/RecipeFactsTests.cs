using Xunit;
using Planner.CostModel.Compute;
using Planner.CostModel.Memory;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;

namespace Planner.CostModel.Tests;

/// <summary>The per-recipe stack facts of Megatron-Bridge's performance recipes: activation offload to the host, the
/// selective-recompute modules, CUDA-graphed MoE blocks and the expert-parallel exchange overlapped with compute.</summary>
public class RecipeFactsTests
{
    private static readonly ModelSpec Llama = ModelLoader.Load("llama3-8b");
    private static readonly ModelSpec DeepSeek = ModelLoader.Load("deepseek-v3-nomtp");
    private static readonly ModelSpec GptOss = ModelLoader.Load("gpt-oss-120b");
    private static readonly ModelSpec Qwen = ModelLoader.Load("qwen3-30b-a3b");

    private static ClusterSpec Gb200(int nodes = 2) => ClusterLoader.Load("gb200-nvl72") with { Nodes = nodes };

    private static ParallelPlan Plan(int dp = 8, int ep = 1, int mbs = 1, int gbs = 64, int seq = 4096, Recompute rc = Recompute.None) =>
        new(1, 1, dp, 1, 1, mbs, gbs, seq, 1, rc, false, Precision.Bf16, Ep: ep);

    private static int MoeKind(ModelSpec m) => m.Kinds.ToList().FindIndex(k => k.Moe);

    [Fact]
    public void Offloading_n_layers_lowers_activation_memory_by_n_layers_worth()
    {
        var plan = Plan(mbs: 2, seq: 8192);
        var ops = new TransformerOps(Llama, plan, flashAttention: true, fusedLoss: true);
        var gpu = Gb200().Gpu;
        var kept = new MemoryModel(Llama, plan, ops, gpu, PricingOptions.Default);
        var offloaded = new MemoryModel(Llama, plan, ops, gpu, PricingOptions.Default with { Activations = new(OffloadLayers: 10) });
        double perLayer = kept.ActivationsPerLayer(Recompute.None);
        Assert.Equal(10 * perLayer, kept.Stage(0, Llama.Layers, 1, 1).Activations - offloaded.Stage(0, Llama.Layers, 1, 1).Activations, 3);
        // At most all the chunk's layers but the last (its backward follows its forward at once).
        var all = new MemoryModel(Llama, plan, ops, gpu, PricingOptions.Default with { Activations = new(OffloadLayers: 500) });
        Assert.Equal((Llama.Layers - 1) * perLayer, kept.Stage(0, Llama.Layers, 1, 1).Activations - all.Stage(0, Llama.Layers, 1, 1).Activations, 3);
        Assert.Equal(Llama.Layers - 1, all.OffloadedLayers(Llama.Layers));
    }

    [Fact]
    public void Materialised_attention_scores_leave_memory_only_when_core_attn_is_recomputed()
    {
        // Eager attention: selective recompute without core_attn keeps the scores (as no recompute does) and redoes no
        // core; with core_attn it keeps none and holds one recomputed core at a time.
        var plan = Plan(mbs: 1, seq: 4096, rc: Recompute.Selective);
        var ops = new TransformerOps(Llama, plan, flashAttention: false, fusedLoss: true);
        var gpu = Gb200().Gpu;
        MemoryModel With(RecomputeModules m) => new(Llama, plan, ops, gpu, PricingOptions.Default with { Kernels = new(Attention: AttentionKernel.Materialized), Activations = new(m) });
        var none = With(RecomputeModules.CoreAttention);
        double noRecompute = none.ActivationsPerLayer(Recompute.None);
        double scores = plan.Mbs * ops.LocalHeads * ops.LocalSeq * (double)plan.Seq * 2; // bf16 softmax output, no dropout
        Assert.Equal(noRecompute - scores, none.ActivationsPerLayer(Recompute.Selective), 3);
        var layernormOnly = With(RecomputeModules.LayerNorm);
        double norms = ops.NormTokens * Llama.Hidden * 2 * 2; // the two norms' bf16 outputs
        Assert.Equal(noRecompute - norms, layernormOnly.ActivationsPerLayer(Recompute.Selective), 3);
        // The working set: one recomputed core only when the core is recomputed.
        double Working(MemoryModel m) => m.Stage(0, Llama.Layers, 1, 1, Recompute.Selective).Working;
        Assert.Equal(scores, Working(none) - Working(layernormOnly), 3);
    }

    [Fact]
    public void Offload_copies_hidden_behind_the_pass_cost_nothing_and_the_rest_is_exposed()
    {
        var plan = Plan(mbs: 2, seq: 8192);
        var eager = PipelineCosts.Compute(Llama, Gb200(), plan, PricingOptions.Default);
        var fast = PipelineCosts.Compute(Llama, Gb200(), plan, PricingOptions.Default with { Activations = new(OffloadLayers: 10) });
        // GB200's host link (NVLink-C2C, 225 GB/s a GPU) moves 10 layers' activations well within the forward.
        Assert.Equal(eager.Forward[0, 0], fast.Forward[0, 0], 9);
        Assert.Equal(eager.Backward[0, 0], fast.Backward[0, 0], 9);
        // Over a 1 GB/s host link the copy is longer than either pass: the excess is exposed, each way.
        var slowCluster = Gb200() with { Host = new HostSpec(1000, 1, 500) };
        var slow = PipelineCosts.Compute(Llama, slowCluster, plan, PricingOptions.Default with { Activations = new(OffloadLayers: 10) });
        double copy = 10 * slow.Memories[0].ActivationsPerLayer(Recompute.None) / 1e9;
        Assert.Equal(copy, slow.Forward[0, 0], 6);
        Assert.Equal(copy, slow.Backward[0, 0], 6);
        Assert.True(slow.Parts[0].Offload > 0);
        Assert.Equal(0, fast.Parts[0].Offload);
    }

    [Fact]
    public void Offload_without_a_known_host_link_is_refused_and_the_gpus_own_link_serves_a_cluster_without_host()
    {
        var plan = Plan(mbs: 2, seq: 8192);
        var offload = PricingOptions.Default with { Activations = new(OffloadLayers: 10) };
        // No host on the cluster: the GPU file's host_link_gbs (gb200: 225, its C2C share) prices the copies.
        var noHost = Gb200() with { Host = null };
        Assert.Equal(225, noHost.Gpu.HostLinkGbs);
        var withGpuLink = PipelineCosts.Compute(Llama, noHost, plan, offload);
        var withHost = PipelineCosts.Compute(Llama, Gb200() with { Host = new HostSpec(1000, noHost.Gpu.HostLinkGbs, 500) }, plan, offload);
        Assert.Equal(withHost.Forward[0, 0], withGpuLink.Forward[0, 0], 12);
        // Neither: refused, naming the key, never priced with a guessed link.
        var unknown = noHost with { Gpu = noHost.Gpu with { HostLinkGbs = 0 } };
        Assert.Contains("host_link_gbs", Assert.Throws<InputException>(() => PipelineCosts.Compute(Llama, unknown, plan, offload)).Message);
        // Without offload the link is not needed.
        PipelineCosts.Compute(Llama, unknown, plan, PricingOptions.Default);
    }

    [Fact]
    public void Recomputing_mla_up_projections_drops_queries_keys_values_and_reruns_their_gemms()
    {
        var plan = Plan(dp: 8, ep: 8, rc: Recompute.Selective);
        var options = PricingOptions.Default with { Activations = new(RecomputeModules.MlaUpProj) };
        var ops = new TransformerOps(DeepSeek, plan, flashAttention: true, fusedLoss: true);
        var gpu = Gb200().Gpu;
        int k = MoeKind(DeepSeek);
        double kept = new MemoryModel(DeepSeek, plan, ops, gpu).ActivationsPerLayer(k, Recompute.Selective);
        double dropped = new MemoryModel(DeepSeek, plan, ops, gpu, options).ActivationsPerLayer(k, Recompute.Selective);
        double t = ops.Tokens, heads = ops.LocalHeads, kv = ops.LocalKvHeads;
        Assert.Equal(2 * t * (heads + kv) * DeepSeek.QkHeadDim + 2 * t * kv * DeepSeek.HeadDim, kept - dropped, 0);

        var timer = new KernelTimer(gpu, plan.Precision);
        double upProjections = ops.Blocks[k].Where(o => o.Name is "q_up" or "kv_up" or "rope").Sum(timer.Forward);
        Assert.Equal(0, BlockCosts.Compute(DeepSeek, Gb200(), plan, PricingOptions.Default).Kinds[k].Recompute); // core_attn under flash: nothing
        Assert.Equal(upProjections, BlockCosts.Compute(DeepSeek, Gb200(), plan, options).Kinds[k].Recompute, 12);
        // Without selective recompute the modules are not read.
        Assert.Equal(0, BlockCosts.Compute(DeepSeek, Gb200(), plan with { Recompute = Recompute.None }, options).Kinds[k].Recompute);
    }

    [Fact]
    public void Recomputing_norms_and_the_experts_activation_drops_their_outputs_and_reruns_them()
    {
        var plan = Plan(dp: 8, ep: 8, mbs: 2, rc: Recompute.Selective);
        var options = PricingOptions.Default with { Activations = new(RecomputeModules.LayerNorm | RecomputeModules.MoeAct) };
        var ops = new TransformerOps(GptOss, plan, flashAttention: true, fusedLoss: true);
        var gpu = Gb200().Gpu;
        int k = MoeKind(GptOss);
        double kept = new MemoryModel(GptOss, plan, ops, gpu).ActivationsPerLayer(k, Recompute.Selective);
        double dropped = new MemoryModel(GptOss, plan, ops, gpu, options).ActivationsPerLayer(k, Recompute.Selective);
        // Two norm outputs (bf16) and the experts' activation output, the second expert GEMM's input.
        Assert.Equal(2 * ops.NormTokens * GptOss.Hidden * 2 + ops.ExpertTokens * GptOss.Moe!.ExpertFfn * 2, kept - dropped, 0);

        var timer = new KernelTimer(gpu, plan.Precision);
        double rerun = ops.Blocks[k].Where(o => o.Name is "ln1" or "ln2" or "expert_swiglu" or "expert_act").Sum(timer.Forward);
        Assert.True(rerun > 0);
        Assert.Equal(rerun, BlockCosts.Compute(GptOss, Gb200(), plan, options).Kinds[k].Recompute, 12);
    }

    [Fact]
    public void Cuda_graphed_moe_blocks_pay_the_graphed_time_per_local_expert()
    {
        var plan = Plan(dp: 8, ep: 8);
        var eager = PricingOptions.Default with { Moe = new(EagerExpertOverheadSeconds: 200e-6, GraphedExpertOverheadSeconds: 50e-6) };
        var graphed = eager with { Moe = eager.Moe with { Launch = MoeLaunch.CudaGraphs } };
        int k = MoeKind(Qwen);
        var a = BlockCosts.Compute(Qwen, Gb200(), plan, eager).Kinds[k];
        var b = BlockCosts.Compute(Qwen, Gb200(), plan, graphed).Kinds[k];
        double local = (double)Qwen.Experts / 8;
        Assert.Equal(150e-6 * local, a.Forward - b.Forward, 12);
        Assert.Equal(150e-6 * local, a.Backward - b.Backward, 12);
        Assert.Equal(50e-6, graphed.Moe.ExpertOverheadSeconds);
        Assert.Equal(200e-6, eager.Moe.ExpertOverheadSeconds);
    }

    [Fact]
    public void An_overlapped_expert_exchange_exposes_only_what_the_blocks_compute_cannot_hide()
    {
        // Qwen3 30B-A3B, EP 16 over four GB200 trays (one NVLink domain) and without one (crossing the network).
        var plan = Plan(dp: 16, ep: 16, mbs: 2, gbs: 64);
        foreach (var cluster in new[] { Gb200(4), Gb200(4) with { NvlinkDomainSize = null } })
        {
            int k = MoeKind(Qwen);
            var exposed = BlockCosts.Compute(Qwen, cluster, plan, PricingOptions.Default).Kinds[k];
            var overlapped = BlockCosts.Compute(Qwen, cluster, plan, PricingOptions.Default with { Moe = new(ExpertComm: ExpertCommOverlap.Overlapped) }).Kinds[k];
            Assert.True(exposed.EpForward > 0);
            Assert.Equal(cluster.Gpu.Overlapped(exposed.Forward, exposed.EpForward) - exposed.Forward, overlapped.EpForward, 12);
            Assert.Equal(cluster.Gpu.Overlapped(exposed.Backward, exposed.EpBackward) - exposed.Backward, overlapped.EpBackward, 12);
            Assert.True(overlapped.EpForward < exposed.EpForward);
            Assert.Equal(exposed.Forward, overlapped.Forward);
        }
    }

    [Fact]
    public void Stack_files_state_the_recipe_facts()
    {
        string dir = Path.Combine(Path.GetTempPath(), "recipe-facts-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            string path = Path.Combine(dir, "r.yaml");
            File.WriteAllText(path, "name: r\nbase: megatron-core\nactivation_offload_layers: 20\nrecompute_modules: [mla_up_proj, layernorm, moe_act]\n"
                                    + "moe_cuda_graphs: true\nmoe_overlap_expert_comm: true\nmoe_expert_overhead_graphed_us: 40\n");
            var o = StackLoader.Options(path);
            Assert.Equal(PricingOptions.Default with
            {
                Activations = new(RecomputeModules.MlaUpProj | RecomputeModules.LayerNorm | RecomputeModules.MoeAct, OffloadLayers: 20),
                Moe = new(Launch: MoeLaunch.CudaGraphs, GraphedExpertOverheadSeconds: 40e-6, ExpertComm: ExpertCommOverlap.Overlapped),
                Stack = "r",
            }, o);
            File.WriteAllText(path, "name: r\nrecompute_modules: [shared_experts]\n");
            Assert.Contains("recompute_modules", Assert.Throws<InputException>(() => StackLoader.Options(path)).Message);
            File.WriteAllText(path, "name: r\nactivation_offload_layers: 2.5\n");
            Assert.Contains("activation_offload_layers", Assert.Throws<InputException>(() => StackLoader.Options(path)).Message);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
