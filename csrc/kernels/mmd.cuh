// CUDA kernels for mmd2 and _mmd2_backward, torch-free. One block per group; the pooled set
// P = X ∪ Y of a group (members from the host grouping, X first) gets its squared distances in a
// double workspace slice ws[ws_off[g] .. + p*p). Reductions use a fixed tree: deterministic.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/reduce.cuh"

namespace uvireid {

constexpr double kMmdMinBandwidth = 1e-12;  // all points equal: keeps exp(-0/b) = 1 instead of NaN

struct MmdGroupPtrs {
  const int64_t* x_off;
  const int64_t* x_mem;
  const int64_t* y_off;
  const int64_t* y_mem;
  const int64_t* ws_off;
};

template <typename T>
__device__ __forceinline__ const T* pooled_row(const T* x, const T* y, int64_t D, const MmdGroupPtrs& g, int64_t grp,
                                               int64_t n, int64_t i) {
  return i < n ? x + g.x_mem[g.x_off[grp] + i] * D : y + g.y_mem[g.y_off[grp] + i - n] * D;
}

// 1/n² inside X, 1/m² inside Y, −1/(nm) across.
__device__ __forceinline__ double mmd_pair_weight(int64_t n, int64_t m, int64_t i, int64_t j) {
  const bool xi = i < n, xj = j < n;
  if (xi && xj) return 1.0 / (double(n) * n);
  if (!xi && !xj) return 1.0 / (double(m) * m);
  return -1.0 / (double(n) * m);
}

// dist[i*p + j] = ‖P_i − P_j‖², one warp per pair i < j.
template <typename T>
__device__ void pooled_distances(const T* x, const T* y, int64_t D, const MmdGroupPtrs& g, int64_t grp, int64_t n,
                                 int64_t p, double* dist) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  for (int64_t t = warp; t < p * p; t += nwarps) {
    const int64_t i = t / p, j = t % p;
    if (i > j) continue;
    double s = 0.0;
    if (i < j) {
      const T* a = pooled_row(x, y, D, g, grp, n, i);
      const T* b = pooled_row(x, y, D, g, grp, n, j);
      for (int64_t d = lane; d < D; d += 32) {
        const double v = static_cast<double>(a[d]) - static_cast<double>(b[d]);
        s += v * v;
      }
      s = warp_sum(s);
    }
    if (lane == 0) dist[i * p + j] = dist[j * p + i] = s;
  }
  __syncthreads();
}

template <typename T>
__global__ void mmd2_forward_kernel(const T* x, const T* y, int64_t D, MmdGroupPtrs g, int64_t G, double* ws,
                                    const T* given, int64_t S, double mul, int64_t num, T* loss, bool* valid,
                                    T* bw_out) {
  __shared__ double scratch[32];
  for (int64_t grp = blockIdx.x; grp < G; grp += gridDim.x) {
    const int64_t n = g.x_off[grp + 1] - g.x_off[grp], m = g.y_off[grp + 1] - g.y_off[grp];
    const bool ok = n > 0 && m > 0;
    if (threadIdx.x == 0) {
      loss[grp] = T(0);
      valid[grp] = ok;
      for (int64_t s = 0; s < S; ++s) bw_out[grp * S + s] = given ? given[s] : T(0);
    }
    if (!ok) continue;  // empty side: skipped, reported through `valid`
    const int64_t p = n + m;
    double* dist = ws + g.ws_off[grp];
    pooled_distances(x, y, D, g, grp, n, p, dist);
    if (!given) {
      double part = 0.0;
      for (int64_t t = threadIdx.x; t < p * p; t += blockDim.x) part += dist[t];
      const double total = block_sum(part, scratch);
      const double base = fmax(total / double(p * p - p), kMmdMinBandwidth) / pow(mul, double(num / 2));
      if (threadIdx.x == 0)
        for (int64_t s = 0; s < S; ++s) bw_out[grp * S + s] = static_cast<T>(base * pow(mul, double(s)));
    }
    __syncthreads();  // bandwidths (rounded to T, as the backward reads them) visible to the block
    const T* bw = bw_out + grp * S;
    double part = 0.0;
    for (int64_t t = threadIdx.x; t < p * p; t += blockDim.x) {
      double k = 0.0;
      for (int64_t s = 0; s < S; ++s) k += exp(-dist[t] / static_cast<double>(bw[s]));
      part += mmd_pair_weight(n, m, t / p, t % p) * k;
    }
    const double total = block_sum(part, scratch);
    if (threadIdx.x == 0) loss[grp] = static_cast<T>(total);
  }
}

// d MMD²/d P_i = Σ_j c_ij (P_i − P_j), c_ij = −4 · grad_g · weight_ij · Σ_s exp(−d_ij/b_s)/b_s.
// gx and gy are zeroed by the launcher; each row belongs to one group, so no atomics.
template <typename T>
__global__ void mmd2_backward_kernel(const T* grad, const T* x, const T* y, int64_t D, MmdGroupPtrs g, int64_t G,
                                     double* ws, const T* bw, int64_t S, T* gx, T* gy) {
  for (int64_t grp = blockIdx.x; grp < G; grp += gridDim.x) {
    const int64_t n = g.x_off[grp + 1] - g.x_off[grp], m = g.y_off[grp + 1] - g.y_off[grp];
    if (n == 0 || m == 0) continue;
    const int64_t p = n + m;
    double* c = ws + g.ws_off[grp];
    pooled_distances(x, y, D, g, grp, n, p, c);
    const double up = static_cast<double>(grad[grp]);
    for (int64_t t = threadIdx.x; t < p * p; t += blockDim.x) {
      const int64_t i = t / p, j = t % p;
      double w = 0.0;
      for (int64_t s = 0; s < S; ++s) {
        const double b = static_cast<double>(bw[grp * S + s]);
        w += exp(-c[t] / b) / b;
      }
      c[t] = i == j ? 0.0 : -4.0 * up * mmd_pair_weight(n, m, i, j) * w;
    }
    __syncthreads();
    for (int64_t i = 0; i < p; ++i) {
      const T* pi = pooled_row(x, y, D, g, grp, n, i);
      T* out = i < n ? gx + g.x_mem[g.x_off[grp] + i] * D : gy + g.y_mem[g.y_off[grp] + i - n] * D;
      for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
        double acc = 0.0;
        const double vi = static_cast<double>(pi[d]);
        for (int64_t j = 0; j < p; ++j)
          acc += c[i * p + j] * (vi - static_cast<double>(pooled_row(x, y, D, g, grp, n, j)[d]));
        out[d] = static_cast<T>(acc);
      }
    }
    __syncthreads();  // the workspace slice is not reused, but keep groups cleanly separated
  }
}

}  // namespace uvireid
