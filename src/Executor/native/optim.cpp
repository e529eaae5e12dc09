// Optimizers over a parameter list: libtorch's C++ AdamW and SGD (fused/foreach kernels are Python-only in 1.13), and
// Lion (Chen et al. 2023), which libtorch does not have, written here once.
#include "common.h"

struct pt_optim {
  virtual ~pt_optim() = default;
  virtual void step() = 0;
  virtual void zero_grad() = 0;
  virtual void set_lr(double lr) = 0;
  // Bytes of the optimizer's state tensors (moments, momentum buffers) now.
  virtual int64_t state_bytes() = 0;
};

namespace {

int64_t bytes_of(const torch::Tensor& t) { return t.defined() ? t.numel() * static_cast<int64_t>(t.element_size()) : 0; }

// Clears the gradients as libtorch 1.13's optimizers do: detached and zeroed, kept allocated.
void zero_grads(std::vector<torch::Tensor>& params) {
  for (auto& p : params)
    if (p.grad().defined()) {
      p.mutable_grad().detach_();
      p.mutable_grad().zero_();
    }
}

template <typename Options, typename State>
struct torch_optim : pt_optim {
  std::unique_ptr<torch::optim::Optimizer> opt;
  explicit torch_optim(std::unique_ptr<torch::optim::Optimizer> o) : opt(std::move(o)) {}
  void step() override { opt->step(); }
  void zero_grad() override { opt->zero_grad(); }
  void set_lr(double lr) override {
    for (auto& group : opt->param_groups()) static_cast<Options&>(group.options()).lr(lr);
  }
  int64_t state_bytes() override;
};

template <>
int64_t torch_optim<torch::optim::AdamWOptions, torch::optim::AdamWParamState>::state_bytes() {
  int64_t sum = 0;
  for (auto& [key, state] : opt->state()) {
    auto& s = static_cast<torch::optim::AdamWParamState&>(*state);
    sum += bytes_of(s.exp_avg()) + bytes_of(s.exp_avg_sq()) + bytes_of(s.max_exp_avg_sq());
  }
  return sum;
}

template <>
int64_t torch_optim<torch::optim::SGDOptions, torch::optim::SGDParamState>::state_bytes() {
  int64_t sum = 0;
  for (auto& [key, state] : opt->state())
    sum += bytes_of(static_cast<torch::optim::SGDParamState&>(*state).momentum_buffer());
  return sum;
}

// Lion: the update is the sign of an interpolation of the moment and the gradient (beta1), the moment then follows
// the gradient (beta2); decoupled weight decay as AdamW's.
struct lion : pt_optim {
  std::vector<torch::Tensor> params, moments;
  double lr, beta1, beta2, weight_decay;
  lion(std::vector<torch::Tensor> p, double lr_, double b1, double b2, double wd)
      : params(std::move(p)), moments(params.size()), lr(lr_), beta1(b1), beta2(b2), weight_decay(wd) {}
  void step() override {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < params.size(); i++) {
      auto& p = params[i];
      if (!p.grad().defined()) continue;
      auto g = p.grad();
      if (!moments[i].defined()) moments[i] = torch::zeros_like(p);
      auto update = (moments[i] * beta1 + g * (1 - beta1)).sign_();
      if (weight_decay != 0) p.mul_(1 - lr * weight_decay);
      p.add_(update, -lr);
      moments[i].mul_(beta2).add_(g, 1 - beta2);
    }
  }
  void zero_grad() override { zero_grads(params); }
  void set_lr(double lr_) override { lr = lr_; }
  int64_t state_bytes() override {
    int64_t sum = 0;
    for (auto& m : moments) sum += bytes_of(m);
    return sum;
  }
};

}  // namespace

// kind: 0 AdamW (beta1, beta2, eps), 1 SGD with momentum beta1, 2 Lion (beta1, beta2).
PT_EXPORT int32_t pt_optim_new(int32_t kind, pt_tensor** params, int32_t n, double lr, double beta1, double beta2, double eps,
                               double weight_decay, pt_optim** out) {
  PT_TRY
  std::vector<torch::Tensor> list;
  for (int32_t i = 0; i < n; i++) list.push_back(params[i]->t);
  switch (kind) {
    case 0: {
      auto options = torch::optim::AdamWOptions(lr).betas({beta1, beta2}).eps(eps).weight_decay(weight_decay);
      *out = new torch_optim<torch::optim::AdamWOptions, torch::optim::AdamWParamState>(std::make_unique<torch::optim::AdamW>(list, options));
      break;
    }
    case 1: {
      auto options = torch::optim::SGDOptions(lr).momentum(beta1).weight_decay(weight_decay);
      *out = new torch_optim<torch::optim::SGDOptions, torch::optim::SGDParamState>(std::make_unique<torch::optim::SGD>(list, options));
      break;
    }
    case 2:
      *out = new lion(list, lr, beta1, beta2, weight_decay);
      break;
    default:
      throw std::invalid_argument("unknown optimizer kind " + std::to_string(kind));
  }
  PT_CATCH
}

PT_EXPORT int32_t pt_optim_step(pt_optim* o) {
  PT_TRY
  o->step();
  PT_CATCH
}

PT_EXPORT int32_t pt_optim_zero_grad(pt_optim* o) {
  PT_TRY
  o->zero_grad();
  PT_CATCH
}

PT_EXPORT int32_t pt_optim_set_lr(pt_optim* o, double lr) {
  PT_TRY
  o->set_lr(lr);
  PT_CATCH
}

PT_EXPORT int32_t pt_optim_state_bytes(pt_optim* o, int64_t* out) {
  PT_TRY
  *out = o->state_bytes();
  PT_CATCH
}

PT_EXPORT int32_t pt_optim_free(pt_optim* o) {
  PT_TRY
  delete o;
  PT_CATCH
}
