using System.Globalization;
using System.Text;
using Planner.CostModel.Plans;
using Planner.CostModel.Specs;

namespace Planner.Cli.Export;

/// <summary>
/// A plan as a torchtitan TOML job config (<c>--job.config_file</c>): comment lines first, then the
/// <c>[model]</c> (quantized precisions only), <c>[parallelism]</c>, <c>[training]</c>, <c>[activation_checkpoint]</c>
/// (an optimizer other than AdamW only) <c>[optimizer]</c> and (fp8 only) <c>[float8]</c> tables, one <c>key = value</c> per line.
/// </summary>
/// <remarks>
/// Keys checked against pytorch/torchtitan <c>torchtitan/config/job_config.py</c> (the TOML job-config schema,
/// commit 000204a): <c>[parallelism]</c> <c>data_parallel_replicate_degree</c>, <c>data_parallel_shard_degree</c>,
/// <c>fsdp_reshard_after_forward {default,always,never}</c>, <c>tensor_parallel_degree</c>,
/// <c>pipeline_parallel_degree</c>, <c>pipeline_parallel_split_points</c>, <c>pipeline_parallel_schedule</c>,
/// <c>pipeline_parallel_microbatch_size</c>, <c>context_parallel_degree</c>; <c>[training]</c>
/// <c>local_batch_size</c> ("per-device batch size"; it replaced the older <c>batch_size</c>),
/// <c>global_batch_size</c> (default local_batch_size × data-parallel degree; above that torchtitan accumulates
/// gradients), <c>seq_len</c>, <c>mixed_precision_param {bfloat16,float32}</c>; <c>[activation_checkpoint]</c>
/// <c>mode {selective,full,none}</c>, <c>selective_ac_option</c>; <c>[model]</c> <c>converters</c> ("float8", and
/// "mx" registered in <c>torchtitan/components/quantization/mx.py</c>); <c>[parallelism]</c>
/// <c>expert_parallel_degree</c> ("dp2ep", experimental); <c>[float8]</c> <c>recipe_name
/// {tensorwise,rowwise,rowwise_with_gw_hp}</c>, <c>filter_fqns</c>, <c>moe_fqns_prototype</c>; <c>[mx]</c>
/// <c>recipe_name</c>, <c>filter_fqns</c> (default ["output"]). Later TOML releases add
/// <c>expert_tensor_parallel_degree</c> (etp 1 or tp; e.g. <c>torchtitan/models/deepseek_v3/train_configs/deepseek_v3_671b.toml</c>)
/// and move the quantization tables under <c>[quantize...]</c>; torchtitan MoE (<c>MoEArgs</c>) is dropless, without a
/// capacity factor; NVFP4 exists only on main's Python configs (<c>torchtitan/components/quantization/nvfp4.md</c>).
/// torchtitan's main branch has since moved to Python configurations (<c>torchtitan/config/configuration.md</c>)
/// whose <c>ParallelismConfig</c> keeps these degree names but counts micro-batches (<c>num_pp_microbatches</c>)
/// instead of sizing them; the header comment of the output says so.
/// </remarks>
public static class TorchtitanExporter
{
    /// <summary>Renders the TOML text.</summary>
    /// <remarks>Long: one file written top to bottom, section by section in the order torchtitan reads them.</remarks>
    public static string Render(ExportInput x)
    {
        var p = x.Plan;
        var m = x.Model;
        if (p.Precision == Precision.Fp16)
            throw new InputException($"{x.Source}: key 'precision' is fp16; torchtitan trains with bfloat16 or float32 parameters only (training.mixed_precision_param), so export the plan with bf16 or fp32");

        var notes = new List<string>();
        if (x.UnresolvedNote() is { } unresolved)
            notes.Add(unresolved);
        if (x.StackNote("torchtitan", "torchtitan") is { } stack)
            notes.Add(stack);
        var parallelism = new List<(string Key, string Value)>();
        var training = new List<(string Key, string Value)>();
        var checkpoint = new List<(string Key, string Value)>();
        var model = new List<(string Key, string Value)>();
        var float8 = new List<(string Key, string Value)>();
        static string Int(long v) => v.ToString(CultureInfo.InvariantCulture);
        static string Str(string s) => "\"" + s.Replace("\\", "\\\\").Replace("\"", "\\\"") + "\"";

        // Data parallelism: ZeRO ≥ 1 is FSDP (shard), ZeRO 0 is DDP (replicate).
        if (p.Zero >= 1)
        {
            parallelism.Add(("data_parallel_replicate_degree", Int(1)));
            parallelism.Add(("data_parallel_shard_degree", Int(p.Dp)));
            if (p.Zero <= 2)
            {
                parallelism.Add(("fsdp_reshard_after_forward", Str("never")));
                notes.Add($"ZeRO-{p.Zero}: torchtitan's FSDP2 always shards parameters, gradients and optimizer state; fsdp_reshard_after_forward = \"never\" keeps the parameters gathered from forward to backward, the closest it has to ZeRO-{p.Zero} (less traffic, more memory than ZeRO-3)");
            }
            else
                notes.Add("ZeRO-3: torchtitan's FSDP2 (data_parallel_shard_degree) shards parameters, gradients and optimizer state");
        }
        else
        {
            parallelism.Add(("data_parallel_replicate_degree", Int(p.Dp)));
            parallelism.Add(("data_parallel_shard_degree", Int(1)));
            if (p.Dp > 1 && (p.Tp > 1 || p.Pp > 1 || p.Cp > 1))
                notes.Add("ZeRO-0 is DDP (data_parallel_replicate_degree); older torchtitan releases refuse DDP combined with TP, PP or CP ('DDP has not supported > 1D parallelism'): export a ZeRO-1+ plan for FSDP then");
        }
        if (p.OptimizerOffload > 0)
            notes.Add($"warning: the plan offloads {p.OptimizerOffload:0.##} of the optimizer state; torchtitan has no optimizer-only offload (training.enable_cpu_offload moves parameters, gradients and optimizer state to the host with FSDP2), so nothing is offloaded here and GPU memory will be above the planner's prediction");
        parallelism.Add(("tensor_parallel_degree", Int(p.Tp)));
        if (p.Tp > 1 && !p.SequenceParallel)
            notes.Add("torchtitan's tensor parallelism always shards norms and dropout along the sequence (sequence parallel); the plan has it off, so activation memory will be below the planner's prediction");
        parallelism.Add(("pipeline_parallel_degree", Int(p.Pp)));
        parallelism.Add(("pipeline_parallel_schedule", Str(p.Vpp > 1 ? "Interleaved1F1B" : "1F1B")));
        parallelism.Add(("pipeline_parallel_microbatch_size", Int(p.Mbs)));
        if (p.Pp > 1)
        {
            int chunks = p.Pp * p.Vpp;
            IReadOnlyList<int>? perStage = p.Vpp > 1
                ? (x.LayersPerVirtualStage() is int n ? Enumerable.Repeat(n, chunks).ToList() : null)
                : x.StageLayers();
            if (perStage is not null)
            {
                // Stage k starts at the layer after the first k stages' layers: the embedding joins the first
                // stage and the output layer the last, as the planner priced them.
                var starts = new List<string>();
                int at = 0;
                for (int k = 0; k < chunks - 1; k++)
                    starts.Add(Str($"layers.{at += perStage[k]}"));
                parallelism.Add(("pipeline_parallel_split_points", "[" + string.Join(", ", starts) + "]"));
                notes.Add($"pipeline_parallel_split_points: {chunks} stages of {string.Join("/", perStage.Distinct().Count() == 1 ? [perStage[0]] : perStage)} layers" +
                          $"{(p.Vpp > 1 ? $", {p.Vpp} per rank" : "")}, embedding on the first and output on the last, as the planner priced them");
            }
            else if (p.Vpp > 1)
                notes.Add($"vpp {p.Vpp}: set pipeline_parallel_split_points to {chunks - 1} points (\"layers.N\") for {chunks} stages; without them torchtitan's looped schedules use 2 stages per rank");
            else
                notes.Add("pipeline_parallel_split_points: without the model's layer count torchtitan splits automatically (embedding and output weighted as one layer each), which differs from the planner's even split");
        }
        parallelism.Add(("context_parallel_degree", Int(p.Cp)));
        if (m?.IsMoe == true || p.Ep > 1 || p.Etp > 1)
            ExpertParallelism(p, parallelism, notes);

        // Batch: with a pipeline, one local batch is a whole flush of the plan's micro-batches; without one,
        // torchtitan accumulates global_batch_size / (local_batch_size · dp) steps.
        int local = p.Pp > 1 ? p.Gbs / p.Dp : p.Mbs;
        training.Add(("local_batch_size", Int(local)));
        training.Add(("global_batch_size", Int(p.Gbs)));
        training.Add(("seq_len", Int(p.Seq)));
        training.Add(("mixed_precision_param", Str(p.Precision.IsMixed() ? "bfloat16" : "float32")));
        notes.Add(p.Pp > 1
            ? $"local_batch_size = gbs / dp = {local}: the {p.MicroBatches} micro-batches of size {p.Mbs} that one pipeline step runs (local_batch_size / pipeline_parallel_microbatch_size), no gradient accumulation"
            : $"local_batch_size = mbs = {p.Mbs}; torchtitan accumulates global_batch_size / (local_batch_size x dp) = {p.MicroBatches} steps");
        Quantization(p, m, model, float8, notes);
        var optimizer = Tuning(p.Tuning, notes);
        if (p.Precision == Precision.Tf32)
            notes.Add("tf32: float32 parameters; TF32 matmuls follow PyTorch's torch.backends.cuda.matmul.allow_tf32");

        if (x.PerStageRecomputeNote() is { } perStageRecompute)
            notes.Add(perStageRecompute);
        if (p.RecomputeLayers is { } kept && m is not null)
        {
            // torchtitan's layer-wise selective checkpointing takes every N-th block: N = blocks per chunk / k when
            // that divides, else the largest N that still recomputes at least k blocks (more memory headroom, more time).
            int perChunk = CostModel.Pricing.StageLayout.MostBlocksPerChunk(m.Layers, p.Pp, p.Vpp);
            int every = Math.Max(1, perChunk / kept);
            checkpoint.Add(("mode", Str(every == 1 ? "full" : "selective")));
            if (every > 1)
                checkpoint.Add(("selective_ac_option", Str(every.ToString(System.Globalization.CultureInfo.InvariantCulture))));
            int recomputed = (perChunk + every - 1) / every;
            notes.Add(recomputed == kept
                ? $"recompute {kept} of {perChunk} blocks per chunk: selective_ac_option = \"{every}\" checkpoints every {every}th block, as many as the plan (other blocks than its first {kept}, same cost)"
                : $"warning: recompute {kept} of {perChunk} blocks per chunk has no torchtitan equivalent; checkpointing every {every}th block recomputes {recomputed}, more than the planner priced");
        }
        else
            checkpoint.Add(("mode", Str(ParallelPlan.Name(x.RecomputePolicy))));
        if (x.RecomputePolicy == Recompute.Selective)
        {
            checkpoint.Add(("selective_ac_option", Str("op")));
            notes.Add("selective_ac_option = \"op\": per-operator selective recomputation (\"2\" would instead checkpoint every 2nd layer in full)");
        }
        if (m is not null)
            notes.Add($"[model] name and flavor: pick torchtitan's flavor of '{m.Name}' ({m.Layers} layers, hidden {m.Hidden}, {m.Heads} heads, {m.KvHeads} kv heads, ffn {m.Ffn}, vocab {m.Vocab}{Architecture(m)})" +
                      (m.IsMoe || m.Mla is not null || m.MtpLayers > 0 || m.Window is not null
                          ? "; the job config has no architecture keys: experts, latent attention, multi-token prediction and sliding windows exist only as far as the torchtitan model of that flavor implements them (its deepseek_v3 model has MLA and MoE), else the run is not the planned one"
                          : ""));

        var b = new StringBuilder();
        b.Append("# torchtitan job config (TOML, --job.config_file) for ").Append(ExportInput.OneLine(x.Summary())).Append('\n');
        b.Append("# keys: pytorch/torchtitan torchtitan/config/job_config.py (TOML schema: [training] local_batch_size and global_batch_size replaced batch_size);\n");
        b.Append("# torchtitan main now takes Python configs (torchtitan/config/configuration.md) with these [parallelism] names, num_pp_microbatches = local_batch_size / pipeline_parallel_microbatch_size\n");
        foreach (var note in notes)
            b.Append("# ").Append(ExportInput.OneLine(note)).Append('\n');
        void Table(string name, List<(string Key, string Value)> rows)
        {
            if (rows.Count == 0)
                return;
            b.Append('\n').Append('[').Append(name).Append("]\n");
            foreach (var (key, value) in rows)
                b.Append(key).Append(" = ").Append(value).Append('\n');
        }
        Table("model", model);
        Table("parallelism", parallelism);
        Table("training", training);
        Table("optimizer", optimizer);
        Table("activation_checkpoint", checkpoint);
        Table("float8", float8);
        return b.ToString();
    }

    /// <summary>
    /// The plan's optimizer and method as far as the TOML job config expresses them. job_config.py <c>[optimizer]
    /// name</c> (default "AdamW"): torchtitan/components/optimizer.py <c>build_optimizers</c> builds "Adam" or "AdamW"
    /// (torch.optim) and raises NotImplementedError("Optimizer {name} not added.") for any other name, so AdamW needs no
    /// key and the others are a warning over an explicit AdamW. The TOML schema has no LoRA key; torchtitan main's
    /// LoRAConverter (torchtitan/components/lora.py, Python configs only, rank and alpha) adapts every nn.Linear, and
    /// nothing in torchtitan stores a 4-bit NF4 base.
    /// </summary>
    private static List<(string Key, string Value)> Tuning(FineTuning t, List<string> notes)
    {
        var optimizer = new List<(string Key, string Value)>();
        if (t.Optimizer != OptimizerKind.AdamW)
        {
            optimizer.Add(("name", "\"AdamW\""));
            notes.Add($"warning: the plan steps with {FineTuning.Name(t.Optimizer)}; torchtitan's [optimizer] name builds Adam or AdamW only (any other name raises NotImplementedError), so this config runs AdamW, whose 8 bytes of state per trainable parameter are above the planner's prediction; " +
                      $"{FineTuningExport.Library(t.Optimizer)} needs a custom build_optimizers in the model's TrainSpec");
        }
        if (t.Adapters)
            notes.Add($"warning: the plan trains {FineTuning.Name(t.Method)} adapters (rank {t.Rank} on {FineTuning.Name(t.Targets)}); the TOML job config has no LoRA key, so this config trains every weight, far above the planner's memory prediction. " +
                      $"torchtitan main's Python configs have a LoRA converter (torchtitan/components/lora.py, rank {t.Rank}), which adapts every linear layer, the output layer included, not only the planned ones" +
                      (t.QuantizedBase ? "; torchtitan has no 4-bit NF4 base, so QLoRA's base stays bf16 there" : ""));
        return optimizer;
    }

    /// <summary>The parts of the architecture beyond the dense shape, for the flavor note (empty for a plain model).</summary>
    private static string Architecture(ModelSpec m)
    {
        var parts = new List<string>();
        if (m.HeadDimension is int headDim && m.Mla is null)
            parts.Add($"head_dim {headDim}");
        if (m.Moe is { } moe)
            parts.Add($"{moe.Experts} experts top-{moe.TopK} of ffn {moe.ExpertFfn}" + (moe.SharedFfn > 0 ? $", shared experts of ffn {moe.SharedFfn}" : "") +
                      (moe.MoeLayers < m.Layers ? $", MoE blocks {LayerPattern.Expression(moe.Pattern)}" : ""));
        if (m.Mla is { } mla)
            parts.Add($"MLA q_lora_rank {mla.QLoraRank}, kv_lora_rank {mla.KvLoraRank}, qk_nope_head_dim {mla.QkNopeHeadDim}, qk_rope_head_dim {mla.QkRopeHeadDim}, v_head_dim {mla.VHeadDim}");
        if (m.MtpLayers > 0)
            parts.Add($"{m.MtpLayers} multi-token-prediction module{(m.MtpLayers > 1 ? "s" : "")}");
        if (m.Window is { } w)
            parts.Add($"sliding window {w.Window} on {w.Layers.Count(l => l)} blocks");
        return parts.Count == 0 ? "" : ", " + string.Join(", ", parts);
    }

    /// <summary>
    /// torchtitan's expert parallelism borrows ranks from the FSDP (and with etp 1 the tensor-parallel) dimensions:
    /// with etp = tp, cp divides ep and ep divides dp_shard x cp; with etp = 1, cp x tp divides ep and ep divides
    /// dp_shard x cp x tp (job_config.py docstring of expert_parallel_degree).
    /// </summary>
    private static void ExpertParallelism(ParallelPlan p, List<(string Key, string Value)> parallelism, List<string> notes)
    {
        parallelism.Add(("expert_parallel_degree", p.Ep.ToString(CultureInfo.InvariantCulture)));
        if (p.MoeCapacity is double c)
            notes.Add($"warning: the plan drops tokens beyond {c.ToString("0.####", CultureInfo.InvariantCulture)} times an expert's mean load; torchtitan's MoE is dropless (no capacity factor), so the busiest expert may process more tokens than the planner priced");
        if (p.Ep == 1)
            return;
        parallelism.Add(("expert_tensor_parallel_degree", p.Etp.ToString(CultureInfo.InvariantCulture)));
        notes.Add($"expert_parallel_degree {p.Ep}, expert_tensor_parallel_degree {p.Etp}: the second key came after torchtitan commit 000204a (drop it there, where experts take the tp degree); torchtitan main's Python config dropped it again, with ep borrowing from FSDP and TP and at least tp");
        int shard = p.Zero >= 1 ? p.Dp : 1;
        bool fits = p.Etp == p.Tp
            ? p.Ep % p.Cp == 0 && shard * p.Cp % p.Ep == 0
            : p.Etp == 1 && p.Ep % (p.Cp * p.Tp) == 0 && shard * p.Cp * p.Tp % p.Ep == 0;
        if (!fits)
            notes.Add($"warning: torchtitan carves the expert-parallel group from data_parallel_shard_degree x context_parallel_degree{(p.Etp == 1 ? " x tensor_parallel_degree" : "")} and takes etp 1 or tp only; " +
                      $"ep {p.Ep} with etp {p.Etp} (tp {p.Tp}, cp {p.Cp}, dp_shard {shard}) does not fit that, so torchtitan will refuse this plan");
    }

    /// <summary>
    /// The quantized precisions as torchao converters: [float8] (recipe_name tensorwise, rowwise, rowwise_with_gw_hp;
    /// no delayed scaling) and [mx] (MXFP8); NVFP4 has no key in the TOML schema.
    /// </summary>
    private static void Quantization(ParallelPlan p, ModelSpec? m, List<(string Key, string Value)> model,
        List<(string Key, string Value)> float8, List<string> notes)
    {
        static string Str(string s) => "\"" + s + "\"";
        bool moe = m?.IsMoe == true;
        switch (p.Precision)
        {
            case Precision.Fp8:
            case Precision.Fp8Cs:
                model.Add(("converters", "[" + Str("float8") + "]"));
                float8.Add(("recipe_name", Str("tensorwise")));
                // The planner prices the blocks' linear layers in fp8 and the output layer (and the router) in bf16.
                float8.Add(("filter_fqns", moe ? $"[{Str("output")}, {Str("router.gate")}]" : $"[{Str("output")}]"));
                notes.Add(p.Precision == Precision.Fp8
                    ? "fp8: the float8 converter (torchao Float8Linear) over bfloat16 parameters; torchtitan has no delayed-scaling recipe (recipe_name: tensorwise, rowwise, rowwise_with_gw_hp), so tensorwise current scaling stands in for the planned delayed scaling (an amax reduction per cast)"
                    : "fp8-cs: the float8 converter (torchao Float8Linear) with recipe_name tensorwise, per-tensor current scaling, over bfloat16 parameters");
                if (moe)
                {
                    float8.Add(("moe_fqns_prototype", $"[{Str("experts")}]"));
                    notes.Add("float8.moe_fqns_prototype: the experts' grouped GEMMs in fp8 (rowwise), a torchao prototype that needs its nightly build");
                }
                break;
            case Precision.Mxfp8:
                model.Add(("converters", "[" + Str("mx") + "]"));
                notes.Add("mxfp8: the mx converter (torchao MXLinear) with its default MXFP8 recipe and filter_fqns [\"output\"], over bfloat16 parameters (Blackwell)" +
                          (moe ? "; the experts' grouped GEMMs need [mx] moe_fqns_prototype = [\"experts\"] (a prototype in releases after torchtitan commit 000204a), else they run in bf16, slower than planned" : ""));
                break;
            case Precision.Nvfp4:
                notes.Add("warning: nvfp4 has no key in the TOML job config; torchtitan main has an experimental NVFP4 (a torchao prototype, Blackwell) only through its Python configs (torchtitan/components/quantization/nvfp4.md), so this config trains the linear layers in bfloat16, slower than planned");
                break;
        }
    }
}
