"""kNN, k-reciprocal encoding, query expansion and Jaccard distance (work in progress)."""
