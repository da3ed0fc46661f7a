// CUDA launchers for mmd2 and _mmd2_backward: checks and host-side grouping (shared with the CPU op
// layer), device guard, current stream, dispatch, launch, launch check.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/headeronly/core/Dispatch_v2.h>

#include "common/cuda_utils.h"
#include "common/host_to_device.h"
#include "common/mmd_args.h"
#include "kernels/mmd.cuh"

namespace uvireid {
namespace {

constexpr int kThreads = 256;

// Device copies of the group CSRs plus the workspace offsets (p_g² doubles per group).
struct DeviceGroups {
  Tensor x_off, x_mem, y_off, y_mem, ws_off, ws;
  MmdGroupPtrs ptrs() const {
    return {x_off.const_data_ptr<int64_t>(), x_mem.const_data_ptr<int64_t>(), y_off.const_data_ptr<int64_t>(),
            y_mem.const_data_ptr<int64_t>(), ws_off.const_data_ptr<int64_t>()};
  }
};

DeviceGroups to_device(const MmdGroups& g, const Tensor& like) {
  const int64_t G = static_cast<int64_t>(g.x.offsets.size()) - 1;
  std::vector<int64_t> ws_off(static_cast<size_t>(G) + 1, 0);
  for (int64_t i = 0; i < G; ++i) {
    const int64_t p = (g.x.offsets[i + 1] - g.x.offsets[i]) + (g.y.offsets[i + 1] - g.y.offsets[i]);
    ws_off[i + 1] = ws_off[i] + p * p;
  }
  return {host_to_device(g.x.offsets, like, ScalarType::Long), host_to_device(g.x.members, like, ScalarType::Long),
          host_to_device(g.y.offsets, like, ScalarType::Long), host_to_device(g.y.members, like, ScalarType::Long),
          host_to_device(ws_off, like, ScalarType::Long),
          torch::stable::new_empty(like, {std::max<int64_t>(ws_off[G], 1)}, ScalarType::Double)};
}

unsigned int blocks_for(int64_t G) { return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>(G, 1 << 16))); }

template <typename T>
void launch_mmd2_forward(const T* x, const T* y, int64_t D, MmdGroupPtrs g, int64_t G, double* ws, const T* given,
                         int64_t S, double mul, int64_t num, T* loss, bool* valid, T* bw, cudaStream_t stream) {
  launch_kernel(mmd2_forward_kernel<T>, blocks_for(G), kThreads, stream, x, y, D, g, G, ws, given, S, mul, num, loss,
                valid, bw);
}

std::tuple<Tensor, Tensor, Tensor> mmd2_cuda(Tensor x, Tensor y, Tensor x_groups, Tensor y_groups, int64_t num_groups,
                                             std::optional<Tensor> bandwidths, double kernel_mul, int64_t kernel_num) {
  MmdGroups g = check_mmd_inputs("mmd2", x, y, x_groups, y_groups, num_groups);
  std::vector<double> given = check_mmd_bandwidths(bandwidths, x, kernel_mul, kernel_num);
  const int64_t S = given.empty() ? kernel_num : static_cast<int64_t>(given.size());
  DeviceGuard guard(x.get_device_index());
  Tensor loss = torch::stable::new_zeros(x, {num_groups});
  Tensor valid = torch::stable::new_zeros(x, {num_groups}, ScalarType::Bool);
  Tensor bw = torch::stable::new_zeros(x, {num_groups, S});
  if (num_groups == 0) return {loss, valid, bw};
  cudaStream_t stream = current_stream(x.get_device_index());
  Tensor xc = torch::stable::contiguous(x), yc = torch::stable::contiguous(y);
  std::optional<Tensor> bc;
  if (bandwidths.has_value()) bc = torch::stable::contiguous(*bandwidths);
  DeviceGroups dg = to_device(g, x);
  THO_DISPATCH_V2(x.scalar_type(), "mmd2", AT_WRAP([&] {
    launch_mmd2_forward<scalar_t>(xc.const_data_ptr<scalar_t>(), yc.const_data_ptr<scalar_t>(), x.size(1), dg.ptrs(),
                                  num_groups, dg.ws.mutable_data_ptr<double>(),
                                  bc ? bc->const_data_ptr<scalar_t>() : nullptr, S, kernel_mul, kernel_num,
                                  loss.mutable_data_ptr<scalar_t>(), valid.mutable_data_ptr<bool>(),
                                  bw.mutable_data_ptr<scalar_t>(), stream);
  }), AT_FLOATING_TYPES);
  UVIREID_LAUNCH_CHECK();
  return {loss, valid, bw};
}

template <typename T>
void launch_mmd2_backward(const T* grad, const T* x, const T* y, int64_t D, MmdGroupPtrs g, int64_t G, double* ws,
                          const T* bw, int64_t S, T* gx, T* gy, cudaStream_t stream) {
  launch_kernel(mmd2_backward_kernel<T>, blocks_for(G), kThreads, stream, grad, x, y, D, g, G, ws, bw, S, gx, gy);
}

std::tuple<Tensor, Tensor> mmd2_backward_cuda(Tensor grad, Tensor x, Tensor y, Tensor x_groups, Tensor y_groups,
                                              Tensor bandwidths) {
  check_mmd_backward(grad, x, bandwidths, grad.dim() == 1 ? grad.size(0) : -1);
  MmdGroups g = check_mmd_inputs("_mmd2_backward", x, y, x_groups, y_groups, grad.size(0));
  DeviceGuard guard(x.get_device_index());
  Tensor gx = torch::stable::new_zeros(x, {x.size(0), x.size(1)});
  Tensor gy = torch::stable::new_zeros(y, {y.size(0), y.size(1)});
  if (grad.size(0) == 0 || x.size(1) == 0) return {gx, gy};
  cudaStream_t stream = current_stream(x.get_device_index());
  Tensor xc = torch::stable::contiguous(x), yc = torch::stable::contiguous(y);
  Tensor gc = torch::stable::contiguous(grad), bc = torch::stable::contiguous(bandwidths);
  DeviceGroups dg = to_device(g, x);
  THO_DISPATCH_V2(x.scalar_type(), "_mmd2_backward", AT_WRAP([&] {
    launch_mmd2_backward<scalar_t>(gc.const_data_ptr<scalar_t>(), xc.const_data_ptr<scalar_t>(),
                                   yc.const_data_ptr<scalar_t>(), x.size(1), dg.ptrs(), grad.size(0),
                                   dg.ws.mutable_data_ptr<double>(), bc.const_data_ptr<scalar_t>(), bandwidths.size(1),
                                   gx.mutable_data_ptr<scalar_t>(), gy.mutable_data_ptr<scalar_t>(), stream);
  }), AT_FLOATING_TYPES);
  UVIREID_LAUNCH_CHECK();
  return {gx, gy};
}

}  // namespace
}  // namespace uvireid

UVIREID_CUDA_LIBRARY_IMPL(m) {
  m.impl("mmd2", TORCH_BOX(&uvireid::mmd2_cuda));
  m.impl("_mmd2_backward", TORCH_BOX(&uvireid::mmd2_backward_cuda));
}
