// The process-group handle shared by c10d.cpp (collectives) and parallel.cpp (model-parallel autograd ops).
#pragma once

#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>

#include <chrono>

struct pt_pg {
  c10::intrusive_ptr<c10d::ProcessGroup> pg;
  std::chrono::milliseconds timeout;
  int rank;
  int size;
};
