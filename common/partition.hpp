// Contiguous, as-equal-as-possible split of n items (samples, micro-batches, row tiles)
// over ranks: rank r gets [split_begin(n, size, r), split_begin(n, size, r + 1)).
#pragma once

#include <algorithm>
#include <cstdint>

namespace shardq {

inline int64_t split_begin(int64_t n_items, int n_ranks, int rank) {
  const int64_t base = n_items / n_ranks, extra = n_items % n_ranks;
  return rank * base + std::min<int64_t>(rank, extra);
}

}  // namespace shardq
