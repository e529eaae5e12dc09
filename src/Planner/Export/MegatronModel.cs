using System.Globalization;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;

namespace Planner.Cli.Export;

/// <summary>
/// The Megatron-LM arguments that describe the model and its arithmetic rather than the parallel layout: the shape,
/// mixture of experts and expert parallelism, multi-head latent attention, multi-token prediction, sliding windows,
/// dropout and the precision recipe.
/// </summary>
/// <remarks>
/// Names and choices checked against NVIDIA/Megatron-LM <c>megatron/training/arguments.py</c> (2025 main, commit
/// 000c4ac): <c>_add_moe_args</c> (<c>--expert-model-parallel-size</c>, <c>--expert-tensor-parallel-size</c> whose
/// default None means the tensor-parallel size, <c>--num-experts</c>, <c>--moe-layer-freq</c> of type
/// <c>moe_freq_type</c>, <c>--moe-ffn-hidden-size</c>, <c>--moe-shared-expert-intermediate-size</c>,
/// <c>--moe-grouped-gemm</c> which <c>validate_args</c> allows with <c>--bf16</c> only,
/// <c>--moe-router-load-balancing-type {aux_loss,seq_aux_loss,global_aux_loss,sinkhorn,none}</c>,
/// <c>--moe-aux-loss-coeff</c> (default 0.0, "a starting value of 1e-2 is recommended"), <c>--moe-router-topk</c>,
/// <c>--moe-token-dispatcher-type {allgather,alltoall,flex}</c>, <c>--moe-expert-capacity-factor</c> (None: no token
/// dropped), <c>--moe-pad-expert-input-to-capacity</c>, <c>--moe-token-drop-policy {probs,position}</c>);
/// <c>_add_mla_args</c> (<c>--q-lora-rank</c> default None, <c>--kv-lora-rank</c>, <c>--qk-head-dim</c> the part
/// without position, <c>--qk-pos-emb-head-dim</c>, <c>--v-head-dim</c>); <c>_add_network_size_args</c>
/// (<c>--multi-latent-attention</c>, <c>--mtp-num-layers</c>, <c>--kv-channels</c>, <c>--window-size</c> of type
/// <c>tuple_type</c>, <c>--window-attn-skip-freq</c> where 1 is a windowed block and 0 a full one);
/// <c>_add_regularization_args</c> (<c>--attention-dropout</c>, <c>--hidden-dropout</c>, both 0.1 by default);
/// <c>_add_transformer_engine_args</c> (<c>--fp8-format {e4m3,hybrid}</c>,
/// <c>--fp8-recipe {tensorwise,delayed,mxfp8,blockwise,custom}</c>, <c>--fp4-format {e2m1}</c>,
/// <c>--fp4-recipe {nvfp4,custom}</c>; <c>--fp4-format</c> and <c>--fp8-format</c> are exclusive and fp4 needs
/// Transformer Engine 2.7.0.dev0). Capacity factors work with the alltoall dispatcher and aux_loss balancing in every
/// release (<c>TransformerConfig.__post_init__</c>); MoE with tensor parallelism needs sequence parallelism.
/// The MXFP8 format follows NVIDIA-NeMo/Megatron-Bridge <c>src/megatron/bridge/training/mixed_precision.py</c>
/// (<c>bf16_with_mxfp8_mixed</c>: fp8 "e4m3", recipe "mxfp8"; the delayed and current-scaling recipes use "hybrid").
/// </remarks>
internal static class MegatronModel
{
    /// <summary>Expert-parallel degrees, in the parallelism part of the command line. Both are set for a MoE model:
    /// Megatron's expert tensor-parallel size otherwise defaults to the tensor-parallel size, not to the plan's.</summary>
    public static void ExpertParallelism(ExportInput x, MegatronArgs a)
    {
        var p = x.Plan;
        if (x.Model?.IsMoe != true && p.Ep == 1 && p.Etp == 1)
            return;
        a.Arg("--expert-model-parallel-size", p.Ep);
        a.Arg("--expert-tensor-parallel-size", p.Etp);
        a.Note($"expert parallelism: the experts of each MoE block are split over ep {p.Ep} ranks, each expert's weights over etp {p.Etp}; " +
               $"the ranks holding the same experts form the expert data-parallel group of tp x cp x dp / (ep x etp) = {p.ExpertDp}");
    }

    /// <summary>The precision flags and their notes.</summary>
    public static void PrecisionRecipe(ExportInput x, MegatronArgs a)
    {
        var p = x.Plan;
        switch (p.Precision)
        {
            case Precision.Bf16:
                a.Flag("--bf16");
                break;
            case Precision.Fp16:
                a.Flag("--fp16");
                break;
            case Precision.Fp8:
                a.Flag("--bf16");
                a.Flag("--fp8-format", "hybrid");
                a.Flag("--fp8-recipe", "delayed");
                a.Note("fp8 (delayed scaling): bf16 weights and activations with Transformer Engine fp8 GEMMs; --fp8-recipe delayed scales each tensor from its amax history, --fp8-format hybrid is e4m3 forward and e5m2 for gradients");
                break;
            case Precision.Fp8Cs:
                a.Flag("--bf16");
                a.Flag("--fp8-format", "hybrid");
                a.Flag("--fp8-recipe", "tensorwise");
                a.Note("fp8-cs (current scaling): --fp8-recipe tensorwise scales each tensor from its own amax at the cast (Transformer Engine Float8CurrentScaling); NVIDIA's recipe also keeps the first and last block in bf16 (--first-last-layers-bf16), which is not set because the planner priced every block in fp8");
                break;
            case Precision.Mxfp8:
                a.Flag("--bf16");
                a.Flag("--fp8-format", "e4m3");
                a.Flag("--fp8-recipe", "mxfp8");
                a.Note("mxfp8 (Blackwell): --fp8-recipe mxfp8 is Transformer Engine's MXFP8BlockScaling, one power-of-two scale per 32 elements; e4m3 in both passes as in NVIDIA's Megatron-Bridge recipe (the block scales make e5m2 gradients unnecessary; hybrid is also accepted)");
                break;
            case Precision.Nvfp4:
                a.Flag("--bf16");
                a.Flag("--fp4-format", "e2m1");
                a.Flag("--fp4-recipe", "nvfp4");
                a.Note("nvfp4 (Blackwell): --fp4-format e2m1 --fp4-recipe nvfp4 is Transformer Engine's NVFP4BlockScaling (an fp8 scale per 16 elements and a per-tensor scale), which needs Transformer Engine 2.7 or later; Megatron refuses --fp4-format together with --fp8-format");
                break;
            case Precision.Fp32:
                a.Note("fp32: no precision flag (Megatron trains in fp32 without --bf16/--fp16)");
                break;
            case Precision.Tf32:
                a.Note("tf32: no precision flag (fp32 training; TF32 matmuls follow PyTorch's torch.backends.cuda.matmul.allow_tf32)");
                break;
        }
    }

    /// <summary>The model's shape: sizes, attention, feed-forward, positions, norms, and what the newer models add.</summary>
    public static void Shape(ModelSpec m, ExportInput x, MegatronArgs a)
    {
        a.Arg("--num-layers", m.Layers);
        a.Arg("--hidden-size", m.Hidden);
        a.Arg("--num-attention-heads", m.Heads);
        a.Arg("--ffn-hidden-size", m.Ffn);
        if (m.Mla is { } mla)
            LatentAttention(mla, a);
        else
        {
            if (m.KvHeads < m.Heads)
            {
                a.Flag("--group-query-attention");
                a.Arg("--num-query-groups", m.KvHeads);
            }
            // Megatron takes hidden / heads unless told otherwise, and asserts that the heads divide the hidden size.
            if (m.HeadDim * m.Heads != m.Hidden)
                a.Arg("--kv-channels", m.HeadDim);
        }
        if (m.Mlp == MlpKind.SwiGlu)
            a.Flag("--swiglu");
        if (m.Norm == NormKind.RmsNorm)
            a.Flag("--normalization", "RMSNorm");
        if (m.Positions == PositionKind.Rotary)
            a.Flag("--position-embedding-type", "rope");
        if (!m.TiedEmbeddings)
            a.Flag("--untie-embeddings-and-output-weights");
        if (!m.Biases)
            a.Flag("--disable-bias-linear");
        if (!m.Dropout)
        {
            // Megatron's defaults are 0.1; a model trained without dropout must say so, or it pays for masks the
            // planner did not price.
            a.Flag("--attention-dropout", "0.0");
            a.Flag("--hidden-dropout", "0.0");
        }
        if (m.Window is { } window)
            SlidingWindow(window, m, a);
        if (m.MtpLayers > 0)
        {
            a.Arg("--mtp-num-layers", m.MtpLayers);
            a.Note($"--mtp-num-layers {m.MtpLayers}: multi-token prediction modules after the last block, on the last pipeline stage as the planner priced them" +
                   (m.Positions == PositionKind.Rotary ? "" : "; warning: Megatron allows them only with rope or no position embedding"));
        }
        if (m.Moe is { } moe)
            Experts(moe, m, x, a);
        a.Note($"vocabulary ({m.Vocab} tokens) comes from the tokenizer: add --tokenizer-type and --tokenizer-model for '{m.Name}'");
    }

    private static void LatentAttention(MlaSpec mla, MegatronArgs a)
    {
        a.Flag("--multi-latent-attention");
        if (mla.QLoraRank > 0)
            a.Arg("--q-lora-rank", mla.QLoraRank);
        a.Arg("--kv-lora-rank", mla.KvLoraRank);
        a.Arg("--qk-head-dim", mla.QkNopeHeadDim);
        a.Arg("--qk-pos-emb-head-dim", mla.QkRopeHeadDim);
        a.Arg("--v-head-dim", mla.VHeadDim);
        a.Note("multi-head latent attention: --qk-head-dim is the per-head query/key width without position (qk_nope_head_dim), --qk-pos-emb-head-dim the rotary part" +
               (mla.QLoraRank > 0 ? "" : "; q_lora_rank 0 projects queries directly, Megatron's default when --q-lora-rank is not given"));
    }

    private static void SlidingWindow(SlidingWindow w, ModelSpec m, MegatronArgs a)
    {
        a.Flag("--window-size", $"{w.Window.ToString(CultureInfo.InvariantCulture)},0");
        int windowed = w.Layers.Count(l => l);
        if (windowed < m.Layers)
        {
            a.Flag("--window-attn-skip-freq", $"\"{LayerPattern.Expression(w.Layers)}\"");
            a.Note($"sliding window: --window-size {w.Window},0 lets each query see the {w.Window} keys before it; --window-attn-skip-freq marks the {windowed} windowed blocks with 1 and the {m.Layers - windowed} full-attention blocks with 0");
        }
        else
            a.Note($"sliding window: --window-size {w.Window},0 on every block");
    }

    private static void Experts(MoeSpec moe, ModelSpec m, ExportInput x, MegatronArgs a)
    {
        var p = x.Plan;
        a.Arg("--num-experts", moe.Experts);
        a.Arg("--moe-router-topk", moe.TopK);
        if (moe.ExpertFfn != m.Ffn)
            a.Arg("--moe-ffn-hidden-size", moe.ExpertFfn);
        if (moe.SharedFfn > 0)
            a.Arg("--moe-shared-expert-intermediate-size", moe.SharedFfn);
        if (moe.MoeLayers < m.Layers)
        {
            a.Flag("--moe-layer-freq", $"\"{LayerPattern.Expression(moe.Pattern)}\"");
            a.Note($"--moe-layer-freq: a Python list expression with 1 for each of the {moe.MoeLayers} MoE blocks and 0 for each of the {m.Layers - moe.MoeLayers} dense blocks (dense ffn {m.Ffn})");
        }
        // As priced: dropless plans whose tokens leave the rank dispatch through the flex dispatcher (one copy per rank
        // hit, DeepEP); token dropping, or tp·ep = 1, takes the all-to-all dispatcher, priced with one copy per routed expert.
        if (p.DeduplicatesDispatch(x.Software(a.Note).Moe.Dispatcher))
        {
            a.Flag("--moe-token-dispatcher-type", "flex");
            a.Flag("--moe-flex-dispatcher-backend", "deepep");
        }
        else
            a.Flag("--moe-token-dispatcher-type", "alltoall");
        a.Flag("--moe-router-load-balancing-type", "aux_loss");
        a.Flag("--moe-aux-loss-coeff", "1e-2");
        if (p.Precision.IsMixed() && p.Precision != Precision.Fp16)
            a.Flag("--moe-grouped-gemm");
        else
            a.Note($"warning: --moe-grouped-gemm needs --bf16 in Megatron, so the {p.Precision.Name()} plan runs each local expert's GEMMs one by one, slower than the planner priced");
        if (p.Precision == Precision.Fp16 && p.Ep > 1)
            a.Note($"warning: Megatron refuses expert parallelism with fp16 training ('Expert parallelism is not supported with fp16 training'); export the plan with bf16");
        a.Note($"MoE: {moe.Experts} experts of ffn {moe.ExpertFfn}, top-{moe.TopK}{(moe.SharedFfn > 0 ? $", shared experts of ffn {moe.SharedFfn}" : "")}; " +
               (p.MoeCapacity is null
                   ? "the flex dispatcher with DeepEP sends each token once to each expert-parallel rank that holds one of its experts, as priced (hybridep suits NVL72 racks; Megatron versions before the flex backends take --moe-enable-deepep); "
                   : "token dropping needs the alltoall dispatcher, which sends one copy per routed expert, as priced; ") +
               "aux_loss with coefficient 1e-2 (Megatron's default coefficient is 0, no balancing); the model's own router recipe (score function, group-limited routing, expert bias) is not in the planner's model and is added by hand");
        if (p.MoeCapacity is double capacity)
        {
            a.Number("--moe-expert-capacity-factor", capacity);
            a.Flag("--moe-token-drop-policy", "probs");
            a.Note($"token dropping: each expert takes at most {capacity.ToString("0.####", CultureInfo.InvariantCulture)} times its mean load, the lowest-probability tokens beyond it are dropped; " +
                   "--moe-pad-expert-input-to-capacity is not set: padding every expert to its capacity would run more tokens than the planner priced for the busiest expert");
        }
        else
            a.Note("dropless: no --moe-expert-capacity-factor, every routed token is processed");
        a.Note(p.MoeImbalance == 1
            ? "the planner priced balanced routing (each expert at its mean load), as published benchmarks force with --moe-router-force-load-balancing (experimental, benchmarking only)"
            : $"the planner priced the busiest expert at {p.MoeImbalance.ToString("0.##", CultureInfo.InvariantCulture)} times the mean load");
    }
}
