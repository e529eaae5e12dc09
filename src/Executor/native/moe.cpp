// Mixture-of-experts support: the load-balancing loss's gradient carried by a block's output (Megatron-LM's
// MoEAuxLossAutoScaler), so that it reaches the router from wherever the block's backward starts (a pipeline stage's
// received gradient, a recomputed block) without a second backward; and the expert-parallel all-to-all.
#include "common.h"

#include "group.h"

#include <atomic>
#include <chrono>
#include <vector>

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {
// Forward: the output unchanged. Backward: the output's gradient unchanged, and `scale` as the gradient of the scalar
// auxiliary loss (the scale the main loss's backward starts from: loss scale over micro-batches, times the coefficient).
struct AuxLossAttach : public torch::autograd::Function<AuxLossAttach> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor output, torch::Tensor aux, double scale) {
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["aux_dtype"] = static_cast<int64_t>(aux.scalar_type());
    return output;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    double scale = ctx->saved_data["scale"].toDouble();
    auto dtype = static_cast<torch::ScalarType>(ctx->saved_data["aux_dtype"].toInt());
    auto aux_grad = torch::full({}, scale, grads[0].options().dtype(dtype));
    return {grads[0], aux_grad, torch::Tensor()};
  }
};
}  // namespace

// The output, carrying `aux` (a scalar) into the backward with the gradient `scale`.
PT_EXPORT int32_t pt_aux_loss_attach(pt_tensor* output, pt_tensor* aux, double scale, pt_tensor** out) {
  PT_TRY
  *out = pt::wrap(AuxLossAttach::apply(output->t, aux->t, scale));
  PT_CATCH
}

// Expert parallelism: the token dispatch and combine as an all-to-all of rows with uneven splits (each rank sends
// `send[j]` rows to rank j and receives `recv[j]` rows from it, rank by rank), whose backward is the all-to-all of the
// gradients the other way. Gloo in libtorch 1.13 moves no bfloat16: such rows travel as fp32.
namespace {
std::atomic<int64_t> g_ep_ns{0};  // nanoseconds in expert-parallel all-to-alls (forward and backward) on this process

torch::Tensor rows_alltoall(pt_pg* g, torch::Tensor x, const std::vector<int64_t>& send, const std::vector<int64_t>& recv) {
  if (x.scalar_type() == torch::kBFloat16 && !x.is_cuda())
    return rows_alltoall(g, x.to(torch::kFloat32), send, recv).to(torch::kBFloat16);
  auto start = std::chrono::steady_clock::now();
  auto input = x.contiguous();
  int64_t rows = 0;
  for (auto r : recv) rows += r;
  auto sizes = input.sizes().vec();
  sizes[0] = rows;
  auto output = torch::empty(sizes, input.options());
  std::vector<int64_t> in_splits(send), out_splits(recv);
  c10d::AllToAllOptions o;
  o.timeout = g->timeout;
  if (!g->pg->alltoall_base(output, input, out_splits, in_splits, o)->wait(g->timeout))
    throw std::runtime_error("expert all-to-all did not complete");
  g_ep_ns += std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count();
  return output;
}

struct ExpertAllToAll : public torch::autograd::Function<ExpertAllToAll> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, int64_t pg, std::vector<int64_t> send, std::vector<int64_t> recv) {
    ctx->saved_data["pg"] = pg;
    ctx->saved_data["send"] = send;
    ctx->saved_data["recv"] = recv;
    return rows_alltoall(reinterpret_cast<pt_pg*>(pg), x, send, recv);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto* g = reinterpret_cast<pt_pg*>(ctx->saved_data["pg"].toInt());
    auto send = ctx->saved_data["send"].toIntVector(), recv = ctx->saved_data["recv"].toIntVector();
    return {rows_alltoall(g, grads[0], recv, send), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};
}  // namespace

// Rows of `x` ([rows, ...]) sent to each of the group's `n` ranks (`send[j]` to rank j, in rank order) and received
// from each (`recv[j]` from rank j), with the reverse exchange as its backward.
PT_EXPORT int32_t pt_expert_alltoall(pt_pg* g, pt_tensor* x, const int64_t* send, const int64_t* recv, int32_t n, pt_tensor** out) {
  PT_TRY
  PT_CHECK_ARG(g != nullptr && n == g->size, "the splits must name every rank of the group");
  std::vector<int64_t> s(send, send + n), r(recv, recv + n);
  int64_t total = 0;
  for (auto v : s) total += v;
  PT_CHECK_ARG(x->t.dim() >= 1 && total == x->t.size(0), "the rows sent must add up to the tensor's first dimension");
  *out = pt::wrap(ExpertAllToAll::apply(x->t, reinterpret_cast<int64_t>(g), s, r));
  PT_CATCH
}

// Returns and resets the time spent in expert-parallel all-to-alls, nanoseconds.
PT_EXPORT int64_t pt_ep_comm_ns_take() { return g_ep_ns.exchange(0); }
