// Labels drawn from a model's own outputs (Sophia's Gauss-Newton-Bartlett curvature estimate): the Gumbel-max trick
// with noise that is a function of (seed, token key, vocabulary id) alone, so that a process holding a slice of the
// vocabulary draws its part of exactly what one process holding all of it draws.
#include "common.h"

#include <ATen/Parallel.h>

#include <cmath>

namespace {

// SplitMix64's finalizer: a well-mixed 64-bit value from any 64-bit input.
uint64_t mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// A uniform double in (0, 1) from the three keys.
double uniform(uint64_t seed, int64_t token, int64_t vocab) {
  uint64_t h = mix(seed ^ mix(static_cast<uint64_t>(token) * 0x9e3779b97f4a7c15ULL ^ mix(static_cast<uint64_t>(vocab))));
  return (static_cast<double>(h >> 11) + 0.5) / 9007199254740992.0;  // 2^53
}

}  // namespace

// For each row i of logits [n, v] (vocabulary ids vocab_start .. vocab_start + v - 1), the largest logit + Gumbel noise
// g = -log(-log(u(seed, keys[i], id))) and its id (ties: the larger id). values fp64 [n] (compared across processes
// as one process compares them), ids int64 [n], on the CPU: the logits are copied to the host (a curvature pass every k
// steps; a device kernel would spare the copy on GPUs), rows in parallel.
PT_EXPORT int32_t pt_gumbel_argmax(pt_tensor* logits, const int64_t* keys, int64_t n, uint64_t seed, int64_t vocab_start,
                                   pt_tensor** values, pt_tensor** ids) {
  PT_TRY
  auto l = logits->t.detach().to(torch::kCPU, torch::kFloat64).contiguous();
  if (l.dim() != 2 || l.size(0) != n) throw std::invalid_argument("pt_gumbel_argmax: logits must be [n, vocab] with n keys");
  int64_t v = l.size(1);
  auto best = torch::empty({n}, torch::kFloat64);
  auto arg = torch::empty({n}, torch::kInt64);
  auto la = l.accessor<double, 2>();
  auto ba = best.accessor<double, 1>();
  auto aa = arg.accessor<int64_t, 1>();
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; i++) {
      double top = -INFINITY;
      int64_t at = -1;
      for (int64_t j = 0; j < v; j++) {
        double s = la[i][j] - std::log(-std::log(uniform(seed, keys[i], vocab_start + j)));
        if (s >= top) {
          top = s;
          at = vocab_start + j;
        }
      }
      ba[i] = top;
      aa[i] = at;
    }
  });
  *values = pt::wrap(best);
  *ids = pt::wrap(arg);
  PT_CATCH
}
