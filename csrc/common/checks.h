// Argument checks shared by the CPU and CUDA op layers. Every message starts with the op name and
// names the argument and the offending value, so errors reach Python readable as they are.
#pragma once

#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/Exception.h>

#include <initializer_list>
#include <string>

namespace uvireid {

using torch::stable::Tensor;
using torch::headeronly::ScalarType;

inline std::string dtype_name(ScalarType t) {
  switch (t) {
    case ScalarType::Float: return "float32";
    case ScalarType::Double: return "float64";
    case ScalarType::Half: return "float16";
    case ScalarType::BFloat16: return "bfloat16";
    case ScalarType::Long: return "int64";
    case ScalarType::Int: return "int32";
    case ScalarType::Bool: return "bool";
    default: return "dtype code " + std::to_string(static_cast<int>(t));
  }
}

inline void check_dim(const char* op, const char* arg, const Tensor& t, int64_t dim) {
  STD_TORCH_CHECK(t.dim() == dim, op, ": expected ", arg, " to be ", dim, "-D, got ", t.dim(), "-D");
}

inline void check_dtype(const char* op, const char* arg, const Tensor& t, ScalarType want) {
  STD_TORCH_CHECK(t.scalar_type() == want, op, ": expected ", arg, " of dtype ", dtype_name(want), ", got ",
                  dtype_name(t.scalar_type()));
}

inline void check_size(const char* op, const char* arg, const Tensor& t, int64_t dim, int64_t want) {
  STD_TORCH_CHECK(t.size(dim) == want, op, ": expected ", arg, ".size(", dim, ") == ", want, ", got ",
                  t.size(dim));
}

inline void check_same_device(const char* op, const char* arg, const Tensor& t, const char* ref_arg,
                              const Tensor& ref) {
  STD_TORCH_CHECK(t.get_device_index() == ref.get_device_index() && t.is_cuda() == ref.is_cuda(), op,
                  ": expected ", arg, " on the same device as ", ref_arg, " (", ref.is_cuda() ? "cuda:" : "cpu",
                  ref.is_cuda() ? std::to_string(ref.get_device_index()) : "", "), got ",
                  t.is_cuda() ? "cuda:" : "cpu", t.is_cuda() ? std::to_string(t.get_device_index()) : "");
}

inline void check_contiguous(const char* op, const char* arg, const Tensor& t) {
  STD_TORCH_CHECK(t.is_contiguous(), op, ": expected ", arg, " to be contiguous");
}

// A neighbour count (k, k1, pool) of an op over n rows: at least 1, at most n (any value when n = 0).
inline void check_neighbours(const char* op, const char* arg, int64_t k, int64_t n) {
  STD_TORCH_CHECK(k >= 1, op, ": ", arg, " must be >= 1, got ", k);
  STD_TORCH_CHECK(n == 0 || k <= n, op, ": ", arg, " = ", k, " exceeds the number of rows N = ", n);
}

// A string argument that must be one of `choices`; returns its position among them.
inline size_t check_choice(const char* op, const char* arg, const std::string& value,
                           std::initializer_list<const char*> choices) {
  size_t at = 0;
  std::string names;
  for (const char* c : choices) {
    if (value == c) return at;
    names += (at++ ? ", '" : "'") + std::string(c) + "'";
  }
  STD_TORCH_CHECK(false, op, ": ", arg, " must be one of ", names, ", got '", value, "'");
  return 0;
}

}  // namespace uvireid
