// AdamW over a parameter list (libtorch's C++ optimizer; fused/foreach kernels are Python-only in 1.13).
#include "common.h"

struct pt_adamw {
  std::unique_ptr<torch::optim::AdamW> opt;
};

PT_EXPORT int32_t pt_adamw_new(pt_tensor** params, int32_t n, double lr, double beta1, double beta2, double eps,
                               double weight_decay, pt_adamw** out) {
  PT_TRY
  std::vector<torch::Tensor> list;
  for (int32_t i = 0; i < n; i++) list.push_back(params[i]->t);
  auto options = torch::optim::AdamWOptions(lr).betas({beta1, beta2}).eps(eps).weight_decay(weight_decay);
  *out = new pt_adamw{std::make_unique<torch::optim::AdamW>(list, options)};
  PT_CATCH
}

PT_EXPORT int32_t pt_adamw_step(pt_adamw* o) {
  PT_TRY
  o->opt->step();
  PT_CATCH
}

PT_EXPORT int32_t pt_adamw_zero_grad(pt_adamw* o) {
  PT_TRY
  o->opt->zero_grad();
  PT_CATCH
}

PT_EXPORT int32_t pt_adamw_set_lr(pt_adamw* o, double lr) {
  PT_TRY
  for (auto& group : o->opt->param_groups())
    static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
  PT_CATCH
}

PT_EXPORT int32_t pt_adamw_free(pt_adamw* o) {
  PT_TRY
  delete o;
  PT_CATCH
}
