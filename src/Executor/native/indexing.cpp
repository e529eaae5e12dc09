// Index arithmetic for optimizers whose statistics span a whole weight while a rank holds a piece of it (a tensor-
// parallel shard, a ZeRO slice of one): where each held element sits in the whole weight, and the scatter, gather and
// search ops that sum or maximise over those positions.
#include "common.h"

// The positions in a whole [*, cols] weight of the held elements [start, start + length) of a shard [*, local_cols]
// whose first element sits at (row_offset, col_offset): kind 0 the rows, 1 the columns, 2 the row-major flat index;
// floor-divided by divisor (1: the positions themselves), plus shift. int64, on like's device.
PT_EXPORT int32_t pt_piece_index(pt_tensor* like, int64_t start, int64_t length, int64_t local_cols, int64_t row_offset,
                                 int64_t col_offset, int64_t cols, int32_t kind, int64_t divisor, int64_t shift,
                                 pt_tensor** out) {
  PT_TRY
  auto local = torch::arange(start, start + length, torch::TensorOptions().dtype(torch::kInt64).device(like->t.device()));
  auto row = torch::div(local, local_cols, "floor") + row_offset;
  auto col = torch::remainder(local, local_cols) + col_offset;
  torch::Tensor index;
  switch (kind) {
    case 0: index = row; break;
    case 1: index = col; break;
    case 2: index = row * cols + col; break;
    default: throw std::invalid_argument("unknown index kind " + std::to_string(kind));
  }
  if (divisor < 1) throw std::invalid_argument("index divisor " + std::to_string(divisor) + " is not positive");
  *out = pt::wrap((divisor == 1 ? index : torch::div(index, divisor, "floor")) + shift);
  PT_CATCH
}

// target[index[i]] += src[i] (1-D, in place).
PT_EXPORT int32_t pt_index_add_(pt_tensor* target, pt_tensor* index, pt_tensor* src) {
  PT_TRY
  torch::NoGradGuard no_grad;
  target->t.index_add_(0, index->t, src->t);
  PT_CATCH
}

// target[index[i]] = max(target[index[i]], src[i]) (1-D, in place).
PT_EXPORT int32_t pt_scatter_amax_(pt_tensor* target, pt_tensor* index, pt_tensor* src) {
  PT_TRY
  torch::NoGradGuard no_grad;
  target->t.scatter_reduce_(0, index->t, src->t, "amax", true);
  PT_CATCH
}

// For each value, the index of the first boundary not below it (sorted boundaries): torch.bucketize, int64.
PT_EXPORT int32_t pt_bucketize(pt_tensor* values, pt_tensor* boundaries, pt_tensor** out) {
  PT_TRY
  *out = pt::wrap(torch::bucketize(values->t, boundaries->t));
  PT_CATCH
}
