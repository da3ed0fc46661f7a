// CUDA kernels of the distance ops, on raw pointers (no torch). Launched by csrc/cuda/distance_cuda.cu.
// Reductions run in a fixed order (lane-strided, then a shuffle tree) and Jaccard sums use integer
// atomics on fixed-point values, so every result is deterministic run to run.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/distance.cuh"
#include "kernels/warp.cuh"

namespace uvireid {
namespace distance {

// Jaccard min-sums are accumulated as integers in units of 2^-50 (exact, order-independent).
constexpr double kFixedScale = 1125899906842624.0;  // 2^50

// Global warp id and lane for warp-per-item kernels.
__device__ __forceinline__ int64_t warp_id() {
  return (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
}
__device__ __forceinline__ int64_t warp_count() { return static_cast<int64_t>(gridDim.x) * blockDim.x / kWarp; }
__device__ __forceinline__ int lane() { return threadIdx.x % kWarp; }
__device__ __forceinline__ int64_t thread_id() { return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ __forceinline__ int64_t thread_count() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

// Exact squared distance by one warp: the same arithmetic for every pair (duplicates tie exactly).
__device__ __forceinline__ double warp_squared_distance(const float* a, const float* b, int64_t D) {
  double s = 0.0;
  for (int64_t d = lane(); d < D; d += kWarp) {
    const double t = static_cast<double>(a[d]) - static_cast<double>(b[d]);
    s += t * t;
  }
  return warp_sum(s);
}

__device__ __forceinline__ double warp_dot(const float* a, const float* b, int64_t D) {
  double s = 0.0;
  for (int64_t d = lane(); d < D; d += kWarp) s += static_cast<double>(a[d]) * static_cast<double>(b[d]);
  return warp_sum(s);
}

// ------------------------------------------------------------------------------------ checks

// *first = the smallest row holding NaN/Inf (initialised to n by the caller).
__global__ void first_nonfinite_row_kernel(const float* x, int64_t n, int64_t d, unsigned long long* first) {
  for (int64_t p = thread_id(); p < n * d; p += thread_count())
    if (!isfinite(x[p])) atomicMin(first, static_cast<unsigned long long>(p / d));
}

// *first = the smallest flat position whose value lies outside [0, n) (initialised to count).
__global__ void first_out_of_range_kernel(const int64_t* v, int64_t count, int64_t n, unsigned long long* first) {
  for (int64_t p = thread_id(); p < count; p += thread_count())
    if (v[p] < 0 || v[p] >= n) atomicMin(first, static_cast<unsigned long long>(p));
}

// *first = the smallest row i with crow[i+1] < crow[i] (initialised to n).
__global__ void first_decreasing_kernel(const int64_t* crow, int64_t n, unsigned long long* first) {
  for (int64_t i = thread_id(); i < n; i += thread_count())
    if (crow[i + 1] < crow[i]) atomicMin(first, static_cast<unsigned long long>(i));
}

// *first_val = the smallest position whose value is not in [0, 1]; *first_row = the smallest row
// whose sum exceeds 1 + tolerance (both initialised past the end by the caller).
__global__ void probability_rows_kernel(const int64_t* crow, const float* val, int64_t n, double tolerance,
                                        unsigned long long* first_val, unsigned long long* first_row) {
  for (int64_t i = warp_id(); i < n; i += warp_count()) {
    double s = 0.0;
    for (int64_t p = crow[i] + lane(); p < crow[i + 1]; p += kWarp) {
      if (!(val[p] >= 0.0f && val[p] <= 1.0f)) atomicMin(first_val, static_cast<unsigned long long>(p));
      s += val[p];
    }
    s = warp_sum(s);
    if (lane() == 0 && !(s <= 1.0 + tolerance)) atomicMin(first_row, static_cast<unsigned long long>(i));
  }
}

// ---------------------------------------------------------------------------------------- knn

__global__ void to_double_kernel(const float* x, double* y, int64_t count) {
  for (int64_t p = thread_id(); p < count; p += thread_count()) y[p] = x[p];
}

// sq[i] = |x_i|^2 (double), and nx[i] = |x_i| when nx is given.
__global__ void row_norms_kernel(const float* x, int64_t n, int64_t D, double* sq, double* nx) {
  for (int64_t i = warp_id(); i < n; i += warp_count()) {
    const double s = warp_dot(x + i * D, x + i * D, D);
    if (lane() == 0) {
      sq[i] = s;
      if (nx != nullptr) nx[i] = sqrt(s);
    }
  }
}

// The bf16 tier's split x = h + l: h as raw bf16 bits (round_to_bf16), nh[i] = |h_i|, nl[i] = |l_i|.
__global__ void split_bf16_kernel(const float* x, int64_t n, int64_t D, uint16_t* h, double* nh, double* nl) {
  for (int64_t i = warp_id(); i < n; i += warp_count()) {
    double sh = 0.0, sl = 0.0;
    for (int64_t d = lane(); d < D; d += kWarp)  // bf16 bits: the float's high half, its low half is zero
      h[i * D + d] = static_cast<uint16_t>(__float_as_uint(split_bf16(x[i * D + d], sh, sl)) >> 16);
    sh = warp_sum(sh);
    sl = warp_sum(sl);
    if (lane() == 0) {
      nh[i] = sqrt(sh);
      nl[i] = sqrt(sl);
    }
  }
}

// Row of the full matrix that row r of a block starting at r0 stands for: rows[r0 + r], or r0 + r
// when the pass covers every row (rows == nullptr).
__device__ __forceinline__ int64_t block_row(const int64_t* rows, int64_t r0, int64_t r) {
  return rows != nullptr ? rows[r0 + r] : r0 + r;
}

// dst[r] = src[block_row(rows, r0, r)] for rb rows of D elements.
template <class T>
__global__ void gather_rows_kernel(const T* src, int64_t D, const int64_t* rows, int64_t r0, int64_t rb, T* dst) {
  for (int64_t p = thread_id(); p < rb * D; p += thread_count()) dst[p] = src[block_row(rows, r0, p / D) * D + p % D];
}

__device__ __forceinline__ float round_down(double v, float*) { return __double2float_rd(v); }
__device__ __forceinline__ double round_down(double v, double*) { return v; }

// g[r, j] <- a lower bound on the exact key of rows block_row(r) and j, from the GEMM value g[r, j]
// (distance_lower_bound; float results rounded down, so they stay lower bounds). Columns run over the
// x dimension and groups of kLowerRows block rows over y: a thread reads row j's norms once per group,
// and no thread divides by n.
constexpr int kLowerRows = 4;

template <class G>
__global__ void lower_bound_kernel(G* g, const int64_t* rows, int64_t r0, int64_t rb, int64_t n, const double* sq,
                                   SplitNorms nrm, TierBound tb) {
  for (int64_t rg = static_cast<int64_t>(blockIdx.y) * kLowerRows; rg < rb;
       rg += static_cast<int64_t>(gridDim.y) * kLowerRows) {
    const int64_t rend = rg + kLowerRows < rb ? rg + kLowerRows : rb;
    for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < n;
         j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      const double sq_j = sq[j], nx_j = nrm.x[j], nh_j = nrm.h[j], nl_j = nrm.l[j];
      for (int64_t r = rg; r < rend; ++r) {
        const int64_t i = block_row(rows, r0, r);
        G& v = g[r * n + j];
        v = round_down(distance_lower_bound(static_cast<double>(v), sq[i], sq_j, nrm.x[i], nrm.h[i], nrm.l[i], nx_j,
                                            nh_j, nl_j, tb),
                       static_cast<G*>(nullptr));
      }
    }
  }
}

// exact[r, t] = exact squared distance of block row r to its candidate cidx[r, t]; one warp per pair.
__global__ void exact_candidates_kernel(const float* x, int64_t D, const int64_t* cidx, const int64_t* rows,
                                        int64_t r0, int64_t rb, int64_t cand, double* exact) {
  for (int64_t w = warp_id(); w < rb * cand; w += warp_count()) {
    const int64_t i = block_row(rows, r0, w / cand), j = cidx[w];
    const double d = warp_squared_distance(x + i * D, x + j * D, D);
    if (lane() == 0) exact[w] = d;
  }
}

// Rank of candidate t among the cand candidates of a row by (exact key, index): keys may tie but
// indices are distinct, so ranks are 0..cand-1 without repeats.
__device__ __forceinline__ int64_t candidate_rank(const double* e, const int64_t* c, int64_t cand, int64_t t) {
  int64_t rank = 0;
  for (int64_t s = 0; s < cand; ++s) rank += closer(e[s], c[s], e[t], c[t]);
  return rank;
}

// One warp per block row. tau = the exact key ranked k-1 among the candidates; when the largest lower
// bound proves the set (candidates_proven), the candidates ranked below k are written in rank order,
// otherwise the row is flagged for the next tier.
template <class G>
__global__ void select_candidates_kernel(const double* exact, const int64_t* cidx, const G* bound, const int64_t* rows,
                                         int64_t r0, int64_t rb, int64_t cand, int64_t k, int64_t n, int64_t* out_idx,
                                         float* out_dist, int32_t* flags) {
  for (int64_t r = warp_id(); r < rb; r += warp_count()) {
    const double* e = exact + r * cand;
    const int64_t* c = cidx + r * cand;
    double bound_max = -HUGE_VAL, tau = -HUGE_VAL;
    for (int64_t t = lane(); t < cand; t += kWarp) {
      bound_max = fmax(bound_max, static_cast<double>(bound[r * cand + t]));
      if (candidate_rank(e, c, cand, t) == k - 1) tau = e[t];
    }
    bound_max = warp_max(bound_max);
    tau = warp_max(tau);
    const int64_t i = block_row(rows, r0, r);
    if (cand < n && !candidates_proven(bound_max, tau)) {
      if (lane() == 0) flags[i] = 1;
      continue;
    }
    for (int64_t t = lane(); t < cand; t += kWarp) {
      const int64_t rank = candidate_rank(e, c, cand, t);
      if (rank < k) {
        out_idx[i * k + rank] = c[t];
        out_dist[i * k + rank] = static_cast<float>(e[t]);
      }
    }
  }
}

// out[f, j] = exact squared distance of row rows[f] to every row j; one warp per pair.
__global__ void exact_rows_kernel(const float* x, int64_t D, const int64_t* rows, int64_t nrows, int64_t n,
                                  double* out) {
  for (int64_t w = warp_id(); w < nrows * n; w += warp_count()) {
    const int64_t f = w % nrows, j = w / nrows;  // neighbouring warps share row j: it is read once
    const double d = warp_squared_distance(x + rows[f] * D, x + j * D, D);
    if (lane() == 0) out[f * n + j] = d;
  }
}

// The first k of each exactly ranked row (stable sort: ties to the lower index) into the output.
__global__ void scatter_ranked_rows_kernel(const double* sorted, const int64_t* order, const int64_t* rows,
                                           int64_t nrows, int64_t n, int64_t k, int64_t* out_idx, float* out_dist) {
  for (int64_t p = thread_id(); p < nrows * k; p += thread_count()) {
    const int64_t f = p / k, t = p % k, i = rows[f];
    out_idx[i * k + t] = order[f * n + t];
    out_dist[i * k + t] = static_cast<float>(sorted[f * n + t]);
  }
}

// ------------------------------------------------------------------------ k-reciprocal encoding

__global__ void reciprocal_sets_kernel(const int64_t* rank, int64_t K, int64_t n, int64_t k1, int64_t mh, int32_t* r1,
                                       int32_t* n1, int32_t* rh, int32_t* nh) {
  for (int64_t i = thread_id(); i < n; i += thread_count()) {
    n1[i] = static_cast<int32_t>(reciprocal_set(rank, K, i, k1, r1 + i * k1));
    nh[i] = static_cast<int32_t>(reciprocal_set(rank, K, i, mh, rh + i * k1));
  }
}

// Rows [row0, row0 + rows): E_i built in scratch (capacity cap per row). With crow == nullptr it
// records |E_i| in counts; otherwise it writes E_i sorted to col[crow[i]:crow[i+1]].
__global__ void expanded_sets_kernel(const int32_t* r1, const int32_t* n1, const int32_t* rh, const int32_t* nh,
                                     int64_t k1, int64_t row0, int64_t rows, int64_t cap, int32_t* scratch,
                                     int64_t* counts, const int64_t* crow, int64_t* col) {
  for (int64_t r = thread_id(); r < rows; r += thread_count()) {
    const int64_t i = row0 + r;
    int32_t* set = scratch + r * cap;
    ScanMarks marks;
    const int64_t m = expanded_set(r1, n1, rh, nh, k1, i, set, marks);
    if (crow == nullptr) {
      counts[i] = m;
      continue;
    }
    int64_t* out = col + crow[i];
    for (int64_t t = 0; t < m; ++t) {  // insertion sort into the output row
      const int64_t v = set[t];
      int64_t s = t - 1;
      while (s >= 0 && out[s] > v) {
        out[s + 1] = out[s];
        --s;
      }
      out[s + 1] = v;
    }
  }
}

// val = softmax(-(2 - 2<x_i, x_j>)) over each row's entries; one warp per row, d kept in dscratch.
// With rank_dist, ranked pairs take their dot product from it (ranked_dot), others read both rows.
__global__ void encode_weights_kernel(const float* x, int64_t D, int64_t n, const int64_t* crow, const int64_t* col,
                                      const int64_t* rank, const float* rank_dist, int64_t K, const double* sq,
                                      double* dscratch, float* val) {
  for (int64_t i = warp_id(); i < n; i += warp_count()) {
    const int64_t b = crow[i], e = crow[i + 1];
    double dmin = INFINITY;
    for (int64_t p = b; p < e; ++p) {
      double ip;  // the same value in every lane: ranked_dot reads the same memory in each
      if (!ranked_dot(rank, rank_dist, K, i, col[p], sq, &ip)) ip = warp_dot(x + i * D, x + col[p] * D, D);
      const double d = 2.0 - 2.0 * ip;
      if (lane() == 0) dscratch[p] = d;
      dmin = fmin(dmin, d);
    }
    __syncwarp();
    double z = 0.0;
    for (int64_t p = b + lane(); p < e; p += kWarp) z += exp(dmin - dscratch[p]);
    z = warp_sum(z);
    for (int64_t p = b + lane(); p < e; p += kWarp) val[p] = static_cast<float>(exp(dmin - dscratch[p]) / z);
  }
}

// --------------------------------------------------------------------------- query expansion

// Accepted neighbours and weights of every row, and the number of V entries they bring.
__global__ void expansion_members_kernel(const int64_t* rank, int64_t K, const int64_t* outer, const int64_t* inner,
                                         int64_t n, int64_t pool, int64_t cap, const int64_t* crow, int32_t* members,
                                         double* weights, int32_t* nmembers, int64_t* scratch, int64_t* sizes) {
  for (int64_t i = thread_id(); i < n; i += thread_count()) {
    int32_t* mem = members + i * pool;
    const int64_t m =
        expansion_weights(rank, K, outer, inner, i, pool, cap, mem, weights + i * pool, scratch + i * 4 * pool);
    nmembers[i] = static_cast<int32_t>(m);
    int64_t s = 0;
    for (int64_t t = 0; t < m; ++t) s += crow[mem[t] + 1] - crow[mem[t]];
    sizes[i] = s;
  }
}

// One warp per row: the weighted V entries of its members as (key = i*n + col, w * v) pairs, in
// member order, at offsets[i] (exclusive prefix of sizes).
__global__ void expansion_gather_kernel(int64_t n, int64_t pool, const int32_t* members, const double* weights,
                                        const int32_t* nmembers, const int64_t* crow, const int64_t* col,
                                        const float* val, const int64_t* ends, int64_t* keys, double* vals) {
  for (int64_t i = warp_id(); i < n; i += warp_count()) {
    int64_t pos = i == 0 ? 0 : ends[i - 1];
    for (int64_t t = 0; t < nmembers[i]; ++t) {
      const int64_t j = members[i * pool + t];
      const double w = weights[i * pool + t];
      const int64_t b = crow[j], len = crow[j + 1] - b;
      for (int64_t q = lane(); q < len; q += kWarp) {
        keys[pos + q] = i * n + col[b + q];
        vals[pos + q] = w * static_cast<double>(val[b + q]);
      }
      pos += len;
    }
  }
}

// heads[p] = 1 where a run of equal sorted keys starts.
__global__ void run_heads_kernel(const int64_t* keys, int64_t count, int64_t* heads) {
  for (int64_t p = thread_id(); p < count; p += thread_count()) heads[p] = (p == 0 || keys[p] != keys[p - 1]);
}

// One thread per run of equal keys: sums its values in sorted (= gather) order and writes the
// entry; run_ends is the inclusive prefix of heads, so run r is output slot run_ends[p] - 1.
__global__ void reduce_runs_kernel(const int64_t* keys, const int64_t* order, const double* vals, const int64_t* heads,
                                   const int64_t* run_ends, int64_t count, int64_t n, int64_t* out_col, float* out_val,
                                   int32_t* row_counts) {
  for (int64_t p = thread_id(); p < count; p += thread_count()) {
    if (!heads[p]) continue;
    double s = 0.0;
    int64_t q = p;
    do s += vals[order[q++]];
    while (q < count && keys[q] == keys[p]);
    const int64_t slot = run_ends[p] - 1;
    out_col[slot] = keys[p] % n;
    out_val[slot] = static_cast<float>(s);
    atomicAdd(row_counts + keys[p] / n, 1);
  }
}

// crow[0] = 0, crow[i + 1] = ends[i].
__global__ void crow_from_ends_kernel(const int64_t* ends, int64_t n, int64_t* crow) {
  for (int64_t i = thread_id(); i <= n; i += thread_count()) crow[i] = i == 0 ? 0 : ends[i - 1];
}

// ----------------------------------------------------------------------------------- jaccard

// keys[p] = col[p] * n + row(p): sorting them gives V column-major, rows ascending in a column.
__global__ void column_keys_kernel(const int64_t* crow, const int64_t* col, int64_t n, int64_t* keys,
                                   int32_t* col_counts) {
  for (int64_t i = warp_id(); i < n; i += warp_count())
    for (int64_t p = crow[i] + lane(); p < crow[i + 1]; p += kWarp) {
      keys[p] = col[p] * n + i;
      atomicAdd(col_counts + col[p], 1);
    }
}

__global__ void csc_fill_kernel(const int64_t* sorted_keys, const int64_t* order, const float* val, int64_t nnz,
                                int64_t n, int32_t* rows, float* cval) {
  for (int64_t q = thread_id(); q < nnz; q += thread_count()) {
    rows[q] = static_cast<int32_t>(sorted_keys[q] % n);
    cval[q] = val[order[q]];
  }
}

// capacity[i] = entries visited by row i = sum over its columns of the column lengths (an upper
// bound of the rows it touches).
__global__ void row_capacity_kernel(const int64_t* crow, const int64_t* col, const int64_t* colptr, int64_t n,
                                    int64_t* capacity) {
  for (int64_t i = thread_id(); i < n; i += thread_count()) {
    int64_t s = 0;
    for (int64_t p = crow[i]; p < crow[i + 1]; ++p) s += colptr[col[p] + 1] - colptr[col[p]];
    capacity[i] = s;
  }
}

__device__ __forceinline__ int64_t lower_bound_rows(const int32_t* rows, int64_t b, int64_t e, int64_t v) {
  while (b < e) {
    const int64_t mid = (b + e) / 2;
    if (rows[mid] < v) b = mid + 1;
    else e = mid;
  }
  return b;
}

// One block per row i of the chunk [row0, row0 + rows): acc[r, j] += min(V_ic, V_jc) (fixed point)
// for every j >= i sharing column c; the first touch of j appends it to the row's touched list.
__global__ void jaccard_accumulate_kernel(const int64_t* crow, const int64_t* col, const float* val,
                                          const int64_t* colptr, const int32_t* rows_of_col, const float* cval,
                                          int64_t n, int64_t row0, int64_t rows, unsigned long long* acc,
                                          const int64_t* touched_start, int32_t* touched, int32_t* touched_count) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t i = row0 + r;
    unsigned long long* a = acc + r * n;
    const int warps = blockDim.x / kWarp, w = threadIdx.x / kWarp;
    for (int64_t p = crow[i] + w; p < crow[i + 1]; p += warps) {
      const int64_t c = col[p];
      const float vi = val[p];
      const int64_t start = lower_bound_rows(rows_of_col, colptr[c], colptr[c + 1], i);
      for (int64_t q = start + lane(); q < colptr[c + 1]; q += kWarp) {
        const int32_t j = rows_of_col[q];
        // at least one unit, so a touched entry is never 0: that marks the first touch
        const unsigned long long units =
            static_cast<unsigned long long>(fmax(1.0, rint(static_cast<double>(fminf(vi, cval[q])) * kFixedScale)));
        if (atomicAdd(a + j, units) == 0ull) touched[touched_start[r] + atomicAdd(touched_count + r, 1)] = j;
      }
    }
  }
}

// One block per row of the chunk: turns the touched sums into distances and resets them. Dense:
// writes d to (i, j) and (j, i). Sparse (keys != nullptr): with counting = true it counts the kept
// pairs of the row into kept[r]; else it writes both directions at out_start[r] (diagonal once).
__global__ void jaccard_emit_kernel(int64_t n, int64_t row0, int64_t rows, unsigned long long* acc,
                                    const int64_t* touched_start, const int32_t* touched, const int32_t* touched_count,
                                    float* dense, double max_distance, bool counting, int32_t* kept,
                                    const int64_t* out_start, int32_t* cursor, int64_t* keys, float* vals) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t i = row0 + r;
    unsigned long long* a = acc + r * n;
    const int32_t* js = touched + touched_start[r];
    const int64_t nt = touched_count[r];
    bool has_diagonal = false;
    for (int64_t t = threadIdx.x; t < nt; t += blockDim.x) has_diagonal |= (js[t] == i);
    has_diagonal = __syncthreads_or(has_diagonal);
    for (int64_t t = threadIdx.x; t < nt; t += blockDim.x) {
      const int64_t j = js[t];
      const float d = static_cast<float>(jaccard_from_minsum(static_cast<double>(a[j]) / kFixedScale));
      if (dense != nullptr) {
        dense[i * n + j] = d;
        dense[j * n + i] = d;
      } else if (j == i || static_cast<double>(d) <= max_distance) {
        if (counting) {
          atomicAdd(kept + r, j == i ? 1 : 2);
        } else {
          const int64_t pos = out_start[r] + atomicAdd(cursor + r, j == i ? 1 : 2);
          keys[pos] = i * n + j;
          vals[pos] = d;
          if (j != i) {
            keys[pos + 1] = j * n + i;
            vals[pos + 1] = d;
          }
        }
      }
      if (!counting) a[j] = 0ull;
    }
    // an empty row shares nothing, not even with itself: its diagonal is d = 1
    if (threadIdx.x == 0 && !has_diagonal && dense == nullptr) {
      if (counting) {
        atomicAdd(kept + r, 1);
      } else {
        const int64_t pos = out_start[r] + atomicAdd(cursor + r, 1);
        keys[pos] = i * n + i;
        vals[pos] = 1.0f;
      }
    }
  }
}

// The sorted (key, value) pairs of the sparse result into CSR columns, values and row counts.
__global__ void keys_to_csr_kernel(const int64_t* sorted_keys, const int64_t* order, const float* vals, int64_t count,
                                   int64_t n, int64_t* col, float* out_val, int32_t* row_counts) {
  for (int64_t p = thread_id(); p < count; p += thread_count()) {
    col[p] = sorted_keys[p] % n;
    out_val[p] = vals[order[p]];
    atomicAdd(row_counts + sorted_keys[p] / n, 1);
  }
}

// Every pair (max_distance >= 1): row i of the dense matrix as CSR row i.
__global__ void dense_to_full_csr_kernel(const float* dense, int64_t n, int64_t* crow, int64_t* col, float* val) {
  for (int64_t p = thread_id(); p < n * n; p += thread_count()) {
    col[p] = p % n;
    val[p] = dense[p];
    if (p % n == 0) crow[p / n] = p;
  }
  if (thread_id() == 0) crow[n] = n * n;
}

}  // namespace distance
}  // namespace uvireid
