// Shared declarations of the planner's libtorch shim: C ABI, opaque handles, status codes, thread-local errors.
#pragma once

#include <torch/torch.h>

#include <atomic>
#include <cstdint>
#include <string>

#define PT_EXPORT extern "C" __attribute__((visibility("default")))

// Bumped whenever an export is added or its signature changes; the managed side refuses a library with another revision.
#define PT_ABI_VERSION 16

enum pt_status : int32_t { PT_OK = 0, PT_ERROR = 1 };

// dtype codes shared with the managed side.
enum pt_dtype : int32_t { PT_F32 = 0, PT_F64 = 1, PT_BF16 = 2, PT_F16 = 3, PT_I64 = 4, PT_I32 = 5, PT_BOOL = 6, PT_U8 = 7 };

struct pt_tensor {
  torch::Tensor t;
};

namespace pt {
void set_error(const std::string& message);
std::atomic<int64_t>& live_tensors();
pt_tensor* wrap(torch::Tensor t);
c10::ScalarType to_scalar_type(int32_t dtype);
int32_t from_scalar_type(c10::ScalarType t);
}  // namespace pt

// Every export body runs inside PT_TRY ... PT_CATCH: no C++ exception crosses the boundary.
#define PT_TRY try {
#define PT_CATCH                                                   \
  }                                                                \
  catch (const c10::Error& e) {                                    \
    pt::set_error(e.what_without_backtrace());                     \
    return PT_ERROR;                                               \
  }                                                                \
  catch (const std::exception& e) {                                \
    pt::set_error(e.what());                                       \
    return PT_ERROR;                                               \
  }                                                                \
  catch (...) {                                                    \
    pt::set_error("unknown C++ exception");                        \
    return PT_ERROR;                                               \
  }                                                                \
  return PT_OK;

#define PT_CHECK_ARG(cond, msg) \
  if (!(cond)) {                \
    pt::set_error(msg);         \
    return PT_ERROR;            \
  }
