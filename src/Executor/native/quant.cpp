// NF4, the 4-bit NormalFloat storage of QLoRA (Dettmers et al. 2023, section 3): a weight's row-major flattening cut
// into blocks of `block` consecutive values, each block scaled by its absolute maximum into [-1, 1] and each scaled
// value stored as the index (0–15) of the nearest of 16 levels (the normal-float quantiles the paper publishes).
//   quantize    whole weight -> a code per value, its block's index per value, the blocks' absmax
//   pack        a shard of the codes (two per byte, low nibble first) and the absmax of the blocks it touches, one per
//               run of consecutive shard values in one block, with each run's length unless every run has the same
//   dequantize  code -> level x absmax (fp32, then the compute dtype)
//   linear      y = x Wᵀ with W dequantized in the forward and again in the backward (the input's gradient needs W;
//               nothing dequantized is kept between them, the codes are saved by reference)
#include "common.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The 16 NF4 levels, ascending (QLoRA's appendix; bitsandbytes' table).
constexpr float kLevels[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};

// The nearest level's index; a tie goes to the lower index (the first minimum, as torch.argmin picks it).
uint8_t nearest(float v) {
  uint8_t best = 0;
  float distance = std::fabs(v - kLevels[0]);
  for (uint8_t i = 1; i < 16; i++) {
    float d = std::fabs(v - kLevels[i]);
    if (d < distance) {
      distance = d;
      best = i;
    }
  }
  return best;
}

// A shard of an NF4 weight as the managed side holds it: packed codes, one absmax per run, the runs' lengths (undefined
// when every run has n / runs values), n values shaped `shape`.
struct Nf4 {
  torch::Tensor packed, absmax, runs;
  std::vector<int64_t> shape;
  int64_t numel() const {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

// On the CPU: one pass over the codes, writing fp32 values (no temporaries).
torch::Tensor dequantize_cpu(const Nf4& q) {
  int64_t n = q.numel(), count = q.absmax.numel();
  auto packed = q.packed.contiguous();
  auto absmax = q.absmax.to(torch::kFloat32).contiguous();
  auto out = torch::empty({n}, torch::TensorOptions().dtype(torch::kFloat32));
  const uint8_t* p = packed.data_ptr<uint8_t>();
  const float* a = absmax.data_ptr<float>();
  float* y = out.data_ptr<float>();
  auto value = [p](int64_t i) { return kLevels[(i & 1) ? (p[i >> 1] >> 4) : (p[i >> 1] & 15)]; };
  if (!q.runs.defined()) {
    int64_t length = count > 0 ? n / count : 0;
    at::parallel_for(0, count, 64, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; r++)
        for (int64_t i = r * length; i < (r + 1) * length; i++) y[i] = value(i) * a[r];
    });
    return out;
  }
  auto runs = q.runs.to(torch::kLong).contiguous();
  const int64_t* len = runs.data_ptr<int64_t>();
  for (int64_t r = 0, i = 0; r < count; r++)
    for (int64_t end = i + len[r]; i < end; i++) y[i] = value(i) * a[r];
  return out;
}

// On any device, in tensor ops (what the CPU loop must equal).
torch::Tensor dequantize_ops(const Nf4& q) {
  int64_t n = q.numel();
  auto codes = torch::stack({q.packed.bitwise_and(15), q.packed.div(16, "floor")}, 1).view(-1).narrow(0, 0, n);
  auto levels = torch::from_blob(const_cast<float*>(kLevels), {16}, torch::kFloat32).to(q.packed.device());
  auto values = levels.index_select(0, codes.to(torch::kLong));
  auto absmax = q.absmax.to(torch::kFloat32);
  if (q.runs.defined()) return values * absmax.repeat_interleave(q.runs.to(torch::kLong));
  return (values.view({absmax.numel(), -1}) * absmax.unsqueeze(1)).view(-1);
}

torch::Tensor dequantize(const Nf4& q, c10::ScalarType dtype, bool ops = false) {
  auto flat = (ops || !q.packed.device().is_cpu()) ? dequantize_ops(q) : dequantize_cpu(q);
  return flat.to(dtype).view(q.shape);
}

Nf4 nf4_of(pt_tensor* packed, pt_tensor* absmax, pt_tensor* runs, const int64_t* shape, int32_t ndim) {
  TORCH_CHECK(packed && absmax && (ndim == 0 || shape), "packed codes, absmax and shape are required");
  TORCH_CHECK(packed->t.scalar_type() == torch::kUInt8, "NF4 codes are uint8");
  Nf4 q{packed->t, absmax->t, runs ? runs->t : torch::Tensor(), std::vector<int64_t>(shape, shape + ndim)};
  TORCH_CHECK(q.packed.numel() == (q.numel() + 1) / 2, "NF4: ", q.packed.numel(), " bytes do not hold ", q.numel(), " codes");
  // The runs' sum is checked where it costs no device synchronisation (on the CPU; CUDA's per-use check would sync).
  TORCH_CHECK(q.runs.defined() ? !q.runs.device().is_cpu() || q.runs.sum().item<int64_t>() == q.numel()
                               : q.absmax.numel() > 0 && q.numel() % q.absmax.numel() == 0,
              "NF4: the runs do not cover the ", q.numel(), " values");
  return q;
}

// Autograd takes no undefined input: equal runs travel as an empty tensor.
torch::Tensor runs_or_none(const torch::Tensor& runs) { return runs.numel() > 0 ? runs : torch::Tensor(); }

struct Nf4Linear : public torch::autograd::Function<Nf4Linear> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, torch::Tensor packed, torch::Tensor absmax, torch::Tensor runs,
                               std::vector<int64_t> shape) {
    ctx->save_for_backward({packed, absmax, runs});
    ctx->saved_data["shape"] = shape;
    return torch::linear(x, dequantize(Nf4{packed, absmax, runs_or_none(runs), shape}, x.scalar_type()));
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto shape = ctx->saved_data["shape"].toIntVector();
    auto w = dequantize(Nf4{saved[0], saved[1], runs_or_none(saved[2]), shape}, grads[0].scalar_type());
    return {torch::matmul(grads[0], w), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};
}  // namespace

// Quantizes a whole weight in blocks of `block` values of its row-major flattening: the code (uint8) and the block's
// index (int64) of every value, both shaped as the weight, and each block's absmax (fp32; the last block may be short).
PT_EXPORT int32_t pt_nf4_quantize(pt_tensor* w, int64_t block, pt_tensor** codes, pt_tensor** blocks, pt_tensor** absmax) {
  PT_TRY
  PT_CHECK_ARG(block > 0, "the NF4 block size must be positive");
  auto flat = w->t.detach().to(torch::kCPU).to(torch::kFloat32).contiguous().view(-1);
  int64_t n = flat.numel(), count = (n + block - 1) / block;
  auto c = torch::empty({n}, torch::TensorOptions().dtype(torch::kUInt8));
  auto m = torch::empty({count}, torch::TensorOptions().dtype(torch::kFloat32));
  const float* x = flat.data_ptr<float>();
  uint8_t* code = c.data_ptr<uint8_t>();
  float* top = m.data_ptr<float>();
  at::parallel_for(0, count, 16, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; b++) {
      int64_t from = b * block, to = std::min(n, from + block);
      float most = 0;
      for (int64_t i = from; i < to; i++) most = std::max(most, std::fabs(x[i]));
      top[b] = most;
      // An all-zero block scales to zero: every value is the level 0.
      for (int64_t i = from; i < to; i++) code[i] = nearest(most > 0 ? x[i] / most : 0.0f);
    }
  });
  *codes = pt::wrap(c.view(w->t.sizes()));
  *blocks = pt::wrap(torch::arange(n, torch::TensorOptions().dtype(torch::kLong)).div(block, "floor").view(w->t.sizes()));
  *absmax = pt::wrap(m);
  PT_CATCH
}

// A shard's storage from its codes and block indices (the whole weight's, cut as the shard is) and the whole weight's
// absmax: the codes packed two per byte, the absmax of each run of consecutive values in one block, and the runs'
// lengths, or null when every run is as long.
PT_EXPORT int32_t pt_nf4_pack(pt_tensor* codes, pt_tensor* blocks, pt_tensor* absmax, pt_tensor** packed, pt_tensor** run_absmax,
                              pt_tensor** runs) {
  PT_TRY
  PT_CHECK_ARG(codes->t.numel() == blocks->t.numel() && codes->t.numel() > 0, "NF4: codes and block indices differ in size");
  auto c = codes->t.to(torch::kUInt8).contiguous().view(-1);
  if (c.numel() % 2) c = torch::cat({c, torch::zeros({1}, c.options())});
  auto pairs = c.view({-1, 2});
  *packed = pt::wrap(pairs.select(1, 0) + pairs.select(1, 1) * 16);
  auto [first, inverse, counts] = torch::unique_consecutive(blocks->t.contiguous().view(-1), false, true);
  *run_absmax = pt::wrap(absmax->t.index_select(0, first).contiguous());
  bool even = (counts == counts[0]).all().item<bool>();
  *runs = even ? nullptr : pt::wrap(counts);
  PT_CATCH
}

// The values of an NF4 shard in `dtype`, shaped `shape` (runs may be null); ops != 0 takes the tensor-op path the CPU
// loop must agree with.
PT_EXPORT int32_t pt_nf4_dequantize(pt_tensor* packed, pt_tensor* absmax, pt_tensor* runs, const int64_t* shape, int32_t ndim,
                                    int32_t dtype, int32_t ops, pt_tensor** out) {
  PT_TRY
  *out = pt::wrap(dequantize(nf4_of(packed, absmax, runs, shape, ndim), pt::to_scalar_type(dtype), ops != 0));
  PT_CATCH
}

// y = x·Wᵀ for the NF4 shard W [out, in] (frozen: only x gets a gradient, through W dequantized again).
PT_EXPORT int32_t pt_nf4_linear(pt_tensor* x, pt_tensor* packed, pt_tensor* absmax, pt_tensor* runs, const int64_t* shape, int32_t ndim,
                                pt_tensor** out) {
  PT_TRY
  PT_CHECK_ARG(ndim == 2, "an NF4 linear weight is [out, in]");
  auto q = nf4_of(packed, absmax, runs, shape, ndim);
  auto runs = q.runs.defined() ? q.runs : torch::empty({0}, torch::TensorOptions().dtype(torch::kLong).device(q.packed.device()));
  *out = pt::wrap(Nf4Linear::apply(x->t, q.packed, q.absmax, runs, q.shape));
  PT_CATCH
}
