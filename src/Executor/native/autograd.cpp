// Autograd: requires-grad, backward with an output gradient (pipeline stages need it), gradients, no-grad scopes.
#include "common.h"

struct pt_no_grad {
  torch::NoGradGuard guard;
};

PT_EXPORT int32_t pt_set_requires_grad(pt_tensor* a, int32_t value) {
  PT_TRY
  a->t.set_requires_grad(value != 0);
  PT_CATCH
}

PT_EXPORT int32_t pt_requires_grad(pt_tensor* a, int32_t* out) {
  PT_TRY
  *out = a->t.requires_grad() ? 1 : 0;
  PT_CATCH
}

// Backpropagates from `a`; `grad` is the gradient of the loss with respect to `a` (null for a scalar loss).
PT_EXPORT int32_t pt_backward(pt_tensor* a, pt_tensor* grad, int32_t retain_graph) {
  PT_TRY
  if (grad)
    a->t.backward(grad->t, retain_graph != 0);
  else
    a->t.backward({}, retain_graph != 0);
  PT_CATCH
}

// The accumulated gradient, or null when there is none yet.
PT_EXPORT int32_t pt_grad(pt_tensor* a, pt_tensor** out) {
  PT_TRY
  auto g = a->t.grad();
  *out = g.defined() ? pt::wrap(g) : nullptr;
  PT_CATCH
}

// Sets the accumulated gradient (e.g. after a data-parallel all-reduce); null clears it.
PT_EXPORT int32_t pt_set_grad(pt_tensor* a, pt_tensor* g) {
  PT_TRY
  a->t.mutable_grad() = g ? g->t : torch::Tensor();
  PT_CATCH
}

PT_EXPORT int32_t pt_zero_grad(pt_tensor* a) {
  PT_TRY
  auto& g = a->t.mutable_grad();
  if (g.defined()) {
    g = g.detach();
    g.zero_();
  }
  PT_CATCH
}

PT_EXPORT int32_t pt_detach(pt_tensor* a, pt_tensor** out) {
  PT_TRY
  *out = pt::wrap(a->t.detach());
  PT_CATCH
}

// Enters a no-grad scope on this thread; pt_no_grad_exit on the same thread ends it.
PT_EXPORT int32_t pt_no_grad_enter(pt_no_grad** out) {
  PT_TRY
  *out = new pt_no_grad();
  PT_CATCH
}

PT_EXPORT int32_t pt_no_grad_exit(pt_no_grad* g) {
  PT_TRY
  delete g;
  PT_CATCH
}
