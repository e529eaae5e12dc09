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
  // Checkpoints: parameter i's state tensors (none before its first step) and its step count (-1: no state yet).
  virtual std::vector<torch::Tensor> state(size_t i, int64_t& step) = 0;
  // Replaces parameter i's state with copies of the given tensors (as many as state() returns) and step count.
  virtual void set_state(size_t i, int64_t step, const std::vector<torch::Tensor>& tensors) = 0;
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
  // libtorch keys a parameter's state by its TensorImpl's address (as its own serialization does).
  std::string key(size_t i) { return c10::guts::to_string(opt->param_groups().at(0).params().at(i).unsafeGetTensorImpl()); }
  State* find(size_t i) {
    auto it = opt->state().find(key(i));
    return it == opt->state().end() ? nullptr : static_cast<State*>(it->second.get());
  }
  std::vector<torch::Tensor> state(size_t i, int64_t& step) override;
  void set_state(size_t i, int64_t step, const std::vector<torch::Tensor>& tensors) override;
};

using adamw_optim = torch_optim<torch::optim::AdamWOptions, torch::optim::AdamWParamState>;
using sgd_optim = torch_optim<torch::optim::SGDOptions, torch::optim::SGDParamState>;

template <>
std::vector<torch::Tensor> adamw_optim::state(size_t i, int64_t& step) {
  auto* s = find(i);
  step = s ? s->step() : -1;
  if (!s) return {};
  if (s->max_exp_avg_sq().defined()) throw std::invalid_argument("AdamW with amsgrad: its state is not checkpointed");
  return {s->exp_avg(), s->exp_avg_sq()};
}

template <>
void adamw_optim::set_state(size_t i, int64_t step, const std::vector<torch::Tensor>& tensors) {
  if (tensors.size() != 2) throw std::invalid_argument("AdamW's state is 2 tensors (exp_avg, exp_avg_sq)");
  auto s = std::make_unique<torch::optim::AdamWParamState>();
  s->step(step);
  s->exp_avg(tensors[0].clone());
  s->exp_avg_sq(tensors[1].clone());
  opt->state()[key(i)] = std::move(s);
}

template <>
std::vector<torch::Tensor> sgd_optim::state(size_t i, int64_t& step) {
  auto* s = find(i);
  step = s ? 0 : -1;  // SGD counts no steps
  if (!s) return {};
  return {s->momentum_buffer()};
}

template <>
void sgd_optim::set_state(size_t i, int64_t, const std::vector<torch::Tensor>& tensors) {
  if (tensors.size() != 1) throw std::invalid_argument("SGD's state is 1 tensor (momentum_buffer)");
  auto s = std::make_unique<torch::optim::SGDParamState>();
  s->momentum_buffer(tensors[0].clone());
  opt->state()[key(i)] = std::move(s);
}

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
  std::vector<torch::Tensor> state(size_t i, int64_t& step) override {
    step = moments.at(i).defined() ? 0 : -1;  // Lion counts no steps
    if (!moments.at(i).defined()) return {};
    return {moments[i]};
  }
  void set_state(size_t i, int64_t, const std::vector<torch::Tensor>& tensors) override {
    if (tensors.size() != 1) throw std::invalid_argument("Lion's state is 1 tensor (the moment)");
    moments.at(i) = tensors[0].clone();
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
      *out = new adamw_optim(std::make_unique<torch::optim::AdamW>(list, options));
      break;
    }
    case 1: {
      auto options = torch::optim::SGDOptions(lr).momentum(beta1).weight_decay(weight_decay);
      *out = new sgd_optim(std::make_unique<torch::optim::SGD>(list, options));
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

// Parameter i's state: its step count (-1 and no tensors before its first step) and up to *n state tensors (new
// handles sharing the optimizer's storage, freed by the caller); *n is set to how many there are.
PT_EXPORT int32_t pt_optim_state(pt_optim* o, int32_t i, int64_t* step, pt_tensor** out, int32_t* n) {
  PT_TRY
  auto tensors = o->state(static_cast<size_t>(i), *step);
  if (static_cast<int32_t>(tensors.size()) > *n) throw std::invalid_argument("too many state tensors for the buffer");
  *n = static_cast<int32_t>(tensors.size());
  for (size_t k = 0; k < tensors.size(); k++) out[k] = pt::wrap(tensors[k]);
  PT_CATCH
}

// Replaces parameter i's state by copies of n tensors and a step count.
PT_EXPORT int32_t pt_optim_set_state(pt_optim* o, int32_t i, int64_t step, pt_tensor** tensors, int32_t n) {
  PT_TRY
  std::vector<torch::Tensor> list;
  for (int32_t k = 0; k < n; k++) list.push_back(tensors[k]->t);
  o->set_state(static_cast<size_t>(i), step, list);
  PT_CATCH
}

PT_EXPORT int32_t pt_optim_free(pt_optim* o) {
  PT_TRY
  delete o;
  PT_CATCH
}
