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

    /// <summary>
    /// A MoE block's MLP on the normed activations <paramref name="outside"/> ([batch, tokens, hidden]) and their entry
    /// into the tensor-parallel region <paramref name="inside"/>, returning its output (out of the region) and the
    /// block's load-balancing loss. The router (replicated) scores the tokens outside the region, so that its gradients
    /// are whole on every rank; softmax in fp32; each token's top-k experts (ties to the lower index), their
    /// probabilities renormalised to sum to 1 (Mixtral's routing; Qwen2-MoE's norm_topk_prob); every routed token is
    /// computed (dropless). The experts' partial outputs leave the region together before they are weighted, so that
    /// the weights' gradients are whole too. The shared expert's gated MLP is added unweighted (DeepSeek-MoE's).
    /// </summary>
    private (Tensor Output, Tensor Aux) MoeMlp(string p, Tensor outside, Tensor inside)
    {
        var moe = _m.Moe!;
        long b = outside.Shape[0], s = outside.Shape[1], hidden = outside.Shape[2], tokens = b * s;
        var logits = F.Linear(outside, W(p + "mlp.router.w")).To(DType.Float32).Reshape(tokens, moe.Experts);
        var probs = logits.Softmax(1);
        float[] host;
        using (var detached = probs.Detach())
            host = detached.ToFloatArray();
        var route = new MoeRouting(host, tokens, moe.Experts, moe.TopK);
        var device = outside.Device;
        var top = probs.Gather(1, Tensor.From(route.Choice, tokens, moe.TopK).On(device));
        var weights = (top / top.Sum([1], keepDim: true)).To(Compute);

        var flat = inside.Reshape(tokens, hidden);
        var parts = new List<Tensor>(moe.Experts);
        for (int e = 0; e < moe.Experts; e++)
        {
            string x = $"{p}mlp.experts.{e}.";
            var xe = F.Embedding(flat, Tensor.From(route.TokensOf[e], route.TokensOf[e].Length).On(device));
            var inner = F.Linear(xe, W(x + "gate.w")).Silu() * F.Linear(xe, W(x + "up.w"));
            parts.Add(F.Linear(inner, W(x + "down.w")));
        }
        var joined = Tensor.Cat(parts, 0);
        var outputs = Hooks.Leave(joined.View(1, joined.Shape[0], hidden)).View(joined.Shape[0], hidden);
        Tensor? y = null;
        for (int j = 0; j < moe.TopK; j++)
        {
            var rows = F.Embedding(outputs, Tensor.From(route.Position[j], tokens).On(device));
            var term = rows * weights.Narrow(1, j, 1);
            y = y is null ? term : y + term;
        }
        var output = y!.View(b, s, hidden);
        if (moe.SharedFfn > 0)
        {
            var shared = Column(p + "mlp.shared_gate", outside, inside).Silu() * Column(p + "mlp.shared_up", outside, inside);
            output = output + Row(p + "mlp.shared_down", shared);
        }
        return (output, LoadBalancingLoss(probs, route, device));
    }

    /// <summary>
    /// Switch Transformer's load-balancing loss over the micro-batch's tokens, E·Σ_e f_e·P_e (Fedus et al. 2021,
    /// eq. 4): f_e the share of the (token, slot) assignments expert e receives (not differentiable), P_e its mean
    /// router probability. 1 when both are uniform. (Hugging Face's Mixtral counts f_e per slot, summing to k: k times this.)
    /// </summary>
    private Tensor LoadBalancingLoss(Tensor probs, MoeRouting route, Device device)
    {
        var load = Tensor.From(route.Load(), route.Experts).On(device);
        var aux = (probs.Mean([0]) * load).Sum() * route.Experts;
        AuxLossTotal += aux.Item();
        return aux;
    }
}
