// Deterministic block-wide sum (fixed tree order), torch-free. blockDim.x must be a multiple of 32
// and at most 1024; `scratch` holds 32 values.
#pragma once

#include <cuda_runtime.h>

#include "kernels/warp.cuh"

namespace uvireid {

// Every thread gets the block's sum. Two __syncthreads inside: call from all threads.
template <typename A>
__device__ A block_sum(A v, A* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  A t = lane < nwarps ? scratch[lane] : A(0);
  return warp_sum(t);  // every warp reduces the same partials, so every thread gets the sum
}

}  // namespace uvireid
