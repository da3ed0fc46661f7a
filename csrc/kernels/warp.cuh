// Warp-wide reductions shared by every kernel, torch-free: a shuffle tree down to lane 0 in a fixed
// order (deterministic run to run), then lane 0's value broadcast, so every lane returns the same bits.
// Call from all 32 lanes of the warp.
#pragma once

#include <cuda_runtime.h>

namespace uvireid {

constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;

template <typename A>
__device__ __forceinline__ A warp_sum(A v) {
  for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_down_sync(kFullMask, v, o);
  return __shfl_sync(kFullMask, v, 0);
}

template <typename A>
__device__ __forceinline__ A warp_max(A v) {
  for (int o = kWarp / 2; o > 0; o >>= 1) v = fmax(v, __shfl_down_sync(kFullMask, v, o));
  return __shfl_sync(kFullMask, v, 0);
}

}  // namespace uvireid
