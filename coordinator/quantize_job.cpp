#include "coordinator/quantize_job.hpp"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <map>
#include <memory>

#include <sys/resource.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/checkpoint.hpp"
#include "common/fault.hpp"
#include "common/job_spec.hpp"
#include "common/manifest.hpp"
#include "common/model_config.hpp"
#include "common/partition.hpp"
#include "common/safetensors.hpp"
#include "common/sha256.hpp"
#include "common/tokenizer.hpp"
#include "coordinator/allocation.hpp"
#include "coordinator/plan.hpp"
#include "coordinator/precision_policy.hpp"
#include "worker/calibration.hpp"
#include "worker/forward.hpp"
#include "worker/importance.hpp"
#include "worker/layer_quantize.hpp"
#include "worker/llama_weights.hpp"

namespace shardq {

int calibration_micro_batch(int seq_len) { return std::max(1, 512 / std::max(1, seq_len)); }

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t) {
  return std::chrono::duration<double>(clock_type::now() - t).count();
}

// What rank 0 decides and every rank receives.
struct JobPlan {
  JobSpec spec;
  ModelConfig config;
  LayerPlan layers;
  Allocation allocation;
  int seq_len = 0;
  int micro_batch = 1;               // samples per micro-batch
  std::vector<int32_t> windows;      // [samples * seq_len] calibration tokens (empty: none)
  PrecisionScores scores;            // from the measurement pass (lim, zd, sensitivity)
  int samples() const { return seq_len ? static_cast<int>(windows.size() / static_cast<size_t>(seq_len)) : 0; }
  int n_micro_batches() const { return (samples() + micro_batch - 1) / micro_batch; }
  int mb_begin(int m) const { return m * micro_batch; }
  int mb_size(int m) const { return std::min(micro_batch, samples() - m * micro_batch); }
};

bool needs_calibration(const Allocation& a) {
  return std::any_of(a.modules.begin(), a.modules.end(),
                     [](const ModuleChoice& m) { return m.quantized && m.quant.method == quant_method::gptq; });
}

// Rank 0: everything that can fail on user input, before any work starts.
JobPlan make_plan(const json& spec_json, const JobOptions& options, int n_ranks) {
  JobPlan p;
  p.spec = job_spec_from_json(spec_json);
  job_spec_check_paths(p.spec, options.force || options.dry_run);
  p.config = model_config_load(p.spec.model);
  if (p.spec.device == "cuda")
    throw unsupported_error("device: 'cuda' is not available in this build of the job (use cpu or auto)");
  if (p.spec.comm == "nccl") throw unsupported_error("comm: 'nccl' needs device 'cuda'; use mpi or auto");
  const SafetensorsModel model(p.spec.model);  // validates every header now
  for (const auto& m : model_modules(p.config)) {
    const auto& info = model.info(m.name + ".weight");
    if (info.shape != std::vector<int64_t>{m.rows, m.cols})
      throw io_error(fmt::format("tensor '{}.weight' in '{}' has shape {}, config.json implies [{}, {}]", m.name,
                                 p.spec.model, shape_string(info.shape), m.rows, m.cols));
  }
  std::vector<double> costs(static_cast<size_t>(p.config.num_layers), static_cast<double>(p.config.layer_linear_params()));
  p.layers = plan_layers(costs, n_ranks);
  // Score-driven policies start from the base allocation; random needs no scores and is
  // final here, the others are decided after the measurement pass (measure_precision). A
  // target the bit options cannot reach fails now, before any work.
  p.allocation = allocate_base(p.config, p.spec);
  const bool measure = policy_needs_measurement(p.spec.precision.policy);
  if (policy_is_score_driven(p.spec.precision.policy)) {
    precision_policy_check(p.spec);
    Allocation reachable = p.allocation;
    allocate_ordered(reachable, free_modules(reachable, p.spec), {}, p.spec.precision.bit_options, *p.spec.precision.target_bpw);
    if (!measure) p.allocation = allocate_precision(p.config, p.spec, {});
    if (measure && p.spec.calibration.path.empty())
      throw spec_error("calibration.path", fmt::format("is required by policy '{}' (its scores need calibration text)", p.spec.precision.policy));
  }

  const int context = p.config.max_position_embeddings > 0 ? p.config.max_position_embeddings : p.spec.calibration.seq_len;
  p.seq_len = std::min(p.spec.calibration.seq_len, context);
  p.micro_batch = calibration_micro_batch(p.seq_len);
  const bool want = needs_calibration(p.allocation) || options.dry_run || !p.spec.calibration.path.empty();
  if (want) {
    if (p.spec.calibration.path.empty())
      throw spec_error("calibration.path", "is required (GPTQ and the importance scores need calibration text)");
    std::unique_ptr<Tokenizer> tokenizer;
    if (p.spec.calibration.format == "text") tokenizer = tokenizer_load(model_tokenizer_dir(p.spec.model));
    const auto stream = calibration_stream(p.spec.calibration.path, p.spec.calibration.format, tokenizer.get(),
                                           p.config.vocab_size);
    p.windows = calibration_windows(stream, p.spec.calibration.samples, p.seq_len, p.spec.calibration.seed);
  }
  return p;
}

json plan_to_json(const JobPlan& p) {
  return {{"spec", job_spec_to_json(p.spec)},
          {"config", p.config.raw},
          {"layers", layer_plan_to_json(p.layers)},
          {"allocation", allocation_to_json(p.allocation)},
          {"seq_len", p.seq_len},
          {"micro_batch", p.micro_batch}};
}

JobPlan plan_from_json(const json& j) {
  JobPlan p;
  p.spec = job_spec_from_json(j.at("spec"));
  p.config = model_config_from_json(j.at("config"), "plan");
  p.layers = layer_plan_from_json(j.at("layers"));
  p.allocation = allocation_from_json(j.at("allocation"), p.config);
  p.seq_len = j.at("seq_len").get<int>();
  p.micro_batch = j.at("micro_batch").get<int>();
  return p;
}

// Rank 0 builds the plan; every rank gets it, or the same collective_error.
JobPlan broadcast_plan(Comm& comm, const json& spec_json, const JobOptions& options) {
  std::string text, failure;
  JobPlan p;
  if (comm.is_root()) {
    try {
      p = make_plan(spec_json, options, comm.size());
      text = plan_to_json(p).dump();
    } catch (const std::exception& e) {
      failure = e.what();
    }
  }
  comm.broadcast(failure, 0);
  if (!failure.empty()) throw collective_error(failure);
  comm.broadcast(text, 0);
  std::vector<int32_t> windows = std::move(p.windows);
  comm.broadcast_vector(windows, 0);
  if (!comm.is_root()) p = plan_from_json(json::parse(text));
  p.windows = std::move(windows);
  return p;
}

std::vector<ModuleChoice> layer_choices(const Allocation& a, int layer) {
  std::vector<ModuleChoice> out;
  for (const auto& m : a.modules) {
    if (m.module.layer == layer) out.push_back(m);
  }
  return out;
}

// Floating-point tensors keep the source precision: f16 stays f16, f32 and bf16 become f32
// (bf16 → f16 could overflow).
dtype store_dtype_of(const TensorInfo& info) { return info.type == dtype::f16 ? dtype::f16 : dtype::f32; }

// One rank's shard and the records that go into the manifest.
class ShardOutput {
 public:
  ShardOutput(const fs::path& dir, int index) : index_(index), writer_(dir / checkpoint_shard_name(index)) {}

  void write_layer(const SafetensorsModel& model, int layer, const LayerWeights& w,
                   const std::vector<QuantizedModule>& modules, double lim, double zd) {
    const std::string prefix = layer_prefix(layer);
    write_float(model, prefix + "input_layernorm.weight", w.attn_norm);
    write_float(model, prefix + "post_attention_layernorm.weight", w.ffn_norm);
    if (!w.q_bias.empty()) {
      write_float(model, prefix + "self_attn.q_proj.bias", w.q_bias);
      write_float(model, prefix + "self_attn.k_proj.bias", w.k_bias);
      write_float(model, prefix + "self_attn.v_proj.bias", w.v_bias);
    }
    for (const QuantizedModule& m : modules) {
      if (m.quantized) {
        writer_.write_quantized(m.name, *m.quantized);
        bytes_ += m.quantized->stored_bytes();
        records_.push_back(manifest_module(m.name, layer, *m.quantized, m.rel_error));
      } else {
        const std::string tensor = m.name + ".weight";
        const TensorInfo& info = model.info(tensor);
        const Tensor t = model.load_fp32(tensor);
        const dtype store = store_dtype_of(info);
        writer_.write_float(tensor, t, store);
        bytes_ += t.numel() * static_cast<int64_t>(dtype_size(store));
        records_.push_back(manifest_module_kept(m.name, layer, t.rows(), t.cols(), static_cast<int>(dtype_size(store))));
      }
    }
    ManifestLayer rec;
    rec.index = layer;
    rec.shard = index_;
    rec.lim = lim;
    rec.zd = zd;
    layers_.push_back(rec);
  }

  void write_float(const SafetensorsModel& model, const std::string& name, const Tensor& t) {
    const dtype store = store_dtype_of(model.info(name));
    writer_.write_float(name, t, store);
    bytes_ += t.numel() * static_cast<int64_t>(dtype_size(store));
  }

  void write_source_tensor(const SafetensorsModel& model, const std::string& name) {
    write_float(model, name, model.load_fp32(name));
  }

  // Closes the shard and serialises this rank's records for the gather on rank 0.
  std::string finish() {
    writer_.close();
    fault_point("shard_closed", index_, -1);
    // The records travel as a partial manifest (only layers and modules filled), so the
    // manifest's own (de)serialisation and validation serve the gather too.
    Manifest part;
    part.layers = layers_;
    part.modules = records_;
    return json{{"shard", checkpoint_shard_name(index_)}, {"bytes", bytes_}, {"records", manifest_to_json(part)}}.dump();
  }

 private:
  int index_;
  ShardWriter writer_;
  int64_t bytes_ = 0;
  std::vector<ManifestLayer> layers_;
  std::vector<ManifestModule> records_;
};

void copy_tokenizer(const fs::path& model_dir, const fs::path& out_dir) {
  for (const char* name : {"tokenizer.model", "tokenizer.bin", "tokenizer.json", "tokenizer_config.json"}) {
    std::error_code ec;
    if (fs::is_regular_file(model_dir / name, ec)) fs::copy_file(model_dir / name, out_dir / name, fs::copy_options::overwrite_existing);
  }
}

// Rank 0: the manifest from everyone's records, then model.h5 and manifest.json (last).
json finalize_checkpoint(const JobPlan& p, const std::vector<std::string>& parts, const SafetensorsModel& model,
                         std::map<std::string, double> phase_seconds, const json& ranks) {
  Manifest m;
  const fs::path model_dir = fs::absolute(p.spec.model);
  m.model.path = model_dir.string();
  m.model.architecture = p.config.architecture;
  m.model.config = p.config.raw;
  m.model.files.push_back({"config.json", sha256_file(model_dir / "config.json")});
  for (const std::string& f : model.files()) m.model.files.push_back({f, sha256_file(model_dir / f)});
  if (fs::exists(model_dir / "model.safetensors.index.json"))
    m.model.files.push_back({"model.safetensors.index.json", sha256_file(model_dir / "model.safetensors.index.json")});
  m.spec = job_spec_to_json(p.spec);

  std::map<int, ManifestLayer> layers;
  std::map<std::string, ManifestModule> modules;
  int64_t bytes = 0;
  for (const std::string& part : parts) {
    if (part.empty()) continue;
    const json j = json::parse(part);
    bytes += j.at("bytes").get<int64_t>();
    const Manifest piece = manifest_from_json(j.at("records"), "rank records");
    ManifestShard shard;
    shard.file = j.at("shard").get<std::string>();
    for (const auto& l : piece.layers) {
      layers[l.index] = l;
      shard.layers.push_back(l.index);
    }
    for (const auto& mod : piece.modules) modules[mod.name] = mod;
    m.shards.push_back(shard);
  }
  for (auto& [index, l] : layers) {
    // The scores the policy decided on (unquantized model), not the quantize pass's own.
    if (p.scores.measured()) {
      l.lim = p.scores.lim[static_cast<size_t>(index)];
      l.zd = p.scores.zd[static_cast<size_t>(index)];
      l.sensitivity = p.scores.layer_sensitivity(index);
    }
    m.layers.push_back(l);
  }
  for (const auto& choice : p.allocation.modules) m.modules.push_back(modules.at(choice.module.name));

  const ManifestBits bits = manifest_bits(m.modules);
  m.summary.avg_bits = bits.avg_bits;
  m.summary.avg_bits_effective = bits.avg_bits_effective;
  m.summary.quantized_params = bits.quantized_params;
  m.summary.bytes = bytes;
  int64_t original = 0;
  for (const std::string& name : model.tensor_names()) {
    const TensorInfo& info = model.info(name);
    original += static_cast<int64_t>(info.end - info.begin);
  }
  m.summary.original_bytes = original;
  m.summary.compression = bytes > 0 ? static_cast<double>(original) / static_cast<double>(bytes) : 0.0;
  m.summary.phase_seconds = std::move(phase_seconds);
  copy_tokenizer(model_dir, p.spec.output);
  m.ranks = ranks;
  checkpoint_finalize(p.spec.output, m);
  return manifest_to_json(m);
}

// Hidden states of calibration micro-batch m: [mb_size * seq_len, hidden].
std::vector<float> embed_micro_batch(const JobPlan& p, const ModelWeights& embedding, int m) {
  const int64_t n_tokens = static_cast<int64_t>(p.mb_size(m)) * p.seq_len;
  std::vector<float> hidden(static_cast<size_t>(n_tokens * p.config.hidden_size));
  embed(embedding, p.windows.data() + static_cast<int64_t>(p.mb_begin(m)) * p.seq_len, n_tokens, hidden.data());
  return hidden;
}

// What the manifest records about each rank: where it ran, what it owned, its peak memory.
json rank_info_json(const Comm& comm) {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return {{"rank", comm.rank()}, {"host", rank_label(comm)}, {"peak_rss_mb", static_cast<double>(usage.ru_maxrss) / 1024.0}};
}

struct LayerScores {
  double lim = 0.0;
  double zd = 0.0;
};

// ------------------------------------------------------------------ pipeline schedule
// Calibration of the unquantized model, layers sharded as the plan says: micro-batches flow
// 0 → 1 → ... → last active rank; each rank returns the statistics of its layers [begin, end).
// `weights` holds at least those layers (and the embedding on rank 0).
std::vector<LayerCalibration> calibrate_pipeline(Comm& comm, const JobPlan& p, const ModelWeights& weights,
                                                 Progress& progress, const char* phase) {
  const int rank = comm.rank(), begin = p.layers.begin(rank), end = p.layers.end(rank);
  int last_active = 0;
  for (int r = 0; r < comm.size(); ++r) {
    if (p.layers.end(r) > p.layers.begin(r)) last_active = r;
  }
  std::vector<LayerCalibration> calib;
  for (int l = begin; l < end; ++l) calib.emplace_back(p.config);
  const int64_t hidden_size = p.config.hidden_size;
  if (comm.is_root()) progress.begin_phase(phase, p.n_micro_batches());
  if (end > begin) {
    for (int m = 0; m < p.n_micro_batches(); ++m) {
      std::vector<float> hidden;
      const int64_t n_tokens = static_cast<int64_t>(p.mb_size(m)) * p.seq_len;
      if (rank == 0) {
        hidden = embed_micro_batch(p, weights, m);
      } else {
        hidden.resize(static_cast<size_t>(n_tokens * hidden_size));
        comm.recv(hidden.data(), hidden.size() * sizeof(float), rank - 1, m);
      }
      for (int l = begin; l < end; ++l)
        calib[static_cast<size_t>(l - begin)].forward(p.config, weights.layer(l), hidden.data(), p.mb_size(m), p.seq_len);
      fault_point("micro_batch", rank, m);
      if (rank < last_active) comm.send(hidden.data(), hidden.size() * sizeof(float), rank + 1, m);
      if (comm.is_root()) progress.update(m + 1);
    }
  }
  return calib;
}

// Each rank owns layers [begin, end). Micro-batches flow 0 → 1 → ... → last active rank.
json run_pipeline(Comm& comm, const JobPlan& p, const JobOptions& options, Progress& progress,
                  std::map<std::string, double>& phases, std::unique_ptr<ShardOutput>& shard) {
  const SafetensorsModel model(p.spec.model);
  const int rank = comm.rank(), begin = p.layers.begin(rank), end = p.layers.end(rank);
  auto t0 = clock_type::now();
  WeightsSelection sel;
  sel.layer_begin = begin;
  sel.layer_end = end;
  sel.embedding = rank == 0;
  sel.head = false;
  ModelWeights weights;
  if (end > begin || rank == 0) weights = model_weights_load(model, p.config, sel);

  std::vector<LayerCalibration> calib = calibrate_pipeline(comm, p, weights, progress, "calibrate");
  phases["calibrate"] = seconds_since(t0);

  std::vector<LayerScores> scores;
  for (int l = begin; l < end; ++l)
    scores.push_back({calib[static_cast<size_t>(l - begin)].lim.score(), zd_score(weights.layer(l))});

  if (options.dry_run) {
    json layers = json::array();
    for (int l = begin; l < end; ++l)
      layers.push_back({{"index", l}, {"lim", scores[static_cast<size_t>(l - begin)].lim}, {"zd", scores[static_cast<size_t>(l - begin)].zd}});
    const auto all = comm.gather(layers.dump(), 0);
    if (!comm.is_root()) return nullptr;
    json merged = json::array();
    for (const auto& part : all) {
      for (const auto& l : json::parse(part)) merged.push_back(l);
    }
    return json{{"layers", merged}, {"calibration_tokens", p.windows.size()}};
  }

  // All ranks quantize their own layers at once, in lockstep rounds (round i: every rank's
  // i-th layer) so that rank 0 can report the layers done by everyone after each round.
  t0 = clock_type::now();
  if (end > begin || rank == 0) shard = std::make_unique<ShardOutput>(p.spec.output, rank);
  int rounds = 0;
  for (int r = 0; r < comm.size(); ++r) rounds = std::max(rounds, p.layers.end(r) - p.layers.begin(r));
  if (comm.is_root()) progress.begin_phase("quantize", p.config.num_layers);
  for (int round = 0; round < rounds; ++round) {
    const int l = begin + round;
    int64_t done = 0;
    if (l < end) {
      const auto& c = calib[static_cast<size_t>(round)];
      const auto modules = quantize_layer(weights.layer(l), layer_choices(p.allocation, l),
                                          p.windows.empty() ? nullptr : &c, nullptr);
      fault_point("layer_quantized", rank, l);
      shard->write_layer(model, l, weights.layer(l), modules, scores[static_cast<size_t>(round)].lim,
                         scores[static_cast<size_t>(round)].zd);
      calib[static_cast<size_t>(round)] = LayerCalibration();
      weights.layer(l) = LayerWeights();
    }
    for (int r = 0; r < comm.size(); ++r) done += std::min(round + 1, p.layers.end(r) - p.layers.begin(r));
    comm.barrier();
    if (comm.is_root()) progress.update(static_cast<int>(done));
  }
  phases["quantize"] = seconds_since(t0);
  return nullptr;
}

// ----------------------------------------------------------------- measurement pass
// Tokens of the sensitivity probe: the first calibration windows up to this many tokens.
// Every (linear, bit option) costs one rerun of layers l..L and the head on them.
constexpr int64_t sensitivity_probe_tokens = 2048;

// The measurement pass of policies lim, zd and sensitivity (coordinator/precision_policy.hpp):
// the unquantized model is calibrated as the pipeline schedule does (exact accumulators, so
// LIM does not depend on the rank count); each rank scores its own layers (LIM, ZD and, for
// sensitivity, the probe's KL per free linear and bit option — the probe needs the whole
// model, so those ranks load all of it); rank 0 gathers, solves, and broadcasts the
// allocation and the scores. Every score is computed by the same code on the same inputs
// whichever rank owns the layer, so the allocation is the same for any N.
void measure_precision(Comm& comm, JobPlan& p, Progress& progress, std::map<std::string, double>& phases) {
  const auto t0 = clock_type::now();
  const SafetensorsModel model(p.spec.model);
  const int rank = comm.rank(), begin = p.layers.begin(rank), end = p.layers.end(rank);
  const bool sensitivity = p.spec.precision.policy == "sensitivity";
  WeightsSelection sel;
  if (!(sensitivity && end > begin)) {
    sel.layer_begin = begin;
    sel.layer_end = end;
    sel.embedding = rank == 0;
    sel.head = false;
  }
  ModelWeights weights;
  if (end > begin || rank == 0) weights = model_weights_load(model, p.config, sel);
  const std::vector<LayerCalibration> calib = calibrate_pipeline(comm, p, weights, progress, "measure");

  const std::vector<bool> free = free_modules(p.allocation, p.spec);
  std::unique_ptr<LayerSensitivityProbe> probe;
  if (sensitivity && end > begin) {
    const int n_seq = static_cast<int>(std::clamp<int64_t>(sensitivity_probe_tokens / p.seq_len, 1, p.samples()));
    std::vector<int32_t> tokens(p.windows.begin(), p.windows.begin() + static_cast<int64_t>(n_seq) * p.seq_len);
    probe = std::make_unique<LayerSensitivityProbe>(weights, std::move(tokens), n_seq, p.seq_len);
  }
  json part = json::array();
  for (int l = begin; l < end; ++l) {
    json entry{{"index", l}, {"lim", calib[static_cast<size_t>(l - begin)].lim.score()}, {"zd", zd_score(weights.layer(l))}};
    if (probe) {
      std::vector<ModuleChoice> choices;
      std::vector<bool> layer_free;
      for (size_t i = 0; i < p.allocation.modules.size(); ++i) {
        if (p.allocation.modules[i].module.layer != l) continue;
        choices.push_back(p.allocation.modules[i]);
        layer_free.push_back(free[i]);
      }
      entry["error"] = measure_layer_sensitivity(*probe, weights.layer(l), calib[static_cast<size_t>(l - begin)], choices,
                                                 layer_free, p.spec.precision.bit_options);
    }
    part.push_back(entry);
  }
  const auto parts = comm.gather(part.dump(), 0);

  std::string text, failure;
  if (comm.is_root()) {
    try {
      PrecisionScores scores;
      scores.lim.assign(static_cast<size_t>(p.config.num_layers), 0.0);
      scores.zd.assign(static_cast<size_t>(p.config.num_layers), 0.0);
      if (sensitivity) scores.bit_options = p.spec.precision.bit_options;
      for (const auto& piece : parts) {
        for (const auto& e : json::parse(piece)) {
          const auto l = e.at("index").get<size_t>();
          scores.lim[l] = e.at("lim").get<double>();
          scores.zd[l] = e.at("zd").get<double>();
          if (e.contains("error")) {
            for (const auto& [name, errors] : e.at("error").items()) scores.module_error[name] = errors.get<std::vector<double>>();
          }
        }
      }
      std::string solver;
      const Allocation a = allocate_precision(p.config, p.spec, scores, &solver);
      spdlog::debug("precision policy {}: average {:.4f} bits per weight (target {}, {})", p.spec.precision.policy,
                   a.avg_bits(), *p.spec.precision.target_bpw, solver);
      text = json{{"scores", precision_scores_to_json(scores)}, {"allocation", allocation_to_json(a)}}.dump();
    } catch (const std::exception& e) {
      failure = e.what();
    }
  }
  comm.broadcast(failure, 0);
  if (!failure.empty()) throw collective_error(failure);
  comm.broadcast(text, 0);
  const json decided = json::parse(text);
  p.scores = precision_scores_from_json(decided.at("scores"));
  p.allocation = allocation_from_json(decided.at("allocation"), p.config);
  phases["measure"] = seconds_since(t0);
}

// ---------------------------------------------------------------- sequential schedule
void run_sequential(Comm& comm, const JobPlan& p, const JobOptions& options, Progress& progress,
                    std::map<std::string, double>& phases, std::unique_ptr<ShardOutput>& shard) {
  const SafetensorsModel model(p.spec.model);
  const int rank = comm.rank();
  const int mb0 = static_cast<int>(split_begin(p.n_micro_batches(), comm.size(), rank));
  const int mb1 = static_cast<int>(split_begin(p.n_micro_batches(), comm.size(), rank + 1));
  std::vector<std::vector<float>> hidden;  // this rank's micro-batches
  if (!p.windows.empty()) {
    WeightsSelection sel;
    sel.layer_begin = 0;
    sel.layer_end = 0;
    sel.head = false;
    const ModelWeights embedding = model_weights_load(model, p.config, sel);
    for (int m = mb0; m < mb1; ++m) hidden.push_back(embed_micro_batch(p, embedding, m));
  }
  if (comm.is_root()) progress.begin_phase("quantize", p.config.num_layers);
  double calibrate_s = 0, quantize_s = 0;
  for (int l = 0; l < p.config.num_layers; ++l) {
    const int owner = p.layers.owner(l);
    const LayerWeights weights = layer_weights_load(model, p.config, l);
    auto t0 = clock_type::now();
    LayerCalibration calib(p.config);
    for (int m = mb0; m < mb1; ++m) {
      std::vector<float> scratch = hidden[static_cast<size_t>(m - mb0)];
      calib.forward(p.config, weights, scratch.data(), p.mb_size(m), p.seq_len);
    }
    calibration_allreduce(comm, calib);
    calibrate_s += seconds_since(t0);

    t0 = clock_type::now();
    const auto modules = quantize_layer(weights, layer_choices(p.allocation, l), p.windows.empty() ? nullptr : &calib, &comm);
    if (!hidden.empty()) {
      const LayerWeights quantized = dequantized_layer(weights, modules);
      for (int m = mb0; m < mb1; ++m)
        layer_forward(p.config, quantized, hidden[static_cast<size_t>(m - mb0)].data(), p.mb_size(m), p.seq_len);
    }
    quantize_s += seconds_since(t0);
    fault_point("layer_quantized", rank, l);
    if (rank == owner) {
      if (!shard) shard = std::make_unique<ShardOutput>(p.spec.output, rank);
      shard->write_layer(model, l, weights, modules, calib.lim.score(), zd_score(weights));
    }
    if (comm.is_root()) progress.update(l + 1);
  }
  phases["calibrate"] = calibrate_s;
  phases["quantize"] = quantize_s;
}

}  // namespace

json quantize_job_run(Comm& comm, const json& spec_json, const JobOptions& options) {
  const auto job_start = clock_type::now();
  Progress progress(comm.is_root() ? options.progress : progress_mode::quiet,
                    comm.is_root() ? options.progress_file : fs::path());
  std::map<std::string, double> phases;

  auto t0 = clock_type::now();
  JobPlan p = broadcast_plan(comm, spec_json, options);
  phases["plan"] = seconds_since(t0);
  if (comm.is_root() && !options.dry_run) {
    // A forced rerun first withdraws the old manifest: nothing may claim completion
    // while the new checkpoint is being written. Other files of the user stay.
    std::error_code ec;
    fs::create_directories(p.spec.output, ec);
    if (ec) throw io_error(fmt::format("cannot create output directory '{}': {}", p.spec.output, ec.message()));
    fs::remove(fs::path(p.spec.output) / manifest_file_name, ec);
  }
  comm.barrier();
  if (comm.is_root())
    progress.event({{"event", "plan"}, {"layers", p.config.num_layers}, {"ranks", comm.size()},
                    {"schedule", p.spec.schedule}, {"calibration_tokens", p.windows.size()}});
  if (!options.dry_run && policy_needs_measurement(p.spec.precision.policy)) measure_precision(comm, p, progress, phases);

  const SafetensorsModel model(p.spec.model);
  std::unique_ptr<ShardOutput> shard;
  if (options.dry_run || p.spec.schedule == "pipeline") {
    json report = run_pipeline(comm, p, options, progress, phases, shard);
    if (options.dry_run) return report;
  } else {
    run_sequential(comm, p, options, progress, phases, shard);
  }

  t0 = clock_type::now();
  if (comm.is_root() && !shard) shard = std::make_unique<ShardOutput>(p.spec.output, 0);
  std::string part;
  if (shard) {
    if (comm.is_root()) {
      shard->write_source_tensor(model, "model.embed_tokens.weight");
      shard->write_source_tensor(model, "model.norm.weight");
      if (!p.config.tie_word_embeddings) shard->write_source_tensor(model, "lm_head.weight");
    }
    part = shard->finish();
  }
  const auto parts = comm.gather(part, 0);
  const auto rank_info = comm.gather(rank_info_json(comm).dump(), 0);
  phases["write"] = seconds_since(t0);
  if (!comm.is_root()) return nullptr;
  phases["total"] = seconds_since(job_start);
  fault_point("before_manifest", 0, -1);
  json ranks = json::array();
  for (const auto& r : rank_info) ranks.push_back(json::parse(r));
  json manifest = finalize_checkpoint(p, parts, model, phases, ranks);
  progress.event({{"event", "done"}, {"output", p.spec.output}, {"avg_bits", manifest["summary"]["avg_bits"]}});
  return manifest;
}

}  // namespace shardq
