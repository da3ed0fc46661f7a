// CPU kernels for mmd2 and _mmd2_backward: parallel over groups; within a group the pooled set
// P = X ∪ Y (n + m rows) has its squared distances computed once. Sums over D run in T with
// fixed lane partials; per-pair kernel terms in double.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/headeronly/core/Dispatch_v2.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/mmd_args.h"
#include "common/registration.h"
#include "cpu/lane_sum.h"

namespace uvireid {
namespace {

constexpr double kMinBandwidth = 1e-12;  // all points equal: keeps exp(-0/b) = 1 instead of NaN

// ‖a − b‖² with lane partial sums in T (SIMD-friendly, deterministic), folded in double.
template <typename T>
double squared_distance(const T* a, const T* b, int64_t D) {
  return lane_sum<T>(D, [&](int64_t d) {
    const T t = a[d] - b[d];
    return t * t;
  });
}

template <typename T>
struct Pooled {
  std::vector<const T*> rows;  // X members then Y members
  int64_t n = 0, m = 0;
  std::vector<double> dist;  // [p, p]
};

template <typename T>
Pooled<T> pool_group(const T* x, const T* y, int64_t D, const MmdGroups& g, int64_t grp) {
  Pooled<T> P;
  for (int64_t k = g.x.offsets[grp]; k < g.x.offsets[grp + 1]; ++k) P.rows.push_back(x + g.x.members[k] * D);
  for (int64_t k = g.y.offsets[grp]; k < g.y.offsets[grp + 1]; ++k) P.rows.push_back(y + g.y.members[k] * D);
  P.n = g.x.offsets[grp + 1] - g.x.offsets[grp];
  P.m = g.y.offsets[grp + 1] - g.y.offsets[grp];
  const int64_t p = P.n + P.m;
  P.dist.assign(static_cast<size_t>(p * p), 0.0);
  for (int64_t i = 0; i < p; ++i)
    for (int64_t j = i + 1; j < p; ++j) P.dist[i * p + j] = P.dist[j * p + i] = squared_distance(P.rows[i], P.rows[j], D);
  return P;
}

// Weight of the pair (i, j) in MMD²: 1/n² inside X, 1/m² inside Y, −1/(nm) across.
template <typename T>
double pair_weight(const Pooled<T>& P, int64_t i, int64_t j) {
  const bool xi = i < P.n, xj = j < P.n;
  if (xi && xj) return 1.0 / (double(P.n) * P.n);
  if (!xi && !xj) return 1.0 / (double(P.m) * P.m);
  return -1.0 / (double(P.n) * P.m);
}

template <typename T>
void mmd2_groups(const T* x, const T* y, int64_t D, const MmdGroups& g, const std::vector<double>& given,
                 double mul, int64_t num, T* loss, bool* valid, T* bw_out) {
  const int64_t G = static_cast<int64_t>(g.x.offsets.size()) - 1;
  const int64_t S = given.empty() ? num : static_cast<int64_t>(given.size());
  torch::stable::parallel_for(0, G, 1, [&](int64_t begin, int64_t end) {
    std::vector<double> bw(static_cast<size_t>(S));
    for (int64_t grp = begin; grp < end; ++grp) {
      const int64_t n = g.x.offsets[grp + 1] - g.x.offsets[grp], m = g.y.offsets[grp + 1] - g.y.offsets[grp];
      loss[grp] = T(0);
      valid[grp] = n > 0 && m > 0;
      for (int64_t s = 0; s < S; ++s) bw_out[grp * S + s] = given.empty() ? T(0) : T(given[s]);
      if (!valid[grp]) continue;  // empty side: skipped and reported through `valid`
      Pooled<T> P = pool_group(x, y, D, g, grp);
      const int64_t p = n + m;
      if (given.empty()) {
        double total = 0.0;
        for (double v : P.dist) total += v;
        const double base = std::max(total / double(p * p - p), kMinBandwidth) / std::pow(mul, double(num / 2));
        for (int64_t s = 0; s < S; ++s) bw[s] = base * std::pow(mul, double(s));
      } else {
        bw = given;
      }
      for (int64_t s = 0; s < S; ++s) bw_out[grp * S + s] = T(bw[s]);
      double acc = 0.0;
      for (int64_t i = 0; i < p; ++i)
        for (int64_t j = 0; j < p; ++j) {
          double k = 0.0;
          for (int64_t s = 0; s < S; ++s) k += std::exp(-P.dist[i * p + j] / double(T(bw[s])));
          acc += pair_weight(P, i, j) * k;
        }
      loss[grp] = T(acc);
    }
  });
}

std::tuple<Tensor, Tensor, Tensor> mmd2_cpu(Tensor x, Tensor y, Tensor x_groups, Tensor y_groups, int64_t num_groups,
                                            std::optional<Tensor> bandwidths, double kernel_mul, int64_t kernel_num) {
  MmdGroups g = check_mmd_inputs("mmd2", x, y, x_groups, y_groups, num_groups);
  std::vector<double> given = check_mmd_bandwidths(bandwidths, x, kernel_mul, kernel_num);
  const int64_t S = given.empty() ? kernel_num : static_cast<int64_t>(given.size());
  Tensor loss = torch::stable::new_zeros(x, {num_groups});
  Tensor valid = torch::stable::new_zeros(x, {num_groups}, ScalarType::Bool);
  Tensor bw = torch::stable::new_zeros(x, {num_groups, S});
  if (num_groups == 0) return {loss, valid, bw};
  Tensor xc = torch::stable::contiguous(x), yc = torch::stable::contiguous(y);
  THO_DISPATCH_V2(x.scalar_type(), "mmd2", AT_WRAP([&] {
    mmd2_groups<scalar_t>(xc.const_data_ptr<scalar_t>(), yc.const_data_ptr<scalar_t>(), x.size(1), g, given,
                          kernel_mul, kernel_num, loss.mutable_data_ptr<scalar_t>(), valid.mutable_data_ptr<bool>(),
                          bw.mutable_data_ptr<scalar_t>());
  }), AT_FLOATING_TYPES);
  return {loss, valid, bw};
}

// d MMD²/d P_i = Σ_j c_ij (P_i − P_j), c_ij = −4 · weight_ij · Σ_s exp(−d_ij/b_s)/b_s.
template <typename T>
void mmd2_backward_groups(const T* grad, const T* x, const T* y, int64_t D, const MmdGroups& g, const T* bw, int64_t S,
                          T* gx, T* gy) {
  const int64_t G = static_cast<int64_t>(g.x.offsets.size()) - 1;
  torch::stable::parallel_for(0, G, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> acc(static_cast<size_t>(D));
    for (int64_t grp = begin; grp < end; ++grp) {
      const int64_t n = g.x.offsets[grp + 1] - g.x.offsets[grp], m = g.y.offsets[grp + 1] - g.y.offsets[grp];
      if (n == 0 || m == 0) continue;
      Pooled<T> P = pool_group(x, y, D, g, grp);
      const int64_t p = n + m;
      const double up = static_cast<double>(grad[grp]);
      for (int64_t i = 0; i < p; ++i) {
        std::fill(acc.begin(), acc.end(), T(0));
        for (int64_t j = 0; j < p; ++j) {
          if (j == i) continue;
          double w = 0.0;
          for (int64_t s = 0; s < S; ++s) {
            const double b = static_cast<double>(bw[grp * S + s]);
            w += std::exp(-P.dist[i * p + j] / b) / b;
          }
          const T c = static_cast<T>(-4.0 * up * pair_weight(P, i, j) * w);
          const T* pi = P.rows[i];
          const T* pj = P.rows[j];
          for (int64_t d = 0; d < D; ++d) acc[d] += c * (pi[d] - pj[d]);
        }
        T* out = i < n ? gx + g.x.members[g.x.offsets[grp] + i] * D : gy + g.y.members[g.y.offsets[grp] + i - n] * D;
        std::copy(acc.begin(), acc.end(), out);
      }
    }
  });
}

std::tuple<Tensor, Tensor> mmd2_backward_cpu(Tensor grad, Tensor x, Tensor y, Tensor x_groups, Tensor y_groups,
                                             Tensor bandwidths) {
  check_mmd_backward(grad, x, bandwidths, grad.dim() == 1 ? grad.size(0) : -1);
  MmdGroups g = check_mmd_inputs("_mmd2_backward", x, y, x_groups, y_groups, grad.size(0));
  Tensor gx = torch::stable::new_zeros(x, {x.size(0), x.size(1)});
  Tensor gy = torch::stable::new_zeros(y, {y.size(0), y.size(1)});
  if (grad.size(0) == 0 || x.size(1) == 0) return {gx, gy};
  Tensor xc = torch::stable::contiguous(x), yc = torch::stable::contiguous(y);
  Tensor gc = torch::stable::contiguous(grad), bc = torch::stable::contiguous(bandwidths);
  THO_DISPATCH_V2(x.scalar_type(), "_mmd2_backward", AT_WRAP([&] {
    mmd2_backward_groups<scalar_t>(gc.const_data_ptr<scalar_t>(), xc.const_data_ptr<scalar_t>(),
                                   yc.const_data_ptr<scalar_t>(), x.size(1), g, bc.const_data_ptr<scalar_t>(),
                                   bandwidths.size(1), gx.mutable_data_ptr<scalar_t>(), gy.mutable_data_ptr<scalar_t>());
  }), AT_FLOATING_TYPES);
  return {gx, gy};
}

}  // namespace
}  // namespace uvireid

UVIREID_CPU_LIBRARY_IMPL(m) {
  m.impl("mmd2", TORCH_BOX(&uvireid::mmd2_cpu));
  m.impl("_mmd2_backward", TORCH_BOX(&uvireid::mmd2_backward_cpu));
}
