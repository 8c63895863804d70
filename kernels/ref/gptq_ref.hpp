// Unblocked, column-by-column GPTQ in double precision (Frantar et al. 2022, Algorithm 1 with
// block size 1): the obviously-correct reference the blocked CPU version
// (kernels/cpu/gptq.cpp) and later the CUDA version are compared with. Same semantics as
// documented in kernels/cpu/gptq.hpp: dead columns, damping with 10x retries, stable
// act-order, group grids from the current weights at a group's first column, fp16 scales
// chosen before quantizing (rounded up, kernels/cpu/rtn.hpp). H⁻¹'s Cholesky factor is
// computed the textbook way: Cholesky of H, inverse, Cholesky of the inverse.
// Used only by tests: shardq_unit_tests --gtest_filter='Gptq*'.
#pragma once

#include <cstdint>
#include <string>

#include "common/tensor.hpp"
#include "kernels/quant_types.hpp"

namespace shardq::ref {

// How a followed (fp32, blocked) result differs from the reference decisions.
struct GptqFollowReport {
  int64_t codes = 0;        // codes compared
  int64_t code_ties = 0;    // codes that differ by 1 where the reference value is within a tie tolerance of the boundary
  int64_t scale_ties = 0;   // adjacent fp16 scales where the raw scale is within a tie tolerance of the switch point
  int64_t zero_ties = 0;    // zero points off by 1 within a tie tolerance of the boundary
  int64_t hard = 0;         // any other difference
  double max_tie_margin = 0.0;    // largest distance to the boundary among ties accepted by `tol`
  double max_weight_margin = 0.0; // the same in weight units / the row's max |W|, for ties accepted by `tol_w` only
  std::string first_hard;   // description of the first hard mismatch
};

// Quantizes w with GPTQ. With `follow` (a result for the same inputs), the reference checks
// each of its own decisions against it and then continues with the followed decision, so
// that one legitimate float-vs-double tie does not cascade into the later columns; the
// differences are counted in `report`. A difference is a tie when the reference value lies
// within `tol` of the boundary (code units for codes and zeros, relative for the raw scale),
// or within `tol_w` times the row's max |W| of it in weight units: fp32 round-off is relative
// to the weights' magnitude, so a group whose updated weights became tiny (a subnormal fp16
// scale) magnifies it in code units.
QuantizedLinear gptq_quantize_ref(const Tensor& w, const Tensor& h, const QuantConfig& cfg,
                                  const QuantizedLinear* follow = nullptr,
                                  GptqFollowReport* report = nullptr, double tol = 1e-4,
                                  double tol_w = 1e-6);

}  // namespace shardq::ref
