// The sequential engine on one GPU; see worker/cuda/sequential_engine_cuda.hpp.
#include "worker/cuda/sequential_engine_cuda.hpp"

#include <array>
#include <map>
#include <optional>
#include <tuple>

#include <fmt/format.h>

#include "common/error.hpp"
#include "kernels/cuda/cuda_check.hpp"
#include "kernels/cuda/forward.hpp"
#include "kernels/cuda/forward_ops.hpp"
#include "kernels/cuda/gptq.hpp"
#include "kernels/cuda/gptq_factor.hpp"
#include "kernels/cuda/hessian.hpp"
#include "kernels/cuda/int8.hpp"
#include "kernels/cuda/nf4.hpp"
#include "kernels/cuda/quant_error.hpp"
#include "kernels/cuda/rtn.hpp"
#include "kernels/quantize.hpp"
#include "worker/calibration.hpp"

#ifdef SHARDQ_HAVE_NCCL
#include <mpi.h>

#include "comm/nccl/nccl_comm.hpp"
#endif

namespace shardq {
namespace {

using cuda::DeviceBuffer;
using cuda::layer_tap;

constexpr size_t n_taps = 4;

size_t tap_index(layer_tap t) { return static_cast<size_t>(t); }

// The accumulator (tap) feeding linear `kind`, as hessian_for on the CPU.
layer_tap tap_of(const std::string& kind) {
  if (kind == "q_proj" || kind == "k_proj" || kind == "v_proj") return layer_tap::attn_in;
  if (kind == "o_proj") return layer_tap::o_in;
  if (kind == "gate_proj" || kind == "up_proj") return layer_tap::mlp_in;
  if (kind == "down_proj") return layer_tap::down_in;
  throw error(fmt::format("no Hessian for linear kind '{}'", kind));
}

// rtn, nf4 and int8 (GPU tier, bit-identical to the CPU tier) from the device weight d_w
// [rows, cols]; the dequantized weights go to d_wq on the device.
QuantizedLinear quantize_device(const float* d_w, int64_t rows, int64_t cols, const QuantConfig& cfg, float* d_wq,
                                cudaStream_t s) {
  switch (cfg.method) {
    case quant_method::rtn: return cuda::rtn_quantize_device(d_w, rows, cols, cfg, d_wq, s);
    case quant_method::nf4: return cuda::nf4_quantize_device(d_w, rows, cols, d_wq, s);
    case quant_method::int8: return cuda::int8_quantize_device(d_w, rows, cols, cfg.int8_outlier_threshold, d_wq, s);
    case quant_method::gptq: break;  // needs the Hessian's factor: SequentialEngineCuda::quantize
  }
  throw error(fmt::format("quantize (cuda): no device path for method '{}'", quant_method_name(cfg.method)));
}

class SequentialEngineCuda final : public SequentialEngine {
 public:
  SequentialEngineCuda(const ModelConfig& config, MicroBatches mb, const CudaMatmul& precision, bool nccl)
      : config_(config),
        mb_(std::move(mb)),
        device_(cuda::select_local_device()),
        stream_(cuda::make_stream()),
        layer_(config, stream_.get(), cuda::matmul_precision_from_string(precision.forward, "SHARDQ_CUDA_MATMUL forward")) {
    const auto hessian_precision = cuda::matmul_precision_from_string(precision.hessian, "SHARDQ_CUDA_MATMUL hessian");
    const std::array<int64_t, n_taps> dims{config.hidden_size, config.q_dim(), config.hidden_size,
                                           config.intermediate_size};
    for (size_t t = 0; t < n_taps; ++t) acc_[t].emplace(dims[t], stream_.get(), hessian_precision);
#ifdef SHARDQ_HAVE_NCCL
    // Collective: every rank builds its engine at the same point of the schedule.
    if (nccl) nccl_.emplace(cuda::NcclComm::over_mpi(MPI_COMM_WORLD, device_));
#else
    if (nccl) throw unsupported_error("comm: 'nccl' needs a build with NCCL (cmake -DSHARDQ_NCCL=ON)");
#endif
  }

  std::string device() const override { return fmt::format("cuda:{}", device_); }

  void set_hidden(std::vector<std::vector<float>> hidden) override {
    if (hidden.size() != mb_.mb_sizes.size())
      throw error(fmt::format("sequential (cuda): {} hidden-state blocks for {} micro-batches", hidden.size(),
                              mb_.mb_sizes.size()));
    hidden_.clear();
    for (size_t i = 0; i < hidden.size(); ++i) {
      check_block(i, hidden[i].size());
      hidden_.push_back(cuda::to_device(hidden[i]));
    }
  }

  std::vector<std::vector<float>> hidden() const override {
    SHARDQ_CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
    std::vector<std::vector<float>> out;
    for (const auto& h : hidden_) out.push_back(h.to_host());
    return out;
  }

  void load(const LayerWeights& weights) override {
    weights_ = &weights;
    layer_.load(weights);
    clear_layer_state();
  }

  // On the prefetch thread: the upload overlaps this layer's steps (LayerForwardCuda::stage).
  void stage(const LayerWeights& next) override { layer_.stage(next); }

  void load_staged(const LayerWeights& weights) override {
    weights_ = &weights;
    layer_.load_staged(weights);
    clear_layer_state();
  }

  void calibrate(Comm& comm, const std::function<void(size_t)>& after_micro_batch) override {
    cudaStream_t s = stream_.get();
    clear_layer_state();
    for (auto& a : acc_) a->reset();
    lim_ = LimAccumulator();
    const auto tap = [&](layer_tap t, const float* d_x, int64_t rows, int64_t) { acc_[tap_index(t)]->enqueue(d_x, rows); };
    for (size_t i = 0; i < hidden_.size(); ++i) {
      const int64_t n = mb_.tokens(i);
      const auto values = static_cast<size_t>(n * config_.hidden_size);
      if (scratch_.size() < values) scratch_ = DeviceBuffer<float>(values);
      if (cosines_.size() < static_cast<size_t>(n)) cosines_ = DeviceBuffer<double>(static_cast<size_t>(n));
      cuda::copy_async(scratch_.get(), hidden_[i].get(), values, s);
      layer_.forward(scratch_.get(), mb_.mb_sizes[i], mb_.seq_len, tap);
      cuda::token_cosines(hidden_[i].get(), scratch_.get(), n, config_.hidden_size, cosines_.get(), s);
      std::vector<double> cos(static_cast<size_t>(n));
      cuda::copy_async(cos.data(), cosines_.get(), cos.size(), s);
      for (auto& a : acc_) a->check();  // synchronises the stream
      lim_.add_cosines(cos);
      if (after_micro_batch) after_micro_batch(i);
    }
    if (comm.size() > 1) reduce(comm);
  }

  double lim_score() const override { return lim_.score(); }

  std::vector<QuantizedModule> quantize(const std::vector<ModuleChoice>& choices, bool calibrated, Comm& comm,
                                        const std::function<void(size_t)>& after_module) override {
    if (!calibrated) {
      // No calibration (no GPTQ linear): the CPU tier, H = I, then the dequantized weights up.
      auto modules = quantize_layer(*weights_, choices, nullptr, &comm, after_module);
      upload_dequantized(modules);
      return modules;
    }
    cudaStream_t s = stream_.get();
    std::vector<QuantizedModule> out;
    for (const ModuleChoice& choice : choices) {
      QuantizedModule m{choice.module.name, choice.module.layer, std::nullopt, 0.0};
      if (choice.quantized) {
        const std::string& kind = choice.module.kind;
        const Tensor& w = layer_linear(*weights_, kind);
        const int64_t rows = w.rows(), cols = w.cols();
        float* d_w = layer_.linear(kind);
        if (wq_.size() < static_cast<size_t>(rows * cols)) wq_ = DeviceBuffer<float>(static_cast<size_t>(rows * cols));
        const float* d_h = hessian(tap_of(kind));
        try {
          quantize_check(w, choice.quant);  // quantize_linear's checks, on the host copy of d_w
          if (choice.quant.method == quant_method::gptq) {
            const cuda::GptqFactorCuda& f = factor(tap_of(kind), choice.quant);
            QuantizedLinear q = f.make_output(rows, choice.quant);
            const auto [r0, r1] = gptq_rank_rows(rows, comm.size(), comm.rank());
            if (comm.size() == 1) {
              cuda::gptq_quantize_rows_device(d_w, rows, f, choice.quant, 0, rows, q, wq_.get(), s);
            } else {
              if (r1 > r0) cuda::gptq_quantize_rows_device(d_w, rows, f, choice.quant, r0, r1, q, nullptr, s);
              SHARDQ_CUDA_CHECK(cudaStreamSynchronize(s));
              share_quantized_rows(comm, q);
              upload(dequantize(q), wq_);
            }
            m.quantized = std::move(q);
          } else {
            m.quantized = quantize_device(d_w, rows, cols, choice.quant, wq_.get(), s);
          }
        } catch (const error& e) {
          throw error(fmt::format("quantizing '{}': {}", choice.module.name, e.what()));
        }
        m.rel_error = relative_error_over_ranks(&comm, rows, [&](int64_t t0, int64_t t1) {
          return cuda::output_error_tiles_cuda(d_w, wq_.get(), d_h, rows, cols, t0, t1, s);
        });
        // The layer now computes with the quantized linear (propagate); GPTQ of the other
        // linears reads only their own weights.
        cuda::copy_async(d_w, wq_.get(), static_cast<size_t>(rows * cols), s);
      }
      out.push_back(std::move(m));
      if (after_module) after_module(out.size());
    }
    SHARDQ_CUDA_CHECK(cudaStreamSynchronize(s));
    clear_layer_state();
    return out;
  }

  void propagate() override {
    for (size_t i = 0; i < hidden_.size(); ++i) layer_.forward(hidden_[i].get(), mb_.mb_sizes[i], mb_.seq_len);
    SHARDQ_CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
  }

 private:
  void check_block(size_t i, size_t values) const {
    if (values != static_cast<size_t>(mb_.tokens(i) * config_.hidden_size))
      throw error(fmt::format("sequential (cuda): micro-batch {} has {} hidden values, expected {}", i, values,
                              mb_.tokens(i) * config_.hidden_size));
  }

  void upload(const Tensor& t, DeviceBuffer<float>& d) {
    SHARDQ_CUDA_CHECK(cudaStreamSynchronize(stream_.get()));  // d may still be read
    d.upload(t.data);
  }

  // CPU-quantized layer (no calibration): its dequantized linears replace the device weights.
  void upload_dequantized(const std::vector<QuantizedModule>& modules) {
    SHARDQ_CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
    for (const QuantizedModule& m : modules) {
      if (!m.quantized) continue;
      const std::string kind = m.name.substr(m.name.rfind('.') + 1);
      const Tensor dq = dequantize(*m.quantized);
      cuda::copy_async(layer_.linear(kind), dq.data.data(), dq.data.size(), stream_.get());
      SHARDQ_CUDA_CHECK(cudaStreamSynchronize(stream_.get()));  // before dq is freed
    }
  }

  // The Hessians are summed exactly over the ranks: on the device through NCCL (the int128
  // limb reduction of comm/nccl/nccl_comm.hpp), or through the host and MPI (the CPU
  // schedule's calibration_allreduce). Token counts and LIM's sum always go over MPI.
  void reduce(Comm& comm) {
#ifdef SHARDQ_HAVE_NCCL
    if (nccl_) {
      std::array<int64_t, n_taps> counts{};
      for (size_t t = 0; t < n_taps; ++t) {
        nccl_->allreduce_sum(acc_[t]->device_sums(), acc_[t]->packed_size());
        counts[t] = acc_[t]->n_tokens();
      }
      comm.allreduce_sum(counts.data(), counts.size());
      for (size_t t = 0; t < n_taps; ++t) acc_[t]->set_n_tokens(counts[t]);
      lim_allreduce(comm, lim_);
      return;
    }
#endif
    LayerCalibration calib;
    calib.attn_in = acc_[0]->download();
    calib.o_in = acc_[1]->download();
    calib.mlp_in = acc_[2]->download();
    calib.down_in = acc_[3]->download();
    calib.lim = lim_;
    calibration_allreduce(comm, calib);
    acc_[0]->upload(calib.attn_in);
    acc_[1]->upload(calib.o_in);
    acc_[2]->upload(calib.mlp_in);
    acc_[3]->upload(calib.down_in);
    lim_ = calib.lim;
  }

  const float* hessian(layer_tap t) {
    const size_t i = tap_index(t);
    if (!hessian_ready_[i]) {
      const auto dim = static_cast<size_t>(acc_[i]->dim());
      if (h_[i].size() != dim * dim) h_[i] = DeviceBuffer<float>(dim * dim);
      acc_[i]->finalize(h_[i].get());
      hessian_ready_[i] = true;
    }
    return h_[i].get();
  }

  // q/k/v (and gate/up) share a Hessian and, with the same damping and order, its factor.
  const cuda::GptqFactorCuda& factor(layer_tap t, const QuantConfig& cfg) {
    const auto key = std::make_tuple(tap_index(t), cfg.damp, cfg.act_order);
    auto it = factors_.find(key);
    if (it == factors_.end()) {
      const float* d_h = hessian(t);
      it = factors_.emplace(key, cuda::gptq_prepare_cuda(d_h, acc_[tap_index(t)]->dim(), cfg, stream_.get())).first;
    }
    return it->second;
  }

  void clear_layer_state() {
    factors_.clear();
    hessian_ready_.fill(false);
  }

  ModelConfig config_;
  MicroBatches mb_;
  int device_;  // selected first: the stream and the cuBLAS handles belong to it
  cuda::unique_stream stream_;
  cuda::LayerForwardCuda layer_;
  const LayerWeights* weights_ = nullptr;
  std::vector<DeviceBuffer<float>> hidden_;
  DeviceBuffer<float> scratch_;  // one micro-batch run through the layer for its statistics
  DeviceBuffer<double> cosines_;
  DeviceBuffer<float> wq_;       // one linear's dequantized weights
  std::array<std::optional<cuda::HessianAccumulatorCuda>, n_taps> acc_;
  LimAccumulator lim_;
  std::array<DeviceBuffer<float>, n_taps> h_;
  std::array<bool, n_taps> hessian_ready_{};
  std::map<std::tuple<size_t, float, bool>, cuda::GptqFactorCuda> factors_;
#ifdef SHARDQ_HAVE_NCCL
  std::optional<cuda::NcclComm> nccl_;
#endif
};

}  // namespace

std::unique_ptr<SequentialEngine> make_sequential_engine_cuda(const ModelConfig& config, MicroBatches micro_batches,
                                                              const CudaMatmul& cuda_matmul, bool nccl) {
  return std::make_unique<SequentialEngineCuda>(config, std::move(micro_batches), cuda_matmul, nccl);
}

}  // namespace shardq
