// Seeds, threads, clock, device synchronisation and memory statistics.
#include "common.h"

#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#ifdef PT_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/cuda.h>
#include <ATen/cuda/CUDAContext.h>
#endif

#include <cstdio>

PT_EXPORT int32_t pt_manual_seed(uint64_t seed) {
  PT_TRY
  torch::manual_seed(seed);
  PT_CATCH
}

// OpenBLAS's own thread count (it starts a thread per core unless told, whatever ATen's setting); weak: absent
// where libtorch uses another BLAS.
extern "C" void openblas_set_num_threads(int) __attribute__((weak));

PT_EXPORT int32_t pt_set_num_threads(int32_t n) {
  PT_TRY
  at::set_num_threads(n);
  if (openblas_set_num_threads != nullptr) openblas_set_num_threads(n);
  PT_CATCH
}

PT_EXPORT int32_t pt_get_num_threads() { return at::get_num_threads(); }

// Monotonic nanoseconds.
PT_EXPORT int64_t pt_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

PT_EXPORT int32_t pt_cuda_device_count() {
#ifdef PT_WITH_CUDA
  return static_cast<int32_t>(torch::cuda::device_count());
#else
  return 0;
#endif
}

// The name of CUDA device `index` (as nvidia-smi gives it), into `buffer` of `length` bytes, NUL-terminated.
PT_EXPORT int32_t pt_cuda_device_name(int32_t index, char* buffer, int32_t length) {
  PT_TRY
  PT_CHECK_ARG(buffer != nullptr && length > 0, "the name's buffer is empty");
#ifdef PT_WITH_CUDA
  std::snprintf(buffer, static_cast<size_t>(length), "%s", at::cuda::getDeviceProperties(static_cast<c10::DeviceIndex>(index))->name);
#else
  (void)index;
  throw std::runtime_error("this build of the shim has no CUDA (build it against a CUDA libtorch with -DPLANNER_WITH_CUDA=ON)");
#endif
  PT_CATCH
}

// The UUID of CUDA device `index` ("GPU-" and 32 hex digits in nvidia-smi's grouping; a MIG slice has its own): unique
// across machines, it tells whether two ranks would drive the same device (tasks that each see one device, the same one).
PT_EXPORT int32_t pt_cuda_device_uuid(int32_t index, char* buffer, int32_t length) {
  PT_TRY
  PT_CHECK_ARG(buffer != nullptr && length > 0, "the UUID's buffer is empty");
#ifdef PT_WITH_CUDA
  const auto* p = at::cuda::getDeviceProperties(static_cast<c10::DeviceIndex>(index));
  const auto* u = reinterpret_cast<const unsigned char*>(p->uuid.bytes);
  std::snprintf(buffer, static_cast<size_t>(length),
                "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
#else
  (void)index;
  throw std::runtime_error("this build of the shim has no CUDA (build it against a CUDA libtorch with -DPLANNER_WITH_CUDA=ON)");
#endif
  PT_CATCH
}

// Makes CUDA device `index` the process's current one (NCCL communicators and kernels launched without a tensor of
// their own go there). A CPU build has no device to set.
PT_EXPORT int32_t pt_cuda_set_device(int32_t index) {
  PT_TRY
#ifdef PT_WITH_CUDA
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(index));
#else
  throw std::runtime_error("this build of the shim has no CUDA (build it against a CUDA libtorch with -DPLANNER_WITH_CUDA=ON)");
#endif
  PT_CATCH
}

// Waits for the work queued on the device's current stream (a no-op on the CPU, whose ops are synchronous): the
// kernels, and the collectives whose completion the stream was made to wait for (a waited work). Not the whole
// device: an asynchronous all-reduce or pipeline send still in flight on NCCL's own streams is left running (a device
// synchronisation would serialise the overlap and could wait for a send whose receive the peer has yet to post).
PT_EXPORT int32_t pt_synchronize(int32_t device_type, int32_t index) {
  PT_TRY
#ifdef PT_WITH_CUDA
  if (device_type == 1) c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(index)).synchronize();
#endif
  PT_CATCH
}

// Memory of the process (CPU: resident set size from the kernel — current from /proc/self/statm, peak from
// getrusage's ru_maxrss) or of a CUDA device (the caching allocator's reserved bytes, current and peak: what the
// process holds on the device, allocated tensors and the cached blocks between them, as the CPU's resident set is).
PT_EXPORT int32_t pt_memory(int32_t device_type, int32_t index, int64_t* current, int64_t* peak) {
  PT_TRY
  if (device_type == 0) {
    long pages = 0, resident = 0;
    std::ifstream statm("/proc/self/statm");
    statm >> pages >> resident;
    *current = static_cast<int64_t>(resident) * sysconf(_SC_PAGESIZE);
    struct rusage usage {};
    getrusage(RUSAGE_SELF, &usage);
    *peak = static_cast<int64_t>(usage.ru_maxrss) * 1024;
  } else {
#ifdef PT_WITH_CUDA
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index);
    // Entry 0: StatType::AGGREGATE (all pools), in every libtorch; the enum itself moved out of this namespace in 2.5.
    *current = stats.reserved_bytes[0].current;
    *peak = stats.reserved_bytes[0].peak;
#else
    throw std::runtime_error("this build of the shim has no CUDA");
#endif
  }
  PT_CATCH
}

PT_EXPORT int32_t pt_reset_peak_memory(int32_t device_type, int32_t index) {
  PT_TRY
#ifdef PT_WITH_CUDA
  if (device_type == 1) c10::cuda::CUDACachingAllocator::resetPeakStats(index);
#endif
  PT_CATCH
}
