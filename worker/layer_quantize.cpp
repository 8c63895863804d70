#include "worker/layer_quantize.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "common/error.hpp"
#include "common/partition.hpp"
#include "kernels/cpu/gptq.hpp"
#include "kernels/cpu/quant_error.hpp"
#include "kernels/quantize.hpp"

namespace shardq {
namespace {

Tensor identity(int64_t n) {
  Tensor t({n, n});
  for (int64_t i = 0; i < n; ++i) t.at(i, i) = 1.0f;
  return t;
}

QuantizedLinear gptq_split_rows(Comm& comm, const Tensor& w, const Tensor& h, const QuantConfig& cfg) {
  const cpu::GptqFactor factor = cpu::gptq_prepare(h, cfg);
  QuantizedLinear q = cpu::gptq_make_output(w.rows(), factor, cfg);
  const auto [r0, r1] = gptq_rank_rows(w.rows(), comm.size(), comm.rank());
  if (r1 > r0) cpu::gptq_quantize_rows(w, factor, cfg, r0, r1, q);
  share_quantized_rows(comm, q);
  return q;
}

}  // namespace

const Tensor& layer_linear(const LayerWeights& w, const std::string& kind) {
  for (const auto& [name, tensor] : w.linears()) {
    const std::string n(name);
    if (n.size() >= kind.size() && n.compare(n.size() - kind.size(), kind.size(), kind) == 0) return *tensor;
  }
  throw error(fmt::format("layer has no linear '{}'", kind));
}

std::pair<int64_t, int64_t> gptq_rank_rows(int64_t rows, int n_ranks, int rank) {
  const int64_t tiles = (rows + cpu::gptq_row_tile - 1) / cpu::gptq_row_tile;
  return {std::min(rows, split_begin(tiles, n_ranks, rank) * cpu::gptq_row_tile),
          std::min(rows, split_begin(tiles, n_ranks, rank + 1) * cpu::gptq_row_tile)};
}

void share_quantized_rows(Comm& comm, QuantizedLinear& q) {
  const int64_t groups = q.n_groups(), words = q.words_per_row();
  for (int r = 0; r < comm.size(); ++r) {
    const auto [r0, r1] = gptq_rank_rows(q.rows, comm.size(), r);
    if (r1 <= r0) continue;
    comm.broadcast(q.qweight.data() + r0 * words, static_cast<size_t>((r1 - r0) * words) * sizeof(uint32_t), r);
    comm.broadcast(q.scales.data() + r0 * groups, static_cast<size_t>((r1 - r0) * groups) * sizeof(uint16_t), r);
    if (!q.zeros.empty()) comm.broadcast(q.zeros.data() + r0 * groups, static_cast<size_t>((r1 - r0) * groups), r);
  }
}

double relative_error_over_ranks(Comm* comm, int64_t rows,
                                 const std::function<std::vector<OutputErrorTraces>(int64_t, int64_t)>& tiles) {
  const int64_t count = output_error_tile_count(rows);
  if (!comm || comm->size() == 1) return relative_output_error_of(tiles(0, count));
  std::vector<OutputErrorTraces> all(static_cast<size_t>(count));
  const int64_t t0 = split_begin(count, comm->size(), comm->rank());
  const int64_t t1 = split_begin(count, comm->size(), comm->rank() + 1);
  const std::vector<OutputErrorTraces> mine = tiles(t0, t1);  // one entry per tile
  std::copy(mine.begin(), mine.end(), all.begin() + t0);
  for (int r = 0; r < comm->size(); ++r) {
    const int64_t b = split_begin(count, comm->size(), r), e = split_begin(count, comm->size(), r + 1);
    if (e > b) comm->broadcast(all.data() + b, static_cast<size_t>(e - b) * sizeof(OutputErrorTraces), r);
  }
  return relative_output_error_of(all);
}

const cpu::HessianAccumulator& hessian_for(const LayerCalibration& calib, const std::string& kind) {
  if (kind == "q_proj" || kind == "k_proj" || kind == "v_proj") return calib.attn_in;
  if (kind == "o_proj") return calib.o_in;
  if (kind == "gate_proj" || kind == "up_proj") return calib.mlp_in;
  if (kind == "down_proj") return calib.down_in;
  throw error(fmt::format("no Hessian for linear kind '{}'", kind));
}

std::vector<QuantizedModule> quantize_layer(const LayerWeights& weights, const std::vector<ModuleChoice>& choices,
                                            const LayerCalibration* calib, Comm* comm,
                                            const std::function<void(size_t)>& after_module) {
  std::vector<QuantizedModule> out;
  // q/k/v (and gate/up) share one Hessian: finalize each accumulator once.
  std::map<const cpu::HessianAccumulator*, Tensor> hessians;
  auto hessian = [&](const std::string& kind, int64_t cols) -> const Tensor& {
    if (!calib) {
      auto [it, inserted] = hessians.try_emplace(nullptr);
      if (inserted || it->second.rows() != cols) it->second = identity(cols);
      return it->second;
    }
    const cpu::HessianAccumulator& acc = hessian_for(*calib, kind);
    auto [it, inserted] = hessians.try_emplace(&acc);
    if (inserted) it->second = acc.finalize();
    return it->second;
  };
  for (const ModuleChoice& choice : choices) {
    QuantizedModule m{choice.module.name, choice.module.layer, std::nullopt, 0.0};
    if (choice.quantized) {
      const Tensor& w = layer_linear(weights, choice.module.kind);
      const Tensor& h = hessian(choice.module.kind, w.cols());
      try {
        if (choice.quant.method == quant_method::gptq && comm && comm->size() > 1) {
          m.quantized = gptq_split_rows(*comm, w, h, choice.quant);
        } else {
          m.quantized = quantize_linear(w, h, choice.quant);
        }
      } catch (const error& e) {
        throw error(fmt::format("quantizing '{}': {}", choice.module.name, e.what()));
      }
      const Tensor wq = dequantize(*m.quantized);
      m.rel_error = relative_error_over_ranks(comm, w.rows(), [&](int64_t t0, int64_t t1) {
        return cpu::output_error_tiles(w, wq, h, t0, t1);
      });
    }
    out.push_back(std::move(m));
    if (after_module) after_module(out.size());
  }
  return out;
}

LayerWeights dequantized_layer(const LayerWeights& weights, const std::vector<QuantizedModule>& modules) {
  LayerWeights q = weights;
  for (auto& [name, tensor] : q.linears()) {
    const std::string suffix = std::string(".") + name;
    for (const QuantizedModule& m : modules) {
      if (m.quantized && m.name.size() > suffix.size() &&
          m.name.compare(m.name.size() - suffix.size(), suffix.size(), suffix) == 0) {
        *tensor = dequantize(*m.quantized);
      }
    }
  }
  return q;
}

void calibration_allreduce(Comm& comm, LayerCalibration& calib) {
  if (comm.size() == 1) return;
  for (cpu::HessianAccumulator* acc : {&calib.attn_in, &calib.o_in, &calib.mlp_in, &calib.down_in}) {
    std::vector<cpu::hessian_int> sums(acc->packed_sums().begin(), acc->packed_sums().end());
    int64_t n = acc->n_tokens();
    comm.allreduce_sum(sums.data(), sums.size());
    comm.allreduce_sum(&n, 1);
    cpu::HessianAccumulator total(acc->dim());
    total.merge_packed(sums, n);
    *acc = std::move(total);
  }
  lim_allreduce(comm, calib.lim);
}

void lim_allreduce(Comm& comm, LimAccumulator& lim) {
  cpu::hessian_int cos_sum = lim.cos_sum_fixed();
  int64_t n = lim.n_tokens();
  comm.allreduce_sum(&cos_sum, 1);
  comm.allreduce_sum(&n, 1);
  lim = LimAccumulator();
  lim.merge_fixed(cos_sum, n);
}

}  // namespace shardq
