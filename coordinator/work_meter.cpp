#include "coordinator/work_meter.hpp"

#include "coordinator/job_plan.hpp"
#include "kernels/quant_types.hpp"

namespace shardq {

double layer_forward_flops(const ModelConfig& c, int n_seq, int seq_len) {
  const double tokens = static_cast<double>(n_seq) * seq_len;
  const double attention = 4.0 * n_seq * (static_cast<double>(seq_len) * (seq_len + 1) / 2.0) * c.q_dim();
  return 2.0 * tokens * static_cast<double>(c.layer_linear_params()) + attention;
}

double layer_hessian_flops(const ModelConfig& c, int n_seq, int seq_len) {
  const double tokens = static_cast<double>(n_seq) * seq_len;
  const double h = c.hidden_size, q = c.q_dim(), i = c.intermediate_size;
  return tokens * (2.0 * h * h + q * q + i * i);
}

double layer_quantize_flops(const std::vector<ModuleChoice>& choices) {
  double flops = 0;
  for (const ModuleChoice& m : choices) {
    if (!m.quantized) continue;
    const double rows = static_cast<double>(m.module.rows), cols = static_cast<double>(m.module.cols);
    flops += m.quant.method == quant_method::gptq ? rows * cols * cols + cols * cols * cols : 4.0 * rows * cols;
    flops += 4.0 * rows * cols * cols;  // the output error's two products with H
  }
  return flops;
}

double full_job_flops(const ModelConfig& c, const Allocation& allocation, const std::string& schedule, int samples,
                      int seq_len) {
  double total = 0;
  for (int l = 0; l < c.num_layers; ++l) {
    total += layer_quantize_flops(layer_choices(allocation, l));
    if (samples == 0) continue;
    total += layer_forward_flops(c, samples, seq_len) + layer_hessian_flops(c, samples, seq_len);
    if (schedule == "sequential") total += layer_forward_flops(c, samples, seq_len);
  }
  return total;
}

}  // namespace shardq
