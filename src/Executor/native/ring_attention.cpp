// Context parallelism: causal ring attention over a CP group (Liu et al., "Ring Attention", 2023; the causal load
// balance of Megatron-Core's context parallelism). Each sample's sequence is cut into 2·cp chunks and CP rank i holds
// chunks i and 2·cp-1-i, one after the other: its queries stay; its keys and values go around the ring (cp-1 hops),
// each step's partial attention merged by an online softmax (running max and sum), the causal mask taken on the tokens'
// global positions. The forward keeps q, k, v, the output and the log-sum-exp; the backward is a second ring: K and V
// travel again, and the gradients of each rank's K and V travel with them, each rank adding its part, until they are
// back home (cp hops: the last one, after the last block, has no compute to hide behind). Each rank computes in fp32;
// K, V and the gradient accumulators travel in the training precision (send/recv moves bytes, so bf16 needs no fp32
// wire as Gloo's reductions do).
#include "common.h"

#include "group.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <vector>

namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Host nanoseconds this process spent posting the ring's transfers and waiting for them (the part the attention core's
// compute did not hide), for run's breakdown.
std::atomic<int64_t> g_cp_ns{0};

struct CpTimer {
  ~CpTimer() {
    g_cp_ns += std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count();
  }
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
};

enum Tag : int { kForwardKv = 0, kBackwardKv = 1, kBackwardGrad = 2 };

// One hop of the ring: this rank sends `out` to the next rank and receives the previous rank's into a new buffer.
// Even ranks post the send first, odd ones the receive (Gloo's are independent; NCCL runs a pair's operations in
// order on one stream, where two sends first would wait for each other).
struct Hop {
  Hop(pt_pg* g, torch::Tensor out, int tag) : g(g), sent(out.contiguous()), received(torch::empty_like(sent)) {
    CpTimer timer;
    int next = (g->rank + 1) % g->size, prev = (g->rank - 1 + g->size) % g->size;
    std::vector<torch::Tensor> s{sent}, r{received};
    if (g->rank % 2 == 0) send = g->pg->send(s, next, tag);
    recv = g->pg->recv(r, prev, tag);
    if (g->rank % 2 == 1) send = g->pg->send(s, next, tag);
  }
  torch::Tensor wait() {
    CpTimer timer;
    if (!recv->wait(g->timeout) || !send->wait(g->timeout)) throw std::runtime_error("ring attention: a transfer did not complete");
    return received;
  }
  pt_pg* g;
  torch::Tensor sent, received;
  c10::intrusive_ptr<c10d::Work> send, recv;
};

// Global positions of the 2·c local tokens of CP rank `rank` of `size`: chunks rank and 2·size-1-rank, c tokens each.
torch::Tensor positions(int64_t rank, int64_t size, int64_t local, const torch::Device& device) {
  int64_t c = local / 2;
  auto t = torch::arange(local, torch::TensorOptions().dtype(torch::kLong).device(device));
  return torch::where(t < c, t + rank * c, t - c + (2 * size - 1 - rank) * c);
}

// True where the key may not be seen: its global position after the query's.
torch::Tensor future(const torch::Tensor& qpos, const torch::Tensor& kpos) { return kpos.unsqueeze(0) > qpos.unsqueeze(1); }

// K or V of `kv_heads` heads repeated for the query heads (grouped-query attention), as fp32.
torch::Tensor expand(const torch::Tensor& t, int64_t rep) { return (rep == 1 ? t : t.repeat_interleave(rep, 1)).to(torch::kFloat32); }

// The gradient of an expanded K or V summed back over the query heads that shared it.
torch::Tensor fold(const torch::Tensor& g, int64_t rep) {
  if (rep == 1) return g;
  auto s = g.sizes();
  return g.view({s[0], s[1] / rep, rep, s[2], s[3]}).sum(2);
}

// One step of the ring: the keys and values of CP rank `src` (packed as [k | v] on the last dim) expanded for the query
// heads, and the scaled scores of the queries at `qpos` against them, -inf where a key is after its query.
struct Block {
  Block(pt_pg* g, const torch::Tensor& qf, const torch::Tensor& qpos, const torch::Tensor& kv, int64_t src, int64_t rep) {
    int64_t n = qf.size(2), d = qf.size(3);
    auto parts = kv.split(d, -1);
    k = expand(parts[0], rep);
    v = expand(parts[1], rep);
    scores = torch::matmul(qf, k.transpose(-2, -1)).mul_(1.0 / std::sqrt(static_cast<double>(d)));
    scores.masked_fill_(future(qpos, positions(src, g->size, n, qf.device())), -std::numeric_limits<float>::infinity());
  }
  torch::Tensor k, v, scores;
};

struct RingAttention : public torch::autograd::Function<RingAttention> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor q, torch::Tensor k, torch::Tensor v, int64_t pg) {
    auto* g = reinterpret_cast<pt_pg*>(pg);
    int64_t n = q.size(2), rep = q.size(1) / k.size(1);
    TORCH_CHECK(n % 2 == 0, "ring attention needs the two chunks of each rank: an even local sequence, got ", n);
    TORCH_CHECK(q.size(1) % k.size(1) == 0, "the query heads (", q.size(1), ") must be a multiple of the key/value heads (", k.size(1), ")");
    auto qf = q.to(torch::kFloat32);
    auto qpos = positions(g->rank, g->size, n, q.device());
    auto m = torch::full({q.size(0), q.size(1), n, 1}, -std::numeric_limits<float>::infinity(), qf.options());
    auto l = torch::zeros_like(m);
    auto acc = torch::zeros_like(qf);
    auto kv = torch::cat({k, v}, -1).contiguous();
    for (int64_t s = 0; s < g->size; s++) {
      std::unique_ptr<Hop> hop;
      if (s < g->size - 1) hop = std::make_unique<Hop>(g, kv, kForwardKv);
      Block b(g, qf, qpos, kv, (g->rank - s + g->size) % g->size, rep);
      // The first block (the rank's own keys) holds each query's own token: the running max is finite from then on.
      auto m_new = torch::maximum(m, std::get<0>(b.scores.max(-1, true)));
      auto p = (b.scores - m_new).exp_();
      auto decay = (m - m_new).exp_();
      l = l * decay + p.sum(-1, true);
      acc = acc * decay + torch::matmul(p, b.v);
      m = m_new;
      if (hop) kv = hop->wait();
    }
    auto out = acc / l;
    auto lse = m + l.log();
    ctx->save_for_backward({q, k, v, out, lse});
    ctx->saved_data["pg"] = pg;
    return out.to(q.scalar_type());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto* g = reinterpret_cast<pt_pg*>(ctx->saved_data["pg"].toInt());
    auto saved = ctx->get_saved_variables();
    auto q = saved[0], k = saved[1], v = saved[2], out = saved[3], lse = saved[4];
    int64_t n = q.size(2), d = q.size(3), rep = q.size(1) / k.size(1);
    double scale = 1.0 / std::sqrt(static_cast<double>(d));
    auto qf = q.to(torch::kFloat32);
    auto dout = grads[0].to(torch::kFloat32);
    auto delta = (dout * out).sum(-1, true);
    auto qpos = positions(g->rank, g->size, n, q.device());
    auto dq = torch::zeros_like(qf);
    auto kv = torch::cat({k, v}, -1).contiguous();
    std::unique_ptr<Hop> grad_hop;  // the K/V gradients of the block this rank sees next, from the previous rank
    torch::Tensor dkv;
    for (int64_t s = 0; s < g->size; s++) {
      std::unique_ptr<Hop> hop;
      if (s < g->size - 1) hop = std::make_unique<Hop>(g, kv, kBackwardKv);
      Block b(g, qf, qpos, kv, (g->rank - s + g->size) % g->size, rep);
      auto p = (b.scores - lse).exp_();
      auto dv = fold(torch::matmul(p.transpose(-2, -1), dout), rep);
      auto ds = p * (torch::matmul(dout, b.v.transpose(-2, -1)) - delta);
      dq.add_(torch::matmul(ds, b.k), scale);
      auto dk = fold(torch::matmul(ds.transpose(-2, -1), qf), rep).mul_(scale);
      auto block = torch::cat({dk, dv}, -1);
      dkv = grad_hop ? grad_hop->wait().to(torch::kFloat32) + block : block;
      if (g->size > 1) grad_hop = std::make_unique<Hop>(g, dkv.to(k.scalar_type()), kBackwardGrad);
      if (hop) kv = hop->wait();
    }
    // The last hop brought this rank's own K and V gradients home, complete.
    if (grad_hop) dkv = grad_hop->wait();
    auto dparts = dkv.split(d, -1);
    return {dq.to(q.scalar_type()), dparts[0].to(k.scalar_type()), dparts[1].to(v.scalar_type()), torch::Tensor()};
  }
};
}  // namespace

// Returns and resets the host time spent in the ring's transfers (posting them and waiting for them), nanoseconds.
PT_EXPORT int64_t pt_cp_comm_ns_take() { return g_cp_ns.exchange(0); }

// Causal ring attention of this CP rank's q [batch, heads, 2c, head_dim] and k, v [batch, kv_heads, 2c, head_dim]
// (its chunks rank and 2·cp-1-rank of each sequence) over the CP group `g`.
PT_EXPORT int32_t pt_ring_attention(pt_pg* g, pt_tensor* q, pt_tensor* k, pt_tensor* v, pt_tensor** out) {
  PT_TRY
  PT_CHECK_ARG(g != nullptr, "process group is null");
  PT_CHECK_ARG(q->t.dim() == 4 && k->t.dim() == 4 && v->t.dim() == 4, "ring attention expects [batch, heads, seq, head_dim]");
  PT_CHECK_ARG(k->t.sizes() == v->t.sizes() && q->t.size(2) == k->t.size(2) && q->t.size(3) == k->t.size(3),
               "ring attention expects k and v of one shape, as long and as wide as q");
  *out = pt::wrap(RingAttention::apply(q->t, k->t, v->t, reinterpret_cast<int64_t>(g)));
  PT_CATCH
}
