// The CPU sequential engine and the device switch; see worker/sequential_engine.hpp.
#include "worker/sequential_engine.hpp"

#include "common/error.hpp"
#include "worker/calibration.hpp"
#include "worker/forward.hpp"

#ifdef SHARDQ_HAVE_CUDA
#include "kernels/cuda/cuda_check.hpp"
#include "worker/cuda/sequential_engine_cuda.hpp"
#endif

namespace shardq {
namespace {

class SequentialEngineCpu final : public SequentialEngine {
 public:
  SequentialEngineCpu(const ModelConfig& config, MicroBatches mb) : config_(config), mb_(std::move(mb)) {}

  std::string device() const override { return "cpu"; }
  void set_hidden(std::vector<std::vector<float>> hidden) override { hidden_ = std::move(hidden); }
  std::vector<std::vector<float>> hidden() const override { return hidden_; }

  void load(const LayerWeights& weights) override {
    layer_ = &weights;
    dequantized_ = LayerWeights();
  }

  void calibrate(Comm& comm, const std::function<void(size_t)>& after_micro_batch) override {
    calib_ = LayerCalibration(config_);
    for (size_t i = 0; i < hidden_.size(); ++i) {
      std::vector<float> scratch = hidden_[i];
      calib_.forward(config_, *layer_, scratch.data(), mb_.mb_sizes.at(i), mb_.seq_len);
      if (after_micro_batch) after_micro_batch(i);
    }
    calibration_allreduce(comm, calib_);
  }

  double lim_score() const override { return calib_.lim.score(); }

  std::vector<QuantizedModule> quantize(const std::vector<ModuleChoice>& choices, bool calibrated, Comm& comm,
                                        const std::function<void(size_t)>& after_module) override {
    auto modules = quantize_layer(*layer_, choices, calibrated ? &calib_ : nullptr, &comm, after_module);
    dequantized_ = dequantized_layer(*layer_, modules);
    layer_ = &dequantized_;
    return modules;
  }

  void propagate() override {
    for (size_t i = 0; i < hidden_.size(); ++i)
      layer_forward(config_, *layer_, hidden_[i].data(), mb_.mb_sizes.at(i), mb_.seq_len);
  }

 private:
  ModelConfig config_;
  MicroBatches mb_;
  std::vector<std::vector<float>> hidden_;
  const LayerWeights* layer_ = nullptr;
  LayerWeights dequantized_;
  LayerCalibration calib_;
};

}  // namespace

int cuda_device_count() {
#ifdef SHARDQ_HAVE_CUDA
  return cuda::device_count();
#else
  return 0;
#endif
}

std::string cuda_local_device_bus_id() {
#ifdef SHARDQ_HAVE_CUDA
  return cuda::local_device_bus_id();
#else
  return {};
#endif
}

bool cuda_device_available() { return cuda_device_count() > 0; }

bool nccl_built() {
#ifdef SHARDQ_HAVE_NCCL
  return true;
#else
  return false;
#endif
}

std::unique_ptr<SequentialEngine> make_sequential_engine(const std::string& device, const ModelConfig& config,
                                                         MicroBatches micro_batches, const CudaMatmul& cuda_matmul,
                                                         bool nccl) {
  if (device == "cpu") {
    if (nccl) throw unsupported_error("comm: 'nccl' needs device 'cuda'");
    return std::make_unique<SequentialEngineCpu>(config, std::move(micro_batches));
  }
  if (device == "cuda") {
#ifdef SHARDQ_HAVE_CUDA
    return make_sequential_engine_cuda(config, std::move(micro_batches), cuda_matmul, nccl);
#else
    (void)cuda_matmul;
    (void)nccl;
    throw unsupported_error("device: 'cuda' needs a build with the CUDA tier (cmake -DSHARDQ_CUDA=ON)");
#endif
  }
  throw unsupported_error("device: '" + device + "' is not one of cpu, cuda");
}

}  // namespace shardq
