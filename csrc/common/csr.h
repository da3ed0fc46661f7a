// Validation of CSR triples (crow, col, val), shared by every op that takes one (the distance ops
// and dbscan, CPU and CUDA): one set of rules and one wording of each error.
#pragma once

#include <torch/csrc/stable/tensor.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "common/checks.h"

namespace uvireid {

struct CsrView {
  const int64_t* crow;
  const int64_t* col;
  const float* val;
  int64_t nnz;
};

// Shapes, dtypes, devices and layout of a square CSR matrix with N = crow.numel() - 1 rows; val
// must have one of `val_dtypes`.
inline void check_csr_shapes(const char* op, const Tensor& crow, const Tensor& col, const Tensor& val,
                             std::initializer_list<ScalarType> val_dtypes = {ScalarType::Float}) {
  check_dim(op, "crow", crow, 1);
  check_dim(op, "col", col, 1);
  check_dim(op, "val", val, 1);
  check_dtype(op, "crow", crow, ScalarType::Long);
  check_dtype(op, "col", col, ScalarType::Long);
  bool known = false;
  std::string names;
  for (ScalarType t : val_dtypes) {
    known = known || val.scalar_type() == t;
    names += (names.empty() ? "" : " or ") + dtype_name(t);
  }
  STD_TORCH_CHECK(known, op, ": expected val of dtype ", names, ", got ", dtype_name(val.scalar_type()));
  check_same_device(op, "col", col, "crow", crow);
  check_same_device(op, "val", val, "crow", crow);
  check_contiguous(op, "crow", crow);
  check_contiguous(op, "col", col);
  check_contiguous(op, "val", val);
  STD_TORCH_CHECK(crow.numel() >= 1, op, ": expected crow of length N + 1 >= 1, got length 0");
  STD_TORCH_CHECK(col.numel() == val.numel(), op, ": expected col and val of the same length, got ", col.numel(),
                  " and ", val.numel());
}

// The errors of the structure checks, worded once for the host checks below and the CUDA ones
// (csrc/cuda/distance_cuda.cu), which find the same first offending entry on the device.
inline void check_csr_ends(const char* op, int64_t first, int64_t last, int64_t nnz) {
  STD_TORCH_CHECK(first == 0 && last == nnz, op, ": expected crow[0] == 0 and crow[N] == nnz = ", nnz, ", got ",
                  first, " and ", last);
}
inline void fail_csr_decreasing(const char* op, int64_t row, int64_t from, int64_t to) {
  STD_TORCH_CHECK(false, op, ": crow decreases at row ", row, " (", from, " -> ", to, ")");
}
inline void fail_csr_column(const char* op, int64_t pos, int64_t value, int64_t n) {
  STD_TORCH_CHECK(false, op, ": col[", pos, "] = ", value, " is outside [0, ", n, ")");
}

// The structure on the host: offsets from 0 to nnz, never decreasing; columns in [0, N); with
// unique_columns, no column twice in a row (dbscan would count that neighbour twice).
inline void check_csr_structure(const char* op, const int64_t* crow, const int64_t* col, int64_t n, int64_t nnz,
                                bool unique_columns = false) {
  check_csr_ends(op, crow[0], crow[n], nnz);
  for (int64_t i = 0; i < n; ++i)
    if (crow[i + 1] < crow[i]) fail_csr_decreasing(op, i, crow[i], crow[i + 1]);
  for (int64_t p = 0; p < nnz; ++p)
    if (col[p] < 0 || col[p] >= n) fail_csr_column(op, p, col[p], n);
  if (!unique_columns) return;
  std::vector<int64_t> stamp(n, -1);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = crow[i]; k < crow[i + 1]; ++k) {
      STD_TORCH_CHECK(stamp[col[k]] != i, op, ": row ", i, " holds column ", col[k], " more than once");
      stamp[col[k]] = i;
    }
}

// Full CPU validation of float32 CSR (the distance ops).
inline CsrView check_csr_cpu(const char* op, const Tensor& crow, const Tensor& col, const Tensor& val) {
  check_csr_shapes(op, crow, col, val);
  const int64_t n = crow.numel() - 1, nnz = col.numel();
  check_csr_structure(op, crow.const_data_ptr<int64_t>(), col.const_data_ptr<int64_t>(), n, nnz);
  return {crow.const_data_ptr<int64_t>(), col.const_data_ptr<int64_t>(), val.const_data_ptr<float>(), nnz};
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
