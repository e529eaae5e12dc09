// The process-group handle shared by c10d.cpp (collectives) and parallel.cpp (model-parallel autograd ops).
#pragma once

#include <torch/version.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>
#if TORCH_VERSION_MAJOR >= 2
#include <torch/csrc/distributed/c10d/Backend.hpp>
#endif

#include <chrono>

namespace pt {
// What Gloo and NCCL groups are: a c10d::ProcessGroup in libtorch 1.x; from 2.0 a c10d::Backend (ProcessGroup there
// wraps backends), with the same collectives.
#if TORCH_VERSION_MAJOR >= 2
using Group = c10d::Backend;
#else
using Group = c10d::ProcessGroup;
#endif
}  // namespace pt

struct pt_pg {
  c10::intrusive_ptr<pt::Group> pg;
  std::chrono::milliseconds timeout;
  int rank;
  int size;
  int device = -1;  // an NCCL group's CUDA device (its barrier runs there); -1 for Gloo
};
