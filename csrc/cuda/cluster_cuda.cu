// CUDA launchers for DBSCAN on CSR distances and segmented k-means (kernels in kernels/cluster.cuh).
// Both read one small error flag back to the host (malformed input must raise, as on CPU), so they
// synchronise the current stream once per call.

#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include "common/checks.h"
#include "common/cuda_utils.h"
#include "kernels/cluster.cuh"

namespace uvireid {

// Shared with the CPU layer (csrc/cpu/cluster_cpu.cpp).
void check_dbscan_args(const Tensor& crow, const Tensor& col, const Tensor& val, double eps, int64_t min_samples);
void check_dbscan_flags(int flags);
void check_dbscan_structure(const int64_t* crow, const int64_t* col, int64_t n, int64_t nnz);
void check_kmeans_args(const Tensor& x, const Tensor& labels, int64_t num_clusters, int64_t n, int64_t max_iter,
                       double tol);
void check_kmeans_flags(int flags, int64_t num_clusters);

namespace {

constexpr int kThreads = 256;

int read_flag(const Tensor& flag, cudaStream_t stream) {
  int host = 0;
  UVIREID_CUDA_CHECK(cudaMemcpyAsync(&host, flag.const_data_ptr<int>(), sizeof(int), cudaMemcpyDeviceToHost, stream));
  UVIREID_CUDA_CHECK(cudaStreamSynchronize(stream));
  return host;
}

Tensor byte_buffer(const Tensor& like, size_t bytes) {
  return torch::stable::new_empty(like, {static_cast<int64_t>(std::max<size_t>(bytes, 1))}, ScalarType::Byte);
}

template <typename T>
void dbscan_launch(const Tensor& crow, const Tensor& col, const Tensor& val, int64_t n, double eps,
                   int64_t min_samples, Tensor& labels, cudaStream_t stream) {
  const int64_t* cr = crow.const_data_ptr<int64_t>();
  const int64_t* cl = col.const_data_ptr<int64_t>();
  const T* v = val.const_data_ptr<T>();
  const T e = static_cast<T>(eps);
  const unsigned int grid = grid_for(n, kThreads);

  Tensor core = torch::stable::new_empty(crow, {n}, ScalarType::Byte);
  Tensor bad = torch::stable::new_zeros(crow, {1}, ScalarType::Int);
  auto* core_p = core.mutable_data_ptr<uint8_t>();
  launch_kernel(cluster::dbscan_core_kernel<T>, grid, kThreads, stream, cr, cl, v, n, e, min_samples, core_p,
                bad.mutable_data_ptr<int>());
  UVIREID_LAUNCH_CHECK();
  check_dbscan_flags(read_flag(bad, stream));

  Tensor parent = torch::stable::new_empty(crow, {n}, ScalarType::Long);
  int64_t* par = parent.mutable_data_ptr<int64_t>();
  launch_kernel(cluster::dbscan_init_parent_kernel, grid, kThreads, stream, par, n);
  UVIREID_LAUNCH_CHECK();
  launch_kernel(cluster::dbscan_union_kernel<T>, grid, kThreads, stream, cr, cl, v, n, e, core_p, par);
  UVIREID_LAUNCH_CHECK();
  launch_kernel(cluster::dbscan_compress_kernel, grid, kThreads, stream, par, n);
  UVIREID_LAUNCH_CHECK();

  // first[root] starts at N (larger than any index), lowered by atomicMin to the first point carrying it.
  Tensor first = torch::stable::full({n}, static_cast<double>(n), ScalarType::Long, std::nullopt, crow.device());
  auto* first_p = reinterpret_cast<unsigned long long*>(first.mutable_data_ptr<int64_t>());
  int64_t* lab = labels.mutable_data_ptr<int64_t>();
  launch_kernel(cluster::dbscan_label_kernel<T>, grid, kThreads, stream, cr, cl, v, n, e, core_p, par, lab, first_p);
  UVIREID_LAUNCH_CHECK();

  Tensor flag = torch::stable::new_empty(crow, {n}, ScalarType::Long);
  Tensor ids = torch::stable::new_empty(crow, {n}, ScalarType::Long);
  launch_kernel(cluster::dbscan_flag_kernel, grid, kThreads, stream, lab, first_p, n, flag.mutable_data_ptr<int64_t>());
  UVIREID_LAUNCH_CHECK();
  size_t bytes = 0;
  UVIREID_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, bytes, flag.const_data_ptr<int64_t>(),
                                                   ids.mutable_data_ptr<int64_t>(), n, stream));
  Tensor tmp = byte_buffer(crow, bytes);
  UVIREID_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(tmp.mutable_data_ptr(), bytes, flag.const_data_ptr<int64_t>(),
                                                   ids.mutable_data_ptr<int64_t>(), n, stream));
  launch_kernel(cluster::dbscan_renumber_kernel, grid, kThreads, stream, lab, first_p, ids.const_data_ptr<int64_t>(),
                n);
  UVIREID_LAUNCH_CHECK();
}

Tensor dbscan_cuda(const Tensor& crow, const Tensor& col, const Tensor& val, double eps, int64_t min_samples) {
  check_dbscan_args(crow, col, val, eps, min_samples);
  DeviceGuard guard(crow.get_device_index());
  cudaStream_t stream = current_stream(crow.get_device_index());
  const int64_t n = crow.numel() - 1;
  {  // validate the structure on the host before any kernel indexes col or val with crow
    const torch::stable::Device cpu(torch::stable::DeviceType::CPU);
    Tensor crow_h = torch::stable::to(crow, cpu), col_h = torch::stable::to(col, cpu);
    check_dbscan_structure(crow_h.const_data_ptr<int64_t>(), col_h.const_data_ptr<int64_t>(), n, col.numel());
  }
  Tensor labels = torch::stable::new_empty(crow, {n}, ScalarType::Long);
  if (n == 0) return labels;
  if (val.scalar_type() == ScalarType::Float) {
    dbscan_launch<float>(crow, col, val, n, eps, min_samples, labels, stream);
  } else {
    dbscan_launch<double>(crow, col, val, n, eps, min_samples, labels, stream);
  }
  return labels;
}

std::tuple<Tensor, Tensor> segmented_kmeans_cuda(const Tensor& x, const Tensor& labels, int64_t num_clusters,
                                                 int64_t n, int64_t max_iter, double tol, int64_t seed) {
  check_kmeans_args(x, labels, num_clusters, n, max_iter, tol);
  DeviceGuard guard(x.get_device_index());
  cudaStream_t stream = current_stream(x.get_device_index());
  const int64_t N = x.size(0), dim = x.size(1);
  Tensor centers = torch::stable::new_empty(x, {num_clusters, n, dim});
  Tensor assign = torch::stable::full({N}, -1.0, ScalarType::Long, std::nullopt, x.device());
  if (N == 0) {
    torch::stable::zero_(centers);
    return {centers, assign};
  }
  const unsigned int grid = grid_for(N, kThreads);

  // Group points by cluster: stable radix sort of (cluster key, index), noise keys sorted last.
  Tensor keys = torch::stable::new_empty(labels, {N});
  Tensor iota = torch::stable::new_empty(labels, {N});
  Tensor keys_sorted = torch::stable::new_empty(labels, {N});
  Tensor members = torch::stable::new_empty(labels, {N});
  Tensor counts = torch::stable::new_zeros(labels, {num_clusters + 1});
  Tensor bad = torch::stable::new_zeros(labels, {1}, ScalarType::Int);
  launch_kernel(
      cluster::kmeans_keys_kernel, grid, kThreads, stream, labels.const_data_ptr<int64_t>(), N, num_clusters,
      keys.mutable_data_ptr<int64_t>(), iota.mutable_data_ptr<int64_t>(),
      reinterpret_cast<unsigned long long*>(counts.mutable_data_ptr<int64_t>()), bad.mutable_data_ptr<int>());
  UVIREID_LAUNCH_CHECK();
  check_kmeans_flags(read_flag(bad, stream), num_clusters);
  if (num_clusters == 0) return {centers, assign};

  int end_bit = 1;
  while (end_bit < 63 && (int64_t{1} << end_bit) <= num_clusters) ++end_bit;
  size_t bytes = 0;
  UVIREID_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      nullptr, bytes, keys.const_data_ptr<int64_t>(), keys_sorted.mutable_data_ptr<int64_t>(),
      iota.const_data_ptr<int64_t>(), members.mutable_data_ptr<int64_t>(), N, 0, end_bit, stream));
  Tensor tmp = byte_buffer(x, bytes);
  UVIREID_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      tmp.mutable_data_ptr(), bytes, keys.const_data_ptr<int64_t>(), keys_sorted.mutable_data_ptr<int64_t>(),
      iota.const_data_ptr<int64_t>(), members.mutable_data_ptr<int64_t>(), N, 0, end_bit, stream));
  // offsets = exclusive sum of the per-cluster counts (the trailing slot makes offsets[C] = #members).
  Tensor offsets = torch::stable::new_empty(labels, {num_clusters + 1});
  size_t scan_bytes = 0;
  UVIREID_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, scan_bytes, counts.const_data_ptr<int64_t>(),
                                                   offsets.mutable_data_ptr<int64_t>(), num_clusters + 1, stream));
  Tensor scan_tmp = byte_buffer(x, scan_bytes);
  UVIREID_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(scan_tmp.mutable_data_ptr(), scan_bytes,
                                                   counts.const_data_ptr<int64_t>(),
                                                   offsets.mutable_data_ptr<int64_t>(), num_clusters + 1, stream));

  if (num_clusters == 0) return {centers, assign};  // every label is -1: nothing to fit
  // A block fits its clusters one after another, so it needs one [n, dim] scratch slice, not one per cluster.
  const unsigned int blocks = static_cast<unsigned int>(std::min<int64_t>(num_clusters, 1 << 16));
  Tensor sums = torch::stable::new_empty(x, {static_cast<int64_t>(blocks), n, dim});
  Tensor cnt = torch::stable::new_empty(labels, {static_cast<int64_t>(blocks), n});
  Tensor d2 = torch::stable::new_empty(x, {N});
  Tensor part = torch::stable::new_empty(labels, {N});
  launch_kernel(
      cluster::segmented_kmeans_kernel, blocks, kThreads, stream, x.const_data_ptr<float>(), dim,
      members.const_data_ptr<int64_t>(), offsets.const_data_ptr<int64_t>(), num_clusters, n, max_iter,
      static_cast<float>(tol), static_cast<uint64_t>(seed), centers.mutable_data_ptr<float>(), sums.mutable_data_ptr<float>(), cnt.mutable_data_ptr<int64_t>(), d2.mutable_data_ptr<float>(),
      part.mutable_data_ptr<int64_t>(), assign.mutable_data_ptr<int64_t>());
  UVIREID_LAUNCH_CHECK();
  return {centers, assign};
}

}  // namespace
}  // namespace uvireid

UVIREID_CUDA_LIBRARY_IMPL(m) {
  m.impl("dbscan", TORCH_BOX(&uvireid::dbscan_cuda));
  m.impl("segmented_kmeans", TORCH_BOX(&uvireid::segmented_kmeans_cuda));
}
