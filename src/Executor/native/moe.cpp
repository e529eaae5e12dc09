// Mixture-of-experts support: the load-balancing loss's gradient carried by a block's output (Megatron-LM's
// MoEAuxLossAutoScaler), so that it reaches the router from wherever the block's backward starts (a pipeline stage's
// received gradient, a recomputed block) without a second backward.
#include "common.h"

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
