// c10d: TCPStore rendezvous, Gloo (CPU) and NCCL (CUDA) process groups, sub-groups, collectives with timeouts.
#include "common.h"

#include <cstdlib>
#include "group.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#ifdef PT_WITH_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>
#ifdef PT_WITH_CUDA
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

struct pt_store {
  c10::intrusive_ptr<c10d::Store> store;
};


struct pt_work {
  c10::intrusive_ptr<c10d::Work> work;
  std::vector<torch::Tensor> keep;  // tensors the operation writes; alive until it completes
};

namespace {
c10d::ReduceOp reduce_op(int32_t op) {
  switch (op) {
    case 0: return c10d::ReduceOp::SUM;
    case 1: return c10d::ReduceOp::AVG;
    case 2: return c10d::ReduceOp::MAX;
    case 3: return c10d::ReduceOp::MIN;
    case 4: return c10d::ReduceOp::PRODUCT;
    default: throw std::invalid_argument("unknown reduce op " + std::to_string(op));
  }
}

void wait(pt_pg* g, const c10::intrusive_ptr<c10d::Work>& w) {
  if (!w->wait(g->timeout)) throw std::runtime_error("collective did not complete");
}
}  // namespace

// The rank-0 process hosts the store (is_server = 1); every rank connects to host:port.
PT_EXPORT int32_t pt_tcpstore_new(const char* host, int32_t port, int32_t world_size, int32_t is_server,
                                  int64_t timeout_ms, pt_store** out) {
  PT_TRY
  c10d::TCPStoreOptions opts;
  opts.port = static_cast<uint16_t>(port);
  opts.isServer = is_server != 0;
  opts.numWorkers = world_size;
  opts.waitWorkers = false;
  opts.timeout = std::chrono::milliseconds(timeout_ms);
  *out = new pt_store{c10::make_intrusive<c10d::TCPStore>(std::string(host), opts)};
  PT_CATCH
}

PT_EXPORT int32_t pt_store_free(pt_store* s) {
  PT_TRY
  delete s;
  PT_CATCH
}

PT_EXPORT int32_t pt_store_set(pt_store* s, const char* key, const uint8_t* value, int64_t length) {
  PT_TRY
  s->store->set(key, std::vector<uint8_t>(value, value + length));
  PT_CATCH
}

// Blocks until the key exists (up to the store's timeout); the value is copied into a buffer freed by pt_free.
PT_EXPORT int32_t pt_store_get(pt_store* s, const char* key, uint8_t** value, int64_t* length) {
  PT_TRY
  auto v = s->store->get(key);
  *value = static_cast<uint8_t*>(std::malloc(v.size() > 0 ? v.size() : 1));
  std::memcpy(*value, v.data(), v.size());
  *length = static_cast<int64_t>(v.size());
  PT_CATCH
}

// A Gloo process group of `size` ranks; `prefix` separates groups sharing one store (sub-groups: only their
// members call this, each with its rank inside the group). Loopback by default; `interface_host` picks the address.
PT_EXPORT int32_t pt_pg_gloo(pt_store* s, const char* prefix, int32_t rank, int32_t size, int64_t timeout_ms,
                             const char* interface_host, pt_pg** out) {
  PT_TRY
#ifdef PT_WITH_GLOO
  auto options = c10d::ProcessGroupGloo::Options::create(std::chrono::milliseconds(timeout_ms));
  // A given address (loopback for single-machine runs); otherwise the network interface named by GLOO_SOCKET_IFNAME
  // (as PyTorch honours it: a host name that resolves to 127.0.1.1, Debian's default, would bind to loopback), else
  // the device of this host's name, reachable from other machines.
  const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
  if (interface_host && *interface_host)
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(interface_host));
  else if (ifname && *ifname)
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
  else
    options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  auto store = c10::make_intrusive<c10d::PrefixStore>(prefix, s->store);
  auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, options);
  *out = new pt_pg{pg, std::chrono::milliseconds(timeout_ms), rank, size};
#else
  throw std::runtime_error("this build of the shim has no Gloo (its headers were not found at build time): CPU ranks need a build with gloo/algorithm.h on the include path");
#endif
  PT_CATCH
}

PT_EXPORT int32_t pt_pg_nccl(pt_store* s, const char* prefix, int32_t rank, int32_t size, int64_t timeout_ms, pt_pg** out) {
  PT_TRY
#ifdef PT_WITH_CUDA
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = std::chrono::milliseconds(timeout_ms);
  auto store = c10::make_intrusive<c10d::PrefixStore>(prefix, s->store);
  auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, options);
  // The process's current device (set before the group is made): a barrier before any collective would otherwise
  // guess the device from the group rank, which is another rank's on a node whose ranks are not 0..n-1 of the group.
  *out = new pt_pg{pg, std::chrono::milliseconds(timeout_ms), rank, size, static_cast<int>(c10::cuda::current_device())};
#else
  throw std::runtime_error("this build of the shim has no NCCL: rebuild with -DPLANNER_WITH_CUDA=ON against a CUDA libtorch");
#endif
  PT_CATCH
}

PT_EXPORT int32_t pt_pg_free(pt_pg* g) {
  PT_TRY
  delete g;
  PT_CATCH
}

PT_EXPORT int32_t pt_allreduce(pt_pg* g, pt_tensor* t, int32_t op) {
  PT_TRY
  std::vector<torch::Tensor> v{t->t};
  c10d::AllreduceOptions o;
  o.reduceOp = reduce_op(op);
  o.timeout = g->timeout;
  wait(g, g->pg->allreduce(v, o));
  PT_CATCH
}

// Asynchronous all-reduce: the returned work completes the operation in place.
PT_EXPORT int32_t pt_allreduce_async(pt_pg* g, pt_tensor* t, int32_t op, pt_work** out) {
  PT_TRY
  std::vector<torch::Tensor> v{t->t};
  c10d::AllreduceOptions o;
  o.reduceOp = reduce_op(op);
  o.timeout = g->timeout;
  *out = new pt_work{g->pg->allreduce(v, o), v};
  PT_CATCH
}

// Gathers every rank's `t` (same shape) into a new tensor stacked along a new leading dim of size `size`.
PT_EXPORT int32_t pt_allgather(pt_pg* g, pt_tensor* t, pt_tensor** out) {
  PT_TRY
  std::vector<std::vector<torch::Tensor>> outputs(1);
  for (int i = 0; i < g->size; i++) outputs[0].push_back(torch::empty_like(t->t));
  std::vector<torch::Tensor> inputs{t->t.contiguous()};
  wait(g, g->pg->allgather(outputs, inputs, c10d::AllgatherOptions{g->timeout}));
  *out = pt::wrap(torch::stack(outputs[0], 0));
  PT_CATCH
}

// Reduce-scatter: every rank gives `t` with `size` equal chunks along dim 0 and gets the reduced chunk of its rank.
// Gloo in libtorch 1.13 has no reduce-scatter, so it is emulated by an all-reduce of the whole tensor and a slice:
// that moves 2(n-1)/n of the buffer per rank instead of (n-1)/n, twice the traffic of a native reduce-scatter.
PT_EXPORT int32_t pt_reduce_scatter(pt_pg* g, pt_tensor* t, int32_t op, pt_tensor** out) {
  PT_TRY
  PT_CHECK_ARG(t->t.dim() >= 1 && t->t.size(0) % g->size == 0, "reduce_scatter needs dim 0 divisible by the group size");
  auto full = t->t.contiguous().clone();
  std::vector<torch::Tensor> v{full};
  c10d::AllreduceOptions o;
  o.reduceOp = reduce_op(op);
  o.timeout = g->timeout;
  wait(g, g->pg->allreduce(v, o));
  int64_t chunk = full.size(0) / g->size;
  *out = pt::wrap(full.narrow(0, g->rank * chunk, chunk).clone());
  PT_CATCH
}

// All-to-all: every rank gives `t` with `size` equal chunks along dim 0; chunk j goes to rank j, and the result holds
// chunk i of every rank j at position j (rank i's view).
PT_EXPORT int32_t pt_alltoall(pt_pg* g, pt_tensor* t, pt_tensor** out) {
  PT_TRY
  PT_CHECK_ARG(t->t.dim() >= 1 && t->t.size(0) % g->size == 0, "all_to_all needs dim 0 divisible by the group size");
  auto input = t->t.contiguous();
  auto output = torch::empty_like(input);
  std::vector<int64_t> equal;
  c10d::AllToAllOptions o;
  o.timeout = g->timeout;
  wait(g, g->pg->alltoall_base(output, input, equal, equal, o));
  *out = pt::wrap(output);
  PT_CATCH
}

PT_EXPORT int32_t pt_broadcast(pt_pg* g, pt_tensor* t, int32_t root) {
  PT_TRY
  std::vector<torch::Tensor> v{t->t};
  c10d::BroadcastOptions o;
  o.rootRank = root;
  o.timeout = g->timeout;
  wait(g, g->pg->broadcast(v, o));
  PT_CATCH
}

PT_EXPORT int32_t pt_barrier(pt_pg* g) {
  PT_TRY
  c10d::BarrierOptions o;
  o.timeout = g->timeout;
  if (g->device >= 0) o.device_ids = {g->device};
  wait(g, g->pg->barrier(o));
  PT_CATCH
}

PT_EXPORT int32_t pt_send(pt_pg* g, pt_tensor* t, int32_t dst, int32_t tag) {
  PT_TRY
  std::vector<torch::Tensor> v{t->t.contiguous()};
  wait(g, g->pg->send(v, dst, tag));
  PT_CATCH
}

PT_EXPORT int32_t pt_recv(pt_pg* g, pt_tensor* t, int32_t src, int32_t tag) {
  PT_TRY
  PT_CHECK_ARG(t->t.is_contiguous(), "recv needs a contiguous tensor");
  std::vector<torch::Tensor> v{t->t};
  wait(g, g->pg->recv(v, src, tag));
  PT_CATCH
}

PT_EXPORT int32_t pt_send_async(pt_pg* g, pt_tensor* t, int32_t dst, int32_t tag, pt_work** out) {
  PT_TRY
  std::vector<torch::Tensor> v{t->t.contiguous()};
  *out = new pt_work{g->pg->send(v, dst, tag), v};
  PT_CATCH
}

PT_EXPORT int32_t pt_recv_async(pt_pg* g, pt_tensor* t, int32_t src, int32_t tag, pt_work** out) {
  PT_TRY
  PT_CHECK_ARG(t->t.is_contiguous(), "recv needs a contiguous tensor");
  std::vector<torch::Tensor> v{t->t};
  *out = new pt_work{g->pg->recv(v, src, tag), v};
  PT_CATCH
}

// Waits for an asynchronous operation; an error or a timeout is reported as a failed status.
PT_EXPORT int32_t pt_work_wait(pt_work* w, int64_t timeout_ms) {
  PT_TRY
  if (!w->work->wait(std::chrono::milliseconds(timeout_ms))) throw std::runtime_error("operation did not complete");
  PT_CATCH
}

PT_EXPORT int32_t pt_work_free(pt_work* w) {
  PT_TRY
  delete w;
  PT_CATCH
}
