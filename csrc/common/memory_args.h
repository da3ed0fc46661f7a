// Argument checks and host-side grouping for memory_update_ and segment_reduce, shared by the CPU
// and CUDA op layers (the CUDA layer copies the int64 labels to the host: see kernels/segments.h).
#pragma once

#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <optional>
#include <string>

#include "common/checks.h"
#include "kernels/segments.h"

namespace uvireid {

inline Tensor labels_on_host(const Tensor& labels) {
  Tensor t = labels.is_cpu() ? labels : torch::stable::to(labels, torch::stable::Device(torch::headeronly::DeviceType::CPU));
  return torch::stable::contiguous(t);
}

inline void check_float_matrix(const char* op, const char* arg, const Tensor& t) {
  check_dim(op, arg, t, 2);
  STD_TORCH_CHECK(t.scalar_type() == ScalarType::Float || t.scalar_type() == ScalarType::Double, op,
                  ": expected ", arg, " of dtype float32 or float64, got ", dtype_name(t.scalar_type()));
}

inline void check_label_range(const char* op, const char* arg, const Tensor& host_labels, int64_t lo, int64_t hi,
                              const char* bound_name) {
  const int64_t* p = host_labels.const_data_ptr<int64_t>();
  int64_t bad = first_out_of_range(p, host_labels.numel(), lo, hi);
  STD_TORCH_CHECK(bad < 0, op, ": ", arg, "[", bad, "] = ", bad < 0 ? 0 : p[bad], " is out of range; expected ",
                  lo < 0 ? "-1 (skip) or " : "", "0 <= ", arg, " < ", bound_name, " = ", hi);
}

// memory_update_: checks every argument; returns the distinct labels with their batch rows in order.
inline CompactGroups check_memory_update(const Tensor& memory, const Tensor& features, const Tensor& labels,
                                         double momentum) {
  const char* op = "memory_update_";
  check_float_matrix(op, "memory", memory);
  check_contiguous(op, "memory", memory);
  check_float_matrix(op, "features", features);
  check_dim(op, "labels", labels, 1);
  check_dtype(op, "labels", labels, ScalarType::Long);
  check_dtype(op, "features", features, memory.scalar_type());
  check_same_device(op, "features", features, "memory", memory);
  check_same_device(op, "labels", labels, "memory", memory);
  STD_TORCH_CHECK(features.size(1) == memory.size(1), op, ": expected features.size(1) == memory.size(1) = ",
                  memory.size(1), ", got ", features.size(1));
  check_size(op, "labels", labels, 0, features.size(0));
  STD_TORCH_CHECK(momentum >= 0.0 && momentum <= 1.0, op, ": expected 0 <= momentum <= 1, got ", momentum);
  Tensor host = labels_on_host(labels);
  // Any negative label means "skip" (DBSCAN noise); rows must exist.
  const int64_t* p = host.const_data_ptr<int64_t>();
  int64_t bad = first_out_of_range(p, host.numel(), INT64_MIN, memory.size(0));
  STD_TORCH_CHECK(bad < 0, op, ": labels[", bad, "] = ", bad < 0 ? 0 : p[bad],
                  " is out of range; expected a negative label (skip) or a memory row < memory.size(0) = ",
                  memory.size(0));
  return compact_groups(p, host.numel(), memory.size(0));
}

struct SegmentReduceArgs {
  LabelGroups groups;  // the CSR of rows per segment
  SegmentMode mode;
};

// segment_reduce: checks every argument; returns the rows per segment and the mode's code.
inline SegmentReduceArgs check_segment_reduce(const Tensor& x, const Tensor& segments,
                                              const std::optional<Tensor>& weights, int64_t num_segments,
                                              const std::string& mode_name) {
  const char* op = "segment_reduce";
  const auto mode = static_cast<SegmentMode>(
      check_choice(op, "mode", mode_name, {"mean", "weighted_mean", "weighted_sum_by_count"}));
  check_float_matrix(op, "x", x);
  check_dim(op, "segments", segments, 1);
  check_dtype(op, "segments", segments, ScalarType::Long);
  check_size(op, "segments", segments, 0, x.size(0));
  check_same_device(op, "segments", segments, "x", x);
  STD_TORCH_CHECK(num_segments >= 0, op, ": expected num_segments >= 0, got ", num_segments);
  STD_TORCH_CHECK(mode == kSegmentMean || weights.has_value(), op, ": mode '", mode_name, "' needs weights");
  if (weights.has_value()) {
    check_dim(op, "weights", *weights, 1);
    check_dtype(op, "weights", *weights, x.scalar_type());
    check_size(op, "weights", *weights, 0, x.size(0));
    check_same_device(op, "weights", *weights, "x", x);
  }
  Tensor host = labels_on_host(segments);
  check_label_range(op, "segments", host, -1, num_segments, "num_segments");
  return {group_by_label(host.const_data_ptr<int64_t>(), host.numel(), num_segments), mode};
}

}  // namespace uvireid
