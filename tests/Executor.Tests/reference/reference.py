"""Reference outputs and gradients for the binding's parity tests, computed with PyTorch (Debian python3-torch).

Inputs are deterministic formulas (no RNG) that the C# test reproduces exactly: value(i) = sin(a*i + b) * c,
computed in double precision and rounded to float32. Writes JSON to the path given as the only argument.
"""
import json
import math
import sys

import torch

torch.set_num_threads(1)


def det(shape, a, b, c=1.0):
    n = 1
    for d in shape:
        n *= d
    return torch.tensor([math.sin(a * i + b) * c for i in range(n)], dtype=torch.float64).to(torch.float32).reshape(shape)


def leaf(shape, a, b, c=1.0):
    t = det(shape, a, b, c)
    t.requires_grad_(True)
    return t


def flat(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]


out = {}

# A two-layer GeLU MLP with a mean-square loss, then one AdamW step.
x = leaf([4, 8], 0.37, 0.1)
w1 = leaf([16, 8], 0.11, 0.2, 0.5)
b1 = leaf([16], 0.23, 0.3, 0.1)
w2 = leaf([8, 16], 0.07, 0.4, 0.5)
b2 = leaf([8], 0.19, 0.5, 0.1)
h = torch.nn.functional.gelu(torch.nn.functional.linear(x, w1, b1))
y = torch.nn.functional.linear(h, w2, b2)
loss = (y * y).mean()
loss.backward()
out["mlp"] = {
    "y": flat(y), "loss": float(loss),
    "grad_x": flat(x.grad), "grad_w1": flat(w1.grad), "grad_b1": flat(b1.grad),
    "grad_w2": flat(w2.grad), "grad_b2": flat(b2.grad),
}
opt = torch.optim.AdamW([w1, b1, w2, b2], lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
opt.step()
out["mlp"]["w1_after_adamw"] = flat(w1)
out["mlp"]["b2_after_adamw"] = flat(b2)

# SGD with momentum (PyTorch's) and Lion (the paper's update, written out here: PyTorch has none) over three steps of
# given gradients; Lion's beta2 at 0.5, so that the moment weighs in the sign from the second step on.
# LoRA on a frozen linear (PEFT's form: base(x) + lora_B(lora_A(x)) * scaling), rank 3, scaling 2, bias on the base.
xl = leaf([5, 8], 0.21, 0.3)
wl = det([6, 8], 0.13, 0.5, 0.5)
bl = det([6], 0.17, 0.7, 0.1)
la = leaf([3, 8], 0.09, 0.9, 0.3)
lb = leaf([6, 3], 0.27, 1.1, 0.3)
yl = torch.nn.functional.linear(xl, wl, bl) + torch.nn.functional.linear(torch.nn.functional.linear(xl, la), lb) * 2.0
lossl = (yl * yl).mean()
lossl.backward()
out["lora"] = {"y": flat(yl), "loss": float(lossl), "grad_x": flat(xl.grad), "grad_a": flat(la.grad), "grad_b": flat(lb.grad)}

out["optimizers"] = {}
for name in ["sgd", "lion"]:
    w = leaf([6, 5], 0.29, 0.6, 0.5)
    if name == "sgd":
        opt = torch.optim.SGD([w], lr=0.1, momentum=0.9, weight_decay=0.01)
    m = torch.zeros_like(w)
    for t in range(3):
        g = det([6, 5], 0.41 + 0.1 * t, 0.3 * t, 0.2)
        if name == "sgd":
            w.grad = g.clone()
            opt.step()
        else:
            with torch.no_grad():
                update = torch.sign(0.9 * m + 0.1 * g)
                w.mul_(1 - 0.01 * 0.1)
                w.add_(update, alpha=-0.01)
                m = 0.5 * m + 0.5 * g
    out["optimizers"][name] = flat(w)



def varied(shape, t):
    """Gradients of step t whose magnitudes span e^-2..e^2: a block's small values then code on several decades."""
    return det(shape, 0.41 + 0.1 * t, 0.3 * t, 0.2) * det(shape, 0.013, 0.7 * t, 2.0).exp()


def decay(state, value, beta):
    return value * (1 - beta) if state is None else state * beta + value * (1 - beta)


def adafactor(w, steps, lr, wd):
    """Adafactor without a first moment: factored second moment of a matrix (row and column sums of G^2 + 1e-30,
    decay 1 - t^-0.8), the whole second moment of a vector, the update's RMS clipped at 1, the step lr times it
    (no parameter scale), decoupled weight decay."""
    rows = cols = vec = None
    for t in range(1, steps + 1):
        g = varied(list(w.shape), t)
        beta = 1 - t ** -0.8
        g2 = g * g + 1e-30
        if w.dim() == 2:
            rows = decay(rows, g2.sum(1), beta)
            cols = decay(cols, g2.sum(0), beta)
            v = rows[:, None] / rows.sum() * cols[None, :]
        else:
            vec = decay(vec, g2, beta)
            v = vec
        u = g / v.sqrt()
        n = w.numel()
        clip = torch.clamp((u.square().sum() / n).sqrt() / 1, min=1)
        w = w * (1 - lr * wd) - u / clip * lr
    return w


def dynamic_map(signed):
    """256 values: per decade 10^-6..10^0 the midpoints of 2^k (signed) or 2^(k+1) equal intervals of [0.1, 1] of
    the decade, mirrored when signed, with 0 and 1; returned with the midpoints between neighbours."""
    vals = [0.0, 1.0]
    for k in range(7):
        count = (1 << k) if signed else (2 << k)
        for j in range(count):
            mid = 10.0 ** (k - 6) * ((0.1 + 0.9 * j / count) + (0.1 + 0.9 * (j + 1) / count)) / 2
            vals += [mid, -mid] if signed else [mid]
    vals.sort()
    bounds = [(a + b) / 2 for a, b in zip(vals, vals[1:])]
    return torch.tensor(vals, dtype=torch.float32), torch.tensor(bounds, dtype=torch.float32)


def adam8bit(w, steps, lr, b1, b2, eps, wd, block=2048):
    """AdamW whose moments are stored between steps as 8-bit codes of the dynamic maps, one absmax per block of
    2048 consecutive values (row-major)."""
    smap, sbounds = dynamic_map(True)
    umap, ubounds = dynamic_map(False)
    n = w.numel()
    idx = torch.arange(n) // block
    nb = (n + block - 1) // block
    codes = None
    shape = list(w.shape)
    w = w.reshape(-1)
    for t in range(1, steps + 1):
        g = varied(shape, t).reshape(-1)
        if codes is None:
            m, v = torch.zeros(n), torch.zeros(n)
        else:
            m = smap[codes[0]] * mmax[idx]
            v = umap[codes[1]] * vmax[idx]
        m = m * b1 + g * (1 - b1)
        v = v * b2 + g.square() * (1 - b2)
        w = w * (1 - lr * wd) - m / (1 - b1 ** t) / ((v / (1 - b2 ** t)).sqrt() + eps) * lr
        mmax = torch.zeros(nb).scatter_reduce(0, idx, m.abs(), "amax", include_self=True)
        vmax = torch.zeros(nb).scatter_reduce(0, idx, v, "amax", include_self=True)
        codes = (torch.bucketize(m / (mmax[idx] + 1e-30), sbounds), torch.bucketize(v / (vmax[idx] + 1e-30), ubounds))
    return w


def sophia(w, steps, lr, wd, tokens, b1=0.965, b2=0.99, rho=0.04, eps=1e-15):
    """SophiaG: m the gradient's EMA; h refreshed every other step from a curvature pass's squared gradient; the step
    lr * clamp(m / (rho * tokens * h + eps), -1, 1), decoupled weight decay."""
    m = h = None
    for t in range(1, steps + 1):
        if t % 2 == 1:
            h = decay(h, varied(list(w.shape), t + 10).square(), b2) if h is not None else varied(list(w.shape), t + 10).square() * (1 - b2)
        g = varied(list(w.shape), t)
        m = g * (1 - b1) if m is None else m * b1 + g * (1 - b1)
        w = w * (1 - lr * wd) - torch.clamp(m / (h * (rho * tokens) + eps), -1, 1) * lr
    return w


with torch.no_grad():
    out["optimizers"]["sophia"] = flat(sophia(det([6, 5], 0.29, 0.6, 0.5), 4, 0.01, 0.1, 64))
    out["optimizers"]["adafactor_matrix"] = flat(adafactor(det([6, 5], 0.29, 0.6, 0.5), 4, 0.05, 0.1))
    out["optimizers"]["adafactor_vector"] = flat(adafactor(det([7], 0.31, 0.2, 0.5), 4, 0.05, 0.1))
    out["optimizers"]["adam8bit"] = flat(adam8bit(det([40, 110], 0.29, 0.6, 0.5), 4, 0.01, 0.9, 0.999, 1e-8, 0.01))

# A causal self-attention block: LayerNorm, fused QKV, 4 heads, causal attention, output projection, residual.
B, S, H, NH = 2, 5, 16, 4
D = H // NH
xa = leaf([B, S, H], 0.13, 0.7)
ln_w = leaf([H], 0.31, 0.9, 0.2)
ln_b = leaf([H], 0.17, 1.1, 0.1)
wqkv = leaf([3 * H, H], 0.05, 1.3, 0.4)
bqkv = leaf([3 * H], 0.29, 1.5, 0.1)
wo = leaf([H, H], 0.09, 1.7, 0.4)
bo = leaf([H], 0.21, 1.9, 0.1)
target = det([B, S, H], 0.41, 2.1)
n = torch.nn.functional.layer_norm(xa, [H], ln_w, ln_b, 1e-5)
qkv = torch.nn.functional.linear(n, wqkv, bqkv)
q, k, v = qkv.chunk(3, dim=-1)
q = q.reshape(B, S, NH, D).transpose(1, 2)
k = k.reshape(B, S, NH, D).transpose(1, 2)
v = v.reshape(B, S, NH, D).transpose(1, 2)
scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(D)
mask = torch.ones(S, S, dtype=torch.bool).triu(1)
probs = torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)
att = torch.matmul(probs, v).transpose(1, 2).reshape(B, S, H)
ya = xa + torch.nn.functional.linear(att, wo, bo)
la = (ya * target).sum()
la.backward()
out["attention"] = {
    "y": flat(ya), "loss": float(la),
    "grad_x": flat(xa.grad), "grad_ln_w": flat(ln_w.grad), "grad_ln_b": flat(ln_b.grad),
    "grad_wqkv": flat(wqkv.grad), "grad_bqkv": flat(bqkv.grad), "grad_wo": flat(wo.grad), "grad_bo": flat(bo.grad),
}

# SwiGLU with RMSNorm and a cross-entropy loss over a small vocabulary.
xs = leaf([6, 8], 0.33, 2.3)
rms_w = leaf([8], 0.27, 2.5, 0.3)
wg = leaf([12, 8], 0.15, 2.7, 0.5)
wu = leaf([12, 8], 0.25, 2.9, 0.5)
wd = leaf([10, 12], 0.35, 3.1, 0.5)
xf = xs.float()
normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * rms_w
hs = torch.nn.functional.silu(torch.nn.functional.linear(normed, wg)) * torch.nn.functional.linear(normed, wu)
logits = torch.nn.functional.linear(hs, wd)
targets = torch.tensor([0, 3, 9, 4, 4, 1], dtype=torch.int64)
ce = torch.nn.functional.cross_entropy(logits, targets)
ce.backward()
out["swiglu"] = {
    "logits": flat(logits), "loss": float(ce),
    "grad_x": flat(xs.grad), "grad_rms_w": flat(rms_w.grad), "grad_wg": flat(wg.grad),
    "grad_wu": flat(wu.grad), "grad_wd": flat(wd.grad),
}

# A Llama block whose heads are not hidden / heads wide (head_dim 6 over hidden 16, 4 heads, 2 key/value heads):
# RMSNorm, Q [heads*head_dim, hidden], K and V [kv_heads*head_dim, hidden], HuggingFace's rotary positions over the
# head (rotate_half, base 10000, angles in double rounded to float32), each key/value head repeated for its group of
# query heads (repeat_kv), causal attention, output [hidden, heads*head_dim], SwiGLU MLP, residuals.
B, S, H, NH, NKV, HD, FF = 2, 5, 16, 4, 2, 6, 24
xh = leaf([B, S, H], 0.13, 0.7)
hw = {
    "ln1.w": leaf([H], 0.31, 0.9, 0.2), "attn.q.w": leaf([NH * HD, H], 0.05, 1.3, 0.4),
    "attn.k.w": leaf([NKV * HD, H], 0.07, 1.4, 0.4), "attn.v.w": leaf([NKV * HD, H], 0.11, 1.5, 0.4),
    "attn.o.w": leaf([H, NH * HD], 0.09, 1.7, 0.4), "ln2.w": leaf([H], 0.23, 1.8, 0.2),
    "mlp.gate.w": leaf([FF, H], 0.15, 2.7, 0.5), "mlp.up.w": leaf([FF, H], 0.25, 2.9, 0.5),
    "mlp.down.w": leaf([H, FF], 0.35, 3.1, 0.5),
}


def rms(t, w):
    return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + 1e-5) * w


def rotate_half(t):
    a, b = t.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


angles = [[p / 10000 ** (2.0 * (i % (HD // 2)) / HD) for i in range(HD)] for p in range(S)]
cos = torch.tensor([[math.cos(a) for a in r] for r in angles], dtype=torch.float64).float()
sin = torch.tensor([[math.sin(a) for a in r] for r in angles], dtype=torch.float64).float()
n1 = rms(xh, hw["ln1.w"])
qh = torch.nn.functional.linear(n1, hw["attn.q.w"]).reshape(B, S, NH, HD).transpose(1, 2)
kh = torch.nn.functional.linear(n1, hw["attn.k.w"]).reshape(B, S, NKV, HD).transpose(1, 2)
vh = torch.nn.functional.linear(n1, hw["attn.v.w"]).reshape(B, S, NKV, HD).transpose(1, 2)
qh, kh = qh * cos + rotate_half(qh) * sin, kh * cos + rotate_half(kh) * sin
kh = kh[:, :, None].expand(B, NKV, NH // NKV, S, HD).reshape(B, NH, S, HD)
vh = vh[:, :, None].expand(B, NKV, NH // NKV, S, HD).reshape(B, NH, S, HD)
scores = torch.matmul(qh, kh.transpose(-2, -1)) / math.sqrt(HD)
probs = torch.softmax(scores.masked_fill(torch.ones(S, S, dtype=torch.bool).triu(1), float("-inf")), dim=-1)
merged = torch.matmul(probs, vh).transpose(1, 2).reshape(B, S, NH * HD)
xr = xh + torch.nn.functional.linear(merged, hw["attn.o.w"])
n2 = rms(xr, hw["ln2.w"])
inner = torch.nn.functional.silu(torch.nn.functional.linear(n2, hw["mlp.gate.w"])) * torch.nn.functional.linear(n2, hw["mlp.up.w"])
yh = xr + torch.nn.functional.linear(inner, hw["mlp.down.w"])
lh = (yh * det([B, S, H], 0.41, 2.1)).sum()
lh.backward()
out["head_dim_block"] = {"y": flat(yh), "loss": float(lh), "grad_x": flat(xh.grad)}
for name, w in hw.items():
    out["head_dim_block"]["grad_" + name] = flat(w.grad)

# A mixture-of-experts MLP after RMSNorm (a block whose attention output projection is zero): 4 experts, top 2, softmax
# scores, the chosen two renormalised (Mixtral's routing), every routed token computed, a shared gated MLP added, and
# the load-balancing loss E * sum_e f_e * P_e with f_e the share of the (token, slot) assignments. The router's rows of
# experts 0 and 1 are zero: their scores tie on every token, and the lower index wins (a stable descending sort).
H, E, K, FF, SF = 8, 4, 2, 8, 16
xm = leaf([2, 3, H], 0.31, 0.2)
ln2 = leaf([H], 0.27, 2.5, 0.3)
router = torch.cat([torch.zeros(2, H), det([2, H], 0.19, 1.1, 0.8)]).requires_grad_(True)
gates = [leaf([FF, H], 0.11 + 0.01 * e, 0.2 + e, 0.5) for e in range(E)]
ups = [leaf([FF, H], 0.13 + 0.01 * e, 0.3 + e, 0.5) for e in range(E)]
downs = [leaf([H, FF], 0.17 + 0.01 * e, 0.4 + e, 0.5) for e in range(E)]
shared = [leaf([SF, H], 0.21, 5.1, 0.5), leaf([SF, H], 0.23, 5.3, 0.5), leaf([H, SF], 0.29, 5.7, 0.5)]


def gated(t, g, u, d):
    return torch.nn.functional.linear(torch.nn.functional.silu(torch.nn.functional.linear(t, g)) * torch.nn.functional.linear(t, u), d)


xt = xm.reshape(-1, H)
nm = xt * torch.rsqrt(xt.pow(2).mean(-1, keepdim=True) + 1e-5) * ln2
probs = torch.softmax(torch.nn.functional.linear(nm, router).float(), dim=-1)
order = torch.sort(probs.detach(), dim=-1, descending=True, stable=True).indices[:, :K]
top = probs.gather(1, order)
weights = top / top.sum(-1, keepdim=True)
ym = torch.zeros_like(nm)
for e in range(E):
    tok, slot = (order == e).nonzero(as_tuple=True)
    ym = ym.index_add(0, tok, gated(nm[tok], gates[e], ups[e], downs[e]) * weights[tok, slot].unsqueeze(1))
ym = ym + gated(nm, *shared)
load = torch.stack([(order == e).sum() for e in range(E)]).float() / order.numel()
aux = E * (load * probs.mean(0)).sum()
yb = (xt + ym).reshape(2, 3, H)
lm = (yb * yb).mean() + 0.01 * aux
lm.backward()
ties = int(((order == 0).any(1) & ~(order == 1).any(1)).sum())
assert ties > 0 and not bool((order == 1).any(1).logical_and(~(order == 0).any(1)).any()), "no tie decided"
out["moe"] = {
    "y": flat(yb), "aux": float(aux), "loss": float(lm), "ties": ties, "choice": [int(v) for v in order.reshape(-1).tolist()],
    "grad_x": flat(xm.grad), "grad_ln2": flat(ln2.grad), "grad_router": flat(router.grad),
    "grad_shared_gate": flat(shared[0].grad), "grad_shared_up": flat(shared[1].grad), "grad_shared_down": flat(shared[2].grad),
}
for e in range(E):
    out["moe"][f"grad_gate_{e}"] = flat(gates[e].grad)
    out["moe"][f"grad_up_{e}"] = flat(ups[e].grad)
    out["moe"][f"grad_down_{e}"] = flat(downs[e].grad)

with open(sys.argv[1], "w") as f:
    json.dump(out, f)
