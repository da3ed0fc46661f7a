// CPU DBSCAN on CSR distances and segmented k-means, plus the argument checks both backends share.
// Semantics (border rule, seeding, small clusters) are documented in csrc/kernels/cluster.cuh.

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/checks.h"
#include "common/csr.h"
#include "common/registration.h"
#include "kernels/cluster.cuh"

namespace uvireid {

// ---------------------------------------------------------------- checks (also used by the CUDA layer)

void check_dbscan_args(const Tensor& crow, const Tensor& col, const Tensor& val, double eps, int64_t min_samples) {
  constexpr const char* op = "dbscan";
  check_csr_shapes(op, crow, col, val, {ScalarType::Float, ScalarType::Double});
  STD_TORCH_CHECK(eps > 0.0, op, ": expected eps > 0, got ", eps);
  STD_TORCH_CHECK(min_samples >= 1, op, ": expected min_samples >= 1, got ", min_samples);
}

// The structure of CSR distances on the host (the CUDA layer copies crow and col over).
void check_dbscan_structure(const int64_t* crow, const int64_t* col, int64_t n, int64_t nnz) {
  check_csr_structure("dbscan", crow, col, n, nnz, /*unique_columns=*/true);
}

void check_dbscan_flags(int flags) {
  STD_TORCH_CHECK(!(flags & cluster::kDbscanBadColumn), "dbscan: col holds a column index outside [0, N)");
  STD_TORCH_CHECK(!(flags & cluster::kDbscanNanDistance), "dbscan: val holds NaN distances");
  STD_TORCH_CHECK(!(flags & cluster::kDbscanNegativeDistance), "dbscan: val holds negative distances");
}

void check_kmeans_args(const Tensor& x, const Tensor& labels, int64_t num_clusters, int64_t n, int64_t max_iter,
                       double tol) {
  constexpr const char* op = "segmented_kmeans";
  check_dim(op, "x", x, 2);
  check_dim(op, "labels", labels, 1);
  check_dtype(op, "x", x, ScalarType::Float);
  check_dtype(op, "labels", labels, ScalarType::Long);
  check_same_device(op, "labels", labels, "x", x);
  check_contiguous(op, "x", x);
  check_contiguous(op, "labels", labels);
  check_size(op, "labels", labels, 0, x.size(0));
  STD_TORCH_CHECK(num_clusters >= 0, op, ": expected num_clusters >= 0, got ", num_clusters);
  STD_TORCH_CHECK(n >= 1, op, ": expected n >= 1, got ", n);
  STD_TORCH_CHECK(max_iter >= 0, op, ": expected max_iter >= 0, got ", max_iter);
  STD_TORCH_CHECK(tol >= 0.0, op, ": expected tol >= 0, got ", tol);
}

void check_kmeans_flags(int flags, int64_t num_clusters) {
  STD_TORCH_CHECK(!(flags & 1), "segmented_kmeans: labels must lie in [-1, num_clusters) = [-1, ", num_clusters,
                  ")");
}

namespace {

using cluster::dbscan_core_edge;
using cluster::dbscan_nearest_core;
using cluster::dbscan_neighbour_count;
using cluster::draw;
using cluster::draw_unit;
using cluster::pick_weighted;

// ---------------------------------------------------------------- DBSCAN

int64_t find_root(std::vector<int64_t>& parent, int64_t x) {
  while (parent[x] != x) {
    parent[x] = parent[parent[x]];
    x = parent[x];
  }
  return x;
}

template <typename T>
void dbscan_impl(const int64_t* crow, const int64_t* col, const T* val, int64_t n, T eps, int64_t min_samples,
                 int64_t* labels) {
  // Malformed CSR and bad values are errors, as for scikit-learn's precomputed metric.
  int flags = 0;
  std::vector<uint8_t> core(n);
  for (int64_t i = 0; i < n; ++i) core[i] = dbscan_neighbour_count(crow, col, val, n, i, eps, flags) >= min_samples;
  check_dbscan_flags(flags);

  std::vector<int64_t> parent(n);
  for (int64_t i = 0; i < n; ++i) parent[i] = i;
  for (int64_t i = 0; i < n; ++i) {
    if (!core[i]) continue;
    for (int64_t k = crow[i]; k < crow[i + 1]; ++k) {
      if (!dbscan_core_edge(i, col[k], val[k], eps, core.data())) continue;
      int64_t a = find_root(parent, i), b = find_root(parent, col[k]);
      if (a != b) parent[std::max(a, b)] = std::min(a, b);
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    int64_t lab = -1;
    if (core[i]) {
      lab = find_root(parent, i);
    } else {
      const int64_t best = dbscan_nearest_core(crow, col, val, i, eps, core.data());
      if (best >= 0) lab = find_root(parent, best);
    }
    labels[i] = lab;
  }
  std::vector<int64_t> id(n, -1);  // root -> cluster id by first appearance
  int64_t next = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = labels[i];
    if (r < 0) continue;
    if (id[r] < 0) id[r] = next++;
    labels[i] = id[r];
  }
}

Tensor dbscan_cpu(const Tensor& crow, const Tensor& col, const Tensor& val, double eps, int64_t min_samples) {
  check_dbscan_args(crow, col, val, eps, min_samples);
  const int64_t n = crow.numel() - 1;
  Tensor labels = torch::stable::new_empty(crow, {n}, ScalarType::Long);
  check_dbscan_structure(crow.const_data_ptr<int64_t>(), col.const_data_ptr<int64_t>(), n, col.numel());
  if (val.scalar_type() == ScalarType::Float) {
    dbscan_impl<float>(crow.const_data_ptr<int64_t>(), col.const_data_ptr<int64_t>(), val.const_data_ptr<float>(), n,
                       static_cast<float>(eps), min_samples, labels.mutable_data_ptr<int64_t>());
  } else {
    dbscan_impl<double>(crow.const_data_ptr<int64_t>(), col.const_data_ptr<int64_t>(), val.const_data_ptr<double>(),
                        n, eps, min_samples, labels.mutable_data_ptr<int64_t>());
  }
  return labels;
}

// ---------------------------------------------------------------- segmented k-means

float sqdist(const float* a, const float* b, int64_t dim) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t d = 0; d < dim; ++d) {
    const float t = a[d] - b[d];
    s += t * t;
  }
  return s;
}

// One cluster: members `mem` (m of them, index order), centres `cen` [n, dim].
void kmeans_one(const float* x, int64_t dim, const int64_t* mem, int64_t m, int64_t c, int64_t n, int64_t max_iter,
                float tol, uint64_t seed, float* cen, int64_t* assign) {
  if (m < n) {  // too few members (or none): every sub-centre is the mean (zeros when empty)
    std::vector<float> mean(dim, 0.f);
    for (int64_t p = 0; p < m; ++p)
      for (int64_t d = 0; d < dim; ++d) mean[d] += x[mem[p] * dim + d];
    for (int64_t d = 0; d < dim; ++d) mean[d] = m > 0 ? mean[d] / static_cast<float>(m) : 0.f;
    for (int64_t k = 0; k < n; ++k) std::copy(mean.begin(), mean.end(), cen + k * dim);
    for (int64_t p = 0; p < m; ++p) assign[mem[p]] = 0;
    return;
  }
  std::vector<float> d2(m);
  for (int64_t s = 0; s < n; ++s) {
    int64_t pick;
    if (s == 0) {
      pick = static_cast<int64_t>(draw(seed, c, 0) % static_cast<uint64_t>(m));
    } else {
      double total = 0.0;
      for (int64_t p = 0; p < m; ++p) total += static_cast<double>(d2[p]);
      pick = total > 0.0 ? pick_weighted(d2.data(), m, total, draw_unit(seed, c, s))
                         : static_cast<int64_t>(draw(seed, c, s) % static_cast<uint64_t>(m));
    }
    std::copy(x + mem[pick] * dim, x + (mem[pick] + 1) * dim, cen + s * dim);
    if (s + 1 < n) {
      for (int64_t p = 0; p < m; ++p) {
        const float dist = sqdist(x + mem[p] * dim, cen + s * dim, dim);
        d2[p] = s == 0 ? dist : std::min(d2[p], dist);
      }
    }
  }
  std::vector<int64_t> part(m, -1), cnt(n);
  std::vector<float> sum(n * dim);
  bool stop = false;
  for (int64_t it = 0;; ++it) {
    int64_t changed = 0;
    for (int64_t p = 0; p < m; ++p) {
      int64_t best = 0;
      float best_d = 0.f;
      for (int64_t k = 0; k < n; ++k) {
        const float dist = sqdist(x + mem[p] * dim, cen + k * dim, dim);
        if (k == 0 || dist < best_d) {
          best = k;
          best_d = dist;
        }
      }
      if (part[p] != best) {
        part[p] = best;
        ++changed;
      }
    }
    if (stop || changed == 0 || it == max_iter) break;
    std::fill(cnt.begin(), cnt.end(), 0);
    std::fill(sum.begin(), sum.end(), 0.f);
    for (int64_t p = 0; p < m; ++p) {
      ++cnt[part[p]];
      float* dst = sum.data() + part[p] * dim;
      const float* src = x + mem[p] * dim;
#pragma omp simd
      for (int64_t d = 0; d < dim; ++d) dst[d] += src[d];
    }
    float shift = 0.f;
    for (int64_t k = 0; k < n; ++k) {
      if (cnt[k] == 0) continue;  // empty sub-centre keeps its place
      const float inv = static_cast<float>(cnt[k]);
      for (int64_t d = 0; d < dim; ++d) {
        const float v = sum[k * dim + d] / inv;
        const float t = v - cen[k * dim + d];
        shift += t * t;
        cen[k * dim + d] = v;
      }
    }
    stop = shift <= tol;
  }
  for (int64_t p = 0; p < m; ++p) assign[mem[p]] = part[p];
}

std::tuple<Tensor, Tensor> segmented_kmeans_cpu(const Tensor& x, const Tensor& labels, int64_t num_clusters, int64_t n,
                                                int64_t max_iter, double tol, int64_t seed) {
  check_kmeans_args(x, labels, num_clusters, n, max_iter, tol);
  const int64_t N = x.size(0), dim = x.size(1);
  const int64_t* lab = labels.const_data_ptr<int64_t>();
  int flags = 0;
  std::vector<int64_t> offsets(num_clusters + 1, 0);
  for (int64_t i = 0; i < N; ++i) {
    if (lab[i] < -1 || lab[i] >= num_clusters) flags |= 1;
    else if (lab[i] >= 0) ++offsets[lab[i] + 1];
  }
  check_kmeans_flags(flags, num_clusters);
  for (int64_t c = 0; c < num_clusters; ++c) offsets[c + 1] += offsets[c];
  std::vector<int64_t> members(offsets[num_clusters]), fill(offsets.begin(), offsets.end() - 1);
  for (int64_t i = 0; i < N; ++i)
    if (lab[i] >= 0) members[fill[lab[i]]++] = i;  // counting sort keeps index order inside a cluster

  Tensor centers = torch::stable::new_empty(x, {num_clusters, n, dim});
  Tensor assign = torch::stable::new_empty(labels, {N});
  int64_t* out = assign.mutable_data_ptr<int64_t>();
  for (int64_t i = 0; i < N; ++i) out[i] = -1;  // noise
  const float* xp = x.const_data_ptr<float>();
  float* cp = centers.mutable_data_ptr<float>();
  const auto useed = static_cast<uint64_t>(seed);
  torch::stable::parallel_for(0, num_clusters, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c)
      kmeans_one(xp, dim, members.data() + offsets[c], offsets[c + 1] - offsets[c], c, n, max_iter,
                 static_cast<float>(tol), useed, cp + c * n * dim, out);
  });
  return {centers, assign};
}

}  // namespace
}  // namespace uvireid

UVIREID_CPU_LIBRARY_IMPL(m) {
  m.impl("dbscan", TORCH_BOX(&uvireid::dbscan_cpu));
  m.impl("segmented_kmeans", TORCH_BOX(&uvireid::segmented_kmeans_cpu));
}
