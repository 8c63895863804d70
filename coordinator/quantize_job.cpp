#include "coordinator/quantize_job.hpp"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <optional>

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
#include "coordinator/hidden_snapshot.hpp"
#include "coordinator/job_plan.hpp"
#include "coordinator/precision_policy.hpp"
#include "coordinator/resume.hpp"
#include "coordinator/shard_output.hpp"
#include "coordinator/work_meter.hpp"
#include "kernels/cpu/blas.hpp"
#include "worker/calibration.hpp"
#include "worker/forward.hpp"
#include "worker/importance.hpp"
#include "worker/layer_quantize.hpp"
#include "worker/llama_weights.hpp"
#include "worker/sequential_engine.hpp"

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

// What the manifest records about each rank: where it ran, its peak memory, and the OpenBLAS
// kernel set its products ran on (their bits depend on it).
json rank_info_json(const Comm& comm) {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return {{"rank", comm.rank()},
          {"host", rank_label(comm)},
          {"peak_rss_mb", static_cast<double>(usage.ru_maxrss) / 1024.0},
          {"blas_kernels", cpu::blas_kernels()}};
}

struct LayerScores {
  double lim = 0.0;
  double zd = 0.0;
};

// ------------------------------------------------------------------ pipeline schedule
// The layers a job still has to produce (p.committed: journalled by an interrupted run).
std::vector<bool> missing_layers(const JobPlan& p) {
  std::vector<bool> missing(static_cast<size_t>(p.config.num_layers));
  for (int l = 0; l < p.config.num_layers; ++l) missing[static_cast<size_t>(l)] = !p.is_committed(l);
  return missing;
}

int last_true(const std::vector<bool>& v) {
  for (int i = static_cast<int>(v.size()) - 1; i >= 0; --i) {
    if (v[static_cast<size_t>(i)]) return i;
  }
  return -1;
}

// Calibration of the unquantized model, layers sharded as the plan says: micro-batches flow
// 0 → 1 → ... → the rank owning the last layer that needs statistics (`need`); each rank
// returns the statistics of its layers [begin, end) — empty for layers not needed, which
// the micro-batches only pass through. `weights` holds the rank's layers up to that point
// (and the embedding on rank 0).
std::vector<LayerCalibration> calibrate_pipeline(Comm& comm, const JobPlan& p, const ModelWeights& weights,
                                                 const std::vector<bool>& need, Progress& progress, const char* phase,
                                                 double& flops) {
  const int rank = comm.rank(), begin = p.layers.begin(rank);
  const int last_needed = last_true(need);
  const int end = std::min(p.layers.end(rank), last_needed + 1);
  const int last_active = last_needed < 0 ? -1 : p.layers.owner(last_needed);
  std::vector<LayerCalibration> calib;
  for (int l = begin; l < p.layers.end(rank); ++l)
    calib.push_back(need[static_cast<size_t>(l)] ? LayerCalibration(p.config) : LayerCalibration());
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
      for (int l = begin; l < end; ++l) {
        if (need[static_cast<size_t>(l)]) {
          calib[static_cast<size_t>(l - begin)].forward(p.config, weights.layer(l), hidden.data(), p.mb_size(m), p.seq_len);
          flops += layer_hessian_flops(p.config, p.mb_size(m), p.seq_len);
        } else {
          layer_forward(p.config, weights.layer(l), hidden.data(), p.mb_size(m), p.seq_len);
        }
        flops += layer_forward_flops(p.config, p.mb_size(m), p.seq_len);
      }
      fault_point("micro_batch", rank, m);
      if (rank < last_active) comm.send(hidden.data(), hidden.size() * sizeof(float), rank + 1, m);
      if (comm.is_root()) progress.update(m + 1);
    }
  }
  return calib;
}

// The rank's layers [begin, end) and the embedding (rank 0), as far as the calibration of
// `need` runs through them.
ModelWeights load_pipeline_weights(const JobPlan& p, const SafetensorsModel& model, int rank, const std::vector<bool>& need) {
  const int begin = p.layers.begin(rank);
  const int end = std::min(p.layers.end(rank), last_true(need) + 1);
  WeightsSelection sel;
  sel.layer_begin = begin;
  sel.layer_end = std::max(begin, end);
  sel.embedding = rank == 0;
  sel.head = false;
  if (end > begin || rank == 0) return model_weights_load(model, p.config, sel);
  return {};
}

// Each rank owns layers [begin, end). Micro-batches flow 0 → 1 → ... → last active rank.
json run_pipeline(Comm& comm, const JobPlan& p, const JobOptions& options, Progress& progress,
                  std::map<std::string, double>& phases, JournalWriter* journal, double& flops) {
  const SafetensorsModel model(p.spec.model);
  const int rank = comm.rank(), begin = p.layers.begin(rank), end = p.layers.end(rank);
  const std::vector<bool> missing = missing_layers(p);
  auto t0 = clock_type::now();
  ModelWeights weights = load_pipeline_weights(p, model, rank, missing);
  std::vector<LayerCalibration> calib = calibrate_pipeline(comm, p, weights, missing, progress, "calibrate", flops);
  phases["calibrate"] = seconds_since(t0);

  std::vector<LayerScores> scores;
  for (int l = begin; l < end; ++l) {
    const bool need = missing[static_cast<size_t>(l)];
    scores.push_back(need ? LayerScores{calib[static_cast<size_t>(l - begin)].lim.score(), zd_score(weights.layer(l))}
                          : LayerScores{});
  }

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

  // All ranks quantize their missing layers at once, in lockstep rounds (round i: every
  // rank's i-th layer); after each round rank 0 journals the commits and reports progress.
  t0 = clock_type::now();
  int rounds = 0;
  for (int r = 0; r < comm.size(); ++r) rounds = std::max(rounds, p.layers.end(r) - p.layers.begin(r));
  int committed_before = 0;
  for (int l = 0; l < p.config.num_layers; ++l) committed_before += missing[static_cast<size_t>(l)] ? 0 : 1;
  if (comm.is_root()) progress.begin_phase("quantize", p.config.num_layers);
  for (int round = 0; round < rounds; ++round) {
    const int l = begin + round;
    std::vector<JournalShard> committed;
    if (l < end && missing[static_cast<size_t>(l)]) {
      const auto& c = calib[static_cast<size_t>(round)];
      const auto choices = layer_choices(p.allocation, l);
      const auto modules = quantize_layer(weights.layer(l), choices, p.windows.empty() ? nullptr : &c, nullptr,
                                          [&](size_t n) { if (n == 1) fault_point("quantize", rank, l); });
      flops += layer_quantize_flops(choices);
      fault_point("layer_quantized", rank, l);
      committed.push_back(commit_layer_shard(p, model, l, weights.layer(l), modules,
                                             scores[static_cast<size_t>(round)].lim, scores[static_cast<size_t>(round)].zd, rank));
      calib[static_cast<size_t>(round)] = LayerCalibration();
      weights.layer(l) = LayerWeights();
    }
    journal_commits(comm, committed, journal);
    if (comm.is_root()) {
      int done = committed_before;
      for (int r = 0; r < comm.size(); ++r) {
        for (int k = p.layers.begin(r); k < std::min(p.layers.begin(r) + round + 1, p.layers.end(r)); ++k)
          done += missing[static_cast<size_t>(k)] ? 1 : 0;
      }
      progress.update(done);
    }
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
void measure_precision(Comm& comm, JobPlan& p, Progress& progress, std::map<std::string, double>& phases,
                       JournalWriter* journal) {
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
  double uncounted_flops = 0;  // see work_meter.hpp: the measurement pass is not counted
  const std::vector<LayerCalibration> calib = calibrate_pipeline(
      comm, p, weights, std::vector<bool>(static_cast<size_t>(p.config.num_layers), true), progress, "measure", uncounted_flops);

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
      const json decision{{"scores", precision_scores_to_json(scores)}, {"allocation", allocation_to_json(a)}};
      // Journalled: a resumed job keeps this decision instead of measuring again.
      journal->append_measure(decision);
      text = decision.dump();
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
// Collective. NCCL refuses two ranks of one clique on one GPU ("Duplicate GPU detected"). Each
// rank names the physical GPU it would use (host and PCI bus id, so that per-rank
// CUDA_VISIBLE_DEVICES, as srun --gpu-bind sets it, counts right). Returns "" when no two
// ranks share one and every rank has one, else what is wrong.
std::string ranks_short_of_gpus(Comm& comm) {
  const auto all = comm.gather(fmt::format("{} {}", host_name(), cuda_local_device_bus_id()), 0);
  std::string why;
  if (comm.is_root()) {
    std::map<std::string, int> first_rank;  // "host bus-id" → the first rank on it
    for (int r = 0; r < static_cast<int>(all.size()) && why.empty(); ++r) {
      const std::string& gpu = all[static_cast<size_t>(r)];
      const std::string host = gpu.substr(0, gpu.find(' '));
      if (gpu.size() == host.size() + 1) {
        why = fmt::format("rank {} on host '{}' sees no GPU", r, host);
      } else if (const auto [it, fresh] = first_rank.emplace(gpu, r); !fresh) {
        why = fmt::format("ranks {} and {} on host '{}' share the GPU at {}", it->second, r, host, gpu.substr(host.size() + 1));
      }
    }
  }
  comm.broadcast(why, 0);
  return why;
}

// Layer l is calibrated on the outputs of the quantized layers 0..l-1. On resume, committed
// layers are not redone: the hidden states pass through them as stored (dequantized from
// their shard), which gives the same bits as the uninterrupted run. The numerics run on the
// spec's device (worker/sequential_engine.hpp); this function is the schedule around them.
void run_sequential(Comm& comm, const JobPlan& p, Progress& progress, std::map<std::string, double>& phases,
                    std::map<std::string, double>& phase_flops, JournalWriter* journal, double& flops) {
  const SafetensorsModel model(p.spec.model);
  const int rank = comm.rank();
  const std::vector<bool> missing = missing_layers(p);
  const int last_missing = last_true(missing);
  const int mb0 = static_cast<int>(split_begin(p.n_micro_batches(), comm.size(), rank));
  const int mb1 = static_cast<int>(split_begin(p.n_micro_batches(), comm.size(), rank + 1));
  const bool calibrated = !p.windows.empty();
  const bool has_hidden = calibrated && last_missing >= 0;  // this rank's micro-batches flow through the layers
  MicroBatches micro_batches;
  micro_batches.seq_len = p.seq_len;
  if (has_hidden) {
    for (int m = mb0; m < mb1; ++m) micro_batches.mb_sizes.push_back(p.mb_size(m));
  }
  // comm auto: the GPUs reduce the Hessians through NCCL where this build has it and every rank
  // has a GPU of its own; ranks that share one reduce over MPI.
  bool nccl = p.spec.device == "cuda" && comm.size() > 1 &&
              (p.spec.comm == "nccl" || (p.spec.comm == "auto" && nccl_built()));
  if (nccl) {
    const std::string short_of_gpus = ranks_short_of_gpus(comm);
    if (!short_of_gpus.empty() && p.spec.comm == "nccl")
      throw spec_error("comm", fmt::format("'nccl' needs one GPU per rank, and {}; use comm 'mpi' or fewer ranks per node",
                                           short_of_gpus));
    nccl = short_of_gpus.empty();
  }
  const std::unique_ptr<SequentialEngine> engine =
      make_sequential_engine(p.spec.device, p.config, micro_batches, p.cuda_matmul, nccl);
  int start = 0;
  json snapshot = p.hidden_snapshot;      // the latest journalled snapshot (rank 0 removes older ones)
  if (has_hidden) {
    std::vector<std::vector<float>> hidden;  // this rank's micro-batches, entering layer `start`
    if (!snapshot.is_null()) {
      start = snapshot.at("layer").get<int>();
      for (int m = mb0; m < mb1; ++m)
        hidden.push_back(read_hidden_snapshot(p.spec.output, snapshot, m,
                                              static_cast<size_t>(p.mb_size(m)) * p.seq_len * p.config.hidden_size));
    } else {
      WeightsSelection sel;
      sel.layer_begin = 0;
      sel.layer_end = 0;
      sel.head = false;
      const ModelWeights embedding = model_weights_load(model, p.config, sel);
      for (int m = mb0; m < mb1; ++m) hidden.push_back(embed_micro_batch(p, embedding, m));
    }
    engine->set_hidden(std::move(hidden));
  }
  double rank_forward_flops = 0, rank_hessian_flops = 0;  // one pass of this rank's micro-batches
  for (int m = mb0; has_hidden && m < mb1; ++m) {
    rank_forward_flops += layer_forward_flops(p.config, p.mb_size(m), p.seq_len);
    rank_hessian_flops += layer_hessian_flops(p.config, p.mb_size(m), p.seq_len);
  }
  double replay_since_snapshot = 0;  // propagation a resume from here would redo (rank 0's share)
  SnapshotPolicy policy(static_cast<int64_t>(p.windows.size()) * p.config.hidden_size * static_cast<int64_t>(sizeof(float)));
  const auto propagate = [&](const char* phase) {
    const auto t0 = clock_type::now();
    engine->propagate();
    flops += rank_forward_flops;
    phase_flops[phase] += rank_forward_flops;
    replay_since_snapshot += seconds_since(t0);
  };
  // After layer l is committed: maybe save the hidden states entering l + 1 (collective).
  const auto maybe_snapshot = [&](int l) {
    if (!calibrated || l + 1 > last_missing) return;  // the same on every rank
    std::string due = comm.is_root() && policy.due(replay_since_snapshot) ? "1" : "0";
    comm.broadcast(due, 0);
    if (due != "1") return;
    const auto t0 = clock_type::now();
    const json mine = write_hidden_snapshot(p.spec.output, l + 1, mb0, engine->hidden());
    const auto all = comm.gather(mine.dump(), 0);
    if (!comm.is_root()) return;
    json files = json::array();
    for (const auto& part : all) {
      for (const json& f : json::parse(part)) files.push_back(f);
    }
    const json taken{{"layer", l + 1}, {"files", files}};
    journal->append_hidden(taken);
    if (!snapshot.is_null()) remove_hidden_snapshot(p.spec.output, snapshot);
    snapshot = taken;
    policy.written(seconds_since(t0));
    replay_since_snapshot = 0;
  };
  int done = 0;
  for (int l = 0; l < p.config.num_layers; ++l) done += missing[static_cast<size_t>(l)] ? 0 : 1;
  if (comm.is_root()) {
    progress.begin_phase("quantize", p.config.num_layers);
    if (done > 0) progress.update(done);
  }
  double load_s = 0, calibrate_s = 0, quantize_s = 0, propagate_s = 0, commit_s = 0, replay_s = 0;
  // The next layer's weights are read (and converted to fp32) on a second thread while this
  // one computes: reading a 70B model's layer from disk takes about as long as quantizing it.
  // A layer to quantize is also staged there (engine->stage: on CUDA its upload overlaps this
  // layer's steps); a replayed one loads its stored weights instead. The prefetch of l + 1
  // starts once the engine holds layer l, so the stage never waits on l's load.
  std::future<LayerWeights> prefetch;  // declared after `model` and `engine`: its destructor waits first
  int prefetched = -1;
  const auto start_prefetch = [&](int l) {
    if (l > last_missing || !(missing[static_cast<size_t>(l)] || has_hidden)) return;
    const bool stage = missing[static_cast<size_t>(l)];
    prefetch = std::async(std::launch::async, [&model, &p, &engine, l, stage] {
      LayerWeights w = layer_weights_load(model, p.config, l);
      if (stage) engine->stage(w);
      return w;
    });
    prefetched = l;
  };
  // Layer l's weights; `staged` says whether they came through the prefetch (and its stage).
  const auto take_weights = [&](int l, bool& staged) {
    staged = prefetched == l;
    prefetched = -1;
    return staged ? prefetch.get() : layer_weights_load(model, p.config, l);
  };
  // A quantized layer's shard is written (HDF5) here, then fsynced, renamed and hashed on a
  // second thread while the next layer calibrates and quantizes; the main thread journals it
  // (journal_commits is collective), reports progress and maybe snapshots the hidden states
  // (still those entering the next layer) before that layer propagates, before a replay, and
  // at the end. HDF5 stays on this thread: the library's global state and its per-thread
  // error stacks (a failed write on another thread left "infinite loop closing library" at exit).
  struct PendingCommit {
    int layer;
    std::future<JournalShard> shard;  // not valid() on the ranks that do not own the layer
  };
  std::optional<PendingCommit> pending;  // declared after `model`: destroyed (waited for) first
  const auto finish_commit = [&] {
    if (!pending) return;
    const auto t0 = clock_type::now();
    const int l = pending->layer;
    std::vector<JournalShard> committed;
    if (pending->shard.valid()) committed.push_back(pending->shard.get());
    pending.reset();
    journal_commits(comm, committed, journal);
    commit_s += seconds_since(t0);
    if (comm.is_root()) progress.update(++done);
    maybe_snapshot(l);
  };
  for (int l = start; l <= last_missing; ++l) {
    const auto choices = layer_choices(p.allocation, l);
    bool staged = false;
    if (!missing[static_cast<size_t>(l)]) {
      if (!has_hidden) continue;
      finish_commit();
      const auto t0 = clock_type::now();
      const LayerWeights stored = dequantized_layer(take_weights(l, staged), read_layer_shard(p.spec.output, l, choices));
      engine->load(stored);
      start_prefetch(l + 1);
      propagate("replay");
      replay_s += seconds_since(t0);
      continue;
    }
    const int owner = p.layers.owner(l);
    auto t0 = clock_type::now();
    const LayerWeights weights = take_weights(l, staged);
    if (staged) {
      engine->load_staged(weights);
    } else {
      engine->load(weights);
    }
    start_prefetch(l + 1);
    load_s += seconds_since(t0);

    t0 = clock_type::now();
    engine->calibrate(comm, [&](size_t i) { if (i == 0) fault_point("calibrate", rank, l); });
    flops += rank_forward_flops + rank_hessian_flops;
    phase_flops["calibrate"] += rank_forward_flops + rank_hessian_flops;
    calibrate_s += seconds_since(t0);

    t0 = clock_type::now();
    const auto modules = engine->quantize(choices, calibrated, comm,
                                          [&](size_t n) { if (n == 1) fault_point("quantize", rank, l); });
    if (comm.is_root()) {
      flops += layer_quantize_flops(choices);
      phase_flops["quantize"] += layer_quantize_flops(choices);
    }
    quantize_s += seconds_since(t0);
    finish_commit();  // layer l - 1's, while the hidden states still enter l
    t0 = clock_type::now();
    if (has_hidden) propagate("propagate");
    propagate_s += seconds_since(t0);
    fault_point("layer_quantized", rank, l);
    t0 = clock_type::now();
    if (rank == owner) {
      WrittenShard written = write_layer_shard(p, model, l, weights, modules, engine->lim_score(),
                                               zd_score(weights), rank);
      pending = PendingCommit{
          l, std::async(std::launch::async, [w = std::move(written)]() mutable { return publish_layer_shard(std::move(w)); })};
    } else {
      pending = PendingCommit{l, {}};
    }
    commit_s += seconds_since(t0);
  }
  finish_commit();
  phases["load"] = load_s;
  phases["calibrate"] = calibrate_s;
  phases["quantize"] = quantize_s;
  phases["propagate"] = propagate_s;
  phases["commit"] = commit_s;  // the layer shards' HDF5 writes, the wait for their publication, journalling
  if (replay_s > 0) phases["replay"] = replay_s;
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
  std::optional<JournalWriter> journal;  // rank 0
  if (!options.dry_run) {
    std::string failure;
    if (comm.is_root()) {
      try {
        journal.emplace(prepare_output(p));
      } catch (const std::exception& e) {
        failure = e.what();
      }
    }
    comm.broadcast(failure, 0);
    if (!failure.empty()) throw collective_error(failure);
  }
  JournalWriter* journal_ptr = journal ? &*journal : nullptr;
  if (comm.is_root()) {
    progress.event({{"event", "plan"}, {"layers", p.config.num_layers}, {"ranks", comm.size()},
                    {"schedule", p.spec.schedule}, {"calibration_tokens", p.windows.size()}});
    if (p.spec.resume) {
      json e = p.resume_report;
      e["event"] = "resume";
      progress.event(e);
    }
  }
  if (!options.dry_run && policy_needs_measurement(p.spec.precision.policy) && !p.measure_journalled)
    measure_precision(comm, p, progress, phases, journal_ptr);

  const SafetensorsModel model(p.spec.model);
  double flops = 0;
  std::map<std::string, double> phase_flops;  // sequential: this rank's counted work per phase
  if (options.dry_run || p.spec.schedule == "pipeline") {
    json report = run_pipeline(comm, p, options, progress, phases, journal_ptr, flops);
    if (options.dry_run) return report;
  } else {
    run_sequential(comm, p, progress, phases, phase_flops, journal_ptr, flops);
  }

  t0 = clock_type::now();
  if (comm.is_root() && !p.is_committed(model_shard_index(p.config)))
    journal->append_shard(commit_model_shard(p, model));
  const auto rank_info = comm.gather(rank_info_json(comm).dump(), 0);
  const auto rank_flops = comm.gather(fmt::format("{:.17g}", flops), 0);
  phases["write"] = seconds_since(t0);
  if (!comm.is_root()) return nullptr;
  phases["total"] = seconds_since(job_start);
  fault_point("before_manifest", 0, -1);
  json ranks = json::array();
  for (const auto& r : rank_info) ranks.push_back(json::parse(r));
  const auto other_kernels = std::find_if(ranks.begin(), ranks.end(), [&](const json& r) {
    return r.at("blas_kernels") != ranks[0].at("blas_kernels");
  });
  if (other_kernels != ranks.end())
    spdlog::warn("rank {} ran OpenBLAS's {} kernels and rank 0 its {}: the quantized bits can differ from a run on one "
                 "kind of machine; set OPENBLAS_CORETYPE to one kernel set for every rank",
                 other_kernels->at("rank").get<int>(), other_kernels->at("blas_kernels").get<std::string>(),
                 ranks[0].at("blas_kernels").get<std::string>());
  double work = 0;
  for (const auto& f : rank_flops) work += std::stod(f);
  const double full = full_job_flops(p.config, p.allocation, p.spec.schedule, p.samples(), p.seq_len);
  int reused = 0;
  for (uint8_t c : p.committed) reused += c;
  json run{{"resumed", p.resumed},
                 {"shards_reused", reused},
                 {"shards_total", p.committed.size()},
                 {"work_gflop", work * 1e-9},
                 {"full_job_gflop", full * 1e-9},
                 {"work_fraction", full > 0 ? work / full : 0.0},
                 {"device", p.spec.device}};
  // Rank 0's counted work and achieved rate per phase of the sequential schedule (what the
  // GPU benchmarks report; the matmul precision is the identity's cuda_matmul).
  for (const auto& [phase, f] : phase_flops) {
    run["phase_gflop"][phase] = f * 1e-9;
    const auto t = phases.find(phase);
    if (t != phases.end() && t->second > 0) run["phase_tflops"][phase] = f * 1e-12 / t->second;
  }
  if (p.spec.device == "cuda")
    run["cuda_matmul"] = {{"forward", p.cuda_matmul.forward}, {"hessian", p.cuda_matmul.hessian}};
  json work_event = run;
  work_event["event"] = "work";
  progress.event(work_event);
  const Journal finished = journal_read(p.spec.output);
  json manifest = finalize_checkpoint(p, finished, model, phases, ranks, run);
  // Resume state the finished checkpoint no longer needs (hidden_snapshot.hpp, checkpoint_journal.hpp).
  for (const auto& [layer, snapshot] : finished.hidden) remove_hidden_snapshot(p.spec.output, snapshot);
  for (const auto& [index, shard] : finished.shards) commit_record_remove(p.spec.output, shard.file);
  progress.event({{"event", "done"}, {"output", p.spec.output}, {"avg_bits", manifest["summary"]["avg_bits"]}});
  return manifest;
}

}  // namespace shardq
