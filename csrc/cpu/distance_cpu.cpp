// CPU kernels of the distance ops: knn, k_reciprocal_encode, query_expansion, jaccard_dense,
// jaccard_sparse. Rows are independent and run under torch's parallel_for; the row rules come from
// csrc/kernels/distance.cuh, shared with the CUDA kernels.

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "common/checks.h"
#include "common/csr.h"
#include "common/registration.h"
#include "kernels/distance.cuh"

namespace uvireid {
namespace {

using torch::stable::Tensor;
using namespace uvireid::distance;

constexpr int64_t kGrain = 16;

Tensor empty_cpu(std::vector<int64_t> sizes, ScalarType dtype) {
  return torch::stable::empty(sizes, dtype, std::nullopt, torch::stable::Device(torch::stable::DeviceType::CPU));
}

// Per-row results gathered into CSR tensors (crow int64 [N+1], col int64 [nnz], val float32 [nnz]).
std::tuple<Tensor, Tensor, Tensor> to_csr(const std::vector<std::vector<int32_t>>& cols,
                                          const std::vector<std::vector<float>>& vals) {
  const int64_t n = static_cast<int64_t>(cols.size());
  Tensor crow = empty_cpu({n + 1}, ScalarType::Long);
  int64_t* cp = crow.mutable_data_ptr<int64_t>();
  cp[0] = 0;
  for (int64_t i = 0; i < n; ++i) cp[i + 1] = cp[i] + static_cast<int64_t>(cols[i].size());
  Tensor col = empty_cpu({cp[n]}, ScalarType::Long);
  Tensor val = empty_cpu({cp[n]}, ScalarType::Float);
  int64_t* colp = col.mutable_data_ptr<int64_t>();
  float* valp = val.mutable_data_ptr<float>();
  torch::stable::parallel_for(0, n, kGrain * 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      std::copy(cols[i].begin(), cols[i].end(), colp + cp[i]);
      std::copy(vals[i].begin(), vals[i].end(), valp + cp[i]);
    }
  });
  return {crow, col, val};
}

// Hot loops outside torch's kernels get AVX-512 and AVX2 builds chosen at load time where the CPU
// has them. Same bits as the default build where bits matter (the exact keys): element-wise
// arithmetic and sums in an order fixed in the source, and no build fuses multiply-adds
// (-ffp-contract=off in setup.py and CMakeLists.txt).
#if defined(__x86_64__) && defined(__ELF__) && (defined(__GNUC__) || defined(__clang__))
#define UVIREID_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define UVIREID_CPU_CLONES
#endif

// Whether every value of a row is finite: v * 0 is 0 for finite v and NaN otherwise, and a NaN
// survives the sum.
UVIREID_CPU_CLONES bool finite_row(const float* p, int64_t d) {
  float s = 0.0f;
  UVIREID_SIMD_SUM_S
  for (int64_t t = 0; t < d; ++t) s += p[t] * 0.0f;
  return s == 0.0f;
}

// Features as the ops take them: 2-D float32, every row finite (the first bad row is named);
// returns the contiguous tensor.
Tensor checked_features(const char* op, const Tensor& features) {
  check_dim(op, "features", features, 2);
  check_dtype(op, "features", features, ScalarType::Float);
  Tensor x = torch::stable::contiguous(features);
  const float* p = x.const_data_ptr<float>();
  const int64_t n = x.size(0), d = x.size(1);
  std::vector<char> bad(n);
  torch::stable::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) bad[i] = !finite_row(p + i * d, d);
  });
  const auto first = std::find(bad.begin(), bad.end(), 1);
  STD_TORCH_CHECK(first == bad.end(), op, ": features row ", first - bad.begin(), " is not finite (NaN or Inf)");
  return x;
}

void check_rank(const char* op, const Tensor& rank, int64_t n, int64_t min_cols, const char* what) {
  check_dim(op, "rank", rank, 2);
  check_dtype(op, "rank", rank, ScalarType::Long);
  check_size(op, "rank", rank, 0, n);
  STD_TORCH_CHECK(rank.size(1) >= min_cols, op, ": rank has ", rank.size(1), " columns but ", what, " = ",
                  min_cols, " needs at least that many");
  const int64_t* r = rank.const_data_ptr<int64_t>();
  for (int64_t t = 0; t < rank.numel(); ++t)
    STD_TORCH_CHECK(r[t] >= 0 && r[t] < n, op, ": rank holds index ", r[t], " at flat position ", t,
                    ", outside [0, ", n, ")");
}

// ---------------------------------------------------------------------------------------------- knn

// Rows rows[r0 .. r0 + rb) of a [n, D] matrix of T (its storage type), as a [rb, D] matrix.
template <class T>
Tensor gather_rows(const Tensor& m, const std::vector<int64_t>& rows, int64_t r0, int64_t rb) {
  const int64_t dim = m.size(1);
  Tensor out = empty_cpu({rb, dim}, m.scalar_type());
  const T* src = static_cast<const T*>(m.const_data_ptr());
  T* dst = static_cast<T*>(out.mutable_data_ptr());
  for (int64_t r = 0; r < rb; ++r) std::copy_n(src + rows[r0 + r] * dim, dim, dst + r * dim);
  return out;
}

// The exact key that ranks knn's candidates (squared_distances): one at a time, or kKeyBatch at once.
UVIREID_CPU_CLONES double exact_key(const float* a, const float* b, int64_t dim) {
  double key;
  squared_distances<1>(a, &b, dim, &key);
  return key;
}
constexpr int kKeyBatch = 4;
UVIREID_CPU_CLONES void exact_keys(const float* a, const float* const* b, int64_t dim, double* out) {
  squared_distances<kKeyBatch>(a, b, dim, out);
}

// The bf16 split of a row: h = x rounded to bf16 (stored as bf16: the upper half of the float, whose
// lower half is zero), and the norms |h|, |l| (l = x - h).
UVIREID_CPU_CLONES void split_row(const float* x, uint16_t* h, int64_t dim, double& nh, double& nl) {
  double sh = 0.0, sl = 0.0;
#pragma omp simd reduction(+ : sh, sl)
  for (int64_t d = 0; d < dim; ++d) {
    const float v = split_bf16(x[d], sh, sl);
    uint32_t u;
    std::memcpy(&u, &v, sizeof u);
    h[d] = static_cast<uint16_t>(u >> 16);
  }
  nh = std::sqrt(sh);
  nl = std::sqrt(sl);
}

// A GEMM output element as a double: bf16 (torch's storage, the upper half of a float) or float64.
inline double widen(uint16_t v) {
  const uint32_t u = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline double widen(double v) { return v; }

// How knn_tier_all cuts a tier's product: blocks of B rows, each multiplied with tiles of W columns
// from the tile holding its first row on. Every GEMM of the bf16 tier then has the one shape B x W,
// so oneDNN compiles its kernel once per call instead of once per block width. W is the smallest
// multiple of 64 that splits n into tiles of at most kTileCols (so padding stays under one tile's
// worth of 64 rows per tile); B is W halved while a block's tiles exceed 2^23 elements. The bf16
// operand has zero rows up to n_pad, a multiple of W.
constexpr int64_t kTileCols = 1024;

struct TileGrid {
  int64_t W, B, n_pad;
  explicit TileGrid(int64_t n) {
    const int64_t tiles = std::max<int64_t>(1, (n + kTileCols - 1) / kTileCols);
    W = ((n + tiles - 1) / tiles + 63) / 64 * 64;
    n_pad = (n + W - 1) / W * W;
    B = W;
    while (B % 2 == 0 && B * n_pad > (int64_t{1} << 23)) B /= 2;
  }
};

// The GEMMs of a tier: a left operand of rows against rows [j0, j0 + w) of the right one. The bf16
// tier multiplies hb, x rounded to bf16 ([n_pad, D], zero rows from n on): torch's CPU bf16 matmul
// sums the exact products in float32 and rounds the result to bf16 (the bound's `out` term), several
// times faster than float32 where the CPU has bf16 dot products. The fp64 tier multiplies x in
// float64, converted a chunk of rows at a time so no float64 copy of x is ever whole.
struct CpuTierGemm {
  Tensor x;   // [n, D] float
  Tensor hb;  // bf16 tier only: [grid.n_pad, D]
  bool fp64 = false;
  TileGrid grid;
  // Rows [i0, i0 + rows) as a left operand.
  Tensor left(int64_t i0, int64_t rows) const {
    Tensor m = fp64 ? x : hb;
    Tensor part = torch::stable::narrow(m, 0, i0, rows);
    return fp64 ? torch::stable::to(part, ScalarType::Double) : part;
  }
  // Rows rows[r0 .. r0 + rb) as a left operand.
  Tensor gathered(const std::vector<int64_t>& rows, int64_t r0, int64_t rb) const {
    return fp64 ? torch::stable::to(gather_rows<float>(x, rows, r0, rb), ScalarType::Double)
                : gather_rows<uint16_t>(hb, rows, r0, rb);
  }
  // a x rows [j0, j0 + w): [a rows, w], contiguous, bf16 or float64.
  Tensor product(const Tensor& a, int64_t j0, int64_t w) const {
    if (!fp64) {
      Tensor all = hb;
      Tensor b = torch::stable::narrow(all, 0, j0, w);
      return torch::stable::contiguous(torch::stable::matmul(a, torch::stable::transpose(b, 0, 1)));
    }
    Tensor all = x;
    const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 22) / x.size(1));
    Tensor g = empty_cpu({a.size(0), w}, ScalarType::Double);
    for (int64_t c0 = 0; c0 < w; c0 += chunk) {
      const int64_t cb = std::min(chunk, w - c0);
      Tensor bd = torch::stable::to(torch::stable::narrow(all, 0, j0 + c0, cb), ScalarType::Double);
      Tensor part = torch::stable::narrow(g, 1, c0, cb);
      torch::stable::copy_(part, torch::stable::matmul(a, torch::stable::transpose(bd, 0, 1)));
    }
    return g;
  }
};

// One block's product: rows [i0, i0 + rb) against columns [c0, n), c0 = the start of the tile holding
// i0, as tiles of W columns (the bf16 ones padded to W, the fp64 ones cut at n).
template <class G>
struct BlockTiles {
  int64_t c0, W, n;
  std::vector<Tensor> tiles;
  std::vector<const G*> data;
  std::vector<int64_t> stride;
  BlockTiles(const CpuTierGemm& gemm, int64_t i0, int64_t rb, int64_t n_)
      : c0(i0 / gemm.grid.W * gemm.grid.W), W(gemm.grid.W), n(n_) {
    const Tensor a = gemm.left(i0, gemm.fp64 ? rb : gemm.grid.B);
    for (int64_t j0 = c0; j0 < n; j0 += W) {
      tiles.push_back(gemm.product(a, j0, gemm.fp64 ? std::min(W, n - j0) : W));
      data.push_back(static_cast<const G*>(tiles.back().const_data_ptr()));
      stride.push_back(tiles.back().size(1));
    }
  }
  // Element (r, c) of the block, with the columns after it up to end(c) contiguous.
  const G* at(int64_t r, int64_t c) const {
    const int64_t t = (c - c0) / W;
    return data[t] + r * stride[t] + (c - c0 - t * W);
  }
  int64_t end(int64_t c) const { return std::min(n, c0 + ((c - c0) / W + 1) * W); }
};

// Per-row terms of a tier's bound (kernels/distance.cuh), one array each so the scans vectorise.
struct TierTerms {
  std::vector<double> sq, nx, nh, nl, p;  // |x|^2, |x|, |h|, |l|, scan_term
  TierBound tb;
  ScanBound row(int64_t i) const { return bound_for_row(sq[i], nx[i], nh[i], nl[i], tb); }
  ScanBound column(int64_t j) const { return bound_for_column(sq[j], nx[j], nh[j], nl[j], tb); }
};

// At least the `cand` candidates of every row with the smallest (lower bound, index) pairs, each row
// a reservoir of 2 cand slots: a candidate goes in when its bound does not exceed thr[r]; a full
// reservoir keeps its cand smallest and thr[r] becomes the largest of those (until then thr[r] is
// +Inf or a seed, see seed_thresholds). So every candidate not held has a bound >= thr[r] >= every
// held bound, which is what the proof needs.
struct CandidateSets {
  using Candidate = std::pair<double, int64_t>;
  int64_t cand;
  std::vector<Candidate> items;  // [rows, 2 cand]
  std::vector<int64_t> size;
  std::vector<double> thr;
  CandidateSets(int64_t rows, int64_t cand_)
      : cand(cand_), items(static_cast<size_t>(rows * 2 * cand_)), size(rows, 0), thr(rows, HUGE_VAL) {}
  Candidate* slots(int64_t r) { return items.data() + r * 2 * cand; }
  void clear(int64_t r) {
    size[r] = 0;
    thr[r] = HUGE_VAL;
  }
  void offer(int64_t r, double lb, int64_t j) {
    Candidate* h = slots(r);
    h[size[r]++] = {lb, j};
    if (size[r] == 2 * cand) {
      std::nth_element(h, h + cand - 1, h + 2 * cand);
      size[r] = cand;
      thr[r] = h[cand - 1].first;
    }
  }
};

constexpr int64_t kScanChunk = 256;

// The bound scans test every element of a tier's product, and almost every element has a bound far
// above its row's threshold. A float32 test, at twice the lanes of the double bound, rejects those
// first; the double bound is computed only for what it lets through, so the offers (and the results)
// are those of the double bound alone. The test rejects t when
//   2 g + out2 |g| < base + q_t - thr,  q_t = p_t - A nh_t - B nl_t - C nx_t,
// with (A, B, C) the largest coefficients (a, b, c) of the fixed sides it serves (and out2 the
// largest, rounded up): norms are >= 0, so the right side is below every side's bound minus thr.
// Every operand is rounded down, the double rounding of the bound is covered by an absolute slack
// (2^-30 of the magnitudes, against about 2^-49), and the float32 rounding of the test (below 2^-21
// of its operands) by a relative one (2^-20); in the subnormal range, where the relative slack
// vanishes, the absolute one still exceeds the rounding. A NaN or Inf anywhere fails the test, so
// the element goes to the double bound.
constexpr double kAbsSlack = 9.313225746154785e-10;  // 2^-30
constexpr float kRelSlack = 9.5367431640625e-07f;    // 2^-20

// A double as a float, without the undefined conversion of values past the float range (they
// become +-Inf, as the hardware gives anyway).
inline float to_float(double v) {
  constexpr double kMax = std::numeric_limits<float>::max();
  return v > kMax ? HUGE_VALF : v < -kMax ? -HUGE_VALF : static_cast<float>(v);
}
inline float round_down(double v) {
  const float f = to_float(v);
  return f > v ? std::nextafter(f, -HUGE_VALF) : f;
}
inline float round_up(double v) {
  const float f = to_float(v);
  return f < v ? std::nextafter(f, HUGE_VALF) : f;
}
// base - thr rounded down, less the absolute slack of magnitudes up to `scale`.
inline float floor_diff(double base, double thr, double scale) {
  return round_down(base - thr - kAbsSlack * (std::fabs(base) + std::fabs(thr) + scale));
}

inline float widen_float(uint16_t v) { return static_cast<float>(widen(v)); }
inline float widen_float(double v) { return to_float(v); }

// The float32 side of the scans of one block of fixed sides, for scanned indices [t0, n).
struct Prefilter {
  int64_t t0;
  std::vector<float> qf;  // q_t rounded down, at t - t0
  double scale = 0.0;     // the largest |p_t| + A nh_t + B nl_t + C nx_t: the bound's magnitudes
  float out2;
  // `most`: the largest coefficients of the fixed sides (base unused).
  Prefilter(const TierTerms& tt, const ScanBound& most, int64_t t0_, int64_t n)
      : t0(t0_), qf(n - t0_), out2(round_up(most.out2)) {
    std::mutex m;  // guards scale: one update per chunk
    torch::stable::parallel_for(t0, n, 4096, [&](int64_t b, int64_t e) {
      double big = 0.0;
      for (int64_t t = b; t < e; ++t) {
        const double terms = most.a * tt.nh[t] + most.b * tt.nl[t] + most.c * tt.nx[t];
        qf[t - t0] = round_down(tt.p[t] - terms);
        big = std::max(big, std::fabs(tt.p[t]) + terms);
      }
      const std::lock_guard<std::mutex> lock(m);
      scale = std::max(scale, big);
    });
  }
};

// The largest coefficients of a block of fixed sides.
inline void widen_coefficients(ScanBound& most, const ScanBound& s) {
  most.a = std::max(most.a, s.a);
  most.b = std::max(most.b, s.b);
  most.c = std::max(most.c, s.c);
  most.out2 = std::max(most.out2, s.out2);
}

// pass[u] = 0 where element u of a chunk of a GEMM row provably has a bound above the threshold:
// 2 g_u + out2 |g_u| < shift + t[u] with room for the float32 rounding.
template <class G>
inline void prefilter_of(const G* g, const float* t, float shift, float out2, int64_t cnt, uint8_t* pass) {
  for (int64_t u = 0; u < cnt; ++u) {
    const float gu = widen_float(g[u]);
    const float lhs = 2.0f * gu + out2 * std::fabs(gu);
    const float rhs = shift + t[u];
    pass[u] = !(lhs + kRelSlack * (std::fabs(lhs) + std::fabs(rhs)) < rhs);
  }
}
UVIREID_CPU_CLONES void prefilter(const uint16_t* g, const float* t, float shift, float out2, int64_t cnt,
                                  uint8_t* pass) {
  prefilter_of(g, t, shift, out2, cnt, pass);
}
UVIREID_CPU_CLONES void prefilter(const double* g, const float* t, float shift, float out2, int64_t cnt,
                                  uint8_t* pass) {
  prefilter_of(g, t, shift, out2, cnt, pass);
}

// f(u) for every u of a chunk that passed, eight flags at a time (most words are all zero).
template <class F>
inline void for_each_passed(const uint8_t* pass, int64_t cnt, F&& f) {
  int64_t u = 0;
  for (; u + 8 <= cnt; u += 8) {
    uint64_t w;
    std::memcpy(&w, pass + u, sizeof w);
    if (w != 0)
      for (int64_t v = u; v < u + 8; ++v)
        if (pass[v]) f(v);
  }
  for (; u < cnt; ++u)
    if (pass[u]) f(u);
}

// The double bound of scanned index t against fixed side s, g its GEMM value.
template <class G>
inline double bound_at(const ScanBound& s, G g, const TierTerms& tt, int64_t t) {
  return scan_bound(s, widen(g), tt.p[t], tt.nh[t], tt.nl[t], tt.nx[t]);
}

// Row i (candidate set r) against indices [t0, t1) of GEMM row g (g[0] is index t0); pf covers them.
template <class G>
void scan_row(CandidateSets& sets, int64_t r, const ScanBound& s, const G* g, const TierTerms& tt,
              const Prefilter& pf, int64_t t0, int64_t t1) {
  uint8_t pass[kScanChunk];
  for (int64_t c0 = t0; c0 < t1; c0 += kScanChunk) {
    const int64_t cnt = std::min(kScanChunk, t1 - c0);
    const G* gc = g + (c0 - t0);
    // thr only falls within the chunk, so its value now is safe for the whole chunk
    prefilter(gc, pf.qf.data() + (c0 - pf.t0), floor_diff(s.base, sets.thr[r], pf.scale), pf.out2, cnt, pass);
    for_each_passed(pass, cnt, [&](int64_t u) {
      const double lb = bound_at(s, gc[u], tt, c0 + u);
      if (lb <= sets.thr[r]) sets.offer(r, lb, c0 + u);
    });
  }
}

// Exact keys that settled rows computed, kept for a while by one thread, so that a later row of the
// same identity takes key(i, j) from row j's keys: key(j, i) has the same bits (the differences only
// change sign). Rows are settled identity by identity (settle_order), so mutual neighbours often hit
// (18-27 % of the keys at N = 3000 on clustered features).
struct KeyCache {
  static constexpr int kRows = 64;
  std::vector<int32_t> slot_of;  // [n]: the slot holding row j's keys, -1 if none
  std::vector<std::pair<int64_t, double>> keys[kRows];  // (candidate, key) per slot
  int64_t owner[kRows];
  int next = 0;
  explicit KeyCache(int64_t n) : slot_of(n, -1) { std::fill(owner, owner + kRows, int64_t{-1}); }
  bool find(int64_t j, int64_t i, double& key) const {
    const int32_t s = slot_of[j];
    if (s < 0) return false;
    for (const auto& [c, v] : keys[s])
      if (c == i) {
        key = v;
        return true;
      }
    return false;
  }
  // Starts holding row i's keys in place of the oldest row's.
  std::vector<std::pair<int64_t, double>>& hold(int64_t i) {
    const int s = next;
    next = (next + 1) % kRows;
    if (owner[s] >= 0) slot_of[owner[s]] = -1;
    owner[s] = i;
    slot_of[i] = s;
    keys[s].clear();
    return keys[s];
  }
};

// Exact keys of row i's candidates, in the order of their lower bounds (sorted: the length of the
// sorted prefix of its set; every later entry follows that prefix), until the bound proves the
// top k (see kernels/distance.cuh): a candidate whose bound exceeds the k-th exact key so far, and
// every row not held (bounds >= thr >= every held bound), rank after the top k. Writes the top k
// and returns true, or returns false, writing nothing. `broken` is set when an exact key falls below
// its bound: the GEMM did not behave as the bound assumes, and the caller redoes the work exactly.
bool settle_row(const float* xp, int64_t n, int64_t dim, int64_t k, CandidateSets& sets, int64_t r, int64_t i,
                int64_t sorted, std::vector<CandidateSets::Candidate>& best, int64_t* ip, float* dp, bool& broken,
                KeyCache* cache = nullptr) {
  using Candidate = CandidateSets::Candidate;
  Candidate* h = sets.slots(r);
  const int64_t cnt = sets.size[r];
  const double bound_max = sets.thr[r];  // +Inf: nothing was ever turned away
  best.clear();  // max-heap of the k best exact (key, index) pairs so far
  bool proven = false;
  // key[t] for h[t]: from the cache, or computed kKeyBatch at a time over the next positions the
  // cache does not have (within the sorted part; the few computed past the proof are wasted).
  thread_local std::vector<double> key;
  thread_local std::vector<char> have;
  key.resize(cnt);
  have.assign(cnt, 0);
  const auto fill = [&](int64_t t) {
    int64_t pos[kKeyBatch];
    int m = 0;
    for (int64_t u = t; u < sorted && m < kKeyBatch; ++u) {
      if (have[u]) continue;
      if (cache != nullptr && cache->find(h[u].second, i, key[u])) {
        have[u] = 1;
        continue;
      }
      pos[m++] = u;
    }
    if (m == 0) return;
    const float* rows[kKeyBatch];
    double out[kKeyBatch];
    for (int q = 0; q < kKeyBatch; ++q) rows[q] = xp + h[pos[std::min(q, m - 1)]].second * dim;
    exact_keys(xp + i * dim, rows, dim, out);
    for (int q = 0; q < m; ++q) {
      key[pos[q]] = out[q];
      have[pos[q]] = 1;
    }
  };
  int64_t t = 0;
  for (; t < cnt; ++t) {
    if (t == sorted) {  // past the sorted prefix (the rest all follow it): sort the rest
      std::sort(h + t, h + cnt);
      sorted = cnt;
    }
    if (static_cast<int64_t>(best.size()) == k && h[t].first > best.front().first) {
      proven = true;
      break;
    }
    if (!have[t]) fill(t);
    const Candidate e{key[t], h[t].second};
    if (e.first < h[t].first) broken = true;
    if (static_cast<int64_t>(best.size()) < k) {
      best.push_back(e);
      std::push_heap(best.begin(), best.end());
    } else if (e < best.front()) {
      std::pop_heap(best.begin(), best.end());
      best.back() = e;
      std::push_heap(best.begin(), best.end());
    }
  }
  if (cache != nullptr) {
    auto& held = cache->hold(i);
    for (int64_t u = 0; u < cnt; ++u)
      if (have[u]) held.emplace_back(h[u].second, key[u]);
  }
  // A seeded threshold may have let fewer than k in: then nothing is proven.
  if (!proven && static_cast<int64_t>(best.size()) == k)
    proven = bound_max == HUGE_VAL || candidates_proven(bound_max, best.front().first);
  sets.clear(r);
  if (!proven) return false;
  std::sort_heap(best.begin(), best.end());
  for (int64_t q = 0; q < k; ++q) {
    ip[i * k + q] = best[q].second;
    dp[i * k + q] = static_cast<float>(best[q].first);
  }
  return true;
}

std::vector<int64_t> all_rows(int64_t n) {
  std::vector<int64_t> rows(n);
  std::iota(rows.begin(), rows.end(), 0);
  return rows;
}

// The order in which to settle the rows of a tier that holds every row's set, and the first entries
// of each set sorted on the way (`sorted`: how many; a row rarely needs more than k + k/2 + 8 keys).
// Settling is bound by reading the candidates' rows of x; rows of one identity share most of their
// candidates, so they are settled one after another, keyed by the smallest index among their k best
// bounds, while those rows are still in cache.
std::vector<int64_t> settle_order(CandidateSets& sets, int64_t n, int64_t k, std::vector<int64_t>& sorted) {
  std::vector<int64_t> key(n);
  sorted.assign(n, 0);
  torch::stable::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      CandidateSets::Candidate* h = sets.slots(i);
      const int64_t cnt = sets.size[i];
      const int64_t m = std::min(cnt, k + k / 2 + 8);
      if (m < cnt) std::nth_element(h, h + m, h + cnt);
      std::sort(h, h + m);
      sorted[i] = m;
      key[i] = i;
      for (int64_t t = 0; t < std::min(cnt, k); ++t) key[i] = std::min(key[i], h[t].second);
    }
  });
  std::vector<int64_t> order = all_rows(n);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return key[a] < key[b]; });
  return order;
}

// What a tier leaves: the rows its bound could not prove, and whether an exact key ever fell below
// its bound (then nothing it wrote can be trusted).
struct TierResult {
  std::vector<int64_t> left;
  bool broken = false;
};

// Starting thresholds for every row's set, from the tier's bounds to a sample of s rows (up to
// kSeedRows, strided over the first block): the sample's q-th smallest, q chosen so that about
// 2 cand of the row's n bounds fall at or below it. Without a seed a row takes an offer whenever a
// bound beats its cand-th smallest so far, about cand ln(n / cand) offers; with one, about 2 cand.
// Any seed keeps the result exact: the set then holds every bound at or below its threshold, and a
// row whose set cannot prove its top k goes to the next tier. (Past N = 32,768 a block has fewer
// than 256 rows, so the sample shrinks and its estimate gets coarser: only a cost.)
constexpr int64_t kSeedRows = 256;

// The q-th smallest of v[0, s) (q <= s), reordering v: the q smallest so far are kept sorted at the
// front and most values fail the one comparison with the largest of them.
inline double qth_smallest(double* v, int64_t s, int64_t q) {
  std::sort(v, v + q);
  for (int64_t t = q; t < s; ++t) {
    if (!(v[t] < v[q - 1])) continue;
    int64_t w = q - 1;
    for (; w > 0 && v[t] < v[w - 1]; --w) v[w] = v[w - 1];
    v[w] = v[t];
  }
  return v[q - 1];
}

// The sample: rows of the first block (strided), whose products with every row that block holds.
template <class G>
void seed_thresholds(const BlockTiles<G>& block0, int64_t rb, const TierTerms& tt, int64_t n, CandidateSets& sets) {
  const int64_t s = std::min(rb, kSeedRows);
  const int64_t q = (2 * sets.cand * s + n - 1) / n + 1;  // ceil(2 cand s / n) + 1
  if (q >= s) return;  // small n: the sample is (nearly) everything, no gain
  std::vector<int64_t> sample(s);
  for (int64_t t = 0; t < s; ++t) sample[t] = t * rb / s;
  constexpr int64_t kRun = 64;  // rows i at a time, within one tile: contiguous reads of a sample row
  torch::stable::parallel_for(0, n, kRun, [&](int64_t b, int64_t e) {
    std::vector<double> lb(kRun * s);
    for (int64_t i0 = b, i1; i0 < e; i0 = i1) {
      i1 = std::min({e, (i0 / kRun + 1) * kRun, block0.end(i0)});
      for (int64_t t = 0; t < s; ++t) {
        const ScanBound col = tt.column(sample[t]);  // the sample row fixed, rows i scanned
        const G* g = block0.at(sample[t], i0);
        for (int64_t i = i0; i < i1; ++i) lb[(i - i0) * s + t] = bound_at(col, g[i - i0], tt, i);
      }
      for (int64_t i = i0; i < i1; ++i) sets.thr[i] = qth_smallest(lb.data() + (i - i0) * s, s, q);
    }
  });
}

// One candidate tier over every row, using the symmetry of the GEMM: a block of rows is multiplied
// only with the tiles from the one holding its first row on (TileGrid), and the product serves the
// block's rows (row by row, columns from the row's own on) and the rows after it (column by column),
// so the tier costs about half a full GEMM plus the diagonal tiles. Rows are settled once every
// block is done. G: the GEMM output type.
template <class G>
TierResult knn_tier_all(const float* xp, int64_t n, int64_t dim, int64_t k, const CpuTierGemm& gemm,
                        const TierTerms& tt, int64_t cand, int64_t* ip, float* dp) {
  const TileGrid& grid = gemm.grid;
  CandidateSets sets(n, cand);
  std::vector<char> unproven(n, 0), broken(n, 0);
  for (int64_t i0 = 0; i0 < n; i0 += grid.B) {
    const int64_t rb = std::min(grid.B, n - i0);
    const BlockTiles<G> tiles(gemm, i0, rb, n);
    if (i0 == 0) seed_thresholds(tiles, rb, tt, n, sets);
    ScanBound most_row{}, most_col{};
    for (int64_t r = 0; r < rb; ++r) {
      widen_coefficients(most_row, tt.row(i0 + r));
      widen_coefficients(most_col, tt.column(i0 + r));
    }
    const Prefilter pf_row(tt, most_row, i0, n), pf_col(tt, most_col, i0 + rb, n);
    torch::stable::parallel_for(0, rb, 1, [&](int64_t b, int64_t e) {  // the block's rows, columns >= i0
      for (int64_t r = b; r < e; ++r)
        for (int64_t c = i0, c1; c < n; c = c1) {
          c1 = tiles.end(c);
          scan_row(sets, i0 + r, tt.row(i0 + r), tiles.at(r, c), tt, pf_row, c, c1);
        }
    });
    torch::stable::parallel_for(i0 + rb, n, 256, [&](int64_t b, int64_t e) {  // later rows, the block's columns
      // The float32 threshold terms of rows [b, e), kept up to date as their thresholds fall.
      std::vector<float> qt(e - b);
      const auto refresh = [&](int64_t t) { qt[t - b] = floor_diff(pf_col.qf[t - pf_col.t0], sets.thr[t], 0.0); };
      for (int64_t t = b; t < e; ++t) refresh(t);
      // Row by row of the product: long contiguous reads of it.
      uint8_t pass[kScanChunk];
      for (int64_t r = 0; r < rb; ++r) {
        const ScanBound s = tt.column(i0 + r);
        const float shift = floor_diff(s.base, 0.0, pf_col.scale);
        for (int64_t c0 = b, cnt; c0 < e; c0 += cnt) {
          cnt = std::min({kScanChunk, e - c0, tiles.end(c0) - c0});  // a chunk stops at a tile's end
          const G* gc = tiles.at(r, c0);
          prefilter(gc, qt.data() + (c0 - b), shift, pf_col.out2, cnt, pass);
          for_each_passed(pass, cnt, [&](int64_t u) {
            const int64_t t = c0 + u;
            const double lb = bound_at(s, gc[u], tt, t);
            if (lb <= sets.thr[t]) {
              sets.offer(t, lb, i0 + r);
              refresh(t);
            }
          });
        }
      }
    });
  }
  // Every row has seen every column: settle them all, rows that share candidates one after another.
  std::vector<int64_t> sorted;
  const std::vector<int64_t> order = settle_order(sets, n, k, sorted);
  torch::stable::parallel_for(0, n, 1, [&](int64_t b, int64_t e) {
    std::vector<CandidateSets::Candidate> best;
    KeyCache cache(n);
    bool bad = false;
    for (int64_t f = b; f < e; ++f)
      unproven[order[f]] =
          !settle_row(xp, n, dim, k, sets, order[f], order[f], sorted[order[f]], best, ip, dp, bad, &cache);
    if (bad) broken[order[b]] = 1;
  });
  TierResult res;
  for (int64_t i = 0; i < n; ++i) {
    if (unproven[i]) res.left.push_back(i);
    if (broken[i]) res.broken = true;
  }
  return res;
}

// One candidate tier over the listed rows: blocks of them against all rows.
template <class G>
TierResult knn_tier_rows(const float* xp, int64_t n, int64_t dim, int64_t k, const CpuTierGemm& gemm,
                         const TierTerms& tt, const std::vector<int64_t>& rows, int64_t cand, int64_t* ip, float* dp) {
  const int64_t total = static_cast<int64_t>(rows.size());
  const int64_t block = std::max<int64_t>(1, std::min<int64_t>(total, (int64_t{1} << 23) / n));
  CandidateSets sets(block, cand);
  std::vector<char> unproven(total, 0), broken(total, 0);
  for (int64_t r0 = 0; r0 < total; r0 += block) {
    const int64_t rb = std::min(block, total - r0);
    const Tensor g = gemm.product(gemm.gathered(rows, r0, rb), 0, n);
    const G* gp = static_cast<const G*>(g.const_data_ptr());
    ScanBound most{};
    for (int64_t r = 0; r < rb; ++r) widen_coefficients(most, tt.row(rows[r0 + r]));
    const Prefilter pf(tt, most, 0, n);
    torch::stable::parallel_for(0, rb, 1, [&](int64_t b, int64_t e) {
      std::vector<CandidateSets::Candidate> best;
      bool bad = false;
      for (int64_t r = b; r < e; ++r) {
        const int64_t i = rows[r0 + r];
        scan_row(sets, r, tt.row(i), gp + r * n, tt, pf, 0, n);
        unproven[r0 + r] = !settle_row(xp, n, dim, k, sets, r, i, 0, best, ip, dp, bad);
      }
      if (bad) broken[r0 + b] = 1;
    });
  }
  TierResult res;
  for (int64_t t = 0; t < total; ++t) {
    if (unproven[t]) res.left.push_back(rows[t]);
    if (broken[t]) res.broken = true;
  }
  return res;
}

// The symmetric tier halves the GEMM but keeps a candidate set for every row: used while they fit 1 GiB.
bool use_symmetric_tier(int64_t n, int64_t cand) {
  return n * cand * static_cast<int64_t>(sizeof(CandidateSets::Candidate)) <= (int64_t{1} << 30);
}

template <class G>
TierResult run_tier(const float* xp, int64_t n, int64_t dim, int64_t k, const CpuTierGemm& gemm, const TierTerms& tt,
                    const std::vector<int64_t>* rows, int64_t cand, int64_t* ip, float* dp) {
  if (rows == nullptr && use_symmetric_tier(n, cand)) return knn_tier_all<G>(xp, n, dim, k, gemm, tt, cand, ip, dp);
  return knn_tier_rows<G>(xp, n, dim, k, gemm, tt, rows ? *rows : all_rows(n), cand, ip, dp);
}

std::tuple<Tensor, Tensor> knn_cpu(Tensor x, int64_t k, std::string candidates) {
  const char* op = "knn";
  const Tier first = check_choice(op, "candidates", candidates, {"bf16", "fp64"}) == 0 ? Tier::Bf16 : Tier::Fp64;
  x = checked_features(op, x);
  const int64_t n = x.size(0), dim = x.size(1);
  check_neighbours(op, "k", k, n);
  Tensor idx = empty_cpu({n, k}, ScalarType::Long);
  Tensor dist = empty_cpu({n, k}, ScalarType::Float);
  if (n == 0) return {idx, dist};
  const float* xp = x.const_data_ptr<float>();
  int64_t* ip = idx.mutable_data_ptr<int64_t>();
  float* dp = dist.mutable_data_ptr<float>();

  TierTerms t64{std::vector<double>(n), std::vector<double>(n), {}, std::vector<double>(n, 0.0), std::vector<double>(n),
                tier_bound(Tier::Fp64, dim)};
  torch::stable::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      t64.sq[i] = dot(xp + i * dim, xp + i * dim, dim);
      t64.nx[i] = std::sqrt(t64.sq[i]);
      t64.p[i] = scan_term(t64.sq[i], t64.nx[i], t64.tb);
    }
  });
  t64.nh = t64.nx;  // the fp64 tier multiplies x itself: h = x, l = 0
  // Tiers: bf16 GEMM for every row, fp64 GEMM for the rows it cannot prove, an exact ranking of the
  // whole row for what is left (many exact ties).
  TierResult res;
  bool all_fp64 = first == Tier::Fp64;
  if (first == Tier::Bf16) {
    const TileGrid grid(n);
    const int64_t n_pad = grid.n_pad;
    Tensor hb = empty_cpu({n_pad, dim}, ScalarType::BFloat16);
    uint16_t* hp = static_cast<uint16_t*>(hb.mutable_data_ptr());
    std::fill(hp + n * dim, hp + n_pad * dim, uint16_t{0});
    TierTerms tb{t64.sq, t64.nx, std::vector<double>(n), std::vector<double>(n), std::vector<double>(n),
                 tier_bound(Tier::Bf16, dim, /*bf16_output=*/true)};
    torch::stable::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        split_row(xp + i * dim, hp + i * dim, dim, tb.nh[i], tb.nl[i]);
        tb.p[i] = scan_term(tb.sq[i], tb.nx[i], tb.tb);
      }
    });
    const CpuTierGemm gemm{x, hb, false, grid};
    res = run_tier<uint16_t>(xp, n, dim, k, gemm, tb, nullptr, tier_candidates(Tier::Bf16, k, n), ip, dp);
    all_fp64 = res.broken;  // the matmul broke the bound's assumptions: redo every row in float64
  }
  const CpuTierGemm gemm64{x, Tensor(), true, TileGrid(n)};
  const int64_t cand64 = tier_candidates(Tier::Fp64, k, n);
  if (all_fp64)
    res = run_tier<double>(xp, n, dim, k, gemm64, t64, nullptr, cand64, ip, dp);
  else if (!res.left.empty())
    res = run_tier<double>(xp, n, dim, k, gemm64, t64, &res.left, cand64, ip, dp);
  std::vector<int64_t> left = res.broken ? all_rows(n) : res.left;
  torch::stable::parallel_for(0, static_cast<int64_t>(left.size()), 1, [&](int64_t b, int64_t e) {
    std::vector<std::pair<double, int64_t>> exact;
    for (int64_t f = b; f < e; ++f) {
      const int64_t i = left[f];
      exact.clear();
      for (int64_t j = 0; j < n; ++j) exact.emplace_back(exact_key(xp + i * dim, xp + j * dim, dim), j);
      std::partial_sort(exact.begin(), exact.begin() + k, exact.end());
      for (int64_t t = 0; t < k; ++t) {
        ip[i * k + t] = exact[t].second;
        dp[i * k + t] = static_cast<float>(exact[t].first);
      }
    }
  });
  return {idx, dist};
}

// ------------------------------------------------------------------------------ k-reciprocal encoding

// R(i, k1) and R(i, mh) of rows [b, e) into padded [N, k1] sets (in an instruction-set clone, where
// the membership scans vectorise).
UVIREID_CPU_CLONES void reciprocal_sets(const int64_t* rank, int64_t K, int64_t b, int64_t e, int64_t k1, int64_t mh,
                                        int32_t* r1, int32_t* n1, int32_t* rh, int32_t* nh) {
  for (int64_t i = b; i < e; ++i) {
    n1[i] = static_cast<int32_t>(reciprocal_set(rank, K, i, k1, r1 + i * k1));
    nh[i] = static_cast<int32_t>(reciprocal_set(rank, K, i, mh, rh + i * k1));
  }
}

std::tuple<Tensor, Tensor, Tensor> k_reciprocal_encode_cpu(Tensor x, Tensor rank, std::optional<Tensor> rank_dist,
                                                           int64_t k1) {
  const char* op = "k_reciprocal_encode";
  x = checked_features(op, x);
  const int64_t n = x.size(0), dim = x.size(1);
  check_neighbours(op, "k1", k1, n);
  rank = torch::stable::contiguous(rank);
  check_rank(op, rank, n, k1, "k1");
  const int64_t K = rank.size(1);
  const int64_t* rp = rank.const_data_ptr<int64_t>();
  const float* xp = x.const_data_ptr<float>();
  const int64_t mh = std::min(half_round_even(k1) + 1, k1);
  const float* rdp = nullptr;
  if (rank_dist.has_value()) {
    Tensor rd = torch::stable::contiguous(*rank_dist);
    check_dtype(op, "rank_dist", rd, ScalarType::Float);
    STD_TORCH_CHECK(rd.dim() == 2 && rd.size(0) == n && rd.size(1) == K, op,
                    ": expected rank_dist of the shape of rank [", n, ", ", K, "]");
    rank_dist = rd;
    rdp = rd.const_data_ptr<float>();
  }
  // |x_i|^2, for dot products recovered from ranked squared distances
  std::vector<double> sq(rdp ? n : 0);
  if (rdp)
    torch::stable::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) sq[i] = dot(xp + i * dim, xp + i * dim, dim);
    });

  std::vector<int32_t> r1(n * k1), rh(n * k1), n1(n), nh(n);
  torch::stable::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    reciprocal_sets(rp, K, b, e, k1, mh, r1.data(), n1.data(), rh.data(), nh.data());
  });
  std::vector<std::vector<int32_t>> cols(n);
  std::vector<std::vector<float>> vals(n);
  torch::stable::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    std::vector<int32_t> set(k1 * (k1 + 1));
    std::vector<double> d;
    std::vector<int64_t> base_stamp(n, -1), out_stamp(n, -1);
    StampMarks marks{base_stamp.data(), out_stamp.data()};
    for (int64_t i = b; i < e; ++i) {
      const int64_t m = expanded_set(r1.data(), n1.data(), rh.data(), nh.data(), k1, i, set.data(), marks);
      std::sort(set.begin(), set.begin() + m);
      d.resize(m);
      double dmin = std::numeric_limits<double>::infinity();
      for (int64_t t = 0; t < m; ++t) {
        double ip;
        if (!ranked_dot(rp, rdp, K, i, set[t], sq.data(), &ip))
          ip = dot(xp + i * dim, xp + static_cast<int64_t>(set[t]) * dim, dim);
        d[t] = 2.0 - 2.0 * ip;
        dmin = std::min(dmin, d[t]);
      }
      double z = 0.0;
      for (int64_t t = 0; t < m; ++t) z += (d[t] = std::exp(dmin - d[t]));  // softmax(-d), shifted
      cols[i].assign(set.begin(), set.begin() + m);
      vals[i].resize(m);
      for (int64_t t = 0; t < m; ++t) vals[i][t] = static_cast<float>(d[t] / z);
    }
  });
  return to_csr(cols, vals);
}

// ---------------------------------------------------------------------------------- query expansion

void check_ids(const char* op, const char* arg, const Tensor& ids, int64_t n) {
  check_dim(op, arg, ids, 1);
  check_dtype(op, arg, ids, ScalarType::Long);
  check_size(op, arg, ids, 0, n);
}

std::tuple<Tensor, Tensor, Tensor> query_expansion_cpu(Tensor crow, Tensor col, Tensor val, Tensor rank,
                                                       Tensor outer, Tensor inner, int64_t pool, int64_t cap) {
  const char* op = "query_expansion";
  const int64_t n = crow.numel() - 1;
  CsrView v = check_csr_cpu(op, crow, col, val);
  check_neighbours(op, "pool", pool, n);
  STD_TORCH_CHECK(cap >= 1, op, ": cap must be >= 1, got ", cap);
  rank = torch::stable::contiguous(rank);
  check_rank(op, rank, n, pool, "pool");
  outer = torch::stable::contiguous(outer);
  inner = torch::stable::contiguous(inner);
  check_ids(op, "outer", outer, n);
  check_ids(op, "inner", inner, n);
  const int64_t K = rank.size(1);
  const int64_t* rp = rank.const_data_ptr<int64_t>();
  const int64_t* op_ = outer.const_data_ptr<int64_t>();
  const int64_t* ip = inner.const_data_ptr<int64_t>();

  std::vector<std::vector<int32_t>> cols(n);
  std::vector<std::vector<float>> vals(n);
  torch::stable::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    std::vector<double> acc(n, 0.0);
    std::vector<int64_t> stamp(n, -1);
    std::vector<int32_t> touched, members(pool);
    std::vector<double> weights(pool);
    std::vector<int64_t> scratch(4 * pool);
    for (int64_t i = b; i < e; ++i) {
      touched.clear();
      const int64_t m =
          expansion_weights(rp, K, op_, ip, i, pool, cap, members.data(), weights.data(), scratch.data());
      for (int64_t t = 0; t < m; ++t) {
        const int64_t j = members[t];
        for (int64_t p = v.crow[j]; p < v.crow[j + 1]; ++p) {
          const int64_t c = v.col[p];
          if (stamp[c] != i) {
            stamp[c] = i;
            acc[c] = 0.0;
            touched.push_back(static_cast<int32_t>(c));
          }
          acc[c] += weights[t] * static_cast<double>(v.val[p]);
        }
      }
      std::sort(touched.begin(), touched.end());
      cols[i] = touched;
      vals[i].resize(touched.size());
      for (size_t t = 0; t < touched.size(); ++t) vals[i][t] = static_cast<float>(acc[touched[t]]);
    }
  });
  return to_csr(cols, vals);
}

// ------------------------------------------------------------------------------------------ jaccard

// Column-major copy of the non-zero entries of V (rows of each column ascending), the inverted
// index of the Jaccard sums; at[p] is where CSR entry p landed (-1 for a zero, which adds nothing),
// so the rows >= i of its column start there. Without zeros every visit adds a positive amount.
struct Csc {
  std::vector<int64_t> ptr;
  std::vector<int32_t> row;
  std::vector<float> val;
  std::vector<int64_t> at;
};

Csc transpose(const CsrView& v, int64_t n) {
  Csc t{std::vector<int64_t>(n + 1, 0), {}, {}, std::vector<int64_t>(v.nnz, -1)};
  for (int64_t p = 0; p < v.nnz; ++p) t.ptr[v.col[p] + 1] += (v.val[p] != 0.0f);
  for (int64_t c = 0; c < n; ++c) t.ptr[c + 1] += t.ptr[c];
  t.row.resize(t.ptr[n]);
  t.val.resize(t.ptr[n]);
  std::vector<int64_t> fill(t.ptr.begin(), t.ptr.end() - 1);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t p = v.crow[i]; p < v.crow[i + 1]; ++p) {
      if (v.val[p] == 0.0f) continue;
      const int64_t q = t.at[p] = fill[v.col[p]]++;
      t.row[q] = static_cast<int32_t>(i);
      t.val[q] = v.val[p];
    }
  return t;
}

// For every row i, calls emit(i, pairs) with the (j, m_ij) of every j >= i sharing a column with i
// (j = i included), m the min-sum, in no particular order. Only the upper triangle is computed:
// m_ij is symmetric. Sums run into a dense accumulator; each visit appends j to `touched` without a
// branch, advancing only on a first touch, and the emit walk clears what it read for the next row.
// Rows are handed out in parts of equal work (visits), not of equal count: a row visits only the
// rows j >= i, so the first rows cost most.
template <class Emit>
void jaccard_upper(const CsrView& v, int64_t n, const Emit& emit) {
  const Csc t = transpose(v, n);
  std::vector<int64_t> work(n + 1, 0);  // visits before row i
  for (int64_t i = 0; i < n; ++i) {
    work[i + 1] = work[i] + 1;
    for (int64_t p = v.crow[i]; p < v.crow[i + 1]; ++p)
      if (t.at[p] >= 0) work[i + 1] += t.ptr[v.col[p] + 1] - t.at[p];
  }
  const int64_t parts = std::min<int64_t>(n, 8 * static_cast<int64_t>(torch::stable::get_num_threads()));
  std::vector<int64_t> start(parts + 1, n);
  for (int64_t q = 0; q < parts; ++q)
    start[q] = std::lower_bound(work.begin(), work.end() - 1, work[n] * q / parts) - work.begin();
  torch::stable::parallel_for(0, parts, 1, [&](int64_t pb, int64_t pe) {
    std::vector<double> acc(n, 0.0);
    std::vector<int32_t> touched(n + 1);  // distinct j of one row, plus the slot a non-touch writes
    std::vector<std::pair<int32_t, double>> pairs;
    const int32_t* rows = t.row.data();
    for (int64_t i = start[pb]; i < start[pe]; ++i) {
      int64_t count = 0;
      for (int64_t p = v.crow[i]; p < v.crow[i + 1]; ++p) {
        if (t.at[p] < 0) continue;
        const float vi = v.val[p];
        for (int64_t q = t.at[p], end = t.ptr[v.col[p] + 1]; q < end; ++q) {
          const int32_t j = rows[q];
          const double a = acc[j];
          touched[count] = j;
          count += (a == 0.0);  // first touch: every visit adds a positive amount
          // min in float, widened after (the same value): a float min compiles to minss, where
          // a double min of a widened operand became a branch that mispredicts half the time
          const float m = t.val[q] < vi ? t.val[q] : vi;
          acc[j] = a + static_cast<double>(m);
        }
      }
      pairs.clear();
      for (int64_t s = 0; s < count; ++s) {
        const int32_t j = touched[s];
        pairs.emplace_back(j, acc[j]);
        acc[j] = 0.0;
      }
      emit(i, pairs);
    }
  });
}

Tensor jaccard_dense_cpu(Tensor crow, Tensor col, Tensor val) {
  const char* op = "jaccard_dense";
  const int64_t n = crow.numel() - 1;
  CsrView v = check_csr_cpu(op, crow, col, val);
  check_probability_rows_cpu(op, v, n);
  Tensor out = empty_cpu({n, n}, ScalarType::Float);
  float* o = out.mutable_data_ptr<float>();
  torch::stable::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) std::fill(o + i * n, o + (i + 1) * n, 1.0f);  // no shared column: d = 1
  });
  // Row i writes (i, j) and (j, i) for j >= i; distinct rows never write the same element.
  jaccard_upper(v, n, [&](int64_t i, const std::vector<std::pair<int32_t, double>>& pairs) {
    for (const auto& [j, m] : pairs) {
      const float d = static_cast<float>(jaccard_from_minsum(m));
      o[i * n + j] = d;
      o[static_cast<int64_t>(j) * n + i] = d;
    }
  });
  return out;
}

std::tuple<Tensor, Tensor, Tensor> jaccard_sparse_cpu(Tensor crow, Tensor col, Tensor val, double max_distance) {
  const char* op = "jaccard_sparse";
  const int64_t n = crow.numel() - 1;
  CsrView v = check_csr_cpu(op, crow, col, val);
  check_probability_rows_cpu(op, v, n);
  STD_TORCH_CHECK(!std::isnan(max_distance) && max_distance >= 0.0, op, ": max_distance must be >= 0, got ",
                  max_distance);
  // Upper triangle per row (j >= i, diagonal always kept), then mirrored into full CSR rows.
  std::vector<std::vector<int32_t>> up_col(n);
  std::vector<std::vector<float>> up_val(n);
  jaccard_upper(v, n, [&](int64_t i, std::vector<std::pair<int32_t, double>>& pairs) {
    // Pairs sharing no column have d = 1: all kept when max_distance >= 1; otherwise only the
    // diagonal of a row that shares nothing even with itself. The threshold applies to the float32
    // value that is stored, as a dense matrix would hold it.
    thread_local std::vector<std::pair<int32_t, float>> kept;  // reused row to row
    kept.clear();
    bool has_diagonal = false;
    for (const auto& [j, m] : pairs) {
      const float d = static_cast<float>(jaccard_from_minsum(m));
      has_diagonal |= (j == i);
      if (j == i || static_cast<double>(d) <= max_distance) kept.emplace_back(j, d);
    }
    if (!has_diagonal) kept.emplace_back(static_cast<int32_t>(i), 1.0f);
    if (max_distance >= 1.0) {  // every other pair too, at d = 1
      std::vector<char> shared(n - i, 0);
      for (const auto& [j, d] : kept) shared[j - i] = 1;
      for (int64_t j = i; j < n; ++j)
        if (!shared[j - i]) kept.emplace_back(static_cast<int32_t>(j), 1.0f);
    }
    std::sort(kept.begin(), kept.end());
    up_col[i].resize(kept.size());
    up_val[i].resize(kept.size());
    for (size_t t = 0; t < kept.size(); ++t) std::tie(up_col[i][t], up_val[i][t]) = kept[t];
  });
  std::vector<int64_t> count(n, 0);
  for (int64_t i = 0; i < n; ++i) {
    count[i] += static_cast<int64_t>(up_col[i].size());
    for (const int32_t j : up_col[i])
      if (j != i) count[j]++;
  }
  Tensor ocrow = empty_cpu({n + 1}, ScalarType::Long);
  int64_t* cp = ocrow.mutable_data_ptr<int64_t>();
  cp[0] = 0;
  for (int64_t i = 0; i < n; ++i) cp[i + 1] = cp[i] + count[i];
  Tensor ocol = empty_cpu({cp[n]}, ScalarType::Long);
  Tensor oval = empty_cpu({cp[n]}, ScalarType::Float);
  int64_t* colp = ocol.mutable_data_ptr<int64_t>();
  float* valp = oval.mutable_data_ptr<float>();
  // Row j receives the mirrored entries (i < j, in ascending i) first, then its own upper part
  // (columns >= j, ascending), so every output row is sorted.
  std::vector<int64_t> fill(cp, cp + n);
  for (int64_t i = 0; i < n; ++i)
    for (size_t t = 0; t < up_col[i].size(); ++t) {
      const int32_t j = up_col[i][t];
      if (j == i) continue;
      colp[fill[j]] = i;
      valp[fill[j]++] = up_val[i][t];
    }
  torch::stable::parallel_for(0, n, kGrain * 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      std::copy(up_col[i].begin(), up_col[i].end(), colp + fill[i]);
      std::copy(up_val[i].begin(), up_val[i].end(), valp + fill[i]);
    }
  });
  return {ocrow, ocol, oval};
}

}  // namespace
}  // namespace uvireid

UVIREID_CPU_LIBRARY_IMPL(m) {
  m.impl("knn", TORCH_BOX(&uvireid::knn_cpu));
  m.impl("k_reciprocal_encode", TORCH_BOX(&uvireid::k_reciprocal_encode_cpu));
  m.impl("query_expansion", TORCH_BOX(&uvireid::query_expansion_cpu));
  m.impl("jaccard_dense", TORCH_BOX(&uvireid::jaccard_dense_cpu));
  m.impl("jaccard_sparse", TORCH_BOX(&uvireid::jaccard_sparse_cpu));
}
