// Argument checks and host-side grouping for mmd2 / _mmd2_backward, shared by the CPU and CUDA op
// layers. Group ids are copied to the host (a batch's worth of int64) for exact range errors and a
// deterministic member order.
#pragma once

#include <cmath>
#include <optional>
#include <vector>

#include "common/memory_args.h"

namespace uvireid {

struct MmdGroups {
  LabelGroups x, y;
};

inline MmdGroups check_mmd_inputs(const char* op, const Tensor& x, const Tensor& y, const Tensor& x_groups,
                                  const Tensor& y_groups, int64_t num_groups) {
  check_float_matrix(op, "x", x);
  check_float_matrix(op, "y", y);
  check_dtype(op, "y", y, x.scalar_type());
  STD_TORCH_CHECK(y.size(1) == x.size(1), op, ": expected y.size(1) == x.size(1) = ", x.size(1), ", got ", y.size(1));
  check_same_device(op, "y", y, "x", x);
  check_dim(op, "x_groups", x_groups, 1);
  check_dim(op, "y_groups", y_groups, 1);
  check_dtype(op, "x_groups", x_groups, ScalarType::Long);
  check_dtype(op, "y_groups", y_groups, ScalarType::Long);
  check_size(op, "x_groups", x_groups, 0, x.size(0));
  check_size(op, "y_groups", y_groups, 0, y.size(0));
  check_same_device(op, "x_groups", x_groups, "x", x);
  check_same_device(op, "y_groups", y_groups, "x", x);
  STD_TORCH_CHECK(num_groups >= 0, op, ": expected num_groups >= 0, got ", num_groups);
  Tensor hx = labels_on_host(x_groups), hy = labels_on_host(y_groups);
  check_label_range(op, "x_groups", hx, 0, num_groups, "num_groups");
  check_label_range(op, "y_groups", hy, 0, num_groups, "num_groups");
  return {group_by_label(hx.const_data_ptr<int64_t>(), hx.numel(), num_groups),
          group_by_label(hy.const_data_ptr<int64_t>(), hy.numel(), num_groups)};
}

// Given bandwidths as host doubles (empty when data-driven), after checking them.
inline std::vector<double> check_mmd_bandwidths(const std::optional<Tensor>& bandwidths, const Tensor& x,
                                                double kernel_mul, int64_t kernel_num) {
  const char* op = "mmd2";
  std::vector<double> out;
  if (!bandwidths.has_value()) {
    STD_TORCH_CHECK(kernel_num >= 1, op, ": expected kernel_num >= 1, got ", kernel_num);
    STD_TORCH_CHECK(kernel_mul > 0.0 && std::isfinite(kernel_mul), op, ": expected kernel_mul > 0, got ", kernel_mul);
    return out;
  }
  const Tensor& b = *bandwidths;
  check_dim(op, "bandwidths", b, 1);
  check_dtype(op, "bandwidths", b, x.scalar_type());
  check_same_device(op, "bandwidths", b, "x", x);
  STD_TORCH_CHECK(b.numel() >= 1, op, ": expected at least one bandwidth, got none");
  Tensor hb = labels_on_host(b);
  out.resize(static_cast<size_t>(b.numel()));
  for (int64_t s = 0; s < b.numel(); ++s) {
    out[s] = x.scalar_type() == ScalarType::Double ? hb.const_data_ptr<double>()[s]
                                                     : static_cast<double>(hb.const_data_ptr<float>()[s]);
    STD_TORCH_CHECK(out[s] > 0.0 && std::isfinite(out[s]), op, ": expected bandwidths > 0 and finite, got bandwidths[",
                    s, "] = ", out[s]);
  }
  return out;
}

inline void check_mmd_backward(const Tensor& grad, const Tensor& x, const Tensor& bandwidths, int64_t num_groups) {
  const char* op = "_mmd2_backward";
  check_dim(op, "grad", grad, 1);
  check_dtype(op, "grad", grad, x.scalar_type());
  check_size(op, "grad", grad, 0, num_groups);
  check_same_device(op, "grad", grad, "x", x);
  check_dim(op, "bandwidths", bandwidths, 2);
  check_dtype(op, "bandwidths", bandwidths, x.scalar_type());
  check_size(op, "bandwidths", bandwidths, 0, num_groups);
  check_same_device(op, "bandwidths", bandwidths, "x", x);
}

}  // namespace uvireid
