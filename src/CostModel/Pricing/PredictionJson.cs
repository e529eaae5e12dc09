using System.Text.Json.Nodes;
using Planner.CostModel.Memory;
using Planner.CostModel.Plans;
using Planner.CostModel.Specs;

namespace Planner.CostModel.Pricing;

/// <summary>The JSON forms of CONTRACTS.md: the plan object and the <c>predict</c> keys.</summary>
public static class PredictionJson
{
    /// <summary>The plan object (without its prediction); <paramref name="stack"/> the software it is priced for.</summary>
    public static JsonObject Plan(ParallelPlan p, string model, string cluster, string stack)
    {
        var o = PlanFields(p, model, cluster);
        o["stack"] = stack;
        if (p.RecomputeLayers is { } k)
            o["recompute_layers"] = k;
        if (p.OptimizerOffload > 0)
            o["optimizer_offload"] = p.OptimizerOffload;
        if (p.Ep > 1 || p.Etp > 1)
        {
            o["ep"] = p.Ep;
            o["etp"] = p.Etp;
        }
        if (p.MoeImbalance != 1)
            o["moe_imbalance"] = p.MoeImbalance;
        if (p.MoeCapacity is double capacity)
            o["moe_capacity"] = capacity;
        if (p.FineTuning is { } t)
        {
            o["finetune"] = FineTuning.Name(t.Method);
            if (t.Adapters)
            {
                o["lora_rank"] = t.Rank;
                o["lora_targets"] = FineTuning.Name(t.Targets);
            }
            o["optimizer"] = FineTuning.Name(t.Optimizer);
        }
        if (p.Stages is { } st)
            o["stages"] = new JsonObject
            {
                ["layers"] = new JsonArray(st.Layers.Select(l => (JsonNode)l).ToArray()),
                ["recompute"] = new JsonArray(st.Recompute.Select(r => (JsonNode)ParallelPlan.Name(r)).ToArray()),
            };
        if (p.Stages?.Groups is { } groups)
            ((JsonObject)o["stages"]!)["groups"] = new JsonArray(groups.Select(g => (JsonNode)g).ToArray());
        return o;
    }

    private static JsonObject PlanFields(ParallelPlan p, string model, string cluster) => new()
    {
        ["model"] = model,
        ["cluster"] = cluster,
        ["tp"] = p.Tp,
        ["pp"] = p.Pp,
        ["dp"] = p.Dp,
        ["cp"] = p.Cp,
        ["zero"] = p.Zero,
        ["mbs"] = p.Mbs,
        ["gbs"] = p.Gbs,
        ["seq"] = p.Seq,
        ["vpp"] = p.Vpp,
        ["recompute"] = ParallelPlan.Name(p.Recompute),
        ["sequence_parallel"] = p.SequenceParallel,
        ["precision"] = p.Precision.Name(),
    };

    /// <summary>The predict keys, with the plan as priced under <c>plan</c>.</summary>
    public static JsonObject Prediction(Prediction r)
    {
        var b = r.Breakdown;
        var peak = r.PeakStage;
        return new JsonObject
        {
            ["stack"] = r.Stack,
            ["step_time_s"] = r.StepTimeSeconds,
            ["tokens_per_s"] = r.TokensPerSecond,
            ["model_tflops_per_gpu"] = r.ModelTflopsPerGpu,
            ["hardware_tflops_per_gpu"] = r.HardwareTflopsPerGpu,
            ["mfu"] = r.Mfu,
            ["peak_memory_gib"] = r.PeakMemoryGib,
            ["gpu_memory_gib"] = r.GpuMemoryGib,
            ["fits"] = r.Fits,
            ["parameters"] = r.Parameters,
            ["trainable_parameters"] = r.TrainableParameters,
            ["breakdown"] = new JsonObject
            {
                ["compute"] = b.Compute,
                ["recompute"] = b.Recompute,
                ["tp_comm"] = b.TpComm,
                ["cp_comm"] = b.CpComm,
                ["ep_comm"] = b.EpComm,
                ["pp_comm"] = b.PpComm,
                ["dp_comm"] = b.DpComm,
                ["bubble"] = b.Bubble,
                ["optimizer"] = b.Optimizer,
            },
            ["memory_gib"] = Memory(peak),
            ["memory_by_stage_gib"] = new JsonArray(r.MemoryByStage.Select(s => (JsonNode)(s.Total / Units.GiB)).ToArray()),
            ["plan"] = Plan(r.Plan, r.Model, r.Cluster, r.Stack),
        };
    }

    private static JsonObject Memory(MemoryBreakdown m)
    {
        var o = Parts(m);
        if (m.Adapters is { } a)
            o["adapters"] = new JsonObject
            {
                ["weights"] = a.Weights / Units.GiB,
                ["gradients"] = a.Gradients / Units.GiB,
                ["optimizer"] = a.Optimizer / Units.GiB,
                ["activations"] = a.Activations / Units.GiB,
            };
        return o;
    }

    private static JsonObject Parts(MemoryBreakdown m) => new()
    {
        ["stage"] = m.Stage,
        ["weights"] = m.Weights / Units.GiB,
        ["gradients"] = m.Gradients / Units.GiB,
        ["optimizer"] = m.Optimizer / Units.GiB,
        ["activations"] = m.Activations / Units.GiB,
        ["working"] = m.Working / Units.GiB,
        ["buffers"] = m.Buffers / Units.GiB,
        ["overhead"] = m.Overhead / Units.GiB,
        ["in_flight"] = m.InFlight,
        ["host"] = m.Host / Units.GiB,
    };
}
