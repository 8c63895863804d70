#include "coordinator/job_plan.hpp"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>

#include <fmt/format.h>

#include "common/error.hpp"
#include "common/safetensors.hpp"
#include "common/sha256.hpp"
#include "common/tokenizer.hpp"
#include "coordinator/resume.hpp"
#include "coordinator/shard_output.hpp"
#include "worker/calibration.hpp"
#include "worker/llama_weights.hpp"
#include "worker/sequential_engine.hpp"

namespace shardq {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

bool needs_calibration(const Allocation& a) {
  return std::any_of(a.modules.begin(), a.modules.end(),
                     [](const ModuleChoice& m) { return m.quantized && m.quant.method == quant_method::gptq; });
}

// SHARDQ_CUDA_MATMUL: one of cuda_matmul_precisions ("fp32", "tf32x3", "tf32", "bf16") for
// both phases, or per phase "forward=tf32,hessian=fp32" (the precision of the GPU's matrix
// products, chosen by measurement; part of the job identity).
CudaMatmul cuda_matmul_from_env() {
  CudaMatmul m;
  const char* v = std::getenv("SHARDQ_CUDA_MATMUL");
  if (!v || !*v) return m;
  const auto check = [](const std::string& value) {
    if (std::find(cuda_matmul_precisions.begin(), cuda_matmul_precisions.end(), value) == cuda_matmul_precisions.end())
      throw spec_error("SHARDQ_CUDA_MATMUL", fmt::format("'{}' is not a precision (fp32, tf32x3, tf32 or bf16)", value));
    return value;
  };
  const std::string text = v;
  if (text.find('=') == std::string::npos) {
    m.forward = m.hessian = check(text);
    return m;
  }
  size_t at = 0;
  while (at <= text.size()) {
    const size_t end = std::min(text.find(',', at), text.size());
    const std::string item = text.substr(at, end - at);
    const size_t eq = item.find('=');
    const std::string phase = item.substr(0, eq), value = eq == std::string::npos ? "" : item.substr(eq + 1);
    if (phase == "forward") {
      m.forward = check(value);
    } else if (phase == "hessian") {
      m.hessian = check(value);
    } else {
      throw spec_error("SHARDQ_CUDA_MATMUL", fmt::format("'{}': phases are forward and hessian", item));
    }
    at = end + 1;
  }
  return m;
}

// device "auto" becomes what runs: the GPU when this build has the CUDA tier, a GPU is
// visible and the schedule runs there (sequential), else the CPU. The resolved device is part
// of the job identity and the manifest's spec: GPU and CPU agree on ≥ 99.9 % of the integers,
// not on all, so a resume never mixes them.
void resolve_device(JobPlan& p) {
  const bool sequential = p.spec.schedule == "sequential";
  if (p.spec.device == "auto") p.spec.device = cuda_device_available() && sequential ? "cuda" : "cpu";
  if (p.spec.device == "cuda") {
    if (!cuda_device_available())
      throw unsupported_error("device: 'cuda' but this build has no CUDA tier or this machine sees no GPU (use cpu or auto)");
    if (!sequential)
      throw unsupported_error("device: 'cuda' runs the sequential schedule; schedule 'pipeline' runs on the CPU (use device cpu or schedule sequential)");
    p.cuda_matmul = cuda_matmul_from_env();
  }
  if (p.spec.comm == "nccl") {
    if (p.spec.device != "cuda") throw unsupported_error("comm: 'nccl' needs device 'cuda'; use mpi or auto");
    if (!nccl_built()) throw unsupported_error("comm: 'nccl' needs a build with NCCL (cmake -DSHARDQ_NCCL=ON); use mpi or auto");
  }
}

}  // namespace

JobPlan plan_from_spec(const JobSpec& spec, int n_ranks) {
  JobPlan p;
  p.spec = spec;
  p.config = model_config_load(p.spec.model);
  const SafetensorsModel model(p.spec.model);  // validates every header now
  llama_tensors_check(model, p.config);          // and every tensor the job reads, by name, shape and dtype
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
  if (needs_calibration(p.allocation) && p.spec.calibration.path.empty())
    throw spec_error("calibration.path", "is required (GPTQ and the importance scores need calibration text)");

  const int context = p.config.max_position_embeddings > 0 ? p.config.max_position_embeddings : p.spec.calibration.seq_len;
  p.seq_len = std::min(p.spec.calibration.seq_len, context);
  p.micro_batch = calibration_micro_batch(p.seq_len);
  p.committed.assign(checkpoint_shard_layers(p.config).size(), 0);
  return p;
}

namespace {

// Rank 0: everything that can fail on user input, before any work starts.
JobPlan make_plan(const json& spec_json, const JobOptions& options, int n_ranks) {
  JobSpec spec = job_spec_from_json(spec_json);
  job_spec_check_paths(spec, options.force || options.dry_run);
  JobPlan p = plan_from_spec(spec, n_ranks);
  resolve_device(p);
  if (p.spec.calibration.path.empty()) {
    if (options.dry_run) throw spec_error("calibration.path", "is required by --dry-run (it scores every layer on calibration text)");
    return p;
  }
  std::unique_ptr<Tokenizer> tokenizer;
  if (p.spec.calibration.format == "text") tokenizer = tokenizer_load(model_tokenizer_dir(p.spec.model), p.config.vocab_size);
  const auto stream = calibration_stream(p.spec.calibration.path, p.spec.calibration.format, tokenizer.get(),
                                         p.config.vocab_size);
  p.windows = calibration_windows(stream, p.spec.calibration.samples, p.seq_len, p.spec.calibration.seed);
  return p;
}

json plan_to_json(const JobPlan& p) {
  return {{"spec", job_spec_to_json(p.spec)},
          {"config", p.config.raw},
          {"layers", layer_plan_to_json(p.layers)},
          {"allocation", allocation_to_json(p.allocation)},
          {"seq_len", p.seq_len},
          {"micro_batch", p.micro_batch},
          {"resumed", p.resumed},
          {"committed", p.committed},
          {"identity_sha256", p.identity_sha256},
          {"measure_journalled", p.measure_journalled},
          {"hidden_snapshot", p.hidden_snapshot},
          {"scores", precision_scores_to_json(p.scores)},
          {"cuda_matmul", {{"forward", p.cuda_matmul.forward}, {"hessian", p.cuda_matmul.hessian}}}};
}

JobPlan plan_from_json(const json& j) {
  JobPlan p;
  p.spec = job_spec_from_json(j.at("spec"));
  p.config = model_config_from_json(j.at("config"), "plan");
  p.layers = layer_plan_from_json(j.at("layers"));
  p.allocation = allocation_from_json(j.at("allocation"), p.config);
  p.seq_len = j.at("seq_len").get<int>();
  p.micro_batch = j.at("micro_batch").get<int>();
  p.resumed = j.at("resumed").get<bool>();
  p.committed = j.at("committed").get<std::vector<uint8_t>>();
  p.identity_sha256 = j.at("identity_sha256").get<std::string>();
  p.measure_journalled = j.at("measure_journalled").get<bool>();
  p.hidden_snapshot = j.at("hidden_snapshot");
  p.scores = precision_scores_from_json(j.at("scores"));
  p.cuda_matmul.forward = j.at("cuda_matmul").at("forward").get<std::string>();
  p.cuda_matmul.hessian = j.at("cuda_matmul").at("hessian").get<std::string>();
  return p;
}


// Runs `step` on rank 0; every rank then throws the same collective_error if it failed.
template <typename Step>
void root_step(Comm& comm, Step&& step) {
  std::string failure;
  if (comm.is_root()) {
    try {
      step();
    } catch (const std::exception& e) {
      failure = e.what();
    }
  }
  comm.broadcast(failure, 0);
  if (!failure.empty()) throw collective_error(failure);
}

}  // namespace

JobPlan broadcast_plan(Comm& comm, const json& spec_json, const JobOptions& options) {
  JobPlan p;
  root_step(comm, [&] { p = make_plan(spec_json, options, comm.size()); });
  if (!options.dry_run) {
    root_step(comm, [&] {
      resume_check_target(p);
      p.output_lock.emplace(p.spec.output);
      // Again under the lock: a job that finished on this output after make_plan looked
      // must not be overwritten without --force.
      job_spec_check_paths(p.spec, options.force);
    });
    // The job's identity and what an interrupted run left (coordinator/resume.hpp); the
    // hashing of model files and committed shards is split across the ranks.
    std::vector<fs::path> model_files;
    root_step(comm, [&] {
      for (const std::string& f : model_identity_files(p)) model_files.push_back(fs::path(p.spec.model) / f);
    });
    const std::vector<std::string> model_digests = collective_sha256(comm, model_files);
    std::optional<Journal> journal;
    std::vector<JournalShard> records;  // commit records of published shards the journal lacks
    std::vector<fs::path> shard_files;
    root_step(comm, [&] {
      p.identity = job_identity(p, model_digests);
      p.identity_sha256 = sha256_hex(p.identity.dump());
      journal = resume_open(p);
      if (journal) {
        records = resume_commit_records(p, *journal);
        for (const auto& [index, s] : journal->shards) shard_files.push_back(fs::path(p.spec.output) / s.file);
        for (const JournalShard& s : records) shard_files.push_back(fs::path(p.spec.output) / s.file);
      }
    });
    const std::vector<std::string> shard_digests = collective_sha256(comm, shard_files);
    root_step(comm, [&] {
      if (journal) {
        resume_decide(p, *journal, records, shard_digests);
      } else if (p.spec.resume) {
        p.resume_report = {{"resumed", false}, {"reason", "nothing to resume: the job starts from the beginning"}};
      }
    });
  }
  std::string text;
  if (comm.is_root()) text = plan_to_json(p).dump();
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

}  // namespace shardq
