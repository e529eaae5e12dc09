using System.Globalization;
using System.Text;
using Planner.CostModel.Plans;
using Planner.CostModel.Specs;

namespace Planner.Cli.Export;

/// <summary>
/// A plan as a torchtitan TOML job config (<c>--job.config_file</c>): comment lines first, then the
/// <c>[model]</c> (fp8 only), <c>[parallelism]</c>, <c>[training]</c> and <c>[activation_checkpoint]</c> tables,
/// one <c>key = value</c> per line.
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
/// <c>mode {selective,full,none}</c>, <c>selective_ac_option</c>; <c>[model]</c> <c>converters</c>.
/// torchtitan's main branch has since moved to Python configurations (<c>torchtitan/config/configuration.md</c>)
/// whose <c>ParallelismConfig</c> keeps these degree names but counts micro-batches (<c>num_pp_microbatches</c>)
/// instead of sizing them; the header comment of the output says so.
/// </remarks>
public static class TorchtitanExporter
{
    /// <summary>Renders the TOML text.</summary>
    public static string Render(ExportInput x)
    {
        var p = x.Plan;
        var m = x.Model;
        if (p.Precision == Precision.Fp16)
            throw new InputException($"{x.Source}: key 'precision' is fp16; torchtitan trains with bfloat16 or float32 parameters only (training.mixed_precision_param), so export the plan with bf16 or fp32");

        var notes = new List<string>();
        if (x.UnresolvedNote() is { } unresolved)
            notes.Add(unresolved);
        var parallelism = new List<(string Key, string Value)>();
        var training = new List<(string Key, string Value)>();
        var checkpoint = new List<(string Key, string Value)>();
        var model = new List<(string Key, string Value)>();
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

        // Batch: with a pipeline, one local batch is a whole flush of the plan's micro-batches; without one,
        // torchtitan accumulates global_batch_size / (local_batch_size · dp) steps.
        int local = p.Pp > 1 ? p.Gbs / p.Dp : p.Mbs;
        training.Add(("local_batch_size", Int(local)));
        training.Add(("global_batch_size", Int(p.Gbs)));
        training.Add(("seq_len", Int(p.Seq)));
        training.Add(("mixed_precision_param", Str(p.Precision is Precision.Bf16 or Precision.Fp8 ? "bfloat16" : "float32")));
        notes.Add(p.Pp > 1
            ? $"local_batch_size = gbs / dp = {local}: the {p.MicroBatches} micro-batches of size {p.Mbs} that one pipeline step runs (local_batch_size / pipeline_parallel_microbatch_size), no gradient accumulation"
            : $"local_batch_size = mbs = {p.Mbs}; torchtitan accumulates global_batch_size / (local_batch_size x dp) = {p.MicroBatches} steps");
        if (p.Precision == Precision.Fp8)
        {
            model.Add(("converters", "[" + Str("float8") + "]"));
            notes.Add("fp8: the float8 converter (torchao Float8Linear) over bfloat16 parameters");
        }
        if (p.Precision == Precision.Tf32)
            notes.Add("tf32: float32 parameters; TF32 matmuls follow PyTorch's torch.backends.cuda.matmul.allow_tf32");

        if (x.PerStageRecomputeNote() is { } perStageRecompute)
            notes.Add(perStageRecompute);
        if (p.RecomputeLayers is { } kept && m is not null)
        {
            // torchtitan's layer-wise selective checkpointing takes every N-th block: N = blocks per chunk / k when
            // that divides, else the largest N that still recomputes at least k blocks (more memory headroom, more time).
            int perChunk = (m.Layers + p.Pp * p.Vpp - 1) / (p.Pp * p.Vpp);
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
            notes.Add($"[model] name and flavor: pick torchtitan's flavor of '{m.Name}' ({m.Layers} layers, hidden {m.Hidden}, {m.Heads} heads, {m.KvHeads} kv heads, ffn {m.Ffn}, vocab {m.Vocab})");

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
        Table("activation_checkpoint", checkpoint);
        return b.ToString();
    }
}
