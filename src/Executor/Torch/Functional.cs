namespace Planner.Executor.Torch;

/// <summary>The layers of a GPT as functions (libtorch's kernels).</summary>
public static class F
{
    private static IntPtr Raw(Tensor? t) => t?.Handle.DangerousGetHandle() ?? IntPtr.Zero;

    // Optional tensors cross the boundary as raw pointers: keep them referenced for the call.
    private static Tensor Call(Tensor?[] optional, Func<int> call, Func<IntPtr> result)
    {
        var added = new bool[optional.Length];
        try
        {
            for (int i = 0; i < optional.Length; i++)
                optional[i]?.Handle.DangerousAddRef(ref added[i]);
            int status = call();
            return Tensor.From(status, result());
        }
        finally
        {
            for (int i = 0; i < optional.Length; i++)
                if (added[i])
                    optional[i]!.Handle.DangerousRelease();
        }
    }

    /// <summary>y = x·Wᵀ + b.</summary>
    public static Tensor Linear(Tensor x, Tensor weight, Tensor? bias = null)
    {
        IntPtr h = IntPtr.Zero;
        return Call([bias], () => Native.pt_linear(x.Handle, weight.Handle, Raw(bias), out h), () => h);
    }

    /// <summary>Rows of <paramref name="weight"/> picked by int64 <paramref name="indices"/>.</summary>
    public static Tensor Embedding(Tensor weight, Tensor indices) =>
        Tensor.From(Native.pt_embedding(weight.Handle, indices.Handle, out var h), h);

    /// <summary>LayerNorm over the last dimension.</summary>
    public static Tensor LayerNorm(Tensor x, Tensor? weight, Tensor? bias, double eps = 1e-5)
    {
        IntPtr h = IntPtr.Zero;
        return Call([weight, bias], () => Native.pt_layer_norm(x.Handle, Raw(weight), Raw(bias), eps, out h), () => h);
    }

    /// <summary>RMSNorm over the last dimension.</summary>
    public static Tensor RmsNorm(Tensor x, Tensor? weight, double eps = 1e-5)
    {
        IntPtr h = IntPtr.Zero;
        return Call([weight], () => Native.pt_rms_norm(x.Handle, Raw(weight), eps, out h), () => h);
    }

    /// <summary>Causal scaled-dot-product attention on [batch, heads, seq, head_dim].</summary>
    public static Tensor CausalAttention(Tensor q, Tensor k, Tensor v, double dropout = 0) =>
        Tensor.From(Native.pt_causal_attention(q.Handle, k.Handle, v.Handle, dropout, out var h), h);

    /// <summary>Causal attention that keeps only q, k and v and recomputes the scores in backward (selective recompute).</summary>
    public static Tensor CausalAttentionRecompute(Tensor q, Tensor k, Tensor v) =>
        Tensor.From(Native.pt_causal_attention_recompute(q.Handle, k.Handle, v.Handle, out var h), h);

    /// <summary>Dropout (identity when not training).</summary>
    public static Tensor Dropout(Tensor x, double p, bool training) =>
        Tensor.From(Native.pt_dropout(x.Handle, p, training ? 1 : 0, out var h), h);

    /// <summary>
    /// <paramref name="output"/> unchanged, carrying the scalar <paramref name="aux"/> into the backward: there the output's
    /// gradient passes through and <paramref name="aux"/> gets the gradient <paramref name="scale"/>, as if it had been
    /// added to the loss with that weight (Megatron-LM's MoEAuxLossAutoScaler; a mixture-of-experts block's
    /// load-balancing loss reaches its router from wherever the backward starts).
    /// </summary>
    public static Tensor AttachAuxLoss(Tensor output, Tensor aux, double scale) =>
        Tensor.From(Native.pt_aux_loss_attach(output.Handle, aux.Handle, scale, out var h), h);

    /// <summary>Mean cross entropy of [n, vocab] logits against int64 targets [n].</summary>
    public static Tensor CrossEntropy(Tensor logits, Tensor targets, long ignoreIndex = -100) =>
        Tensor.From(Native.pt_cross_entropy(logits.Handle, targets.Handle, ignoreIndex, out var h), h);
}
