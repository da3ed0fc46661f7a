// CUDA launchers of the distance ops: argument checks, device guard, current stream, launches and
// launch checks. The kernels are in csrc/kernels/distance_kernels.cuh; GEMM, top-k, stable sort and
// cumsum go through torch's dispatcher (cuBLAS / torch's own kernels on the current stream).

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <algorithm>
#include <atomic>
#include <initializer_list>
#include <optional>
#include <utility>
#include <cmath>
#include <string>
#include <vector>

#include "common/aten.h"
#include "common/checks.h"
#include "common/csr.h"
#include "common/cuda_utils.h"
#include "kernels/distance_kernels.cuh"

namespace uvireid {
namespace {

using torch::stable::Tensor;
using namespace uvireid::distance;

constexpr int kThreads = 256;
// Bytes of scratch a row block may take (GEMM block, touched lists), and for the Jaccard
// accumulators, which want many rows per launch to fill the GPU (4 GiB: ~500 rows at N = 1M).
constexpr int64_t kScratchBytes = int64_t{1} << 30;
constexpr int64_t kAccumulatorBytes = int64_t{1} << 32;

Tensor new_tensor(const Tensor& like, std::vector<int64_t> sizes, ScalarType dtype) {
  return torch::stable::new_empty(like, sizes, dtype);
}
Tensor new_zeros(const Tensor& like, std::vector<int64_t> sizes, ScalarType dtype) {
  return torch::stable::new_zeros(like, sizes, dtype);
}

template <class T>
T to_host(const Tensor& t, int64_t index, cudaStream_t stream) {
  T v;
  UVIREID_CUDA_CHECK(cudaMemcpyAsync(&v, t.const_data_ptr<T>() + index, sizeof(T), cudaMemcpyDeviceToHost, stream));
  UVIREID_CUDA_CHECK(cudaStreamSynchronize(stream));
  return v;
}

template <class T>
std::vector<T> to_host_all(const Tensor& t, cudaStream_t stream) {
  std::vector<T> v(t.numel());
  if (!v.empty())
    UVIREID_CUDA_CHECK(cudaMemcpyAsync(v.data(), t.const_data_ptr<T>(), v.size() * sizeof(T),
                                       cudaMemcpyDeviceToHost, stream));
  UVIREID_CUDA_CHECK(cudaStreamSynchronize(stream));
  return v;
}

// Launch and check in one call (launch_kernel: the project's one launch path).
template <class Kernel, class... Args>
void launch(Kernel kernel, unsigned int grid, int threads, cudaStream_t stream, Args... args) {
  launch_kernel(kernel, grid, threads, stream, args...);
  UVIREID_LAUNCH_CHECK();
}

// Grid for warp-per-item kernels over `items`.
unsigned int warp_grid(int64_t items) { return grid_for(items * kWarp, kThreads); }

unsigned long long* new_sentinel(const Tensor& like, int64_t value, cudaStream_t stream, Tensor& holder) {
  holder = new_tensor(like, {1}, ScalarType::Long);
  UVIREID_CUDA_CHECK(cudaMemcpyAsync(holder.mutable_data_ptr<int64_t>(), &value, sizeof(int64_t),
                                     cudaMemcpyHostToDevice, stream));
  return reinterpret_cast<unsigned long long*>(holder.mutable_data_ptr<int64_t>());
}

void check_features_cuda(const char* op, const Tensor& x, cudaStream_t stream) {
  check_dim(op, "features", x, 2);
  check_dtype(op, "features", x, ScalarType::Float);
  if (x.numel() == 0) return;
  Tensor holder;
  unsigned long long* first = new_sentinel(x, x.size(0), stream, holder);
  launch(first_nonfinite_row_kernel, grid_for(x.numel(), kThreads), kThreads, stream, x.const_data_ptr<float>(),
         x.size(0), x.size(1), first);
  const int64_t bad = to_host<int64_t>(holder, 0, stream);
  STD_TORCH_CHECK(bad == x.size(0), op, ": features row ", bad, " is not finite (NaN or Inf)");
}

void check_index_range(const char* op, const char* arg, const Tensor& v, int64_t n, cudaStream_t stream) {
  if (v.numel() == 0) return;
  Tensor holder;
  unsigned long long* first = new_sentinel(v, v.numel(), stream, holder);
  launch(first_out_of_range_kernel, grid_for(v.numel(), kThreads), kThreads, stream, v.const_data_ptr<int64_t>(),
         v.numel(), n, first);
  const int64_t pos = to_host<int64_t>(holder, 0, stream);
  if (pos == v.numel()) return;
  const int64_t value = to_host<int64_t>(v, pos, stream);
  if (std::string(arg) == "col") fail_csr_column(op, pos, value, n);
  STD_TORCH_CHECK(false, op, ": ", arg, " holds index ", value, " at flat position ", pos, ", outside [0, ", n, ")");
}

void check_rank_cuda(const char* op, const Tensor& rank, const Tensor& x_like, int64_t n, int64_t min_cols,
                     const char* what, cudaStream_t stream) {
  check_dim(op, "rank", rank, 2);
  check_dtype(op, "rank", rank, ScalarType::Long);
  check_same_device(op, "rank", rank, "the first argument", x_like);
  check_size(op, "rank", rank, 0, n);
  STD_TORCH_CHECK(rank.size(1) >= min_cols, op, ": rank has ", rank.size(1), " columns but ", what, " = ", min_cols,
                  " needs at least that many");
  check_index_range(op, "rank", rank, n, stream);
}

CsrView check_csr_cuda(const char* op, const Tensor& crow, const Tensor& col, const Tensor& val, cudaStream_t stream) {
  check_csr_shapes(op, crow, col, val);
  const int64_t n = crow.numel() - 1, nnz = col.numel();
  const int64_t first = to_host<int64_t>(crow, 0, stream), last = to_host<int64_t>(crow, n, stream);
  check_csr_ends(op, first, last, nnz);
  if (n > 0) {
    Tensor holder;
    unsigned long long* bad = new_sentinel(crow, n, stream, holder);
    launch(first_decreasing_kernel, grid_for(n, kThreads), kThreads, stream, crow.const_data_ptr<int64_t>(), n, bad);
    const int64_t row = to_host<int64_t>(holder, 0, stream);
    if (row != n) fail_csr_decreasing(op, row, to_host<int64_t>(crow, row, stream), to_host<int64_t>(crow, row + 1, stream));
  }
  check_index_range(op, "col", col, n, stream);
  return {crow.const_data_ptr<int64_t>(), col.const_data_ptr<int64_t>(), val.const_data_ptr<float>(), nnz};
}

// Every tensor argument of a CUDA op must be on the same CUDA device as the first; checked before
// anything touches device memory.
void check_on_device(const char* op, std::initializer_list<std::pair<const char*, const Tensor*>> args) {
  const auto& [first_name, first] = *args.begin();
  STD_TORCH_CHECK(on_kernel_device(*first), op, ": expected ", first_name, " on a CUDA device (another argument is)");
  for (const auto& [name, t] : args) check_same_device(op, name, *t, first_name, *first);
}

void check_probability_rows_cuda(const char* op, const Tensor& crow, const Tensor& val, cudaStream_t stream) {
  const int64_t n = crow.numel() - 1;
  if (n == 0) return;
  Tensor val_holder, row_holder;
  unsigned long long* first_val = new_sentinel(val, val.numel(), stream, val_holder);
  unsigned long long* first_row = new_sentinel(val, n, stream, row_holder);
  launch(probability_rows_kernel, warp_grid(n), kThreads, stream, crow.const_data_ptr<int64_t>(),
         val.const_data_ptr<float>(), n, kRowSumTolerance, first_val, first_row);
  const int64_t p = to_host<int64_t>(val_holder, 0, stream), i = to_host<int64_t>(row_holder, 0, stream);
  STD_TORCH_CHECK(p == val.numel(), op, ": val[", p, "] = ", to_host<float>(val, p, stream),
                  " is not a probability (expected rows of non-negative weights summing to 1)");
  STD_TORCH_CHECK(i == n, op, ": row ", i, " sums to more than 1; expected rows of non-negative weights summing to 1");
}

// CSR from int32 row counts: crow = [0, cumsum(counts)].
Tensor crow_from_counts(const Tensor& counts32, int64_t n, cudaStream_t stream) {
  Tensor ends = aten::cumsum_long(counts32);
  Tensor crow = new_tensor(counts32, {n + 1}, ScalarType::Long);
  launch(crow_from_ends_kernel, grid_for(n + 1, kThreads), kThreads, stream, ends.const_data_ptr<int64_t>(), n,
         crow.mutable_data_ptr<int64_t>());
  return crow;
}

// ---------------------------------------------------------------------------------------------- knn

// Device copy of a host index list (synchronised: the host vector may go right after).
Tensor rows_to_device(const std::vector<int64_t>& rows, const Tensor& like, cudaStream_t stream) {
  Tensor out = new_tensor(like, {std::max<int64_t>(1, static_cast<int64_t>(rows.size()))}, ScalarType::Long);
  if (!rows.empty())
    UVIREID_CUDA_CHECK(cudaMemcpyAsync(out.mutable_data_ptr<int64_t>(), rows.data(), rows.size() * sizeof(int64_t),
                                       cudaMemcpyHostToDevice, stream));
  UVIREID_CUDA_CHECK(cudaStreamSynchronize(stream));
  return out;
}

// The GEMM of one block of a candidate tier: bf16 rows through aten::mm.dtype (float32 output), or,
// where that overload is missing, float32 copies of the same values (exact in TF32 too); float64
// rows through matmul.
// Whether aten::mm.dtype takes bf16 inputs on this device: probed once per device and process on a
// 1x1 product, so that a failure on real data (out of memory, say) is reported as such instead of
// switching paths.
bool mm_dtype_available(const Tensor& like) {
  static std::atomic<int> state[64] = {};  // 0 unknown, 1 works, 2 missing
  const int32_t device = like.get_device_index();
  if (device < 0 || device >= 64) return aten::mm_float_works(new_zeros(like, {1, 1}, ScalarType::BFloat16));
  if (state[device] == 0)
    state[device] = aten::mm_float_works(new_zeros(like, {1, 1}, ScalarType::BFloat16)) ? 1 : 2;
  return state[device] == 1;
}

struct TierGemm {
  Tensor h, ht;  // [n, D] bf16 or float64, and its transpose
  bool bf16 = false;
  Tensor hft;    // transposed float32 copy of h, where aten::mm.dtype is missing
  Tensor operator()(const Tensor& a) {
    if (!bf16) return torch::stable::matmul(a, ht);
    if (mm_dtype_available(h)) return aten::mm_float(a, ht);
    if (!hft.defined()) hft = torch::stable::transpose(torch::stable::to(h, ScalarType::Float), 0, 1);
    return torch::stable::matmul(torch::stable::to(a, ScalarType::Float), hft);
  }
};

// One candidate tier over the rows listed in `rows` (every row when null; `total` of them): per
// block, the GEMM, lower bounds, the `cand` smallest, their exact keys, and the top k written where
// the bound proves them (kernels/distance.cuh). Returns the rows it could not prove.
std::vector<int64_t> knn_tier_cuda(const Tensor& x, TierGemm& gemm, const int64_t* rows, int64_t total,
                                   const double* sq, SplitNorms nrm, TierBound tb, int64_t cand, int64_t k,
                                   Tensor& idx, Tensor& dist, cudaStream_t stream) {
  const int64_t n = x.size(0), dim = x.size(1);
  // per block row: the GEMM row, and topk's values, indices and sort space plus the exact keys per candidate
  const int64_t row_bytes = static_cast<int64_t>(gemm.bf16 ? sizeof(float) : sizeof(double)) * n + 40 * cand;
  const int64_t block = std::max<int64_t>(1, std::min<int64_t>(total, kScratchBytes / row_bytes));
  Tensor flags = new_zeros(x, {n}, ScalarType::Int);
  Tensor h = gemm.h;
  for (int64_t r0 = 0; r0 < total; r0 += block) {
    const int64_t rb = std::min(block, total - r0);
    Tensor a = torch::stable::narrow(h, 0, r0, rb);
    if (rows != nullptr) {
      a = new_tensor(h, {rb, dim}, h.scalar_type());
      if (gemm.bf16)
        launch(gather_rows_kernel<uint16_t>, grid_for(rb * dim, kThreads), kThreads, stream,
               static_cast<const uint16_t*>(h.data_ptr()), dim, rows, r0, rb, static_cast<uint16_t*>(a.data_ptr()));
      else
        launch(gather_rows_kernel<double>, grid_for(rb * dim, kThreads), kThreads, stream, h.const_data_ptr<double>(),
               dim, rows, r0, rb, a.mutable_data_ptr<double>());
    }
    Tensor g = torch::stable::contiguous(gemm(a));
    const dim3 grid(grid_for(n, kThreads, 1024),
                    static_cast<unsigned int>(std::min<int64_t>((rb + kLowerRows - 1) / kLowerRows, 65535)));
    if (gemm.bf16)
      launch_kernel(lower_bound_kernel<float>, grid, kThreads, stream, g.mutable_data_ptr<float>(), rows, r0, rb, n, sq,
                    nrm, tb);
    else
      launch_kernel(lower_bound_kernel<double>, grid, kThreads, stream, g.mutable_data_ptr<double>(), rows, r0, rb, n,
                    sq, nrm, tb);
    UVIREID_LAUNCH_CHECK();
    auto [bound, cidx] = aten::topk_smallest(g, cand);
    bound = torch::stable::contiguous(bound);
    cidx = torch::stable::contiguous(cidx);
    Tensor exact = new_tensor(x, {rb, cand}, ScalarType::Double);
    launch(exact_candidates_kernel, warp_grid(rb * cand), kThreads, stream, x.const_data_ptr<float>(), dim,
           cidx.const_data_ptr<int64_t>(), rows, r0, rb, cand, exact.mutable_data_ptr<double>());
    if (gemm.bf16)
      launch(select_candidates_kernel<float>, warp_grid(rb), kThreads, stream, exact.const_data_ptr<double>(),
             cidx.const_data_ptr<int64_t>(), bound.const_data_ptr<float>(), rows, r0, rb, cand, k, n,
             idx.mutable_data_ptr<int64_t>(), dist.mutable_data_ptr<float>(), flags.mutable_data_ptr<int32_t>());
    else
      launch(select_candidates_kernel<double>, warp_grid(rb), kThreads, stream, exact.const_data_ptr<double>(),
             cidx.const_data_ptr<int64_t>(), bound.const_data_ptr<double>(), rows, r0, rb, cand, k, n,
             idx.mutable_data_ptr<int64_t>(), dist.mutable_data_ptr<float>(), flags.mutable_data_ptr<int32_t>());
  }
  std::vector<int32_t> host_flags = to_host_all<int32_t>(flags, stream);
  std::vector<int64_t> left;
  for (int64_t i = 0; i < n; ++i)
    if (host_flags[i]) left.push_back(i);
  return left;
}

std::tuple<Tensor, Tensor> knn_cuda(Tensor x, int64_t k, std::string candidates) {
  const char* op = "knn";
  const Tier first = check_choice(op, "candidates", candidates, {"bf16", "fp64"}) == 0 ? Tier::Bf16 : Tier::Fp64;
  DeviceGuard guard(x.get_device_index());
  cudaStream_t stream = current_stream(x.get_device_index());
  x = torch::stable::contiguous(x);
  const int64_t n = x.dim() == 2 ? x.size(0) : 0, dim = x.dim() == 2 ? x.size(1) : 0;
  check_dim(op, "features", x, 2);
  check_neighbours(op, "k", k, n);
  check_features_cuda(op, x, stream);
  Tensor idx = new_tensor(x, {n, k}, ScalarType::Long);
  Tensor dist = new_tensor(x, {n, k}, ScalarType::Float);
  if (n == 0) return {idx, dist};
  const float* xp = x.const_data_ptr<float>();
  Tensor norms = new_zeros(x, {3, n}, ScalarType::Double);  // sq, |x|, and zeros (|l| of the fp64 tier)
  double* sq = norms.mutable_data_ptr<double>();
  double* nx = sq + n;
  launch(row_norms_kernel, warp_grid(n), kThreads, stream, xp, n, dim, sq, nx);

  // Tiers: bf16 GEMM for every row, fp64 GEMM for the rows it cannot prove, an exact ranking of the
  // whole row for what is left (many exact ties).
  std::vector<int64_t> left;
  bool all_rows = true;
  if (first == Tier::Bf16) {
    TierGemm gemm;
    gemm.bf16 = true;
    gemm.h = new_tensor(x, {n, dim}, ScalarType::BFloat16);
    gemm.ht = torch::stable::transpose(gemm.h, 0, 1);
    Tensor split = new_tensor(x, {2, n}, ScalarType::Double);
    double* nh = split.mutable_data_ptr<double>();
    launch(split_bf16_kernel, warp_grid(n), kThreads, stream, xp, n, dim, static_cast<uint16_t*>(gemm.h.data_ptr()),
           nh, nh + n);
    left = knn_tier_cuda(x, gemm, nullptr, n, sq, {nx, nh, nh + n}, tier_bound(Tier::Bf16, dim),
                         tier_candidates(Tier::Bf16, k, n), k, idx, dist, stream);
    all_rows = false;
  }
  if (all_rows || !left.empty()) {
    TierGemm gemm;
    gemm.h = new_tensor(x, {n, dim}, ScalarType::Double);
    launch(to_double_kernel, grid_for(n * dim, kThreads), kThreads, stream, xp, gemm.h.mutable_data_ptr<double>(),
           n * dim);
    gemm.ht = torch::stable::transpose(gemm.h, 0, 1);
    Tensor rows = rows_to_device(left, x, stream);
    left = knn_tier_cuda(x, gemm, all_rows ? nullptr : rows.const_data_ptr<int64_t>(),
                         all_rows ? n : static_cast<int64_t>(left.size()), sq, {nx, nx, nx + n},
                         tier_bound(Tier::Fp64, dim), tier_candidates(Tier::Fp64, k, n), k, idx, dist, stream);
  }
  const int64_t batch = std::max<int64_t>(1, kScratchBytes / 16 / n);
  for (size_t f0 = 0; f0 < left.size(); f0 += batch) {
    const int64_t nf = std::min<int64_t>(batch, static_cast<int64_t>(left.size() - f0));
    Tensor rows = rows_to_device(std::vector<int64_t>(left.begin() + f0, left.begin() + f0 + nf), x, stream);
    Tensor full = new_tensor(x, {nf, n}, ScalarType::Double);
    launch(exact_rows_kernel, warp_grid(nf * n), kThreads, stream, xp, dim, rows.const_data_ptr<int64_t>(), nf, n,
           full.mutable_data_ptr<double>());
    auto [sorted, order] = aten::sort_stable(full);
    launch(scatter_ranked_rows_kernel, grid_for(nf * k, kThreads), kThreads, stream, sorted.const_data_ptr<double>(),
           order.const_data_ptr<int64_t>(), rows.const_data_ptr<int64_t>(), nf, n, k, idx.mutable_data_ptr<int64_t>(),
           dist.mutable_data_ptr<float>());
  }
  return {idx, dist};
}

// ------------------------------------------------------------------------------ k-reciprocal encoding

std::tuple<Tensor, Tensor, Tensor> k_reciprocal_encode_cuda(Tensor x, Tensor rank, std::optional<Tensor> rank_dist,
                                                            int64_t k1) {
  const char* op = "k_reciprocal_encode";
  if (rank_dist.has_value())
    check_on_device(op, {{"features", &x}, {"rank", &rank}, {"rank_dist", &*rank_dist}});
  else
    check_on_device(op, {{"features", &x}, {"rank", &rank}});
  DeviceGuard guard(x.get_device_index());
  cudaStream_t stream = current_stream(x.get_device_index());
  x = torch::stable::contiguous(x);
  check_dim(op, "features", x, 2);
  const int64_t n = x.size(0), dim = x.size(1);
  check_neighbours(op, "k1", k1, n);
  check_features_cuda(op, x, stream);
  rank = torch::stable::contiguous(rank);
  check_rank_cuda(op, rank, x, n, k1, "k1", stream);
  const int64_t K = rank.size(1), mh = std::min(half_round_even(k1) + 1, k1);
  const float* rdp = nullptr;
  Tensor sq = new_tensor(x, {std::max<int64_t>(1, n)}, ScalarType::Double);
  if (rank_dist.has_value()) {
    Tensor rd = torch::stable::contiguous(*rank_dist);
    check_dtype(op, "rank_dist", rd, ScalarType::Float);
    STD_TORCH_CHECK(rd.dim() == 2 && rd.size(0) == n && rd.size(1) == K, op,
                    ": expected rank_dist of the shape of rank [", n, ", ", K, "]");
    rank_dist = rd;
    rdp = rd.const_data_ptr<float>();
    if (n > 0)
      launch(row_norms_kernel, warp_grid(n), kThreads, stream, x.const_data_ptr<float>(), n, dim,
             sq.mutable_data_ptr<double>(), static_cast<double*>(nullptr));
  }
  Tensor r1 = new_tensor(x, {n, k1}, ScalarType::Int), rh = new_tensor(x, {n, k1}, ScalarType::Int);
  Tensor n1 = new_tensor(x, {n}, ScalarType::Int), nh = new_tensor(x, {n}, ScalarType::Int);
  Tensor counts = new_tensor(x, {n}, ScalarType::Long);
  if (n > 0)
    launch(reciprocal_sets_kernel, grid_for(n, 128), 128, stream, rank.const_data_ptr<int64_t>(), K, n, k1, mh,
           r1.mutable_data_ptr<int32_t>(), n1.mutable_data_ptr<int32_t>(), rh.mutable_data_ptr<int32_t>(),
           nh.mutable_data_ptr<int32_t>());
  const int64_t cap = k1 * (k1 + 1);
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(n, kScratchBytes / 4 / cap));
  Tensor scratch = new_tensor(x, {std::max<int64_t>(1, chunk * cap)}, ScalarType::Int);
  auto expand = [&](const int64_t* crow, int64_t* col) {
    for (int64_t r0 = 0; r0 < n; r0 += chunk)
      launch(expanded_sets_kernel, grid_for(std::min(chunk, n - r0), 128), 128, stream, r1.const_data_ptr<int32_t>(),
             n1.const_data_ptr<int32_t>(), rh.const_data_ptr<int32_t>(), nh.const_data_ptr<int32_t>(), k1, r0,
             std::min(chunk, n - r0), cap, scratch.mutable_data_ptr<int32_t>(), counts.mutable_data_ptr<int64_t>(),
             crow, col);
  };
  expand(nullptr, nullptr);  // sizes
  Tensor crow = new_tensor(x, {n + 1}, ScalarType::Long);
  if (n > 0) {
    Tensor ends = aten::cumsum_long(counts);
    launch(crow_from_ends_kernel, grid_for(n + 1, kThreads), kThreads, stream, ends.const_data_ptr<int64_t>(), n,
           crow.mutable_data_ptr<int64_t>());
  } else {
    UVIREID_CUDA_CHECK(cudaMemsetAsync(crow.mutable_data_ptr<int64_t>(), 0, sizeof(int64_t), stream));
  }
  const int64_t nnz = to_host<int64_t>(crow, n, stream);
  Tensor col = new_tensor(x, {nnz}, ScalarType::Long), val = new_tensor(x, {nnz}, ScalarType::Float);
  expand(crow.const_data_ptr<int64_t>(), col.mutable_data_ptr<int64_t>());  // sorted columns
  Tensor dscratch = new_tensor(x, {std::max<int64_t>(1, nnz)}, ScalarType::Double);
  if (n > 0)
    launch(encode_weights_kernel, warp_grid(n), kThreads, stream, x.const_data_ptr<float>(), dim, n,
           crow.const_data_ptr<int64_t>(), col.const_data_ptr<int64_t>(), rank.const_data_ptr<int64_t>(), rdp, K,
           sq.const_data_ptr<double>(), dscratch.mutable_data_ptr<double>(), val.mutable_data_ptr<float>());
  return {crow, col, val};
}

// ---------------------------------------------------------------------------------- query expansion

std::tuple<Tensor, Tensor, Tensor> query_expansion_cuda(Tensor crow, Tensor col, Tensor val, Tensor rank, Tensor outer,
                                                        Tensor inner, int64_t pool, int64_t cap) {
  const char* op = "query_expansion";
  check_on_device(op, {{"crow", &crow}, {"col", &col}, {"val", &val}, {"rank", &rank}, {"outer", &outer},
                       {"inner", &inner}});
  DeviceGuard guard(crow.get_device_index());
  cudaStream_t stream = current_stream(crow.get_device_index());
  check_csr_cuda(op, crow, col, val, stream);
  const int64_t n = crow.numel() - 1;
  check_neighbours(op, "pool", pool, n);
  STD_TORCH_CHECK(cap >= 1, op, ": cap must be >= 1, got ", cap);
  rank = torch::stable::contiguous(rank);
  check_rank_cuda(op, rank, crow, n, pool, "pool", stream);
  outer = torch::stable::contiguous(outer);
  inner = torch::stable::contiguous(inner);
  for (auto [arg, ids] : {std::pair<const char*, const Tensor*>{"outer", &outer}, {"inner", &inner}}) {
    check_dim(op, arg, *ids, 1);
    check_dtype(op, arg, *ids, ScalarType::Long);
    check_same_device(op, arg, *ids, "crow", crow);
    check_size(op, arg, *ids, 0, n);
  }
  if (n == 0)
    return {torch::stable::clone(crow), new_tensor(crow, {0}, ScalarType::Long), new_tensor(crow, {0}, ScalarType::Float)};
  const int64_t K = rank.size(1);
  Tensor members = new_tensor(crow, {n, pool}, ScalarType::Int);
  Tensor weights = new_tensor(crow, {n, pool}, ScalarType::Double);
  Tensor nmembers = new_tensor(crow, {n}, ScalarType::Int);
  Tensor scratch = new_tensor(crow, {n, 4 * pool}, ScalarType::Long);
  Tensor sizes = new_tensor(crow, {n}, ScalarType::Long);
  launch(expansion_members_kernel, grid_for(n, 128), 128, stream, rank.const_data_ptr<int64_t>(), K,
         outer.const_data_ptr<int64_t>(), inner.const_data_ptr<int64_t>(), n, pool, cap, crow.const_data_ptr<int64_t>(),
         members.mutable_data_ptr<int32_t>(), weights.mutable_data_ptr<double>(), nmembers.mutable_data_ptr<int32_t>(),
         scratch.mutable_data_ptr<int64_t>(), sizes.mutable_data_ptr<int64_t>());
  Tensor ends = aten::cumsum_long(sizes);
  const int64_t total = to_host<int64_t>(ends, n - 1, stream);
  if (total == 0)  // every member row is empty: so is every expanded row
    return {new_zeros(crow, {n + 1}, ScalarType::Long), new_tensor(crow, {0}, ScalarType::Long),
            new_tensor(crow, {0}, ScalarType::Float)};
  Tensor keys = new_tensor(crow, {total}, ScalarType::Long), vals = new_tensor(crow, {total}, ScalarType::Double);
  launch(expansion_gather_kernel, warp_grid(n), kThreads, stream, n, pool, members.const_data_ptr<int32_t>(),
         weights.const_data_ptr<double>(), nmembers.const_data_ptr<int32_t>(), crow.const_data_ptr<int64_t>(),
         col.const_data_ptr<int64_t>(), val.const_data_ptr<float>(), ends.const_data_ptr<int64_t>(),
         keys.mutable_data_ptr<int64_t>(), vals.mutable_data_ptr<double>());
  // Stable: equal keys keep member order, so every sum runs in the same order on every run.
  auto [sorted, order] = aten::sort_stable(keys);
  Tensor heads = new_tensor(crow, {total}, ScalarType::Long);
  launch(run_heads_kernel, grid_for(total, kThreads), kThreads, stream, sorted.const_data_ptr<int64_t>(), total,
         heads.mutable_data_ptr<int64_t>());
  Tensor run_ends = aten::cumsum_long(heads);
  const int64_t nnz = to_host<int64_t>(run_ends, total - 1, stream);
  Tensor ocol = new_tensor(crow, {nnz}, ScalarType::Long), oval = new_tensor(crow, {nnz}, ScalarType::Float);
  Tensor row_counts = new_zeros(crow, {n}, ScalarType::Int);
  launch(reduce_runs_kernel, grid_for(total, kThreads), kThreads, stream, sorted.const_data_ptr<int64_t>(),
         order.const_data_ptr<int64_t>(), vals.const_data_ptr<double>(), heads.const_data_ptr<int64_t>(),
         run_ends.const_data_ptr<int64_t>(), total, n, ocol.mutable_data_ptr<int64_t>(),
         oval.mutable_data_ptr<float>(), row_counts.mutable_data_ptr<int32_t>());
  return {crow_from_counts(row_counts, n, stream), ocol, oval};
}

// ------------------------------------------------------------------------------------------ jaccard

struct CscCuda {
  Tensor colptr, rows, vals;
};

CscCuda transpose_cuda(const Tensor& crow, const Tensor& col, const Tensor& val, int64_t n, cudaStream_t stream) {
  const int64_t nnz = col.numel();
  Tensor keys = new_tensor(crow, {nnz}, ScalarType::Long);
  Tensor col_counts = new_zeros(crow, {n}, ScalarType::Int);
  launch(column_keys_kernel, warp_grid(n), kThreads, stream, crow.const_data_ptr<int64_t>(),
         col.const_data_ptr<int64_t>(), n, keys.mutable_data_ptr<int64_t>(), col_counts.mutable_data_ptr<int32_t>());
  auto [sorted, order] = aten::sort_stable(keys);
  CscCuda t{crow_from_counts(col_counts, n, stream), new_tensor(crow, {nnz}, ScalarType::Int),
            new_tensor(crow, {nnz}, ScalarType::Float)};
  launch(csc_fill_kernel, grid_for(nnz, kThreads), kThreads, stream, sorted.const_data_ptr<int64_t>(),
         order.const_data_ptr<int64_t>(), val.const_data_ptr<float>(), nnz, n, t.rows.mutable_data_ptr<int32_t>(),
         t.vals.mutable_data_ptr<float>());
  return t;
}

// Runs the Jaccard sums chunk by chunk of rows; `emit(row0, rows, acc, touched_start, touched,
// touched_count)` turns each chunk's sums into output and must reset the accumulators it read.
template <class Emit>
void jaccard_chunks(const Tensor& crow, const Tensor& col, const Tensor& val, int64_t n, cudaStream_t stream,
                    const Emit& emit) {
  if (n == 0) return;
  CscCuda t = transpose_cuda(crow, col, val, n, stream);
  Tensor capacity = new_tensor(crow, {n}, ScalarType::Long);
  launch(row_capacity_kernel, grid_for(n, kThreads), kThreads, stream, crow.const_data_ptr<int64_t>(),
         col.const_data_ptr<int64_t>(), t.colptr.const_data_ptr<int64_t>(), n, capacity.mutable_data_ptr<int64_t>());
  std::vector<int64_t> cap = to_host_all<int64_t>(capacity, stream);
  const int64_t max_rows = std::max<int64_t>(1, std::min<int64_t>(n, kAccumulatorBytes / 8 / n));
  Tensor acc = new_zeros(crow, {max_rows, n}, ScalarType::Long);  // zero between chunks: emit resets
  for (int64_t r0 = 0; r0 < n;) {
    // rows of this chunk: at most max_rows, touched lists within the scratch budget (one row at least)
    int64_t rows = 0, touched_total = 0;
    std::vector<int64_t> start;
    while (r0 + rows < n && rows < max_rows &&
           (rows == 0 || (touched_total + std::min(cap[r0 + rows], n)) * 4 <= kScratchBytes)) {
      start.push_back(touched_total);
      touched_total += std::min(cap[r0 + rows], n);
      ++rows;
    }
    Tensor touched_start = new_tensor(crow, {rows}, ScalarType::Long);
    UVIREID_CUDA_CHECK(cudaMemcpyAsync(touched_start.mutable_data_ptr<int64_t>(), start.data(), rows * sizeof(int64_t),
                                       cudaMemcpyHostToDevice, stream));
    Tensor touched = new_tensor(crow, {std::max<int64_t>(1, touched_total)}, ScalarType::Int);
    Tensor touched_count = new_zeros(crow, {rows}, ScalarType::Int);
    unsigned long long* a = reinterpret_cast<unsigned long long*>(acc.mutable_data_ptr<int64_t>());
    launch(jaccard_accumulate_kernel, static_cast<unsigned int>(std::min<int64_t>(rows, 1 << 16)), kThreads, stream,
           crow.const_data_ptr<int64_t>(), col.const_data_ptr<int64_t>(), val.const_data_ptr<float>(),
           t.colptr.const_data_ptr<int64_t>(), t.rows.const_data_ptr<int32_t>(), t.vals.const_data_ptr<float>(), n, r0,
           rows, a, touched_start.const_data_ptr<int64_t>(), touched.mutable_data_ptr<int32_t>(),
           touched_count.mutable_data_ptr<int32_t>());
    emit(r0, rows, a, touched_start, touched, touched_count);
    UVIREID_CUDA_CHECK(cudaStreamSynchronize(stream));  // `start` (host memory) must outlive the copy
    r0 += rows;
  }
}

Tensor jaccard_dense_cuda(Tensor crow, Tensor col, Tensor val) {
  const char* op = "jaccard_dense";
  check_on_device(op, {{"crow", &crow}, {"col", &col}, {"val", &val}});
  DeviceGuard guard(crow.get_device_index());
  cudaStream_t stream = current_stream(crow.get_device_index());
  check_csr_cuda(op, crow, col, val, stream);
  check_probability_rows_cuda(op, crow, val, stream);
  const int64_t n = crow.numel() - 1;
  Tensor out = new_tensor(crow, {n, n}, ScalarType::Float);
  torch::stable::fill_(out, 1.0);  // pairs that share no column
  jaccard_chunks(crow, col, val, n, stream,
                 [&](int64_t r0, int64_t rows, unsigned long long* acc, const Tensor& start, const Tensor& touched,
                     const Tensor& count) {
                   launch(jaccard_emit_kernel, static_cast<unsigned int>(std::min<int64_t>(rows, 1 << 16)), kThreads,
                          stream, n, r0, rows, acc, start.const_data_ptr<int64_t>(), touched.const_data_ptr<int32_t>(),
                          count.const_data_ptr<int32_t>(), out.mutable_data_ptr<float>(), 0.0, false,
                          static_cast<int32_t*>(nullptr), static_cast<const int64_t*>(nullptr),
                          static_cast<int32_t*>(nullptr), static_cast<int64_t*>(nullptr), static_cast<float*>(nullptr));
                 });
  return out;
}

std::tuple<Tensor, Tensor, Tensor> jaccard_sparse_cuda(Tensor crow, Tensor col, Tensor val, double max_distance) {
  const char* op = "jaccard_sparse";
  check_on_device(op, {{"crow", &crow}, {"col", &col}, {"val", &val}});
  DeviceGuard guard(crow.get_device_index());
  cudaStream_t stream = current_stream(crow.get_device_index());
  check_csr_cuda(op, crow, col, val, stream);
  check_probability_rows_cuda(op, crow, val, stream);
  STD_TORCH_CHECK(!std::isnan(max_distance) && max_distance >= 0.0, op, ": max_distance must be >= 0, got ",
                  max_distance);
  const int64_t n = crow.numel() - 1;
  if (max_distance >= 1.0) {  // every pair qualifies (pairs sharing no column have d = 1)
    Tensor dense = jaccard_dense_cuda(crow, col, val);
    Tensor ocrow = new_tensor(crow, {n + 1}, ScalarType::Long);
    Tensor ocol = new_tensor(crow, {n * n}, ScalarType::Long), oval = new_tensor(crow, {n * n}, ScalarType::Float);
    launch(dense_to_full_csr_kernel, grid_for(std::max<int64_t>(1, n * n), kThreads), kThreads, stream,
           dense.const_data_ptr<float>(), n, ocrow.mutable_data_ptr<int64_t>(), ocol.mutable_data_ptr<int64_t>(),
           oval.mutable_data_ptr<float>());
    return {ocrow, ocol, oval};
  }
  // Per chunk: count the kept pairs, then write them (both directions) and reset the sums.
  std::vector<Tensor> chunk_keys, chunk_vals;
  int64_t total = 0;
  jaccard_chunks(
      crow, col, val, n, stream,
      [&](int64_t r0, int64_t rows, unsigned long long* acc, const Tensor& start, const Tensor& touched,
          const Tensor& count) {
        const unsigned int grid = static_cast<unsigned int>(std::min<int64_t>(rows, 1 << 16));
        Tensor kept = new_zeros(crow, {rows}, ScalarType::Int);
        launch(jaccard_emit_kernel, grid, kThreads, stream, n, r0, rows, acc, start.const_data_ptr<int64_t>(),
               touched.const_data_ptr<int32_t>(), count.const_data_ptr<int32_t>(), static_cast<float*>(nullptr),
               max_distance, true, kept.mutable_data_ptr<int32_t>(), static_cast<const int64_t*>(nullptr),
               static_cast<int32_t*>(nullptr), static_cast<int64_t*>(nullptr), static_cast<float*>(nullptr));
        Tensor ends = aten::cumsum_long(kept);
        const int64_t m = to_host<int64_t>(ends, rows - 1, stream);
        Tensor out_start = new_tensor(crow, {rows}, ScalarType::Long);
        launch(crow_from_ends_kernel, grid_for(rows, kThreads), kThreads, stream, ends.const_data_ptr<int64_t>(),
               rows - 1, out_start.mutable_data_ptr<int64_t>());  // exclusive starts: [0, ends[0], ...]
        Tensor cursor = new_zeros(crow, {rows}, ScalarType::Int);
        Tensor keys = new_tensor(crow, {m}, ScalarType::Long), vals = new_tensor(crow, {m}, ScalarType::Float);
        launch(jaccard_emit_kernel, grid, kThreads, stream, n, r0, rows, acc, start.const_data_ptr<int64_t>(),
               touched.const_data_ptr<int32_t>(), count.const_data_ptr<int32_t>(), static_cast<float*>(nullptr),
               max_distance, false, static_cast<int32_t*>(nullptr), out_start.const_data_ptr<int64_t>(),
               cursor.mutable_data_ptr<int32_t>(), keys.mutable_data_ptr<int64_t>(), vals.mutable_data_ptr<float>());
        chunk_keys.push_back(keys);
        chunk_vals.push_back(vals);
        total += m;
      });
  Tensor keys = new_tensor(crow, {total}, ScalarType::Long), vals = new_tensor(crow, {total}, ScalarType::Float);
  int64_t at = 0;
  for (size_t c = 0; c < chunk_keys.size(); ++c) {
    const int64_t m = chunk_keys[c].numel();
    if (m == 0) continue;
    UVIREID_CUDA_CHECK(cudaMemcpyAsync(keys.mutable_data_ptr<int64_t>() + at, chunk_keys[c].const_data_ptr<int64_t>(),
                                       m * sizeof(int64_t), cudaMemcpyDeviceToDevice, stream));
    UVIREID_CUDA_CHECK(cudaMemcpyAsync(vals.mutable_data_ptr<float>() + at, chunk_vals[c].const_data_ptr<float>(),
                                       m * sizeof(float), cudaMemcpyDeviceToDevice, stream));
    at += m;
  }
  auto [sorted, order] = aten::sort_stable(keys);  // keys are unique: rows, then columns ascending
  Tensor ocol = new_tensor(crow, {total}, ScalarType::Long), oval = new_tensor(crow, {total}, ScalarType::Float);
  Tensor row_counts = new_zeros(crow, {n}, ScalarType::Int);
  if (total > 0)
    launch(keys_to_csr_kernel, grid_for(total, kThreads), kThreads, stream, sorted.const_data_ptr<int64_t>(),
           order.const_data_ptr<int64_t>(), vals.const_data_ptr<float>(), total, n, ocol.mutable_data_ptr<int64_t>(),
           oval.mutable_data_ptr<float>(), row_counts.mutable_data_ptr<int32_t>());
  Tensor ocrow = n > 0 ? crow_from_counts(row_counts, n, stream) : new_zeros(crow, {1}, ScalarType::Long);
  return {ocrow, ocol, oval};
}

}  // namespace
}  // namespace uvireid

UVIREID_CUDA_LIBRARY_IMPL(m) {
  m.impl("knn", TORCH_BOX(&uvireid::knn_cuda));
  m.impl("k_reciprocal_encode", TORCH_BOX(&uvireid::k_reciprocal_encode_cuda));
  m.impl("query_expansion", TORCH_BOX(&uvireid::query_expansion_cuda));
  m.impl("jaccard_dense", TORCH_BOX(&uvireid::jaccard_dense_cuda));
  m.impl("jaccard_sparse", TORCH_BOX(&uvireid::jaccard_sparse_cuda));
}
