// ATen ops the stable headers do not wrap (topk, stable sort, cumsum, mm with an output dtype), called through the stable
// dispatcher so they run on whatever device their input lives on.
#pragma once

#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/stableivalue_conversions.h>
#include <torch/csrc/stable/tensor.h>

#include <array>
#include <optional>
#include <utility>

namespace uvireid {
namespace aten {

using torch::stable::Tensor;
using torch::stable::detail::from;
using torch::stable::detail::to;

// (values, indices) of the k smallest entries along dim 1, in no particular order.
inline std::pair<Tensor, Tensor> topk_smallest(const Tensor& t, int64_t k) {
  std::array<StableIValue, 5> stack{from(t), from(k), from(int64_t{1}), from(false), from(false)};
  STABLE_TORCH_ERROR_CODE_CHECK(torch_call_dispatcher("aten::topk", "", stack.data(), TORCH_ABI_VERSION));
  return {to<Tensor>(stack[0]), to<Tensor>(stack[1])};
}

// Ascending stable sort along the last dim: (values, indices); equal values keep their order.
inline std::pair<Tensor, Tensor> sort_stable(const Tensor& t) {
  std::array<StableIValue, 4> stack{from(t), from(std::optional<bool>(true)), from(int64_t{-1}), from(false)};
  STABLE_TORCH_ERROR_CODE_CHECK(torch_call_dispatcher("aten::sort", "stable", stack.data(), TORCH_ABI_VERSION));
  return {to<Tensor>(stack[0]), to<Tensor>(stack[1])};
}

// a @ b with float32 output (aten::mm.dtype: for bf16 inputs, float32 accumulation on tensor cores).
inline Tensor mm_float(const Tensor& a, const Tensor& b) {
  std::array<StableIValue, 3> stack{from(a), from(b), from(torch::headeronly::ScalarType::Float)};
  STABLE_TORCH_ERROR_CODE_CHECK(torch_call_dispatcher("aten::mm", "dtype", stack.data(), TORCH_ABI_VERSION));
  return to<Tensor>(stack[0]);
}

// Whether aten::mm.dtype exists and takes `one` (a 1x1 tensor) on its device: a probe, not for data.
inline bool mm_float_works(const Tensor& one) {
  std::array<StableIValue, 3> stack{from(one), from(one), from(torch::headeronly::ScalarType::Float)};
  if (torch_call_dispatcher("aten::mm", "dtype", stack.data(), TORCH_ABI_VERSION) != AOTI_TORCH_SUCCESS) return false;
  to<Tensor>(stack[0]);  // adopt (and release) the result
  return true;
}

// Inclusive cumulative sum of a 1-D tensor, as int64.
inline Tensor cumsum_long(const Tensor& t) {
  std::array<StableIValue, 3> stack{from(t), from(int64_t{0}),
                                    from(std::optional<torch::headeronly::ScalarType>(
                                        torch::headeronly::ScalarType::Long))};
  STABLE_TORCH_ERROR_CODE_CHECK(torch_call_dispatcher("aten::cumsum", "", stack.data(), TORCH_ABI_VERSION));
  return to<Tensor>(stack[0]);
}

}  // namespace aten
}  // namespace uvireid
