// CUDA kernels for memory_update_ and segment_reduce, torch-free. Groups come from the host
// (kernels/segments.h): one block per distinct memory row / segment, walking its members in batch
// order, so repeated labels give the sequential loop's result and every run gives the same bits.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/reduce.cuh"
#include "kernels/segments.h"

namespace uvireid {

constexpr double kMemNormEps = 1e-12;

// c = m*c + (1-m)*x in T (as the CPU kernel and torch's own loop), then c *= T(1/max(|c|, eps))
// with the squared norm summed in double.
template <typename T>
__device__ void momentum_step_block(T* c, const T* x, int64_t D, double m, double* scratch) {
  const T mt = static_cast<T>(m), mx = static_cast<T>(1.0 - m);
  double sq = 0.0;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    const T v = mt * c[d] + mx * x[d];
    c[d] = v;
    sq += static_cast<double>(v) * static_cast<double>(v);
  }
  const T inv = static_cast<T>(1.0 / fmax(sqrt(block_sum(sq, scratch)), kMemNormEps));
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) c[d] *= inv;
  __syncthreads();
}

template <typename T>
__global__ void memory_update_kernel(T* memory, const T* x, int64_t D, const int64_t* rows, const int64_t* offsets,
                                     const int64_t* members, int64_t num_rows, double m, bool hard) {
  __shared__ double scratch[32];
  for (int64_t k = blockIdx.x; k < num_rows; k += gridDim.x) {
    T* c = memory + rows[k] * D;
    const int64_t lo = offsets[k], hi = offsets[k + 1];
    if (!hard) {
      for (int64_t j = lo; j < hi; ++j) momentum_step_block(c, x + members[j] * D, D, m, scratch);
      continue;
    }
    // Lowest cosine to the current row; strict < keeps the earliest sample on ties and skips NaN
    // (as the CPU kernel).
    int64_t best = members[lo];
    double best_cos = INFINITY;
    for (int64_t j = lo; j < hi; ++j) {
      const T* xb = x + members[j] * D;
      double dot = 0.0, sq = 0.0;
      for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
        dot += static_cast<double>(xb[d]) * static_cast<double>(c[d]);
        sq += static_cast<double>(xb[d]) * static_cast<double>(xb[d]);
      }
      dot = block_sum(dot, scratch);
      sq = block_sum(sq, scratch);
      const double cosv = dot / fmax(sqrt(sq), kMemNormEps);
      if (cosv < best_cos) {
        best_cos = cosv;
        best = members[j];
      }
    }
    momentum_step_block(c, x + best * D, D, m, scratch);
  }
}

// mode: see SegmentMode (kernels/segments.h). Empty segments stay zero (out is zeroed).
template <typename T>
__global__ void segment_reduce_kernel(const T* x, const T* w, T* out, int64_t D, const int64_t* offsets,
                                      const int64_t* members, int64_t num_segments, SegmentMode mode,
                                      bool normalize) {
  __shared__ double scratch[32];
  for (int64_t s = blockIdx.x; s < num_segments; s += gridDim.x) {
    const int64_t lo = offsets[s], hi = offsets[s + 1];
    double wsum = 0.0;
    for (int64_t k = lo; k < hi; ++k) wsum += mode == kSegmentMean ? 1.0 : static_cast<double>(w[members[k]]);
    const double denom = mode == kSegmentWeightedMean ? wsum : static_cast<double>(hi - lo);
    const double scale = denom != 0.0 ? 1.0 / denom : 0.0;
    // Normalising needs the row's norm first: a second pass recomputes the sums in double rather
    // than rounding twice, so the result matches the CPU kernel.
    auto column = [&](int64_t d) {
      double acc = 0.0;
      for (int64_t k = lo; k < hi; ++k) {
        const int64_t i = members[k];
        acc += (mode == kSegmentMean ? 1.0 : static_cast<double>(w[i])) * static_cast<double>(x[i * D + d]);
      }
      return acc * scale;
    };
    double inv = 1.0;
    if (normalize) {
      double sq = 0.0;
      for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
        const double v = column(d);
        sq += v * v;
      }
      inv = 1.0 / fmax(sqrt(block_sum(sq, scratch)), kMemNormEps);
    }
    T* o = out + s * D;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) o[d] = static_cast<T>(column(d) * inv);
  }
}

}  // namespace uvireid
