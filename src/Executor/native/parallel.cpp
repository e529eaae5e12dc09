// Model-parallel building blocks as autograd functions, each a forward and its backward (Megatron-LM's pairs):
//   copy     identity          | all-reduce          (input of a column-parallel layer)
//   reduce   all-reduce        | identity            (output of a row-parallel layer)
//   gather   all-gather on dim | reduce-scatter on dim (sequence parallelism: into a TP region)
//   scatter  keep own chunk    | all-gather on dim   (split a replicated tensor along the sequence)
//   reduce_scatter on dim      | all-gather on dim   (sequence parallelism: out of a row-parallel layer)
//   gather_own all-gather on dim | keep own chunk    (a replicated tensor's parts put together: each rank's gradient
//                                                     of the whole is the same, so each keeps its part of it)
// and causal attention whose backward recomputes the scores (selective recompute: only q, k, v are kept).
#include "common.h"

#include "group.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>
#ifdef PT_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#endif

namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

pt_pg* group_of(AutogradContext* ctx) { return reinterpret_cast<pt_pg*>(ctx->saved_data["pg"].toInt()); }

// Gloo in libtorch 1.13 reduces no bfloat16: such tensors travel as fp32 and come back converted (NCCL reduces them).
bool needs_wire(const torch::Tensor& t) { return t.scalar_type() == torch::kBFloat16 && !t.is_cuda(); }
torch::Tensor wire(const torch::Tensor& t) { return t.to(torch::kFloat32); }

// Nanoseconds spent in tensor-parallel collectives on this process (forward and backward), for run's breakdown.
std::atomic<int64_t> g_tp_ns{0};

#ifdef PT_WITH_CUDA
// On CUDA a collective returns once queued: its time is that of the current stream between two timing events around
// it (the stream waits for NCCL's), read when the step takes the total.
std::mutex g_tp_events_mutex;
std::vector<std::pair<std::unique_ptr<at::cuda::CUDAEvent>, std::unique_ptr<at::cuda::CUDAEvent>>> g_tp_events;
#endif

struct TpTimer {
  explicit TpTimer(const torch::Tensor& t) : cuda(t.is_cuda()) {
#ifdef PT_WITH_CUDA
    if (cuda) {
      begin = std::make_unique<at::cuda::CUDAEvent>(cudaEventDefault);
      begin->record();
    }
#endif
  }
  ~TpTimer() {
#ifdef PT_WITH_CUDA
    if (cuda) {
      auto end = std::make_unique<at::cuda::CUDAEvent>(cudaEventDefault);
      end->record();
      std::lock_guard<std::mutex> lock(g_tp_events_mutex);
      g_tp_events.emplace_back(std::move(begin), std::move(end));
      return;
    }
#endif
    g_tp_ns += std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count();
  }
  bool cuda;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
#ifdef PT_WITH_CUDA
  std::unique_ptr<at::cuda::CUDAEvent> begin;
#endif
};

torch::Tensor all_reduce(pt_pg* g, torch::Tensor t) {
  if (needs_wire(t)) return all_reduce(g, wire(t)).to(torch::kBFloat16);
  TpTimer timer(t);
  auto out = t.contiguous().clone();
  std::vector<torch::Tensor> v{out};
  c10d::AllreduceOptions o;
  o.timeout = g->timeout;
  if (!g->pg->allreduce(v, o)->wait(g->timeout)) throw std::runtime_error("all-reduce did not complete");
  return out;
}

torch::Tensor all_gather(pt_pg* g, torch::Tensor t, int64_t dim) {
  if (needs_wire(t)) return all_gather(g, wire(t), dim).to(torch::kBFloat16);
  TpTimer timer(t);
  auto in = t.contiguous();
  std::vector<std::vector<torch::Tensor>> outputs(1);
  for (int i = 0; i < g->size; i++) outputs[0].push_back(torch::empty_like(in));
  std::vector<torch::Tensor> inputs{in};
  if (!g->pg->allgather(outputs, inputs, c10d::AllgatherOptions{g->timeout})->wait(g->timeout))
    throw std::runtime_error("all-gather did not complete");
  return torch::cat(outputs[0], dim);
}

torch::Tensor own_chunk(pt_pg* g, torch::Tensor t, int64_t dim) {
  TORCH_CHECK(t.size(dim) % g->size == 0, "dimension ", dim, " of size ", t.size(dim), " is not divisible by the group size ", g->size);
  int64_t chunk = t.size(dim) / g->size;
  return t.narrow(dim, g->rank * chunk, chunk).contiguous();
}

// Gloo in libtorch 1.13 has no reduce-scatter: all-reduce, then keep this rank's chunk.
torch::Tensor reduce_scatter(pt_pg* g, torch::Tensor t, int64_t dim) { return own_chunk(g, all_reduce(g, t), dim); }

struct TpOp : public torch::autograd::Function<TpOp> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, int64_t pg, int64_t kind, int64_t dim) {
    ctx->saved_data["pg"] = pg;
    ctx->saved_data["kind"] = kind;
    ctx->saved_data["dim"] = dim;
    auto* g = reinterpret_cast<pt_pg*>(pg);
    switch (kind) {
      case 0: return x.clone();
      case 1: return all_reduce(g, x);
      case 2: return all_gather(g, x, dim);
      case 3: return own_chunk(g, x, dim);
      case 4: return reduce_scatter(g, x, dim);
      case 5: return all_gather(g, x, dim);
      default: throw std::invalid_argument("unknown tensor-parallel op " + std::to_string(kind));
    }
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto* g = group_of(ctx);
    int64_t kind = ctx->saved_data["kind"].toInt(), dim = ctx->saved_data["dim"].toInt();
    torch::Tensor grad = grads[0];
    torch::Tensor out;
    switch (kind) {
      case 0: out = all_reduce(g, grad); break;
      case 1: out = grad; break;
      case 2: out = reduce_scatter(g, grad, dim); break;
      case 3: out = all_gather(g, grad, dim); break;
      case 4: out = all_gather(g, grad, dim); break;
      case 5: out = own_chunk(g, grad, dim); break;
    }
    return {out, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  int64_t s = q.size(-2), sk = k.size(-2);
  auto scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(q.size(-1)));
  auto mask = torch::ones({s, sk}, torch::TensorOptions().dtype(torch::kBool).device(q.device())).triu(sk - s + 1);
  return torch::matmul(torch::softmax(scores.masked_fill(mask, -std::numeric_limits<double>::infinity()), -1), v);
}

struct CheckpointedAttention : public torch::autograd::Function<CheckpointedAttention> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor q, torch::Tensor k, torch::Tensor v) {
    ctx->save_for_backward({q, k, v});
    torch::NoGradGuard guard;  // the score matrix is not kept: the backward recomputes it
    return attention(q, k, v);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto q = saved[0].detach().requires_grad_(true);
    auto k = saved[1].detach().requires_grad_(true);
    auto v = saved[2].detach().requires_grad_(true);
    torch::AutoGradMode enable(true);
    auto out = attention(q, k, v);
    auto g = torch::autograd::grad({out}, {q, k, v}, {grads[0]});
    return {g[0], g[1], g[2]};
  }
};
}  // namespace

// Returns and resets the time spent in tensor-parallel collectives, nanoseconds (on CUDA: waits for the events).
PT_EXPORT int64_t pt_tp_comm_ns_take() {
  int64_t ns = g_tp_ns.exchange(0);
#ifdef PT_WITH_CUDA
  std::lock_guard<std::mutex> lock(g_tp_events_mutex);
  for (auto& [begin, end] : g_tp_events) {
    end->synchronize();
    ns += static_cast<int64_t>(static_cast<double>(begin->elapsed_time(*end)) * 1e6);
  }
  g_tp_events.clear();
#endif
  return ns;
}

// kind: 0 copy, 1 reduce, 2 gather, 3 scatter, 4 reduce_scatter, 5 gather_own (see the table above); dim for 2–5.
PT_EXPORT int32_t pt_tp_op(pt_pg* g, pt_tensor* x, int32_t kind, int64_t dim, pt_tensor** out) {
  PT_TRY
  PT_CHECK_ARG(g != nullptr, "process group is null");
  *out = pt::wrap(TpOp::apply(x->t, reinterpret_cast<int64_t>(g), kind, dim));
  PT_CATCH
}

// Causal attention on [batch, heads, seq, head_dim] that keeps only q, k and v for the backward.
PT_EXPORT int32_t pt_causal_attention_recompute(pt_tensor* q, pt_tensor* k, pt_tensor* v, pt_tensor** out) {
  PT_TRY
  *out = pt::wrap(CheckpointedAttention::apply(q->t, k->t, v->t));
  PT_CATCH
}
