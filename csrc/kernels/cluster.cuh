// Clustering kernels on raw pointers, no torch: DBSCAN on CSR distances and segmented k-means.
// The host/device helpers at the top are shared by the CPU implementation (csrc/cpu/cluster_cpu.cpp)
// so that both backends make the same choices (seeding draws, tie rules).
//
// DBSCAN (same partition as scikit-learn DBSCAN(metric="precomputed") on the dense matrix):
//   * neighbours of i: the stored entries (i, j), j != i, with d_ij <= eps, plus i itself (a dense
//     precomputed matrix has a zero diagonal, so i always counts; stored diagonal entries are skipped);
//   * core: #neighbours (self included) >= min_samples;
//   * clusters: connected components of core points joined by core-core edges (edges of either
//     direction; identical to scikit-learn for symmetric distances);
//   * border rule: a non-core point with a core neighbour joins the cluster of its NEAREST core
//     neighbour (smallest d, ties to the lower index); scikit-learn instead gives it to whichever
//     cluster's expansion reaches it first, so only border points with cores of two clusters can differ;
//   * noise -1; cluster ids renumbered 0..C-1 in order of first appearance over the points.
//
// Segmented k-means: for every cluster c (members in index order), n sub-centres:
//   * seeding: first centre = member hash(seed, c, 0) mod m; centre s = member drawn with probability
//     proportional to its squared distance to the nearest chosen centre, with u = hash(seed, c, s)
//     (k-means++ without the greedy trials); if all those distances are 0 a member is drawn uniformly;
//   * Lloyd steps (nearest centre, ties to the lower sub-centre; empty sub-centres keep their centre)
//     until no assignment changes, the summed squared centre shift is <= tol, or max_iter updates;
//     a final assignment step makes assignments consistent with the returned centres;
//   * clusters with 0 < m < n members: every sub-centre is the cluster mean, every member sub-centre 0;
//     clusters with no member: zero centres.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/host_device.h"
#ifdef UVIREID_DEVICE_CODE
#include "kernels/warp.cuh"
#endif

namespace uvireid {
namespace cluster {

// splitmix64 finaliser: a counter-based generator, so draws do not depend on thread scheduling.
UVIREID_HD uint64_t mix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

UVIREID_HD uint64_t draw(uint64_t seed, int64_t cluster, int64_t step) {
  return mix64(mix64(mix64(seed) ^ static_cast<uint64_t>(cluster)) ^ static_cast<uint64_t>(step));
}

// Uniform double in [0, 1) from the top 53 bits.
UVIREID_HD double draw_unit(uint64_t seed, int64_t cluster, int64_t step) {
  return static_cast<double>(draw(seed, cluster, step) >> 11) * (1.0 / 9007199254740992.0);
}

// Index p in [0, m) whose cumulative weight first exceeds u * total (weights >= 0, total > 0);
// falls back to the last positive weight when rounding leaves the walk short.
UVIREID_HD int64_t pick_weighted(const float* w, int64_t m, double total, double u) {
  const double target = u * total;
  double cum = 0.0;
  int64_t last = 0;
  for (int64_t p = 0; p < m; ++p) {
    if (w[p] <= 0.f) continue;
    cum += static_cast<double>(w[p]);
    last = p;
    if (cum > target) return p;
  }
  return last;
}

// ---------------------------------------------------------------- DBSCAN rules (both backends)

// Malformed-input flags of a DBSCAN row, for the callers to report (check_dbscan_flags).
constexpr int kDbscanBadColumn = 1, kDbscanNanDistance = 2, kDbscanNegativeDistance = 4;

// Neighbours of point i, itself included (entries with d <= eps, stored diagonal entries skipped);
// ORs the malformed-input flags of its row into `flags`.
template <typename T>
UVIREID_HD int64_t dbscan_neighbour_count(const int64_t* crow, const int64_t* col, const T* val, int64_t n,
                                          int64_t i, T eps, int& flags) {
  int64_t count = 1;  // the point itself (a dense precomputed matrix has a zero diagonal)
  for (int64_t k = crow[i]; k < crow[i + 1]; ++k) {
    const int64_t j = col[k];
    const T d = val[k];
    if (j < 0 || j >= n) {
      flags |= kDbscanBadColumn;
      continue;
    }
    if (d != d) flags |= kDbscanNanDistance;
    if (d < T(0)) flags |= kDbscanNegativeDistance;
    if (j != i && d <= eps) ++count;
  }
  return count;
}

// Whether the stored entry (i, j, d) is an edge to a core point within eps (not the diagonal).
template <typename T>
UVIREID_HD bool dbscan_core_edge(int64_t i, int64_t j, T d, T eps, const uint8_t* is_core) {
  return j != i && d <= eps && is_core[j];
}

// The border rule: the nearest core neighbour of point i (smallest d, ties to the lower index), or -1.
template <typename T>
UVIREID_HD int64_t dbscan_nearest_core(const int64_t* crow, const int64_t* col, const T* val, int64_t i, T eps,
                                       const uint8_t* is_core) {
  int64_t best = -1;
  T best_d = T(0);
  for (int64_t k = crow[i]; k < crow[i + 1]; ++k) {
    const int64_t j = col[k];
    const T d = val[k];
    if (!dbscan_core_edge(i, j, d, eps, is_core)) continue;
    if (best < 0 || d < best_d || (d == best_d && j < best)) {
      best = j;
      best_d = d;
    }
  }
  return best;
}

#ifdef UVIREID_DEVICE_CODE

// ---------------------------------------------------------------- DBSCAN

// Core flags from neighbour counts; also flags malformed input for the launcher to report.
template <typename T>
__global__ void dbscan_core_kernel(const int64_t* crow, const int64_t* col, const T* val, int64_t n, T eps,
                                   int64_t min_samples, uint8_t* is_core, int* bad) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int flags = 0;
    const int64_t count = dbscan_neighbour_count(crow, col, val, n, i, eps, flags);
    if (flags) atomicOr(bad, flags);
    is_core[i] = count >= min_samples ? 1 : 0;
  }
}

__device__ __forceinline__ int64_t uf_find(int64_t* parent, int64_t x) {
  // Path halving; racing writes only ever move a node to one of its ancestors, so they are benign.
  volatile long long* p = reinterpret_cast<volatile long long*>(parent);
  while (true) {
    const int64_t px = p[x];
    if (px == x) return x;
    const int64_t gx = p[px];
    if (gx != px) p[x] = gx;
    x = px;
  }
}

// Lock-free union: the larger root is linked under the smaller, so each root is its component's
// smallest core index.
__device__ __forceinline__ void uf_union(int64_t* parent, int64_t a, int64_t b) {
  while (true) {
    a = uf_find(parent, a);
    b = uf_find(parent, b);
    if (a == b) return;
    if (a < b) {
      const int64_t t = a;
      a = b;
      b = t;
    }
    const unsigned long long old = atomicCAS(reinterpret_cast<unsigned long long*>(parent + a),
                                             static_cast<unsigned long long>(a), static_cast<unsigned long long>(b));
    if (static_cast<int64_t>(old) == a) return;
  }
}

__global__ void dbscan_init_parent_kernel(int64_t* parent, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    parent[i] = i;
}

template <typename T>
__global__ void dbscan_union_kernel(const int64_t* crow, const int64_t* col, const T* val, int64_t n, T eps,
                                    const uint8_t* is_core, int64_t* parent) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (!is_core[i]) continue;
    for (int64_t k = crow[i]; k < crow[i + 1]; ++k) {
      if (dbscan_core_edge(i, col[k], val[k], eps, is_core)) uf_union(parent, i, col[k]);
    }
  }
}

// Final pass: every entry to its root. Each thread walks without writing and then writes only its
// own entry (roots never change here): uf_find's path shortening writes other nodes' entries, and
// a stale one written after their owner finished would leave them pointing below the root.
__global__ void dbscan_compress_kernel(int64_t* parent, int64_t n) {
  volatile long long* p = reinterpret_cast<volatile long long*>(parent);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t r = p[i];
    for (int64_t q = p[r]; q != r; q = p[r]) r = q;
    p[i] = r;
  }
}

// labels[i] = component root (core), root of the nearest core neighbour (border) or -1 (noise);
// first[root] = the smallest point index carrying that root (for renumbering by first appearance).
template <typename T>
__global__ void dbscan_label_kernel(const int64_t* crow, const int64_t* col, const T* val, int64_t n, T eps,
                                    const uint8_t* is_core, const int64_t* parent, int64_t* labels,
                                    unsigned long long* first) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t lab = -1;
    if (is_core[i]) {
      lab = parent[i];
    } else {
      const int64_t best = dbscan_nearest_core(crow, col, val, i, eps, is_core);
      if (best >= 0) lab = parent[best];
    }
    labels[i] = lab;
    if (lab >= 0) atomicMin(first + lab, static_cast<unsigned long long>(i));
  }
}

__global__ void dbscan_flag_kernel(const int64_t* labels, const unsigned long long* first, int64_t n,
                                   int64_t* flag) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t lab = labels[i];
    flag[i] = (lab >= 0 && static_cast<int64_t>(first[lab]) == i) ? 1 : 0;
  }
}

__global__ void dbscan_renumber_kernel(int64_t* labels, const unsigned long long* first, const int64_t* ids,
                                       int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t lab = labels[i];
    labels[i] = lab >= 0 ? ids[first[lab]] : -1;
  }
}

// ---------------------------------------------------------------- segmented k-means

// Sort keys: the cluster id, noise (-1) last as num_clusters; bit 1 of *bad: label out of range.
__global__ void kmeans_keys_kernel(const int64_t* labels, int64_t n, int64_t num_clusters, int64_t* keys,
                                   int64_t* iota, unsigned long long* counts, int* bad) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t lab = labels[i];
    if (lab < -1 || lab >= num_clusters) atomicOr(bad, 1);
    const int64_t key = (lab < 0 || lab >= num_clusters) ? num_clusters : lab;
    keys[i] = key;
    iota[i] = i;
    if (key < num_clusters) atomicAdd(counts + key, 1ULL);
  }
}

// Squared distance of row a to row b (length dim), summed by one warp; every lane gets the result.
__device__ __forceinline__ float warp_sqdist(const float* a, const float* b, int64_t dim, int lane) {
  float s = 0.f;
  for (int64_t d = lane; d < dim; d += kWarp) {
    const float t = a[d] - b[d];
    s += t * t;
  }
  return warp_sum(s);
}

// One block per cluster. members: point indices sorted by cluster (index order inside a cluster);
// offsets [C+1]. Scratch: d2 [N] (by sorted position), part [N] (assignment by sorted position),
// sums [gridDim.x, n, dim], cnt [gridDim.x, n]: one scratch slice per block.
// Outputs: centers [C, n, dim], assign [N] (points of cluster c only).
__global__ void segmented_kmeans_kernel(const float* x, int64_t dim, const int64_t* members, const int64_t* offsets,
                                        int64_t num_clusters, int64_t n, int64_t max_iter, float tol, uint64_t seed,
                                        float* centers, float* sums, int64_t* cnt, float* d2, int64_t* part,
                                        int64_t* assign) {
  __shared__ int changed;
  __shared__ int64_t pick;
  __shared__ float red[32];
  __shared__ bool stop;
  const int lane = threadIdx.x % kWarp;
  const int warp = threadIdx.x / kWarp;
  const int nwarps = blockDim.x / kWarp;
  for (int64_t c = blockIdx.x; c < num_clusters; c += gridDim.x) {
    const int64_t base = offsets[c];
    const int64_t m = offsets[c + 1] - base;
    const int64_t* mem = members + base;
    float* cen = centers + c * n * dim;
    float* sum = sums + static_cast<int64_t>(blockIdx.x) * n * dim;
    int64_t* cc = cnt + static_cast<int64_t>(blockIdx.x) * n;
    float* dd = d2 + base;
    int64_t* pp = part + base;
    if (m < n) {  // too few members (or none): every sub-centre is the mean (zeros when empty)
      for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) {
        float s = 0.f;
        for (int64_t p = 0; p < m; ++p) s += x[mem[p] * dim + d];
        const float mean = m > 0 ? s / static_cast<float>(m) : 0.f;
        for (int64_t k = 0; k < n; ++k) cen[k * dim + d] = mean;
      }
      for (int64_t p = threadIdx.x; p < m; p += blockDim.x) assign[mem[p]] = 0;
      __syncthreads();
      continue;
    }
    // ---- seeding
    for (int64_t s = 0; s < n; ++s) {
      if (threadIdx.x == 0) {
        if (s == 0) {
          pick = static_cast<int64_t>(draw(seed, c, 0) % static_cast<uint64_t>(m));
        } else {
          double total = 0.0;
          for (int64_t p = 0; p < m; ++p) total += static_cast<double>(dd[p]);
          pick = total > 0.0 ? pick_weighted(dd, m, total, draw_unit(seed, c, s))
                             : static_cast<int64_t>(draw(seed, c, s) % static_cast<uint64_t>(m));
        }
      }
      __syncthreads();
      const float* src = x + mem[pick] * dim;
      for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) cen[s * dim + d] = src[d];
      __syncthreads();
      if (s + 1 < n) {
        for (int64_t p = warp; p < m; p += nwarps) {
          const float dist = warp_sqdist(x + mem[p] * dim, cen + s * dim, dim, lane);
          if (lane == 0) dd[p] = s == 0 ? dist : fminf(dd[p], dist);
        }
      }
      __syncthreads();
    }
    // ---- Lloyd steps
    for (int64_t p = threadIdx.x; p < m; p += blockDim.x) pp[p] = -1;
    if (threadIdx.x == 0) stop = false;
    __syncthreads();
    for (int64_t it = 0;; ++it) {
      if (threadIdx.x == 0) changed = 0;
      __syncthreads();
      for (int64_t p = warp; p < m; p += nwarps) {
        int64_t best = 0;
        float best_d = 0.f;
        for (int64_t k = 0; k < n; ++k) {
          const float dist = warp_sqdist(x + mem[p] * dim, cen + k * dim, dim, lane);
          if (k == 0 || dist < best_d) {
            best = k;
            best_d = dist;
          }
        }
        if (lane == 0 && pp[p] != best) {
          pp[p] = best;
          atomicAdd(&changed, 1);
        }
      }
      __syncthreads();
      if (stop || changed == 0 || it == max_iter) break;
      if (threadIdx.x == 0) {
        for (int64_t k = 0; k < n; ++k) cc[k] = 0;
        for (int64_t p = 0; p < m; ++p) ++cc[pp[p]];
      }
      // Each thread owns whole dimensions, so the member sums need no atomics and keep index order.
      float shift = 0.f;
      for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) {
        for (int64_t k = 0; k < n; ++k) sum[k * dim + d] = 0.f;
        for (int64_t p = 0; p < m; ++p) sum[pp[p] * dim + d] += x[mem[p] * dim + d];
      }
      __syncthreads();
      for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) {
        for (int64_t k = 0; k < n; ++k) {
          if (cc[k] == 0) continue;  // empty sub-centre keeps its place
          const float v = sum[k * dim + d] / static_cast<float>(cc[k]);
          const float t = v - cen[k * dim + d];
          shift += t * t;
          cen[k * dim + d] = v;
        }
      }
      shift = warp_sum(shift);
      if (lane == 0) red[warp] = shift;
      __syncthreads();
      if (threadIdx.x == 0) {
        float total = 0.f;
        for (int w = 0; w < nwarps; ++w) total += red[w];
        stop = total <= tol;
      }
      __syncthreads();
    }
    for (int64_t p = threadIdx.x; p < m; p += blockDim.x) assign[mem[p]] = pp[p];
    __syncthreads();
  }
}

#endif  // UVIREID_DEVICE_CODE

}  // namespace cluster
}  // namespace uvireid
