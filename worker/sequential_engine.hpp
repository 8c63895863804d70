// The numerics of the sequential schedule on one rank (GPTQ's layer-by-layer order: layer l
// is calibrated on the outputs of the already quantized layers 0..l-1): the hidden states of
// the rank's calibration micro-batches and the three steps the schedule applies per layer
// — calibrate (the four Hessians and LIM, summed over the ranks), quantize (the layer's
// linears as allocated), propagate (the hidden states through the quantized layer).
//
// Two devices: the CPU (worker/forward.hpp, kernels/cpu, bit-identical for any rank and
// thread count), and CUDA (worker/cuda/sequential_engine_cuda.cpp), where the hidden states,
// the loaded layer and its Hessians stay in GPU memory between the steps, so a layer costs one
// weight upload and the calibration set never crosses PCIe. The coordinator drives both the
// same way (coordinator/quantize_job.cpp run_sequential).
#pragma once

#include <array>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "comm/comm.hpp"
#include "common/model_config.hpp"
#include "worker/layer_quantize.hpp"
#include "worker/llama_weights.hpp"
#include "worker/modules.hpp"

namespace shardq {

// The micro-batches a rank holds: micro-batch i is mb_sizes[i] windows of seq_len tokens.
struct MicroBatches {
  std::vector<int> mb_sizes;
  int seq_len = 0;
  int64_t tokens(size_t i) const { return static_cast<int64_t>(mb_sizes.at(i)) * seq_len; }
};

// Matrix-multiply precision per phase on CUDA (kernels/cuda/matmul.hpp: "fp32" pedantic,
// "tf32x3", "tf32" or "bf16"); the CPU is fp32.
inline constexpr std::array<std::string_view, 4> cuda_matmul_precisions{"fp32", "tf32x3", "tf32", "bf16"};
struct CudaMatmul {
  std::string forward = "fp32";
  std::string hessian = "fp32";
};

class SequentialEngine {
 public:
  virtual ~SequentialEngine() = default;
  virtual std::string device() const = 0;  // "cpu", "cuda:0", ...

  // The hidden states entering the next layer: one [tokens(i), hidden] block per micro-batch.
  virtual void set_hidden(std::vector<std::vector<float>> hidden) = 0;
  // Host copies (hidden-state snapshots, coordinator/hidden_snapshot.hpp).
  virtual std::vector<std::vector<float>> hidden() const = 0;

  // The layer the next steps use; `weights` must outlive them (until the next load).
  virtual void load(const LayerWeights& weights) = 0;
  // Called on another thread (the schedule's prefetch) while the loaded layer's steps run:
  // the engine may start moving `next` to its device now (CUDA: a second weight buffer set
  // filled on a copy stream). `next`'s tensors must stay alive and unchanged until
  // load_staged of the same weights (the LayerWeights may be moved meanwhile).
  virtual void stage(const LayerWeights& next) { (void)next; }
  // load(weights) for weights last passed to stage(): what stage() moved is used.
  virtual void load_staged(const LayerWeights& weights) { load(weights); }
  // Statistics of the loaded layer over every micro-batch (the hidden states are unchanged),
  // summed exactly over `comm`'s ranks. after_micro_batch(i) runs after micro-batch i.
  virtual void calibrate(Comm& comm, const std::function<void(size_t)>& after_micro_batch) = 0;
  virtual double lim_score() const = 0;
  // quantize_layer (worker/layer_quantize.hpp) of the loaded layer with the last
  // calibrate()'s statistics (`calibrated` false: none, H = I); afterwards the loaded layer
  // holds the dequantized weights of its quantized linears.
  virtual std::vector<QuantizedModule> quantize(const std::vector<ModuleChoice>& choices, bool calibrated, Comm& comm,
                                                const std::function<void(size_t)>& after_module) = 0;
  // hidden ← loaded layer(hidden), every micro-batch.
  virtual void propagate() = 0;
};

// device "cpu" or "cuda" (throws unsupported_error when this build has no CUDA tier, and
// shardq::cuda_error when the rank sees no GPU). `nccl` (cuda, several ranks): the Hessians
// are reduced on the GPUs through NCCL; collective, as every rank creates its engine.
std::unique_ptr<SequentialEngine> make_sequential_engine(const std::string& device, const ModelConfig& config,
                                                         MicroBatches micro_batches, const CudaMatmul& cuda_matmul,
                                                         bool nccl = false);

// The CUDA devices this process sees (0 in a build without the CUDA tier).
int cuda_device_count();
// The PCI bus id of the GPU this rank would use (cuda::local_device_bus_id; "" without one).
std::string cuda_local_device_bus_id();
// Whether this process can run device "cuda" (built with the CUDA tier and a GPU visible).
bool cuda_device_available();
// Whether this build has the NCCL backend.
bool nccl_built();

}  // namespace shardq
