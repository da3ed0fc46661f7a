// Validation of CSR triples (crow, col, val) passed between the distance ops.
#pragma once

#include <torch/csrc/stable/tensor.h>

#include <cstdint>

#include "common/checks.h"

namespace uvireid {

struct CsrView {
  const int64_t* crow;
  const int64_t* col;
  const float* val;
  int64_t nnz;
};

// Shapes and dtypes of a square CSR matrix with N = crow.numel() - 1 rows.
inline void check_csr_shapes(const char* op, const Tensor& crow, const Tensor& col, const Tensor& val) {
  check_dim(op, "crow", crow, 1);
  check_dtype(op, "crow", crow, ScalarType::Long);
  STD_TORCH_CHECK(crow.numel() >= 1, op, ": crow must hold N + 1 >= 1 entries, got 0");
  check_dim(op, "col", col, 1);
  check_dtype(op, "col", col, ScalarType::Long);
  check_dim(op, "val", val, 1);
  check_dtype(op, "val", val, ScalarType::Float);
  STD_TORCH_CHECK(col.numel() == val.numel(), op, ": col and val must have the same length, got ", col.numel(),
                  " and ", val.numel());
  check_same_device(op, "col", col, "crow", crow);
  check_same_device(op, "val", val, "crow", crow);
  check_contiguous(op, "crow", crow);
  check_contiguous(op, "col", col);
  check_contiguous(op, "val", val);
}

// Full CPU validation: offsets start at 0, never decrease, end at nnz; columns in [0, N).
inline CsrView check_csr_cpu(const char* op, const Tensor& crow, const Tensor& col, const Tensor& val) {
  check_csr_shapes(op, crow, col, val);
  const int64_t n = crow.numel() - 1, nnz = col.numel();
  const int64_t* cp = crow.const_data_ptr<int64_t>();
  const int64_t* colp = col.const_data_ptr<int64_t>();
  STD_TORCH_CHECK(cp[0] == 0 && cp[n] == nnz, op, ": crow must start at 0 and end at nnz = ", nnz, ", got ",
                  cp[0], " and ", cp[n]);
  for (int64_t i = 0; i < n; ++i)
    STD_TORCH_CHECK(cp[i + 1] >= cp[i], op, ": crow decreases at row ", i, " (", cp[i], " -> ", cp[i + 1], ")");
  for (int64_t p = 0; p < nnz; ++p)
    STD_TORCH_CHECK(colp[p] >= 0 && colp[p] < n, op, ": col[", p, "] = ", colp[p], " is outside [0, ", n, ")");
  return {cp, colp, val.const_data_ptr<float>(), nnz};
}

// Jaccard's formula needs probability rows: entries finite and >= 0, rows summing to 1 (or empty).
// Rows summing above 1 (beyond float rounding) are rejected; they would also break the fixed-point
// sums of the CUDA kernel.
constexpr double kRowSumTolerance = 1e-3;

inline void check_probability_rows_cpu(const char* op, const CsrView& v, int64_t n) {
  for (int64_t p = 0; p < v.nnz; ++p)
    STD_TORCH_CHECK(v.val[p] >= 0.0f && v.val[p] <= 1.0f, op, ": val[", p, "] = ", v.val[p],
                    " is not a probability (expected rows of non-negative weights summing to 1)");
  for (int64_t i = 0; i < n; ++i) {
    double s = 0.0;
    for (int64_t p = v.crow[i]; p < v.crow[i + 1]; ++p) s += v.val[p];
    STD_TORCH_CHECK(s <= 1.0 + kRowSumTolerance, op, ": row ", i, " sums to ", s,
                    "; expected rows of non-negative weights summing to 1");
  }
}

}  // namespace uvireid
