// Sums over a row of D values in kLanes independent partial sums, shared by the CPU kernels: one
// accumulator is one long dependency chain (latency-bound, no SIMD); the fixed lane split keeps the
// result the same bits on every run.
#pragma once

#include <cstdint>

namespace uvireid {

constexpr int64_t kLanes = 8;

// Σ_d term(d) over [0, D): lane l adds the terms d ≡ l (mod kLanes) of the whole groups of kLanes,
// lane 0 also the tail; the lanes (of type Acc) are then added in lane order in double. term is
// called once per d, in increasing order, so it may also write (e.g. the row it reads).
template <typename Acc, typename Term>
inline double lane_sum(int64_t D, Term&& term) {
  Acc lanes[kLanes] = {};
  int64_t d = 0;
  for (; d + kLanes <= D; d += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) lanes[l] += term(d + l);
  for (; d < D; ++d) lanes[0] += term(d);
  double s = 0.0;
  for (int64_t l = 0; l < kLanes; ++l) s += lanes[l];
  return s;
}

}  // namespace uvireid
