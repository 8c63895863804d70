// Quantization of one decoder layer's linears from its calibration statistics, on one rank
// or with GPTQ's rows (and the output error's row tiles) split across the ranks of a Comm
// (sequential schedule).
//
// Rows of a linear are independent given H⁻¹ (kernels/cpu/gptq.hpp), and GPTQ processes them
// in tiles aligned to absolute row indices; ranks take contiguous runs of whole tiles, quantize
// them, and every rank receives every slice (each needs the whole quantized layer to compute
// the next layer's inputs). The integers are therefore the same for any number of ranks.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "comm/comm.hpp"
#include "kernels/output_error.hpp"
#include "kernels/quant_types.hpp"
#include "worker/modules.hpp"
#include "worker/calibration.hpp"
#include "worker/llama_weights.hpp"

namespace shardq {

struct QuantizedModule {
  std::string name;                       // HF name without ".weight"
  int layer = 0;
  std::optional<QuantizedLinear> quantized;  // empty: kept in floating point
  double rel_error = 0.0;                 // ‖(W−Q)X‖²/‖WX‖² from the layer's Hessian
};

// The weights of linear `kind` (q_proj … down_proj) of a layer.
const Tensor& layer_linear(const LayerWeights& weights, const std::string& kind);

// The rows [r0, r1) of a `rows`-row linear that rank `rank` of `n_ranks` quantizes with GPTQ:
// contiguous runs of whole cpu::gptq_row_tile tiles (kernels/cpu/gptq.hpp on why).
std::pair<int64_t, int64_t> gptq_rank_rows(int64_t rows, int n_ranks, int rank);
// Every rank broadcasts the rows it quantized; afterwards all ranks hold the whole linear.
void share_quantized_rows(Comm& comm, QuantizedLinear& q);

// The relative output error of a `rows`-row linear with its output-error tiles
// (kernels/output_error.hpp) shared out over the ranks of `comm` (all of them when comm is
// null or has one rank): `tiles(t0, t1)` computes the traces of tiles [t0, t1) on this rank,
// every rank receives every rank's, and all return the sum in tile order, the same figure
// for any number of ranks.
double relative_error_over_ranks(Comm* comm, int64_t rows,
                                 const std::function<std::vector<OutputErrorTraces>(int64_t, int64_t)>& tiles);

// Hessian of the input of linear `kind` (q/k/v share attn_in, gate/up share mlp_in).
const cpu::HessianAccumulator& hessian_for(const LayerCalibration& calib, const std::string& kind);

// Quantizes the seven linears of `layer` as `choices` (its entries of the allocation) say.
// `calib` may be null when no module uses GPTQ (rel_error is then measured with H = I,
// i.e. the plain weight error). With `comm` of size > 1, GPTQ rows are split across ranks
// and gathered everywhere; every rank returns the same result. `after_module(n)` runs after
// the n-th linear (the job's progress and fault points).
std::vector<QuantizedModule> quantize_layer(const LayerWeights& weights, const std::vector<ModuleChoice>& choices,
                                            const LayerCalibration* calib, Comm* comm,
                                            const std::function<void(size_t)>& after_module = nullptr);

// The layer with each quantized linear replaced by its dequantized weights.
LayerWeights dequantized_layer(const LayerWeights& weights, const std::vector<QuantizedModule>& modules);

// Sums the statistics of every rank into every rank's `calib` (exact integer reduction).
void calibration_allreduce(Comm& comm, LayerCalibration& calib);
// The LIM part of it alone (exact fixed-point sum and token count).
void lim_allreduce(Comm& comm, LimAccumulator& lim);

}  // namespace shardq
