// Host version of the one cub::DeviceScan call the launchers make (emulated-CUDA test build only).
// As CUB: a null temp pointer only asks for the temp size; streams are synchronous here.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <iterator>

namespace cub {

struct DeviceScan {
  // out[i] = in[0] + ... + in[i-1], out[0] = 0, summed in the input's value type (in and out may alias).
  template <class In, class Out, class NumItems>
  static cudaError_t ExclusiveSum(void* temp, size_t& temp_bytes, In in, Out out, NumItems num_items,
                                  cudaStream_t = nullptr) {
    if (temp == nullptr) {
      temp_bytes = 1;
      return cudaSuccess;
    }
    using V = typename std::iterator_traits<In>::value_type;
    V sum{};
    for (NumItems i = 0; i < num_items; ++i) {
      const V v = in[i];
      out[i] = sum;
      sum = sum + v;
    }
    return cudaSuccess;
  }
};

}  // namespace cub
