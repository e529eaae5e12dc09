// Errors, handle bookkeeping, dtype mapping and the ABI revision.
#include "common.h"

#include <cstdlib>
#include <cstring>

namespace {
thread_local std::string g_error;
}

namespace pt {
void set_error(const std::string& message) { g_error = message; }

std::atomic<int64_t>& live_tensors() {
  static std::atomic<int64_t> count{0};
  return count;
}

pt_tensor* wrap(torch::Tensor t) {
  auto* h = new pt_tensor{std::move(t)};
  live_tensors().fetch_add(1);
  return h;
}

c10::ScalarType to_scalar_type(int32_t dtype) {
  switch (dtype) {
    case PT_F32: return torch::kFloat32;
    case PT_F64: return torch::kFloat64;
    case PT_BF16: return torch::kBFloat16;
    case PT_F16: return torch::kFloat16;
    case PT_I64: return torch::kInt64;
    case PT_I32: return torch::kInt32;
    case PT_BOOL: return torch::kBool;
    case PT_U8: return torch::kUInt8;
    default: throw std::invalid_argument("unknown dtype code " + std::to_string(dtype));
  }
}

int32_t from_scalar_type(c10::ScalarType t) {
  switch (t) {
    case torch::kFloat32: return PT_F32;
    case torch::kFloat64: return PT_F64;
    case torch::kBFloat16: return PT_BF16;
    case torch::kFloat16: return PT_F16;
    case torch::kInt64: return PT_I64;
    case torch::kInt32: return PT_I32;
    case torch::kBool: return PT_BOOL;
    case torch::kUInt8: return PT_U8;
    default: throw std::invalid_argument(std::string("unsupported dtype ") + c10::toString(t));
  }
}
}  // namespace pt

PT_EXPORT int32_t pt_abi_version() { return PT_ABI_VERSION; }

// Copies this thread's last error into a buffer the caller frees with pt_free.
PT_EXPORT int32_t pt_last_error(char** out) {
  if (!out) return PT_ERROR;
  *out = static_cast<char*>(std::malloc(g_error.size() + 1));
  if (!*out) return PT_ERROR;
  std::memcpy(*out, g_error.c_str(), g_error.size() + 1);
  return PT_OK;
}

PT_EXPORT void pt_free(void* p) { std::free(p); }

PT_EXPORT int64_t pt_live_tensors() { return pt::live_tensors().load(); }

PT_EXPORT const char* pt_torch_version() {
#ifdef TORCH_VERSION
  return TORCH_VERSION;
#else
  return C10_STRINGIZE(TORCH_VERSION_MAJOR) "." C10_STRINGIZE(TORCH_VERSION_MINOR) "." C10_STRINGIZE(TORCH_VERSION_PATCH);
#endif
}
