// Helpers for the CUDA launchers (csrc/cuda/*.cu): device guard, current stream, launch checks.
// Launch only on the current stream: default-stream launches break torch.compile and CUDA graphs.
#pragma once

#include <cuda_runtime.h>

#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/macros.h>

#include <algorithm>
#include <cstdint>

namespace uvireid {

using DeviceGuard = torch::stable::accelerator::DeviceGuard;

inline cudaStream_t current_stream(int32_t device_index) {
  void* stream = nullptr;
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_get_current_cuda_stream(device_index, &stream));
  return static_cast<cudaStream_t>(stream);
}

// Grid size for a grid-stride loop over n items; capped so huge n never overflows gridDim.x.
inline unsigned int grid_for(int64_t n, int threads, int64_t cap = 1 << 16) {
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>((n + threads - 1) / threads, cap)));
}

}  // namespace uvireid

#define UVIREID_CUDA_CHECK(EXPR) STD_CUDA_CHECK(EXPR)
#define UVIREID_LAUNCH_CHECK() STD_CUDA_KERNEL_LAUNCH_CHECK()
