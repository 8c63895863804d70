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
#include "coordinator/job_plan.hpp"
#include "coordinator/precision_policy.hpp"
#include "coordinator/shard_output.hpp"
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