// CPU kernels for memory_update_ and segment_reduce. Parallel over memory rows / segments; each row
// walks its own samples in batch (index) order, so the result is the sequential loop's, every run.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/headeronly/core/Dispatch_v2.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "common/memory_args.h"
#include "common/registration.h"
#include "cpu/lane_sum.h"

namespace uvireid {
namespace {

constexpr double kNormEps = 1e-12;  // as F.normalize: a zero row stays zero instead of NaN

// c = m*c + (1-m)*x in T (as torch's per-sample loop does), then c *= T(1/max(|c|, eps)) with the
// squared norm summed in double (as the CUDA kernel).
template <typename T>
void momentum_step(T* c, const T* x, int64_t D, double m) {
  const T mt = static_cast<T>(m), mx = static_cast<T>(1.0 - m);
  const double sq = lane_sum<double>(D, [&](int64_t d) {
    const T v = mt * c[d] + mx * x[d];
    c[d] = v;
    return static_cast<double>(v) * static_cast<double>(v);
  });
  const T inv = static_cast<T>(1.0 / std::max(std::sqrt(sq), kNormEps));
  for (int64_t d = 0; d < D; ++d) c[d] *= inv;
}

// The member whose cosine to c is lowest; ties keep the earliest sample.
template <typename T>
int64_t hardest_member(const T* c, const T* x, int64_t D, const int64_t* members, int64_t count) {
  int64_t best = members[0];
  double best_cos = std::numeric_limits<double>::infinity();
  for (int64_t k = 0; k < count; ++k) {
    const T* xb = x + members[k] * D;
    const double dot = lane_sum<double>(D, [&](int64_t d) { return static_cast<double>(xb[d]) * c[d]; });
    const double sq = lane_sum<double>(D, [&](int64_t d) { return static_cast<double>(xb[d]) * xb[d]; });
    const double cosv = dot / std::max(std::sqrt(sq), kNormEps);
    if (cosv < best_cos) {
      best_cos = cosv;
      best = members[k];
    }
  }
  return best;
}

template <typename T>
void memory_update_rows(T* memory, const T* x, int64_t D, const CompactGroups& g, double m, bool hard) {
  const int64_t K = static_cast<int64_t>(g.rows.size());
  torch::stable::parallel_for(0, K, 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      T* c = memory + g.rows[k] * D;
      const int64_t* mem = g.members.data() + g.offsets[k];
      const int64_t count = g.offsets[k + 1] - g.offsets[k];
      if (hard) {
        momentum_step(c, x + hardest_member(c, x, D, mem, count) * D, D, m);
      } else {
        for (int64_t j = 0; j < count; ++j) momentum_step(c, x + mem[j] * D, D, m);
      }
    }
  });
}

void memory_update_cpu(Tensor memory, Tensor features, Tensor labels, double momentum, bool hard) {
  CompactGroups g = check_memory_update(memory, features, labels, momentum);
  if (g.rows.empty() || memory.size(1) == 0) return;
  Tensor x = torch::stable::contiguous(features);
  THO_DISPATCH_V2(memory.scalar_type(), "memory_update_", AT_WRAP([&] {
    memory_update_rows<scalar_t>(memory.mutable_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), memory.size(1),
                                 g, momentum, hard);
  }), AT_FLOATING_TYPES);
}

template <typename T>
void segment_reduce_rows(const T* x, const T* w, T* out, int64_t D, const LabelGroups& g, SegmentMode mode,
                         bool normalize) {
  const int64_t S = static_cast<int64_t>(g.offsets.size()) - 1;
  torch::stable::parallel_for(0, S, 1, [&](int64_t begin, int64_t end) {
    std::vector<double> acc(static_cast<size_t>(D));
    for (int64_t s = begin; s < end; ++s) {
      std::fill(acc.begin(), acc.end(), 0.0);
      double wsum = 0.0;
      const int64_t lo = g.offsets[s], hi = g.offsets[s + 1];
      for (int64_t k = lo; k < hi; ++k) {
        const int64_t i = g.members[k];
        const double wi = mode == kSegmentMean ? 1.0 : static_cast<double>(w[i]);
        wsum += wi;
        for (int64_t d = 0; d < D; ++d) acc[d] += wi * x[i * D + d];
      }
      // mean and sum/count divide by the count; the weighted mean by the weight sum. Empty -> 0.
      const double denom = mode == kSegmentWeightedMean ? wsum : static_cast<double>(hi - lo);
      const double scale = denom != 0.0 ? 1.0 / denom : 0.0;
      double sq = 0.0;
      for (int64_t d = 0; d < D; ++d) {
        acc[d] *= scale;
        sq += acc[d] * acc[d];
      }
      const double inv = normalize ? 1.0 / std::max(std::sqrt(sq), kNormEps) : 1.0;
      for (int64_t d = 0; d < D; ++d) out[s * D + d] = static_cast<T>(acc[d] * inv);
    }
  });
}

Tensor segment_reduce_cpu(Tensor x, Tensor segments, std::optional<Tensor> weights, int64_t num_segments,
                          std::string mode, bool normalize) {
  const SegmentReduceArgs args = check_segment_reduce(x, segments, weights, num_segments, mode);
  const int64_t D = x.size(1);
  Tensor out = torch::stable::new_zeros(x, {num_segments, D});
  if (num_segments == 0 || D == 0) return out;
  Tensor xc = torch::stable::contiguous(x);
  std::optional<Tensor> wc;
  if (weights.has_value()) wc = torch::stable::contiguous(*weights);
  THO_DISPATCH_V2(x.scalar_type(), "segment_reduce", AT_WRAP([&] {
    segment_reduce_rows<scalar_t>(xc.const_data_ptr<scalar_t>(), wc ? wc->const_data_ptr<scalar_t>() : nullptr,
                                  out.mutable_data_ptr<scalar_t>(), D, args.groups, args.mode, normalize);
  }), AT_FLOATING_TYPES);
  return out;
}

}  // namespace
}  // namespace uvireid

UVIREID_CPU_LIBRARY_IMPL(m) {
  m.impl("memory_update_", TORCH_BOX(&uvireid::memory_update_cpu));
  m.impl("segment_reduce", TORCH_BOX(&uvireid::segment_reduce_cpu));
}
