using Planner.CostModel.Plans;

namespace Planner.CostModel.Specs;

/// <summary>How tensor parallelism splits a linear layer (Megatron-LM: "A = [A1 ... Ap]").</summary>
public enum LinearSplit
{
    /// <summary>Column-parallel: the output features split over the ranks (Q, K, V, gate, up).</summary>
    Column,
    /// <summary>Row-parallel: the input features split over the ranks (the attention output, down).</summary>
    Row,
    /// <summary>Whole on every rank (latent attention's down projections, the router).</summary>
    Replicated,
}

/// <summary>One linear layer of a block: a weight of <see cref="In"/> × <see cref="Out"/>, repeated
/// <see cref="Copies"/> times (a MoE block's routed experts), and the LoRA target it answers to (0: none).</summary>
public sealed record Linear(string Name, double In, double Out, LinearSplit Split, LoraTargets Target, bool Expert = false, int Copies = 1)
{
    /// <summary>The tensor-parallel degree that splits it: expert TP for a routed expert, else TP.</summary>
    private static int Degree(bool expert, int tp, int etp) => expert ? etp : tp;

    /// <summary>Input features on one rank.</summary>
    public double LocalIn(int tp, int etp) => Split == LinearSplit.Row ? In / Degree(Expert, tp, etp) : In;

    /// <summary>Output features on one rank.</summary>
    public double LocalOut(int tp, int etp) => Split == LinearSplit.Column ? Out / Degree(Expert, tp, etp) : Out;

    /// <summary>Copies on one rank: the routed experts split over the expert-parallel ranks.</summary>
    public double LocalCopies(int ep) => Expert ? (double)Copies / ep : Copies;

    /// <summary>Weights on one rank.</summary>
    public double LocalWeights(int tp, int ep, int etp) => LocalCopies(ep) * LocalIn(tp, etp) * LocalOut(tp, etp);

    /// <summary>
    /// LoRA's weights on one rank for rank <paramref name="r"/>: A (r × in) and B (out × r) per copy, split with the base
    /// (Hu et al. 2021; a column-parallel layer splits B by its outputs and keeps A whole, a row-parallel layer splits A
    /// by its inputs and keeps B whole, as PEFT's Megatron LoRA layers do).
    /// </summary>
    public double LocalAdapter(int r, int tp, int ep, int etp) => LocalCopies(ep) * r * (LocalIn(tp, etp) + LocalOut(tp, etp));

    /// <summary>True when LoRA adapts this layer under <paramref name="targets"/>.</summary>
    public bool Targeted(LoraTargets targets) => (Target & targets) != 0;
}

/// <summary>The linear layers of a block of a model (what LoRA adapts, QLoRA quantizes and Adafactor factors).</summary>
public static class BlockLinears
{
    /// <summary>The linear layers of a block of <paramref name="kind"/>, unsplit; their weights sum to the block's
    /// weights less its norms and biases.</summary>
    public static IReadOnlyList<Linear> Of(ModelSpec m, LayerKind kind)
    {
        double h = m.Hidden;
        var list = new List<Linear>();
        if (m.Mla is { } a)
        {
            double heads = m.Heads;
            if (a.QLoraRank > 0)
            {
                list.Add(new("q_down", h, a.QLoraRank, LinearSplit.Replicated, LoraTargets.Q));
                list.Add(new("q_up", a.QLoraRank, heads * a.QkHeadDim, LinearSplit.Column, LoraTargets.Q));
            }
            else
                list.Add(new("q", h, heads * a.QkHeadDim, LinearSplit.Column, LoraTargets.Q));
            list.Add(new("kv_down", h, a.KvLoraRank + a.QkRopeHeadDim, LinearSplit.Replicated, LoraTargets.K | LoraTargets.V));
            list.Add(new("kv_up", a.KvLoraRank, heads * (a.QkNopeHeadDim + a.VHeadDim), LinearSplit.Column, LoraTargets.K | LoraTargets.V));
            list.Add(new("o", heads * a.VHeadDim, h, LinearSplit.Row, LoraTargets.O));
        }
        else
        {
            double q = (double)m.Heads * m.HeadDim;
            list.Add(new("q", h, q, LinearSplit.Column, LoraTargets.Q));
            list.Add(new("k", h, m.KvDim, LinearSplit.Column, LoraTargets.K));
            list.Add(new("v", h, m.KvDim, LinearSplit.Column, LoraTargets.V));
            list.Add(new("o", q, h, LinearSplit.Row, LoraTargets.O));
        }
        if (kind.Moe)
        {
            var moe = m.Moe!;
            list.Add(new("router", h, moe.Experts, LinearSplit.Replicated, 0));
            if (moe.SharedFfn > 0)
                Mlp(m, list, "shared_", moe.SharedFfn, expert: false, copies: 1);
            Mlp(m, list, "expert_", moe.ExpertFfn, expert: true, copies: moe.Experts);
        }
        else
            Mlp(m, list, "", m.Ffn, expert: false, copies: 1);
        return list;
    }

    private static void Mlp(ModelSpec m, List<Linear> list, string prefix, double ffn, bool expert, int copies)
    {
        double h = m.Hidden;
        if (m.Mlp == MlpKind.SwiGlu)
            list.Add(new(prefix + "gate", h, ffn, LinearSplit.Column, LoraTargets.Gate, expert, copies));
        list.Add(new(prefix + "up", h, ffn, LinearSplit.Column, LoraTargets.Up, expert, copies));
        list.Add(new(prefix + "down", ffn, h, LinearSplit.Row, LoraTargets.Down, expert, copies));
    }

    /// <summary>LoRA's weights on one rank in a block of <paramref name="kind"/> (dense, routed experts).</summary>
    public static (double Dense, double Expert) Adapters(ModelSpec m, LayerKind kind, FineTuning t, int tp, int ep, int etp)
    {
        double dense = 0, expert = 0;
        foreach (var l in Of(m, kind))
            if (l.Targeted(t.Targets))
            {
                double n = l.LocalAdapter(t.Rank, tp, ep, etp);
                if (l.Expert)
                    expert += n;
                else
                    dense += n;
            }
        return (dense, expert);
    }

    /// <summary>
    /// Bytes of model state of the whole model under a fine-tuning setting (null: full training with AdamW), for
    /// estimates: each trainable weight 16-bit with its 16-bit gradient, an fp32 master and the optimizer's state (2 + 2
    /// + 4 + 8 = 16 bytes with AdamW, Rajbhandari et al. 2020; QLoRA's adapters no master); a frozen base its 16-bit
    /// weights, QLoRA's linear layers in NF4.
    /// </summary>
    public static double ModelStateBytes(ModelSpec m, FineTuning? tuning)
    {
        var t = tuning ?? FineTuning.Default;
        double perTrainable = 2 + 2 + (t.MasterCopy ? 4 : 0) + FineTuning.StateBytes(t.Optimizer);
        if (!t.Adapters)
            return m.TotalParams * perTrainable;
        double linears = 0;
        for (int l = 0; l < m.Layers; l++)
            linears += Of(m, m.KindOf(l)).Sum(x => x.Copies * x.In * x.Out);
        double frozen = t.QuantizedBase ? linears * FineTuning.Nf4BytesPerWeight + (m.TotalParams - linears) * 2 : m.TotalParams * 2.0;
        return frozen + ModelAdapters(m, t) * perTrainable;
    }

    /// <summary>LoRA's weights in the whole model (every block once, no parallelism).</summary>
    public static double ModelAdapters(ModelSpec m, FineTuning t)
    {
        if (!t.Adapters)
            return 0;
        double sum = 0;
        for (int l = 0; l < m.Layers; l++)
        {
            var (d, x) = Adapters(m, m.KindOf(l), t, 1, 1, 1);
            sum += d + x;
        }
        if (m.MtpLayers > 0)
        {
            var (d, x) = Adapters(m, m.MtpKind, t, 1, 1, 1);
            sum += m.MtpLayers * (d + x);
        }
        return sum;
    }
}
