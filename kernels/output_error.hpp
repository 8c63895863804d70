// The tile structure of the relative output error tr((W − Q) H (W − Q)ᵀ) / tr(W H Wᵀ), the
// manifest's per-module rel_error, shared by the CPU and CUDA tiers and by a job's ranks.
// Both traces are taken per tile of output_error_row_tile weight rows, each tile computed
// alone (every matrix product has the one shape [tile, cols] · [cols, cols]), and summed in
// tile order. Ranks of the sequential schedule each take a contiguous share of the tiles, so
// the two products (4·rows·cols² flops, more than GPTQ's own updates) split across ranks like
// GPTQ's rows instead of being repeated on every rank, and any split gives the one-rank
// figure bit for bit. C++17 and no project headers: the CUDA tier includes it.
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

namespace shardq {

inline constexpr int64_t output_error_row_tile = 1024;

inline int64_t output_error_tile_count(int64_t rows) {
  return (rows + output_error_row_tile - 1) / output_error_row_tile;
}

// One tile's share of the two traces: Σ over its rows r of d_r H d_rᵀ (d = w − wq) and of
// w_r H w_rᵀ.
struct OutputErrorTraces {
  double error = 0.0, reference = 0.0;
};

// The ratio of the sums, taken in tile order; 0 when both are 0, +inf when only the
// reference is.
inline double relative_output_error_of(const std::vector<OutputErrorTraces>& tiles) {
  double error = 0.0, reference = 0.0;
  for (const OutputErrorTraces& t : tiles) {
    error += t.error;
    reference += t.reference;
  }
  if (reference == 0.0) return error == 0.0 ? 0.0 : std::numeric_limits<double>::infinity();
  return error / reference;
}

}  // namespace shardq
