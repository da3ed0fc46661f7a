// CUDA launchers for memory_update_ and segment_reduce: checks and host-side grouping (shared with
// the CPU op layer), device guard, current stream, dispatch, launch, launch check.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/headeronly/core/Dispatch_v2.h>

#include "common/cuda_utils.h"
#include "common/host_to_device.h"
#include "common/memory_args.h"
#include "kernels/memory.cuh"

namespace uvireid {
namespace {

constexpr int kThreads = 256;

template <typename T>
void launch_memory_update(T* memory, const T* x, int64_t D, const int64_t* rows, const int64_t* offsets,
                          const int64_t* members, int64_t num_rows, double m, bool hard, cudaStream_t stream) {
  const unsigned int blocks = static_cast<unsigned int>(std::min<int64_t>(num_rows, 1 << 16));
  launch_kernel(memory_update_kernel<T>, blocks, kThreads, stream, memory, x, D, rows, offsets, members, num_rows, m,
                hard);
}

void memory_update_cuda(Tensor memory, Tensor features, Tensor labels, double momentum, bool hard) {
  CompactGroups g = check_memory_update(memory, features, labels, momentum);
  if (g.rows.empty() || memory.size(1) == 0) return;
  DeviceGuard guard(memory.get_device_index());
  cudaStream_t stream = current_stream(memory.get_device_index());
  Tensor x = torch::stable::contiguous(features);
  Tensor rows = host_to_device(g.rows, memory, ScalarType::Long);
  Tensor offsets = host_to_device(g.offsets, memory, ScalarType::Long);
  Tensor members = host_to_device(g.members, memory, ScalarType::Long);
  THO_DISPATCH_V2(memory.scalar_type(), "memory_update_", AT_WRAP([&] {
    launch_memory_update<scalar_t>(memory.mutable_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), memory.size(1),
                                   rows.const_data_ptr<int64_t>(), offsets.const_data_ptr<int64_t>(),
                                   members.const_data_ptr<int64_t>(), static_cast<int64_t>(g.rows.size()), momentum,
                                   hard, stream);
  }), AT_FLOATING_TYPES);
  UVIREID_LAUNCH_CHECK();
}

template <typename T>
void launch_segment_reduce(const T* x, const T* w, T* out, int64_t D, const int64_t* offsets, const int64_t* members,
                           int64_t S, SegmentMode mode, bool normalize, cudaStream_t stream) {
  const unsigned int blocks = static_cast<unsigned int>(std::min<int64_t>(S, 1 << 16));
  launch_kernel(segment_reduce_kernel<T>, blocks, kThreads, stream, x, w, out, D, offsets, members, S, mode, normalize);
}

Tensor segment_reduce_cuda(Tensor x, Tensor segments, std::optional<Tensor> weights, int64_t num_segments,
                           std::string mode, bool normalize) {
  const SegmentReduceArgs args = check_segment_reduce(x, segments, weights, num_segments, mode);
  const LabelGroups& g = args.groups;
  const int64_t D = x.size(1);
  DeviceGuard guard(x.get_device_index());
  Tensor out = torch::stable::new_zeros(x, {num_segments, D});
  if (num_segments == 0 || D == 0) return out;
  cudaStream_t stream = current_stream(x.get_device_index());
  Tensor xc = torch::stable::contiguous(x);
  std::optional<Tensor> wc;
  if (weights.has_value()) wc = torch::stable::contiguous(*weights);
  Tensor offsets = host_to_device(g.offsets, x, ScalarType::Long);
  Tensor members = host_to_device(g.members, x, ScalarType::Long);
  THO_DISPATCH_V2(x.scalar_type(), "segment_reduce", AT_WRAP([&] {
    launch_segment_reduce<scalar_t>(xc.const_data_ptr<scalar_t>(), wc ? wc->const_data_ptr<scalar_t>() : nullptr,
                                    out.mutable_data_ptr<scalar_t>(), D, offsets.const_data_ptr<int64_t>(),
                                    members.const_data_ptr<int64_t>(), num_segments, args.mode, normalize, stream);
  }), AT_FLOATING_TYPES);
  UVIREID_LAUNCH_CHECK();
  return out;
}

}  // namespace
}  // namespace uvireid

UVIREID_CUDA_LIBRARY_IMPL(m) {
  m.impl("memory_update_", TORCH_BOX(&uvireid::memory_update_cuda));
  m.impl("segment_reduce", TORCH_BOX(&uvireid::segment_reduce_cuda));
}
