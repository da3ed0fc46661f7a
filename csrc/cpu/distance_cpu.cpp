// CPU kernels of the distance ops: knn, k_reciprocal_encode, query_expansion, jaccard_dense,
// jaccard_sparse. Rows are independent and run under torch's parallel_for; the row rules come from
// csrc/kernels/distance.cuh, shared with the CUDA kernels.

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
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

// Features as the ops take them: 2-D float32, every row finite (the first bad row is named);
// returns the contiguous tensor.
Tensor checked_features(const char* op, const Tensor& features) {
  check_dim(op, "features", features, 2);
  check_dtype(op, "features", features, ScalarType::Float);
  Tensor x = torch::stable::contiguous(features);
  const float* p = x.const_data_ptr<float>();
  const int64_t n = x.size(0), d = x.size(1);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t t = 0; t < d; ++t)
      STD_TORCH_CHECK(std::isfinite(p[i * d + t]), op, ": features row ", i, " is not finite (NaN or Inf)");
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

// Rows rows[r0 .. r0 + rb) of a float [n, D] matrix, as a [rb, D] matrix.
Tensor gather_rows(const Tensor& m, const std::vector<int64_t>& rows, int64_t r0, int64_t rb) {
  const int64_t dim = m.size(1);
  Tensor out = empty_cpu({rb, dim}, ScalarType::Float);
  const float* src = m.const_data_ptr<float>();
  float* dst = out.mutable_data_ptr<float>();
  for (int64_t r = 0; r < rb; ++r) std::copy_n(src + rows[r0 + r] * dim, dim, dst + r * dim);
  return out;
}

// The GEMM of a tier, a block of rows `a` of h against rows [j0, n) of h: the bf16 tier's h holds
// bf16 values in float storage (a float32 matmul multiplies them exactly); the fp64 tier's h is x,
// converted to float64 a column chunk at a time so no float64 copy of x is ever whole.
struct CpuTierGemm {
  Tensor h;
  bool fp64 = false;
  Tensor operator()(const Tensor& a, int64_t j0 = 0) const {
    Tensor all = h;
    const int64_t m = h.size(0) - j0;
    Tensor b = torch::stable::narrow(all, 0, j0, m);
    if (!fp64) return torch::stable::contiguous(torch::stable::matmul(a, torch::stable::transpose(b, 0, 1)));
    const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 22) / h.size(1));
    Tensor ad = torch::stable::to(a, ScalarType::Double);
    Tensor g = empty_cpu({a.size(0), m}, ScalarType::Double);
    for (int64_t c0 = 0; c0 < m; c0 += chunk) {
      const int64_t cb = std::min(chunk, m - c0);
      Tensor bd = torch::stable::to(torch::stable::narrow(b, 0, c0, cb), ScalarType::Double);
      Tensor part = torch::stable::narrow(g, 1, c0, cb);
      torch::stable::copy_(part, torch::stable::matmul(ad, torch::stable::transpose(bd, 0, 1)));
    }
    return g;
  }
};

using Candidate = std::pair<double, int64_t>;  // (lower bound on the exact key, row)

// Keeps the `cand` smallest candidates offered, as a max-heap (order-independent: pairs are unique).
inline void offer(std::vector<Candidate>& heap, int64_t cand, Candidate item) {
  if (static_cast<int64_t>(heap.size()) < cand) {
    heap.push_back(item);
    std::push_heap(heap.begin(), heap.end());
  } else if (item < heap.front()) {
    std::pop_heap(heap.begin(), heap.end());
    heap.back() = item;
    std::push_heap(heap.begin(), heap.end());
  }
}

// Row i with its full candidate heap: exact keys, and the top k written when the bound proves them
// (see kernels/distance.cuh). Returns false, writing nothing, when it cannot.
bool settle_row(const float* xp, int64_t n, int64_t dim, int64_t k, int64_t cand, int64_t i,
                const std::vector<Candidate>& heap, std::vector<Candidate>& exact, int64_t* ip, float* dp) {
  exact.clear();
  for (const auto& c : heap) exact.emplace_back(squared_distance(xp + i * dim, xp + c.second * dim, dim), c.second);
  std::sort(exact.begin(), exact.end());
  if (cand < n && !candidates_proven(heap.front().first, exact[k - 1].first)) return false;
  for (int64_t t = 0; t < k; ++t) {
    ip[i * k + t] = exact[t].second;
    dp[i * k + t] = static_cast<float>(exact[t].first);
  }
  return true;
}

// The lower bound of the pair (i, j) seen from row i (the bound is not symmetric in i and j).
struct PairBound {
  const double* sq;
  SplitNorms nrm;
  TierBound tb;
  double operator()(double g, int64_t i, int64_t j) const {
    return distance_lower_bound(g, sq[i], sq[j], nrm.x[i], nrm.h[i], nrm.l[i], nrm.x[j], nrm.h[j], nrm.l[j], tb);
  }
};

// One candidate tier over every row, using the symmetry of the GEMM: block I of rows is multiplied
// only with rows [I0, n), and the product serves rows of block I (row by row) and rows after it
// (column by column), so the tier costs half a full GEMM. A row is settled once its block is done:
// it has then seen every column. Returns the rows the bound could not prove. G: the GEMM output type.
template <class G>
std::vector<int64_t> knn_tier_all(const float* xp, int64_t n, int64_t dim, int64_t k, const CpuTierGemm& gemm,
                                  PairBound bound, int64_t cand, int64_t* ip, float* dp) {
  const int64_t block = std::max<int64_t>(1, std::min<int64_t>(n, (int64_t{1} << 23) / n));
  std::vector<std::vector<Candidate>> heaps(n);
  std::vector<char> unproven(n, 0);
  for (int64_t i0 = 0; i0 < n; i0 += block) {
    const int64_t rb = std::min(block, n - i0), m = n - i0;
    Tensor hh = gemm.h;
    const Tensor g = gemm(torch::stable::narrow(hh, 0, i0, rb), i0);  // [rb, m]: rows i0.. x rows i0..
    const G* gp = g.const_data_ptr<G>();
    torch::stable::parallel_for(0, rb, 1, [&](int64_t b, int64_t e) {  // rows of this block, all columns >= i0
      for (int64_t r = b; r < e; ++r) {
        heaps[i0 + r].reserve(cand + 1);
        for (int64_t c = 0; c < m; ++c) offer(heaps[i0 + r], cand, {bound(gp[r * m + c], i0 + r, i0 + c), i0 + c});
      }
    });
    torch::stable::parallel_for(rb, m, 64, [&](int64_t b, int64_t e) {  // later rows, columns of this block
      for (int64_t c = b; c < e; ++c) heaps[i0 + c].reserve(cand + 1);
      for (int64_t r = 0; r < rb; ++r)
        for (int64_t c = b; c < e; ++c) offer(heaps[i0 + c], cand, {bound(gp[r * m + c], i0 + c, i0 + r), i0 + r});
    });
    torch::stable::parallel_for(0, rb, 1, [&](int64_t b, int64_t e) {
      std::vector<Candidate> exact;
      for (int64_t r = b; r < e; ++r) {
        const int64_t i = i0 + r;
        unproven[i] = !settle_row(xp, n, dim, k, cand, i, heaps[i], exact, ip, dp);
        std::vector<Candidate>().swap(heaps[i]);
      }
    });
  }
  std::vector<int64_t> left;
  for (int64_t i = 0; i < n; ++i)
    if (unproven[i]) left.push_back(i);
  return left;
}

// One candidate tier over the listed rows: blocks of them against all rows. Returns the rows the
// bound could not prove.
template <class G>
std::vector<int64_t> knn_tier_rows(const float* xp, int64_t n, int64_t dim, int64_t k, const CpuTierGemm& gemm,
                                   const std::vector<int64_t>& rows, PairBound bound, int64_t cand, int64_t* ip,
                                   float* dp) {
  const int64_t total = static_cast<int64_t>(rows.size());
  const int64_t block = std::max<int64_t>(1, std::min<int64_t>(total, (int64_t{1} << 23) / n));
  std::vector<char> unproven(total, 0);
  for (int64_t r0 = 0; r0 < total; r0 += block) {
    const int64_t rb = std::min(block, total - r0);
    const Tensor g = gemm(gather_rows(gemm.h, rows, r0, rb));
    const G* gp = g.const_data_ptr<G>();
    torch::stable::parallel_for(0, rb, 1, [&](int64_t b, int64_t e) {
      std::vector<Candidate> heap, exact;
      heap.reserve(cand + 1);
      for (int64_t r = b; r < e; ++r) {
        const int64_t i = rows[r0 + r];
        heap.clear();
        for (int64_t j = 0; j < n; ++j) offer(heap, cand, {bound(gp[r * n + j], i, j), j});
        unproven[r0 + r] = !settle_row(xp, n, dim, k, cand, i, heap, exact, ip, dp);
      }
    });
  }
  std::vector<int64_t> left;
  for (int64_t t = 0; t < total; ++t)
    if (unproven[t]) left.push_back(rows[t]);
  return left;
}

// The symmetric tier halves the GEMM but keeps a candidate heap for every row and updates them in
// scattered order: worth it when rows are long next to the heaps, and while the heaps fit 1 GiB.
bool use_symmetric_tier(int64_t n, int64_t dim, int64_t cand) {
  return dim >= 2 * cand && n * (cand + 1) * static_cast<int64_t>(sizeof(Candidate)) <= (int64_t{1} << 30);
}

std::vector<int64_t> all_rows(int64_t n) {
  std::vector<int64_t> rows(n);
  std::iota(rows.begin(), rows.end(), 0);
  return rows;
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

  std::vector<double> sq(n), nx(n), zeros(n, 0.0);
  torch::stable::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      sq[i] = dot(xp + i * dim, xp + i * dim, dim);
      nx[i] = std::sqrt(sq[i]);
    }
  });
  // Tiers: bf16 GEMM for every row, fp64 GEMM for the rows it cannot prove, an exact ranking of the
  // whole row for what is left (many exact ties).
  std::vector<int64_t> left;
  if (first == Tier::Bf16) {
    Tensor h = empty_cpu({n, dim}, ScalarType::Float);
    float* hp = h.mutable_data_ptr<float>();
    std::vector<double> nh(n), nl(n);
    torch::stable::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        double sh = 0.0, sl = 0.0;
        for (int64_t d = 0; d < dim; ++d) hp[i * dim + d] = split_bf16(xp[i * dim + d], sh, sl);
        nh[i] = std::sqrt(sh);
        nl[i] = std::sqrt(sl);
      }
    });
    const CpuTierGemm gemm{h, false};
    const PairBound bound{sq.data(), {nx.data(), nh.data(), nl.data()}, tier_bound(Tier::Bf16, dim)};
    const int64_t cand = tier_candidates(Tier::Bf16, k, n);
    left = use_symmetric_tier(n, dim, cand) ? knn_tier_all<float>(xp, n, dim, k, gemm, bound, cand, ip, dp)
                                            : knn_tier_rows<float>(xp, n, dim, k, gemm, all_rows(n), bound, cand, ip, dp);
  }
  const CpuTierGemm gemm64{x, true};
  const PairBound bound64{sq.data(), {nx.data(), nx.data(), zeros.data()}, tier_bound(Tier::Fp64, dim)};
  const int64_t cand64 = tier_candidates(Tier::Fp64, k, n);
  if (first == Tier::Fp64)
    left = use_symmetric_tier(n, dim, cand64)
               ? knn_tier_all<double>(xp, n, dim, k, gemm64, bound64, cand64, ip, dp)
               : knn_tier_rows<double>(xp, n, dim, k, gemm64, all_rows(n), bound64, cand64, ip, dp);
  else if (!left.empty())
    left = knn_tier_rows<double>(xp, n, dim, k, gemm64, left, bound64, cand64, ip, dp);
  torch::stable::parallel_for(0, static_cast<int64_t>(left.size()), 1, [&](int64_t b, int64_t e) {
    std::vector<std::pair<double, int64_t>> exact;
    for (int64_t f = b; f < e; ++f) {
      const int64_t i = left[f];
      exact.clear();
      for (int64_t j = 0; j < n; ++j) exact.emplace_back(squared_distance(xp + i * dim, xp + j * dim, dim), j);
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
    for (int64_t i = b; i < e; ++i) {
      n1[i] = static_cast<int32_t>(reciprocal_set(rp, K, i, k1, r1.data() + i * k1));
      nh[i] = static_cast<int32_t>(reciprocal_set(rp, K, i, mh, rh.data() + i * k1));
    }
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
template <class Emit>
void jaccard_upper(const CsrView& v, int64_t n, const Emit& emit) {
  const Csc t = transpose(v, n);
  torch::stable::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    std::vector<double> acc(n, 0.0);
    std::vector<int32_t> touched(n + 1);  // distinct j of one row, plus the slot a non-touch writes
    std::vector<std::pair<int32_t, double>> pairs;
    const int32_t* rows = t.row.data();
    for (int64_t i = b; i < e; ++i) {
      int64_t count = 0;
      for (int64_t p = v.crow[i]; p < v.crow[i + 1]; ++p) {
        if (t.at[p] < 0) continue;
        const double vi = v.val[p];
        for (int64_t q = t.at[p], end = t.ptr[v.col[p] + 1]; q < end; ++q) {
          const int32_t j = rows[q];
          const double a = acc[j];
          touched[count] = j;
          count += (a == 0.0);  // first touch: every visit adds a positive amount
          acc[j] = a + std::min(vi, static_cast<double>(t.val[q]));
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
    std::vector<std::pair<int32_t, float>> kept;
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
    for (const auto& [j, d] : kept) {
      up_col[i].push_back(j);
      up_val[i].push_back(d);
    }
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
