// Host-side grouping of rows by an int64 label, shared by the memory and MMD ops (CPU and CUDA
// launchers). Torch-free. The CUDA launchers group on the host on purpose: labels are small (a
// batch, or one epoch's pseudo-labels), the copy gives exact range errors, and a stable counting
// sort fixes the order in which each group's members are visited, so results are deterministic.
#pragma once

#include <cstdint>
#include <vector>

namespace uvireid {

// segment_reduce's reductions; the schema takes them by name (segment_mode_names, same order).
enum SegmentMode : int {
  kSegmentMean = 0,                // sum(x) / count
  kSegmentWeightedMean = 1,        // sum(w x) / sum(w)
  kSegmentWeightedSumByCount = 2,  // sum(w x) / count (MMM's prototypes)
};

// CSR of the rows of each label: members[offsets[s] .. offsets[s+1]) are the rows i with
// labels[i] == s in increasing i. Negative labels are skipped; labels must be < num_labels.
struct LabelGroups {
  std::vector<int64_t> offsets;  // [num_labels + 1]
  std::vector<int64_t> members;  // [number of non-negative labels]
};

inline LabelGroups group_by_label(const int64_t* labels, int64_t n, int64_t num_labels) {
  LabelGroups g;
  g.offsets.assign(static_cast<size_t>(num_labels) + 1, 0);
  for (int64_t i = 0; i < n; ++i)
    if (labels[i] >= 0) ++g.offsets[labels[i] + 1];
  for (int64_t s = 0; s < num_labels; ++s) g.offsets[s + 1] += g.offsets[s];
  g.members.resize(static_cast<size_t>(g.offsets[num_labels]));
  std::vector<int64_t> next(g.offsets.begin(), g.offsets.end() - 1);
  for (int64_t i = 0; i < n; ++i)
    if (labels[i] >= 0) g.members[next[labels[i]]++] = i;
  return g;
}

// Only the labels that occur: rows[k] is the k-th distinct label (ascending), its members are
// members[offsets[k] .. offsets[k+1]) in batch order.
struct CompactGroups {
  std::vector<int64_t> rows;
  std::vector<int64_t> offsets;
  std::vector<int64_t> members;
};

inline CompactGroups compact_groups(const int64_t* labels, int64_t n, int64_t num_labels) {
  LabelGroups full = group_by_label(labels, n, num_labels);
  CompactGroups c;
  c.offsets.push_back(0);
  for (int64_t s = 0; s < num_labels; ++s) {
    if (full.offsets[s + 1] == full.offsets[s]) continue;
    c.rows.push_back(s);
    c.offsets.push_back(full.offsets[s + 1]);
  }
  c.members = std::move(full.members);
  return c;
}

// Index of the first label outside [lo, hi), or -1 when all are inside.
inline int64_t first_out_of_range(const int64_t* labels, int64_t n, int64_t lo, int64_t hi) {
  for (int64_t i = 0; i < n; ++i)
    if (labels[i] < lo || labels[i] >= hi) return i;
  return -1;
}

}  // namespace uvireid
