// Tensor creation, dtype/device moves, shapes and views, and copies to caller memory.
#include "common.h"

#include <ATen/EmptyTensor.h>

#include <cstring>

namespace {
c10::Device device_of(int32_t type, int32_t index) {
  if (type == 0) return c10::Device(c10::kCPU);
  if (type == 1) return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
  throw std::invalid_argument("unknown device type " + std::to_string(type));
}

std::vector<int64_t> sizes_of(const int64_t* shape, int32_t ndim) {
  if (ndim < 0 || (ndim > 0 && !shape)) throw std::invalid_argument("bad shape");
  return std::vector<int64_t>(shape, shape + ndim);
}
}  // namespace

PT_EXPORT int32_t pt_tensor_free(pt_tensor* h) {
  if (h) {
    delete h;
    pt::live_tensors().fetch_sub(1);
  }
  return PT_OK;
}

// A new tensor holding a copy of `data` (elements of `dtype`), shaped `shape`.
PT_EXPORT int32_t pt_tensor_from_data(const void* data, int32_t dtype, const int64_t* shape, int32_t ndim, pt_tensor** out) {
  PT_TRY
  auto sizes = sizes_of(shape, ndim);
  auto options = torch::TensorOptions().dtype(pt::to_scalar_type(dtype));
  auto t = torch::empty(sizes, options);
  if (t.numel() > 0) {
    PT_CHECK_ARG(data != nullptr, "data is null");
    std::memcpy(t.data_ptr(), data, t.numel() * t.element_size());
  }
  *out = pt::wrap(t);
  PT_CATCH
}

// Zeros allocated on the device (type 0 CPU, 1 CUDA; index).
PT_EXPORT int32_t pt_zeros(const int64_t* shape, int32_t ndim, int32_t dtype, int32_t type, int32_t index, pt_tensor** out) {
  PT_TRY
  *out = pt::wrap(torch::zeros(sizes_of(shape, ndim), torch::TensorOptions().dtype(pt::to_scalar_type(dtype)).device(device_of(type, index))));
  PT_CATCH
}

PT_EXPORT int32_t pt_full(const int64_t* shape, int32_t ndim, double value, int32_t dtype, pt_tensor** out) {
  PT_TRY
  *out = pt::wrap(torch::full(sizes_of(shape, ndim), value, torch::TensorOptions().dtype(pt::to_scalar_type(dtype))));
  PT_CATCH
}

// Normal(mean, std) from a generator seeded with `seed`: the same seed gives the same values on every rank.
PT_EXPORT int32_t pt_normal(const int64_t* shape, int32_t ndim, double mean, double std, uint64_t seed, int32_t dtype, pt_tensor** out) {
  PT_TRY
  auto gen = at::detail::createCPUGenerator(seed);
  auto t = torch::empty(sizes_of(shape, ndim), torch::TensorOptions().dtype(torch::kFloat32));
  t.normal_(mean, std, gen);
  *out = pt::wrap(t.to(pt::to_scalar_type(dtype)));
  PT_CATCH
}

PT_EXPORT int32_t pt_arange(double start, double end, double step, int32_t dtype, pt_tensor** out) {
  PT_TRY
  *out = pt::wrap(torch::arange(start, end, step, torch::TensorOptions().dtype(pt::to_scalar_type(dtype))));
  PT_CATCH
}

PT_EXPORT int32_t pt_to_dtype(pt_tensor* a, int32_t dtype, pt_tensor** out) {
  PT_TRY
  *out = pt::wrap(a->t.to(pt::to_scalar_type(dtype)));
  PT_CATCH
}

PT_EXPORT int32_t pt_to_device(pt_tensor* a, int32_t type, int32_t index, pt_tensor** out) {
  PT_TRY
  *out = pt::wrap(a->t.to(device_of(type, index)));
  PT_CATCH
}

PT_EXPORT int32_t pt_dtype(pt_tensor* a, int32_t* out) {
  PT_TRY
  *out = pt::from_scalar_type(a->t.scalar_type());
  PT_CATCH
}

PT_EXPORT int32_t pt_device(pt_tensor* a, int32_t* type, int32_t* index) {
  PT_TRY
  auto d = a->t.device();
  *type = d.is_cuda() ? 1 : 0;
  *index = d.has_index() ? d.index() : 0;
  PT_CATCH
}

PT_EXPORT int32_t pt_ndim(pt_tensor* a, int32_t* out) {
  PT_TRY
  *out = static_cast<int32_t>(a->t.dim());
  PT_CATCH
}

// Writes up to `capacity` sizes into `shape`.
PT_EXPORT int32_t pt_shape(pt_tensor* a, int64_t* shape, int32_t capacity) {
  PT_TRY
  PT_CHECK_ARG(capacity >= a->t.dim(), "shape buffer too small");
  for (int64_t i = 0; i < a->t.dim(); i++) shape[i] = a->t.size(i);
  PT_CATCH
}

PT_EXPORT int32_t pt_numel(pt_tensor* a, int64_t* out) {
  PT_TRY
  *out = a->t.numel();
  PT_CATCH
}

PT_EXPORT int32_t pt_view(pt_tensor* a, const int64_t* shape, int32_t ndim, pt_tensor** out) {
  PT_TRY
  *out = pt::wrap(a->t.view(sizes_of(shape, ndim)));
  PT_CATCH
}

PT_EXPORT int32_t pt_reshape(pt_tensor* a, const int64_t* shape, int32_t ndim, pt_tensor** out) {
  PT_TRY
  *out = pt::wrap(a->t.reshape(sizes_of(shape, ndim)));
  PT_CATCH
}

PT_EXPORT int32_t pt_transpose(pt_tensor* a, int64_t d0, int64_t d1, pt_tensor** out) {
  PT_TRY
  *out = pt::wrap(a->t.transpose(d0, d1));
  PT_CATCH
}

PT_EXPORT int32_t pt_narrow(pt_tensor* a, int64_t dim, int64_t start, int64_t length, pt_tensor** out) {
  PT_TRY
  *out = pt::wrap(a->t.narrow(dim, start, length));
  PT_CATCH
}

PT_EXPORT int32_t pt_contiguous(pt_tensor* a, pt_tensor** out) {
  PT_TRY
  *out = pt::wrap(a->t.contiguous());
  PT_CATCH
}

PT_EXPORT int32_t pt_clone(pt_tensor* a, pt_tensor** out) {
  PT_TRY
  *out = pt::wrap(a->t.clone());
  PT_CATCH
}

// Splits into `chunks` pieces along `dim`; writes up to `capacity` handles and their count.
PT_EXPORT int32_t pt_chunk(pt_tensor* a, int64_t chunks, int64_t dim, pt_tensor** outs, int32_t capacity, int32_t* count) {
  PT_TRY
  auto parts = a->t.chunk(chunks, dim);
  PT_CHECK_ARG(static_cast<int32_t>(parts.size()) <= capacity, "chunk output buffer too small");
  for (size_t i = 0; i < parts.size(); i++) outs[i] = pt::wrap(parts[i]);
  *count = static_cast<int32_t>(parts.size());
  PT_CATCH
}

PT_EXPORT int32_t pt_cat(pt_tensor** items, int32_t n, int64_t dim, pt_tensor** out) {
  PT_TRY
  std::vector<torch::Tensor> list;
  list.reserve(n);
  for (int32_t i = 0; i < n; i++) list.push_back(items[i]->t);
  *out = pt::wrap(torch::cat(list, dim));
  PT_CATCH
}

// Copies the tensor's elements (converted to `dtype`, on the CPU, row-major) into caller memory.
PT_EXPORT int32_t pt_copy_to(pt_tensor* a, int32_t dtype, void* dst, int64_t capacity_elements) {
  PT_TRY
  PT_CHECK_ARG(a->t.numel() == 0 || a->t.storage().data() != nullptr, "the tensor's storage is freed");
  auto t = a->t.detach().to(torch::kCPU).to(pt::to_scalar_type(dtype)).contiguous();
  PT_CHECK_ARG(t.numel() <= capacity_elements, "destination too small");
  std::memcpy(dst, t.data_ptr(), t.numel() * t.element_size());
  PT_CATCH
}

// Copies caller memory into an existing tensor in place (same element count; converted to its dtype).
PT_EXPORT int32_t pt_copy_from(pt_tensor* a, const void* src, int32_t dtype, int64_t elements) {
  PT_TRY
  PT_CHECK_ARG(elements == a->t.numel(), "element count differs from the tensor's");
  auto tmp = torch::empty(a->t.sizes(), torch::TensorOptions().dtype(pt::to_scalar_type(dtype)));
  std::memcpy(tmp.data_ptr(), src, elements * tmp.element_size());
  torch::NoGradGuard guard;
  a->t.copy_(tmp);
  PT_CATCH
}

PT_EXPORT int32_t pt_item(pt_tensor* a, double* out) {
  PT_TRY
  *out = a->t.item<double>();
  PT_CATCH
}

// In place: a.copy_(b) (shapes broadcast).
PT_EXPORT int32_t pt_copy_(pt_tensor* a, pt_tensor* b) {
  PT_TRY
  torch::NoGradGuard guard;
  a->t.copy_(b->t);
  PT_CATCH
}

// A tensor sharing `a`'s storage outside autograd (Python's `.data`): in-place writes through it leave `a`'s version
// counter alone, so graphs that saved `a` stay valid when its values are restored (ZeRO-3's re-gather).
PT_EXPORT int32_t pt_data(pt_tensor* a, pt_tensor** out) {
  PT_TRY
  *out = pt::wrap(a->t.variable_data());
  PT_CATCH
}

// Bytes of memory the tensor's storage holds now (0 once freed by pt_storage_free).
PT_EXPORT int32_t pt_storage_nbytes(pt_tensor* a, int64_t* out) {
  PT_TRY
  *out = a->t.has_storage() ? static_cast<int64_t>(a->t.storage().nbytes()) : 0;
  PT_CATCH
}

// Frees the memory of the tensor's storage in place, as PyTorch's FSDP resizes a sharded parameter's storage to zero:
// every tensor on the storage, the graphs' saved ones included, keeps its shape and identity but must not be read
// until pt_storage_allocate.
PT_EXPORT int32_t pt_storage_free(pt_tensor* a) {
  PT_TRY
  PT_CHECK_ARG(a->t.has_storage(), "the tensor has no storage");
  auto* storage = a->t.storage().unsafeGetStorageImpl();
  PT_CHECK_ARG(storage->resizable(), "the tensor's storage is not resizable");
  storage->set_data_ptr_noswap(at::DataPtr(nullptr, storage->device()));
  storage->set_nbytes(0);
  PT_CATCH
}

// Gives the tensor's storage new (uninitialised) memory for the bytes the tensor spans, unless it holds them already.
PT_EXPORT int32_t pt_storage_allocate(pt_tensor* a) {
  PT_TRY
  auto& t = a->t;
  PT_CHECK_ARG(t.has_storage(), "the tensor has no storage");
  auto* storage = t.storage().unsafeGetStorageImpl();
  size_t spans = at::detail::computeStorageNbytes(t.sizes(), t.strides(), t.element_size(), t.storage_offset());
  if (storage->nbytes() >= spans) return PT_OK;
  PT_CHECK_ARG(storage->resizable(), "the tensor's storage is not resizable");
  storage->set_data_ptr_noswap(storage->allocator()->allocate(spans));
  storage->set_nbytes(spans);
  PT_CATCH
}
