// Helpers for the CUDA launchers (csrc/cuda/*.cu): device guard, current stream, the one kernel
// launch helper, and launch checks. Launch only on
// the current stream: default-stream launches break torch.compile and CUDA graphs.
//
// With UVIREID_EMULATION (the test build of tools/test_cuda_on_cpu.sh) the same launchers run on
// CPU tensors: kernels go to the SIMT emulator of csrc/emulation, there is no device or stream to
// manage, and the launchers register for CPU.
#pragma once

#include <cuda_runtime.h>

#include "common/registration.h"

#include <torch/csrc/stable/macros.h>
#include <torch/csrc/stable/tensor.h>

#include <algorithm>
#include <cstdint>
#include <utility>

#ifndef UVIREID_EMULATION
#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/csrc/stable/accelerator.h>
#endif

namespace uvireid {

#ifdef UVIREID_EMULATION
struct DeviceGuard {
  explicit DeviceGuard(int32_t) {}
};
inline cudaStream_t current_stream(int32_t) { return nullptr; }
// Whether t lives where the launchers' kernels run (a CUDA device; the CPU when emulated).
inline bool on_kernel_device(const torch::stable::Tensor& t) { return t.is_cpu(); }
#else
using DeviceGuard = torch::stable::accelerator::DeviceGuard;

inline cudaStream_t current_stream(int32_t device_index) {
  void* stream = nullptr;
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_get_current_cuda_stream(device_index, &stream));
  return static_cast<cudaStream_t>(stream);
}
inline bool on_kernel_device(const torch::stable::Tensor& t) { return t.is_cuda(); }
#endif

// Grid size for a grid-stride loop over n items; capped so huge n never overflows gridDim.x.
inline unsigned int grid_for(int64_t n, int threads, int64_t cap = 1 << 16) {
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>((n + threads - 1) / threads, cap)));
}

// Every kernel launch goes through here (never <<<>>> elsewhere), so the same launchers build with
// nvcc and for the emulator. Follow it with UVIREID_LAUNCH_CHECK().
template <class... Params, class... Args>
void launch_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, cudaStream_t stream, Args&&... args) {
#ifdef UVIREID_EMULATION
  (void)stream;
  emu::launch(kernel, grid, block, std::forward<Args>(args)...);
#else
  kernel<<<grid, block, 0, stream>>>(std::forward<Args>(args)...);
#endif
}

}  // namespace uvireid

#ifdef UVIREID_EMULATION
#define UVIREID_CUDA_CHECK(EXPR)                                                                      \
  do {                                                                                              \
    const cudaError_t uvireid_err_ = (EXPR);                                                        \
    STD_TORCH_CHECK(uvireid_err_ == cudaSuccess, "emulated CUDA error: ", cudaGetErrorString(uvireid_err_), \
                    " (", __FILE__, ":", __LINE__, ")");                                            \
  } while (0)
#else
#define UVIREID_CUDA_CHECK(EXPR) STD_CUDA_CHECK(EXPR)
#endif
#define UVIREID_LAUNCH_CHECK() UVIREID_CUDA_CHECK(cudaGetLastError())
