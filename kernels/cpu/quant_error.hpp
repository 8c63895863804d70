// Relative output error of a quantized weight measured with the layer-input Hessian:
//   tr((W − Q) H (W − Q)ᵀ) / tr(W H Wᵀ)  =  ‖(W − Q) Xᵀ‖² / ‖W Xᵀ‖²  for H = 2/n XᵀX,
// the figure the manifest reports per module (use the undamped H).
// Test: shardq_unit_tests --gtest_filter='QuantError*'.
#pragma once

#include "common/tensor.hpp"

namespace shardq::cpu {

// w, wq [rows, cols]; h [cols, cols], read from its upper triangle. Accumulates in double.
// Returns 0 when both traces are 0 and +inf when only the denominator is.
double relative_output_error(const Tensor& w, const Tensor& wq, const Tensor& h);

}  // namespace shardq::cpu
