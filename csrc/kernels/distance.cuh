// Row-level logic of the distance ops on raw pointers: k-reciprocal sets, the 2/3 expansion, the
// expansion groups of query expansion, and exact squared distances. Nothing here knows torch; the
// __host__ __device__ functions are shared by the CPU ops (csrc/cpu/distance_cpu.cpp) and the CUDA
// kernels (csrc/cuda/distance_cuda.cu), so both backends apply literally the same rules.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/host_device.h"

// Vectorised (still deterministic: a fixed order per build) sums into `s` in the plain C++ build.
#if defined(__CUDACC__)
#define UVIREID_SIMD_SUM_S
#else
#define UVIREID_SIMD_SUM_S _Pragma("omp simd reduction(+ : s)")
#endif

namespace uvireid {
namespace distance {

// round(k1 / 2) with round-half-to-even (numpy.around): 30 -> 15, 5 -> 2, 7 -> 4.
UVIREID_HD int64_t half_round_even(int64_t k1) {
  const int64_t f = k1 / 2;
  return (k1 % 2 == 0 || f % 2 == 0) ? f : f + 1;
}

// Whether `i` is among the first m entries of rank row j (rank is [N, K] row-major).
UVIREID_HD bool in_first(const int64_t* rank, int64_t K, int64_t j, int64_t m, int64_t i) {
  const int64_t* row = rank + j * K;
  int64_t hits = 0;  // a count without an early exit: on CPU the loop vectorises
  for (int64_t t = 0; t < m; ++t) hits += (row[t] == i);
  return hits != 0;
}

// R(i, .) over the first m ranked entries: j kept when i is among j's first m. Writes into out
// (capacity m) in rank order and returns the count.
UVIREID_HD int64_t reciprocal_set(const int64_t* rank, int64_t K, int64_t i, int64_t m, int32_t* out) {
  int64_t n = 0;
  const int64_t* row = rank + i * K;
  for (int64_t t = 0; t < m; ++t) {
    const int64_t j = row[t];
    if (in_first(rank, K, j, m, i)) out[n++] = static_cast<int32_t>(j);
  }
  return n;
}

UVIREID_HD bool contains(const int32_t* set, int64_t n, int32_t v) {
  for (int64_t t = 0; t < n; ++t)
    if (set[t] == v) return true;
  return false;
}

// Membership tests of expanded_set. ScanMarks scans the small arrays (no scratch: GPU threads);
// StampMarks keeps O(1) stamps over all N rows (CPU threads, which can afford N-sized scratch).
struct ScanMarks {
  const int32_t* base = nullptr;
  int64_t nbase = 0;
  UVIREID_HD void start(int64_t, const int32_t* b, int64_t nb) { base = b, nbase = nb; }
  UVIREID_HD bool in_base(int32_t v) const { return contains(base, nbase, v); }
  UVIREID_HD bool in_out(int32_t v, const int32_t* out, int64_t n) const { return contains(out, n, v); }
  UVIREID_HD void add_out(int32_t) {}
};

struct StampMarks {
  int64_t* base_stamp;  // [N], base_stamp[v] == row  <=>  v in R(row, k1)
  int64_t* out_stamp;   // [N], out_stamp[v] == row   <=>  v already in E_row
  int64_t row = -1;
  void start(int64_t i, const int32_t* b, int64_t nb) {
    row = i;
    for (int64_t t = 0; t < nb; ++t) base_stamp[b[t]] = i;
  }
  bool in_base(int32_t v) const { return base_stamp[v] == row; }
  bool in_out(int32_t v, const int32_t*, int64_t) const { return out_stamp[v] == row; }
  void add_out(int32_t v) { out_stamp[v] = row; }
};

// Expanded set E_i: R(i,k1) united with every R(c,h), c in R(i,k1), that overlaps R(i,k1) in more
// than 2/3 of its members (3|.| > 2|R(c,h)| is exact; it matches the float test for all sizes).
// r1/rh are padded [N, k1] sets with counts n1/nh. out needs capacity k1 * (k1 + 1); returns the
// count; entries are unique but unsorted.
template <class Marks>
UVIREID_HD int64_t expanded_set(const int32_t* r1, const int32_t* n1, const int32_t* rh, const int32_t* nh,
                                int64_t k1, int64_t i, int32_t* out, Marks& marks) {
  const int32_t* base = r1 + i * k1;
  const int64_t nb = n1[i];
  marks.start(i, base, nb);
  int64_t n = 0;
  for (int64_t t = 0; t < nb; ++t) {
    out[n++] = base[t];
    marks.add_out(base[t]);
  }
  for (int64_t t = 0; t < nb; ++t) {
    const int64_t c = base[t];
    const int32_t* cand = rh + c * k1;
    const int64_t nc = nh[c];
    int64_t inter = 0;
    for (int64_t s = 0; s < nc; ++s) inter += marks.in_base(cand[s]);
    if (3 * inter > 2 * nc)
      for (int64_t s = 0; s < nc; ++s)
        if (!marks.in_out(cand[s], out, n)) {
          out[n++] = cand[s];
          marks.add_out(cand[s]);
        }
  }
  return n;
}

// Expansion weights for row i of query expansion: of the first `pool` ranked neighbours, at most
// `cap` (>= 1) per (outer, inner) group in rank order are accepted; neighbour j then weighs
// 1 / (#outer groups * #inner groups in its outer group * #accepted in its group), so the result is
// the equal-weight mean over outer groups of the equal-weight mean over inner groups of group means.
// Writes accepted neighbours and weights (capacity pool); `scratch` holds 4 * pool int64s.
UVIREID_HD int64_t expansion_weights(const int64_t* rank, int64_t K, const int64_t* outer, const int64_t* inner,
                                     int64_t i, int64_t pool, int64_t cap, int32_t* members, double* weights,
                                     int64_t* scratch) {
  int64_t* g_outer = scratch;
  int64_t* g_inner = scratch + pool;
  int64_t* g_count = scratch + 2 * pool;
  int64_t* group_of = scratch + 3 * pool;
  int64_t n = 0, ngroups = 0;
  const int64_t* row = rank + i * K;
  for (int64_t t = 0; t < pool; ++t) {
    const int64_t j = row[t], oj = outer[j], ij = inner[j];
    int64_t g = 0;
    while (g < ngroups && !(g_outer[g] == oj && g_inner[g] == ij)) ++g;
    if (g == ngroups) {
      g_outer[g] = oj;
      g_inner[g] = ij;
      g_count[g] = 0;
      ++ngroups;
    }
    if (g_count[g] >= cap) continue;
    g_count[g]++;
    group_of[n] = g;
    members[n++] = static_cast<int32_t>(j);
  }
  int64_t nouter = 0;
  for (int64_t g = 0; g < ngroups; ++g) {
    int64_t h = 0;
    while (h < g && g_outer[h] != g_outer[g]) ++h;
    nouter += (h == g);
  }
  for (int64_t t = 0; t < n; ++t) {
    const int64_t g = group_of[t];
    int64_t inner_groups = 0;
    for (int64_t h = 0; h < ngroups; ++h) inner_groups += (g_outer[h] == g_outer[g]);
    weights[t] = 1.0 / (static_cast<double>(nouter) * static_cast<double>(inner_groups * g_count[g]));
  }
  return n;
}

// Exact squared Euclidean distance of `a` to M float rows at once, each accumulated in double in a
// fixed order (eight interleaved partial sums, then a fixed tree): the same arithmetic for every pair
// and every instruction set, so duplicate rows give bit-identical distances (exact ties), and the
// CPU's AVX-512 and AVX2 clones give the bits of a scalar build. Several keys at once interleave
// independent chains of adds. CPU only (the CUDA kernels sum across a warp).
template <int M>
UVIREID_ALWAYS_INLINE void squared_distances(const float* a, const float* const* b, int64_t D, double* out) {
  double s[M][8] = {};
  const int64_t full = D / 8 * 8;
  for (int64_t d = 0; d < full; d += 8)
    for (int m = 0; m < M; ++m)
      for (int l = 0; l < 8; ++l) {
        const double t = static_cast<double>(a[d + l]) - static_cast<double>(b[m][d + l]);
        s[m][l] += t * t;
      }
  // The tail into the first lanes, in its own loop (as a zero-padded block after the main loop, GCC 12
  // made the whole function 1.6x slower per key in builds without -fwrapv). Lanes it does not reach
  // would only add t = 0, and s + 0 = s since s >= +0.
  for (int64_t d = full; d < D; ++d)
    for (int m = 0; m < M; ++m) {
      const double t = static_cast<double>(a[d]) - static_cast<double>(b[m][d]);
      s[m][d - full] += t * t;
    }
  for (int m = 0; m < M; ++m)
    out[m] = ((s[m][0] + s[m][4]) + (s[m][1] + s[m][5])) + ((s[m][2] + s[m][6]) + (s[m][3] + s[m][7]));
}

// <a, b> of two float rows, accumulated in double.
UVIREID_HD double dot(const float* a, const float* b, int64_t D) {
  double s = 0.0;
  UVIREID_SIMD_SUM_S
  for (int64_t d = 0; d < D; ++d) s += static_cast<double>(a[d]) * static_cast<double>(b[d]);
  return s;
}

// <x_i, x_j> from the squared distance to j when j is among i's K ranked neighbours (rank_dist
// given): (|x_i|^2 + |x_j|^2 - |x_i - x_j|^2) / 2, which saves reading both rows. The float32
// distance carries an absolute error of about 6e-8 * distance into d = 2 - 2<x_i, x_j>, so it is
// used only up to distance 4 (unit-norm range); returns false otherwise or when j is not ranked.
UVIREID_HD bool ranked_dot(const int64_t* rank, const float* rank_dist, int64_t K, int64_t i, int64_t j,
                           const double* sq, double* out) {
  if (rank_dist == nullptr) return false;
  for (int64_t t = 0; t < K; ++t)
    if (rank[i * K + t] == j) {
      if (!(rank_dist[i * K + t] <= 4.0f)) return false;
      *out = 0.5 * (sq[i] + sq[j] - static_cast<double>(rank_dist[i * K + t]));
      return true;
    }
  return false;
}

// ------------------------------------------------------------------ kNN candidates and their proof
// knn ranks candidates found by a fast GEMM and re-measures them with squared_distances (the "exact"
// key). A GEMM pass (a "tier") sees each row through a split x = h + l. The bf16 tier multiplies
// h = x rounded to bf16: products of bf16 values are exact in float32 and bf16 values are exact in
// TF32, so any float32-accumulating matmul (tensor cores, TF32 or not) computes <h_i, h_j> to within
// gamma |h_i||h_j|. The fp64 tier multiplies h = x itself (l = 0) in float64.

// Candidate tier kinds, as the ops' `candidates` argument names them.
enum class Tier { Bf16, Fp64 };

// Error constants of a tier over D-dimensional rows. gamma: the GEMM's accumulation error relative to
// sum_d |h_id h_jd| <= |h_i||h_j|, for any summation order, with unit roundoff u (2^-21 for float32
// accumulation: four times IEEE's, because tensor cores may truncate instead of rounding). delta: the
// float64 rounding of norms, of the approximation and of the exact key, relative to (|x_i| + |x_j|)^2.
// tiny: products and partial sums a float32 GEMM may flush to zero (2^-126 each).
// out: the relative rounding of the GEMM's output (0 when it is float32 or float64; a bf16 output,
// as the CPU's bf16 matmul gives, is within 2^-8 of the float32 sum it rounds, |g - g_out| <= out |g_out|).
struct TierBound {
  double gamma, delta, tiny, out = 0.0;
};

// bf16_output: the GEMM returns bf16 (the CPU's bf16 matmul), not float32.
UVIREID_HD TierBound tier_bound(Tier tier, int64_t D, bool bf16_output = false) {
  const double u = tier == Tier::Bf16 ? 4.76837158203125e-07 /* 2^-21 */ : 4.440892098500626e-16 /* 2^-51 */;
  const double m = static_cast<double>(D + 4) * u;
  const double eps64 = 2.220446049250313e-16;  // 2^-52
  const double min_normal = 1.1754943508222875e-38;  // 2^-126
  // Past m = 1/2 (D near 2^20 for bf16) the classic bound is useless: an infinite gamma turns every
  // lower bound into -Inf, so the rows go to the next tier.
  TierBound b{m < 0.5 ? m / (1.0 - m) : HUGE_VAL, 8.0 * static_cast<double>(D + 8) * eps64,
              tier == Tier::Bf16 ? 4.0 * static_cast<double>(D + 4) * min_normal : 0.0};
  if (bf16_output) {
    b.out = 0.00392156862745098;  // 2^-8 / (1 - 2^-8): |g - g_out| <= 2^-8 |g| <= out |g_out|
    b.tiny += min_normal;         // a float32 sum below 2^-126 may round to a zero bf16
  }
  return b;
}

// v rounded to bf16 (8 significand bits, round half to even), kept as a float. Subnormal results
// become 0 (a GEMM may flush them; l = x - h then carries the value), and a value that would round
// to infinity is truncated instead, so h stays finite.
UVIREID_HD float round_to_bf16(float v) {
  uint32_t u;
  memcpy(&u, &v, sizeof u);
  uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  if ((r & 0x7f800000u) == 0x7f800000u) r = u & 0xffff0000u;  // rounded up to Inf: truncate
  if ((r & 0x7f800000u) == 0u) r &= 0x80000000u;              // subnormal: flush to (signed) zero
  float h;
  memcpy(&h, &r, sizeof h);
  return h;
}

// One element of the bf16 split: returns h = round_to_bf16(v) and adds h^2 and l^2 (l = v - h, exact
// in double) to the running squared norms.
UVIREID_HD float split_bf16(float v, double& h2, double& l2) {
  const float h = round_to_bf16(v);
  const double l = static_cast<double>(v) - static_cast<double>(h);
  h2 += static_cast<double>(h) * h;
  l2 += l * l;
  return h;
}

// Norms a tier's error bound needs, per row: |x|, |h|, |l| for the split x = h + l it multiplies.
struct SplitNorms {
  const double* x;
  const double* h;
  const double* l;
};

// A lower bound on the exact key of rows i and j, from g = the tier's GEMM value for <h_i, h_j>, the
// float64 squared norms sq and the norms |x|, |h|, |l| of both rows:
//   <x_i, x_j> - <h_i, h_j> = <h_i, l_j> + <l_i, x_j>, at most |h_i||l_j| + |l_i||x_j| (Cauchy-Schwarz);
//   |g - <h_i, h_j>| <= gamma |h_i||h_j| + tiny + out |g|.
// A scan holds one side fixed, so the bound is kept as a fixed part and coefficients of the scanned
// side t's norms: lb = base + p_t - 2 g - out2 |g| - a |h_t| - b |l_t| - c |x_t|, p_t = sq_t - delta |x_t|^2.
// Anything not finite becomes -Inf, which keeps t among the candidates (the proof then fails and the
// row goes to the next tier) instead of wrongly excluding it.
struct ScanBound {
  double base, a, b, c, out2;
};

// Row i fixed, scanning the columns j of its own row.
UVIREID_HD ScanBound bound_for_row(double sq_i, double nx_i, double nh_i, double nl_i, const TierBound& tb) {
  return {sq_i - tb.delta * nx_i * nx_i - 2.0 * tb.tiny, 2.0 * tb.gamma * nh_i, 2.0 * nh_i,
          2.0 * nl_i + 2.0 * tb.delta * nx_i, 2.0 * tb.out};
}

// Column j fixed, scanning the rows i whose bound it enters.
UVIREID_HD ScanBound bound_for_column(double sq_j, double nx_j, double nh_j, double nl_j, const TierBound& tb) {
  return {sq_j - tb.delta * nx_j * nx_j - 2.0 * tb.tiny, 2.0 * nl_j + 2.0 * tb.gamma * nh_j, 2.0 * nx_j,
          2.0 * tb.delta * nx_j, 2.0 * tb.out};
}

// p_t of the scanned side.
UVIREID_HD double scan_term(double sq_t, double nx_t, const TierBound& tb) { return sq_t - tb.delta * nx_t * nx_t; }

UVIREID_HD double scan_bound(const ScanBound& s, double g, double p_t, double nh_t, double nl_t, double nx_t) {
  const double lower = s.base + p_t - 2.0 * g - s.out2 * fabs(g) - s.a * nh_t - s.b * nl_t - s.c * nx_t;
  return (lower - lower == 0.0) ? lower : -HUGE_VAL;  // x - x == 0 only for finite x
}

UVIREID_HD double distance_lower_bound(double g, double sq_i, double sq_j, double nx_i, double nh_i, double nl_i,
                                       double nx_j, double nh_j, double nl_j, const TierBound& b) {
  return scan_bound(bound_for_row(sq_i, nx_i, nh_i, nl_i, b), g, scan_term(sq_j, nx_j, b), nh_j, nl_j, nx_j);
}

// The candidate set S (the `cand` smallest lower bounds of a row, largest bound_max) holds the row's
// true top k when bound_max > tau, the k-th smallest exact key within S: every row outside S has an
// exact key >= its lower bound >= bound_max > tau, so it ranks after all k (ties included).
UVIREID_HD bool candidates_proven(double bound_max, double tau) { return bound_max > tau; }

// Candidates per row a tier keeps: the bf16 bound is loose (about 1% of |x_i||x_j|), so it takes more.
UVIREID_HD int64_t tier_candidates(Tier tier, int64_t k, int64_t n) {
  const int64_t c = tier == Tier::Bf16 ? 2 * k + 16 : k + (k / 2 > 16 ? k / 2 : 16);
  return c < n ? c : n;
}

// Ordering of kNN candidates: by distance, ties to the lower index.
UVIREID_HD bool closer(double da, int64_t ia, double db, int64_t ib) { return da < db || (da == db && ia < ib); }

// Jaccard distance from the min-sum m of two rows that each sum to 1: 1 - m/(2 - m), >= 0.
UVIREID_HD double jaccard_from_minsum(double m) {
  const double d = 1.0 - m / (2.0 - m);
  return d > 0.0 ? d : 0.0;
}

}  // namespace distance
}  // namespace uvireid
