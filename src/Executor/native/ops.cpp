// Elementwise ops, reductions and the layers a GPT needs.
#include "common.h"

#include <cmath>

namespace {
std::vector<int64_t> dims_of(const int64_t* dims, int32_t n) {
  return n > 0 ? std::vector<int64_t>(dims, dims + n) : std::vector<int64_t>{};
}
}  // namespace

// op: 0 add, 1 sub, 2 mul, 3 div, 4 maximum.
PT_EXPORT int32_t pt_binary(pt_tensor* a, pt_tensor* b, int32_t op, pt_tensor** out) {
  PT_TRY
  torch::Tensor r;
  switch (op) {
    case 0: r = a->t + b->t; break;
    case 1: r = a->t - b->t; break;
    case 2: r = a->t * b->t; break;
    case 3: r = a->t / b->t; break;
    case 4: r = torch::maximum(a->t, b->t); break;
    default: throw std::invalid_argument("unknown binary op " + std::to_string(op));
  }
  *out = pt::wrap(r);
  PT_CATCH
}

// op: 0 add, 1 sub, 2 mul, 3 div, 4 pow, 5 reverse sub (s - a), 6 reverse div (s / a).
PT_EXPORT int32_t pt_binary_scalar(pt_tensor* a, double s, int32_t op, pt_tensor** out) {
  PT_TRY
  torch::Tensor r;
  switch (op) {
    case 0: r = a->t + s; break;
    case 1: r = a->t - s; break;
    case 2: r = a->t * s; break;
    case 3: r = a->t / s; break;
    case 4: r = torch::pow(a->t, s); break;
    case 5: r = s - a->t; break;
    case 6: r = s / a->t; break;
    default: throw std::invalid_argument("unknown scalar op " + std::to_string(op));
  }
  *out = pt::wrap(r);
  PT_CATCH
}

// op: 0 neg, 1 exp, 2 log, 3 sqrt, 4 tanh, 5 relu, 6 rsqrt, 7 square, 8 abs, 9 sigmoid.
PT_EXPORT int32_t pt_unary(pt_tensor* a, int32_t op, pt_tensor** out) {
  PT_TRY
  torch::Tensor r;
  switch (op) {
    case 0: r = -a->t; break;
    case 1: r = torch::exp(a->t); break;
    case 2: r = torch::log(a->t); break;
    case 3: r = torch::sqrt(a->t); break;
    case 4: r = torch::tanh(a->t); break;
    case 5: r = torch::relu(a->t); break;
    case 6: r = torch::rsqrt(a->t); break;
    case 7: r = torch::square(a->t); break;
    case 8: r = torch::abs(a->t); break;
    case 9: r = torch::sigmoid(a->t); break;
    default: throw std::invalid_argument("unknown unary op " + std::to_string(op));
  }
  *out = pt::wrap(r);
  PT_CATCH
}

// kind: 0 sum, 1 mean, 2 max (values). No dims: over all elements.
PT_EXPORT int32_t pt_reduce(pt_tensor* a, int32_t kind, const int64_t* dims, int32_t ndims, int32_t keepdim, pt_tensor** out) {
  PT_TRY
  auto d = dims_of(dims, ndims);
  torch::Tensor r;
  switch (kind) {
    case 0: r = d.empty() ? a->t.sum() : a->t.sum(d, keepdim != 0); break;
    case 1: r = d.empty() ? a->t.mean() : a->t.mean(d, keepdim != 0); break;
    case 2:
      PT_CHECK_ARG(d.size() <= 1, "max reduces over at most one dim");
      r = d.empty() ? a->t.max() : std::get<0>(a->t.max(d[0], keepdim != 0));
      break;
    default: throw std::invalid_argument("unknown reduction " + std::to_string(kind));
  }
  *out = pt::wrap(r);
  PT_CATCH
}

// out[i] = x[i, index[i]] along `dim` (torch.gather with an index of the same rank as x).
PT_EXPORT int32_t pt_gather(pt_tensor* x, int64_t dim, pt_tensor* index, pt_tensor** out) {
  PT_TRY
  *out = pt::wrap(torch::gather(x->t, dim, index->t));
  PT_CATCH
}

PT_EXPORT int32_t pt_matmul(pt_tensor* a, pt_tensor* b, pt_tensor** out) {
  PT_TRY
  *out = pt::wrap(torch::matmul(a->t, b->t));
  PT_CATCH
}

// y = x·Wᵀ + b (bias may be null).
PT_EXPORT int32_t pt_linear(pt_tensor* x, pt_tensor* w, pt_tensor* b, pt_tensor** out) {
  PT_TRY
  *out = pt::wrap(b ? torch::linear(x->t, w->t, b->t) : torch::linear(x->t, w->t));
  PT_CATCH
}

PT_EXPORT int32_t pt_embedding(pt_tensor* weight, pt_tensor* indices, pt_tensor** out) {
  PT_TRY
  *out = pt::wrap(torch::embedding(weight->t, indices->t));
  PT_CATCH
}

// LayerNorm over the last dim (weight and bias may be null).
PT_EXPORT int32_t pt_layer_norm(pt_tensor* x, pt_tensor* w, pt_tensor* b, double eps, pt_tensor** out) {
  PT_TRY
  auto wt = w ? c10::optional<torch::Tensor>(w->t) : c10::nullopt;
  auto bt = b ? c10::optional<torch::Tensor>(b->t) : c10::nullopt;
  *out = pt::wrap(torch::layer_norm(x->t, {x->t.size(-1)}, wt, bt, eps));
  PT_CATCH
}

// RMSNorm over the last dim: x · rsqrt(mean(x²) + eps) · w, computed in fp32 (libtorch 1.13 has no rms_norm op).
PT_EXPORT int32_t pt_rms_norm(pt_tensor* x, pt_tensor* w, double eps, pt_tensor** out) {
  PT_TRY
  auto xf = x->t.to(torch::kFloat32);
  auto y = (xf * torch::rsqrt(xf.square().mean(-1, true) + eps)).to(x->t.scalar_type());
  *out = pt::wrap(w ? y * w->t : y);
  PT_CATCH
}

// approximate: 0 exact (erf), 1 tanh.
PT_EXPORT int32_t pt_gelu(pt_tensor* x, int32_t approximate, pt_tensor** out) {
  PT_TRY
  *out = pt::wrap(torch::gelu(x->t, approximate ? "tanh" : "none"));
  PT_CATCH
}

PT_EXPORT int32_t pt_silu(pt_tensor* x, pt_tensor** out) {
  PT_TRY
  *out = pt::wrap(torch::silu(x->t));
  PT_CATCH
}

PT_EXPORT int32_t pt_softmax(pt_tensor* x, int64_t dim, int32_t log, pt_tensor** out) {
  PT_TRY
  *out = pt::wrap(log ? torch::log_softmax(x->t, dim) : torch::softmax(x->t, dim));
  PT_CATCH
}

// Causal scaled-dot-product attention on [batch, heads, seq, head_dim] tensors; dropout on the probabilities
// when p > 0 (training). Written out (scores, mask, softmax, values) so that libtorch 1.13 and 2.x agree exactly.
PT_EXPORT int32_t pt_causal_attention(pt_tensor* q, pt_tensor* k, pt_tensor* v, double dropout_p, pt_tensor** out) {
  PT_TRY
  PT_CHECK_ARG(q->t.dim() == 4 && k->t.dim() == 4 && v->t.dim() == 4, "attention expects [batch, heads, seq, head_dim]");
  int64_t s = q->t.size(-2), sk = k->t.size(-2);
  auto scores = torch::matmul(q->t, k->t.transpose(-2, -1)) / std::sqrt(static_cast<double>(q->t.size(-1)));
  auto mask = torch::ones({s, sk}, torch::TensorOptions().dtype(torch::kBool).device(q->t.device())).triu(sk - s + 1);
  scores = scores.masked_fill(mask, -std::numeric_limits<double>::infinity());
  auto probs = torch::softmax(scores, -1);
  if (dropout_p > 0) probs = torch::dropout(probs, dropout_p, true);
  *out = pt::wrap(torch::matmul(probs, v->t));
  PT_CATCH
}

PT_EXPORT int32_t pt_dropout(pt_tensor* x, double p, int32_t train, pt_tensor** out) {
  PT_TRY
  *out = pt::wrap(torch::dropout(x->t, p, train != 0));
  PT_CATCH
}

// Mean cross entropy of logits [n, vocab] against int64 targets [n]; targets equal to ignore_index are skipped.
PT_EXPORT int32_t pt_cross_entropy(pt_tensor* logits, pt_tensor* targets, int64_t ignore_index, pt_tensor** out) {
  PT_TRY
  *out = pt::wrap(torch::nn::functional::cross_entropy(
      logits->t, targets->t, torch::nn::functional::CrossEntropyFuncOptions().ignore_index(ignore_index)));
  PT_CATCH
}
