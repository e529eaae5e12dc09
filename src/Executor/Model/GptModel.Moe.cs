using Planner.Executor.Torch;

namespace Planner.Executor.Model;

/// <summary>The mixture-of-experts MLP of a block (the layers of <c>MoeSpec.Pattern</c>).</summary>
public sealed partial class GptModel
{
    /// <summary>The load-balancing loss's coefficient (Switch Transformer's α = 0.01, Fedus et al. 2021; Mixtral's
    /// router_aux_loss_coef in Hugging Face Transformers is 0.02, Qwen-MoE's 0.001).</summary>
    public const double AuxLossCoefficient = 0.01;

    /// <summary>The factor the main loss's backward starts from (the loss scale over the micro-batches): the
    /// load-balancing loss's gradient is <see cref="AuxLossCoefficient"/> times it. Set by the trainer before a forward.</summary>
    public double AuxLossScale { get; set; } = 1;

    /// <summary>The sum of the load-balancing losses (each E·Σ_e f_e·P_e, without the coefficient) of every MoE block
    /// forward so far, for reports: a reader takes the difference around a forward.</summary>
    public double AuxLossTotal { get; private set; }

    private readonly List<double> _routingLoads = [];

    /// <summary>Each MoE block forward records its busiest expert load for <see cref="TakeRoutingLoads"/> (the trainer
    /// turns it on; off, nothing accumulates).</summary>
    public bool RecordsRouting { get; set; }

    /// <summary>Each MoE block forward's busiest expert load over the mean (<see cref="Dispatched.BusiestLoad"/>) since
    /// the last call, in the order they ran; the list is then emptied.</summary>
    public double[] TakeRoutingLoads()
    {
        var loads = _routingLoads.ToArray();
        _routingLoads.Clear();
        return loads;
    }

    /// <summary>Where the routed rows are computed (<see cref="ExpertDispatch.Local"/> until expert parallelism sets it).</summary>
    public ExpertDispatch Dispatch { get; set; } = ExpertDispatch.Local;

    /// <summary>
    /// A MoE block's MLP on the normed activations <paramref name="outside"/> ([batch, tokens here, hidden]), returning
    /// its output (out of the tensor-parallel region) and the block's load-balancing loss. What needs the activations
    /// inside the region (every token of the sequence: experts split like the dense MLP, the shared expert) enters it. The router (replicated)
    /// scores the tokens outside the region, softmax in fp32. Each token goes to its top-k experts (ties to the lower
    /// index) with their probabilities renormalised to sum to 1 (Mixtral's routing; Qwen2-MoE's with norm_topk_prob);
    /// every routed token is computed (dropless), where <see cref="Dispatch"/> sends it. Experts split like the dense
    /// MLP (<see cref="ModelHooks.SplitsExperts"/>) compute the region's rows: the probabilities enter the region as
    /// activations do and the weighted outputs, partial sums, leave it together. Experts held whole compute the rows
    /// this process holds outside the region (its part of the sequence, <see cref="ModelHooks.OwnTokens"/>), whose
    /// outputs are complete. The shared expert's gated MLP is added
    /// unweighted (DeepSeek-MoE's; Qwen2-MoE's sigmoid gate of it is not built).
    /// </summary>
    private (Tensor Output, Tensor Aux) MoeMlp(string p, Tensor outside)
    {
        var moe = _m.Moe!;
        Tensor? entered = null;
        Tensor Inside() => entered ??= Hooks.Enter(outside);
        var local = F.Linear(outside, W(p + "mlp.router.w")).To(DType.Float32).Softmax(2);
        bool split = Hooks.SplitsExperts;
        var x = split ? Inside() : Hooks.OwnTokens(outside);
        long b = x.Shape[0], s = x.Shape[1], hidden = x.Shape[2], tokens = b * s;
        var probs = (split ? Hooks.Enter(local) : Hooks.OwnTokens(local)).Reshape(tokens, moe.Experts);
        var host = HostValues(probs);
        var route = new MoeRouting(host, tokens, moe.Experts, moe.TopK);
        var device = x.Device;
        var top = probs.Gather(1, Tensor.From(route.Choice, tokens, moe.TopK).On(device));
        var weights = (top / top.Sum([1], keepDim: true)).To(Compute);

        var flat = x.Reshape(tokens, hidden);
        var rows = F.Embedding(flat, Tensor.From(route.Order, route.Order.Length).On(device));
        var (joined, busiest) = Dispatch.Run(rows, route.Counts, (e, xe) => Expert($"{p}mlp.experts.{e}.", xe));
        if (RecordsRouting)
            _routingLoads.Add(busiest);
        Tensor? y = null;
        for (int j = 0; j < moe.TopK; j++)
        {
            var term = F.Embedding(joined, Tensor.From(route.Position[j], tokens).On(device)) * weights.Narrow(1, j, 1);
            y = y is null ? term : y + term;
        }
        var output = split ? Hooks.Leave(y!.View(b, s, hidden)) : Hooks.AllTokens(y!.View(b, s, hidden));
        if (moe.SharedFfn > 0)
        {
            var shared = Column(p + "mlp.shared_gate", outside, Inside()).Silu() * Column(p + "mlp.shared_up", outside, Inside());
            output = output + Row(p + "mlp.shared_down", shared);
        }
        // The load-balancing loss counts every token of the micro-batch: where this process routed only its part of the
        // sequence, the others' probabilities are gathered (without a gradient) to count the experts' loads.
        long all = tokens;
        if (!split)
        {
            using var detached = local.Detach();
            var gathered = Hooks.Enter(detached); // the same tensor where this process routed every token
            all = gathered.Shape[0] * gathered.Shape[1];
            if (all != tokens)
            {
                host = HostValues(gathered);
                route = new MoeRouting(host, all, moe.Experts, moe.TopK);
            }
        }
        AuxLossTotal += AuxValue(host, route);
        return (output, LoadBalancingLoss(local, route, all));
    }

    private static float[] HostValues(Tensor t)
    {
        using var detached = t.Detach();
        return detached.ToFloatArray();
    }

    /// <summary>A routed expert's gated MLP (parameters named from <paramref name="x"/>) on its rows.</summary>
    private Tensor Expert(string x, Tensor rows)
    {
        var inner = F.Linear(rows, W(x + "gate.w")).Silu() * F.Linear(rows, W(x + "up.w"));
        return F.Linear(inner, W(x + "down.w"));
    }

    /// <summary>
    /// Switch Transformer's load-balancing loss over the micro-batch's tokens, E·Σ_e f_e·P_e (Fedus et al. 2021,
    /// eq. 4): f_e the share of the (token, slot) assignments expert e receives (not differentiable), P_e its mean
    /// router probability over all <paramref name="tokens"/>. 1 when both are uniform. (Hugging Face's Mixtral counts
    /// f_e per slot, summing to k: k times this.) Taken over this rank's tokens <paramref name="local"/>: under sequence
    /// parallelism a part of it, whose router gradients the TP sum of replicated parameters completes.
    /// </summary>
    private static Tensor LoadBalancingLoss(Tensor local, MoeRouting route, long tokens)
    {
        var load = Tensor.From(route.Load(), route.Experts).On(local.Device);
        return (local.Sum([0, 1]) * load).Sum() * ((double)route.Experts / tokens);
    }

    /// <summary>The load-balancing loss's value over all the tokens (<paramref name="probs"/> [tokens, experts]).</summary>
    private static double AuxValue(float[] probs, MoeRouting route)
    {
        var load = route.Load();
        long tokens = probs.Length / route.Experts;
        double sum = 0;
        for (long i = 0; i < probs.Length; i++)
            sum += probs[i] * load[i % route.Experts];
        return sum * route.Experts / tokens;
    }
}
