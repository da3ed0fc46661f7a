// The one schema block of uvireid_ext: every op's signature in one place. Kernels register per
// backend next to their code (csrc/cpu/<family>_cpu.cpp, csrc/cuda/<family>_cuda.cu, one file per
// family and backend) with STABLE_TORCH_LIBRARY_IMPL.
// Fake (meta) kernels and autograd live in Python (uvireid_ext/ops/*.py).

#include <torch/csrc/stable/library.h>

#ifdef UVIREID_PYTHON_MODULE
#include <Python.h>

// Importing uvireid_ext._C runs the static registrations below; no pybind needed.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
#endif

STABLE_TORCH_LIBRARY(uvireid_ext, m) {
  // ---- distances: kNN, k-reciprocal encoding, query expansion, Jaccard (*/distance_*) ----
  // knn: [N, D] float -> (indices [N, k] int64, squared distances [N, k] float32), self included,
  // ties to the lower index. candidates: the GEMM tier that proposes candidates ("bf16": fast, its
  // unproven rows retried in fp64; "fp64"); the result is the same either way.
  m.def("knn(Tensor x, int k, str candidates=\"bf16\") -> (Tensor, Tensor)");
  // k-reciprocal encoding V as CSR (crow [N+1], col [nnz], val [nnz]); rank = knn indices [N, >=k1];
  // rank_dist = knn's squared distances (optional: dot products of ranked pairs come from them).
  m.def("k_reciprocal_encode(Tensor x, Tensor rank, Tensor? rank_dist, int k1) -> (Tensor, Tensor, Tensor)");
  // query expansion of V over the first `pool` ranked neighbours: at most `cap` per (outer, inner)
  // group, mean per inner group, equal-weight mean per outer group, then over outer groups.
  m.def(
      "query_expansion(Tensor crow, Tensor col, Tensor val, Tensor rank, Tensor outer, Tensor inner, "
      "int pool, int cap) -> (Tensor, Tensor, Tensor)");
  m.def("jaccard_dense(Tensor crow, Tensor col, Tensor val) -> Tensor");
  m.def(
      "jaccard_sparse(Tensor crow, Tensor col, Tensor val, float max_distance) -> (Tensor, Tensor, Tensor)");

  // ---- clustering: DBSCAN on sparse distances, segmented k-means (*/cluster_*) ----
  // dbscan: CSR distances (crow [N+1] int64, col [nnz] int64, val [nnz] float32/64) -> labels [N] int64;
  // entries with d > eps ignored, self always a neighbour; scikit-learn's core points and clusters,
  // border points to the nearest core neighbour, noise -1, ids by first appearance.
  m.def("dbscan(Tensor crow, Tensor col, Tensor val, float eps, int min_samples) -> Tensor");
  // segmented_kmeans: x [N, D] float32, labels [N] int64 in [-1, C) -> (centres [C, n, D] float32,
  // sub-centre of each point [N] int64, -1 for noise); seeded k-means++-style, see kernels/cluster.cuh.
  m.def(
      "segmented_kmeans(Tensor x, Tensor labels, int num_clusters, int n, int max_iter, float tol, int seed) "
      "-> (Tensor, Tensor)");

  // ---- memories and losses: memory_update_, segment_reduce, mmd2 (*/memory_*, */mmd_*) ----
  // memory_update_: in place, batch order: for b with labels[b] >= 0, c = m*c + (1-m)*x_b then
  // c = c/|c| (c = memory[labels[b]]). hard: per label only the sample with the lowest cosine to c.
  m.def("memory_update_(Tensor(a!) memory, Tensor features, Tensor labels, float momentum, bool hard) -> ()");
  // segment_reduce: [N, D] rows into [S, D] by segments [N] int64 (-1 = skip). mode "mean",
  // "weighted_mean": sum(w x)/sum(w), "weighted_sum_by_count": sum(w x)/count (MMM); empty segments
  // give zero rows; optional L2 norm.
  m.def(
      "segment_reduce(Tensor x, Tensor segments, Tensor? weights, int num_segments, str mode, bool normalize) "
      "-> Tensor");
  // mmd2: per group g, mean K(x,x) + mean K(y,y) - 2 mean K(x,y), K = sum_s exp(-|a-b|^2 / bw_s).
  // bandwidths [S] given, or per group base * mul^(s - num//2) with base = mean off-diagonal
  // squared distance of the pooled set. Returns (mmd2 [G], valid [G] bool, bandwidths used [G, S]).
  m.def(
      "mmd2(Tensor x, Tensor y, Tensor x_groups, Tensor y_groups, int num_groups, Tensor? bandwidths, "
      "float kernel_mul, int kernel_num) -> (Tensor, Tensor, Tensor)");
  // _mmd2_backward: mmd2's backward (private: autograd calls it), (grad_x, grad_y) for upstream
  // grad [G] and the bandwidths [G, S] used forward.
  m.def(
      "_mmd2_backward(Tensor grad, Tensor x, Tensor y, Tensor x_groups, Tensor y_groups, Tensor bandwidths) "
      "-> (Tensor, Tensor)");
}
