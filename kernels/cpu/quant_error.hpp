// Relative output error of a quantized weight measured with the layer-input Hessian:
//   tr((W − Q) H (W − Q)ᵀ) / tr(W H Wᵀ)  =  ‖(W − Q) Xᵀ‖² / ‖W Xᵀ‖²  for H = 2/n XᵀX,
// the figure the manifest reports per module (use the undamped H), taken per tile of rows
// (kernels/output_error.hpp) so that a job's ranks can share the work out.
// Test: shardq_unit_tests --gtest_filter='QuantError*'.
#pragma once

#include <cstdint>
#include <vector>

#include "common/tensor.hpp"
#include "kernels/output_error.hpp"

namespace shardq::cpu {

// The traces of tiles [t0, t1) of w, wq [rows, cols], h [cols, cols] read from its upper
// triangle, one entry per tile, each accumulated in double. Throws shardq::error on
// mismatched shapes or tiles outside [0, output_error_tile_count(rows)).
std::vector<OutputErrorTraces> output_error_tiles(const Tensor& w, const Tensor& wq, const Tensor& h, int64_t t0,
                                                  int64_t t1);
// All tiles: relative_output_error_of(output_error_tiles(w, wq, h, 0, count)); 0 when both
// traces are 0 and +inf when only the denominator is.
double relative_output_error(const Tensor& w, const Tensor& wq, const Tensor& h);

}  // namespace shardq::cpu
