// `shardq quantize`: the job of coordinator/quantize_job.hpp, from --config and/or flags
// that mirror the job spec one to one (a flag overrides the same key of --config).
// `mpirun -np N shardq quantize ...` is the distributed run; a single process is N = 1.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "apps/shardq/command.hpp"
#include "comm/comm.hpp"
#include "common/error.hpp"
#include "common/job_spec.hpp"
#include "common/log.hpp"
#include "coordinator/quantize_job.hpp"
#include "kernels/cpu/blas.hpp"

namespace shardq::app {
namespace {

using nlohmann::json;

struct QuantizeFlags {
  std::string config;
  std::optional<std::string> model, output, calibration, calibration_format, method, policy, keep_fp16_layers,
      components, bit_options, schedule, comm, device;
  std::optional<int> samples, seq_len, bits, group_size, block_size;
  std::optional<uint64_t> seed;
  std::optional<float> damp;
  std::optional<double> target_bpw;
  std::optional<bool> sym, act_order, resume;
  bool force = false, dry_run = false, quiet = false, json_out = false;
  std::string progress = "human", progress_file;
  int blas_threads = 0;
};

// The spec: --config first, then every flag given on top of it.
json spec_from_flags(const QuantizeFlags& f) {
  json j = f.config.empty() ? json::object() : job_spec_read_file(f.config);
  if (!j.is_object()) throw spec_error("config", fmt::format("'{}' must hold a JSON object", f.config));
  auto set = [&j](const char* pointer, const auto& value) {
    if (value) j[json::json_pointer(pointer)] = *value;
  };
  set("/model", f.model);
  set("/output", f.output);
  set("/calibration/path", f.calibration);
  set("/calibration/format", f.calibration_format);
  set("/calibration/samples", f.samples);
  set("/calibration/seq_len", f.seq_len);
  set("/calibration/seed", f.seed);
  set("/quant/method", f.method);
  set("/quant/bits", f.bits);
  set("/quant/group_size", f.group_size);
  set("/quant/sym", f.sym);
  set("/quant/act_order", f.act_order);
  set("/quant/damp", f.damp);
  set("/quant/block_size", f.block_size);
  set("/precision/policy", f.policy);
  set("/precision/target_bpw", f.target_bpw);
  set("/precision/bit_options", f.bit_options);
  set("/precision/keep_fp16_layers", f.keep_fp16_layers);
  set("/precision/components", f.components);
  set("/schedule", f.schedule);
  set("/comm", f.comm);
  set("/device", f.device);
  set("/resume", f.resume);
  return j;
}

void print_report(const json& report, const QuantizeFlags& f, bool dry_run) {
  if (f.json_out) {
    std::cout << report.dump(2) << "\n";
    return;
  }
  if (dry_run) {
    std::cout << fmt::format("{:>5}  {:>10}  {:>10}\n", "layer", "lim", "zd");
    for (const auto& l : report.at("layers"))
      std::cout << fmt::format("{:>5}  {:>10.6f}  {:>10.6f}\n", l.at("index").get<int>(), l.at("lim").get<double>(),
                               l.at("zd").get<double>());
    return;
  }
  const auto& s = report.at("summary");
  std::cout << fmt::format("wrote {}: {} modules, avg {:.3f} bits/weight ({:.3f} with scales), {:.1f} KiB -> {:.1f} KiB ({:.2f}x) in {:.1f}s\n",
                           report.at("spec").at("output").get<std::string>(), report.at("modules").size(),
                           s.at("avg_bits").get<double>(), s.at("avg_bits_effective").get<double>(),
                           s.at("original_bytes").get<double>() / 1024.0, s.at("bytes").get<double>() / 1024.0,
                           s.at("compression").get<double>(), s.at("phase_seconds").value("total", 0.0));
}

void run(const QuantizeFlags& f) {
  std::optional<MpiEnvironment> mpi;
  mpi.emplace(nullptr, nullptr);
  auto comm = comm_create(f.comm.value_or("auto"));
  log_init("", comm->size() > 1 ? rank_label(*comm) : "");
  // One BLAS thread per rank when several ranks share a machine, unless told otherwise.
  if (f.blas_threads > 0) cpu::blas_set_threads(f.blas_threads);
  else if (comm->size() > 1) cpu::blas_set_threads(1);
  JobOptions options;
  options.force = f.force;
  options.dry_run = f.dry_run;
  options.progress = f.quiet ? progress_mode::quiet : progress_mode_from_string(f.progress);
  options.progress_file = f.progress_file;
  try {
    json spec;
    std::string failure;
    if (comm->is_root()) {
      try {
        spec = spec_from_flags(f);
        // Progress lines are appended as they come; a file that cannot take them is an error
        // now, not a silent loss later.
        if (!f.progress_file.empty() && !std::ofstream(f.progress_file, std::ios::app))
          throw spec_error("progress-file", fmt::format("'{}' cannot be opened for appending", f.progress_file));
      } catch (const std::exception& e) {
        failure = e.what();
      }
    }
    comm->broadcast(failure, 0);
    if (!failure.empty()) throw collective_error(failure);
    const json report = quantize_job_run(*comm, spec, options);
    if (comm->is_root()) print_report(report, f, f.dry_run);
  } catch (const collective_error& e) {
    // Every rank holds the same error; rank 0 reports it, then every rank finalizes MPI before
    // exiting. A rank that exits without MPI_Finalize makes mpirun kill the others at once,
    // and rank 0 used to die in its own MPI_Finalize before main printed the line.
    if (comm->is_root()) {
      std::fprintf(stderr, "shardq quantize: error: %s\n", one_line(e.what()).c_str());
      std::fflush(stderr);
    }
    comm.reset();
    mpi.reset();
    std::exit(1);
  } catch (const std::exception& e) {
    if (comm->size() == 1) throw;
    // A failed rank ends the whole job at once so that nobody waits for it.
    std::fprintf(stderr, "shardq quantize: error: %s: %s\n", rank_label(*comm).c_str(), one_line(e.what()).c_str());
    std::fflush(stderr);
    comm->abort(1);
  }
}

void setup_quantize(CLI::App& root) {
  auto f = std::make_shared<QuantizeFlags>();
  CLI::App* c = root.add_subcommand("quantize", "Quantize a model into a sharded HDF5 checkpoint (run under mpirun for N ranks)");
  c->add_option("--config", f->config, "Job spec JSON; flags override its keys");
  c->add_option("--model", f->model, "Model directory (config.json + safetensors)");
  c->add_option("--output", f->output, "Output checkpoint directory");
  c->add_option("--calibration", f->calibration, "Calibration text or token file");
  c->add_option("--calibration-format", f->calibration_format, "text | tokens (default text)");
  c->add_option("--samples", f->samples, "Calibration windows (default 128)");
  c->add_option("--seq-len", f->seq_len, "Tokens per window (default 2048, capped at the model's context)");
  // (CLI11 reads "-1" into a uint64_t as 2^64 - 1; the JSON spec refuses it.)
  const CLI::Validator unsigned_integer(
      [](const std::string& text) {
        const bool digits = !text.empty() && text.find_first_not_of("0123456789") == std::string::npos;
        return digits ? std::string() : "must be a non-negative integer, got " + text;
      },
      "UINT");
  c->add_option("--seed", f->seed, "Calibration sampling seed (default 0)")->check(unsigned_integer);
  c->add_option("--method", f->method, "gptq | rtn | nf4 | int8 (default gptq)");
  c->add_option("--bits", f->bits, "2, 3, 4 or 8 (default 4)");
  c->add_option("--group-size", f->group_size, "Columns per group, -1 = per row (default 128)");
  // Boolean flags set their key only when given, so that --config keeps its value otherwise.
  auto bool_flag = [c](const std::string& name, std::optional<bool>& target, const std::string& help) {
    c->add_flag_callback("--" + name, [&target] { target = true; }, help);
    c->add_flag_callback("--no-" + name, [&target] { target = false; }, "");
  };
  bool_flag("sym", f->sym, "Symmetric grid (default asymmetric)");
  bool_flag("act-order", f->act_order, "GPTQ act-order with g_idx (default on)");
  c->add_option("--damp", f->damp, "GPTQ dampening, fraction of mean diag(H) (default 0.01)");
  c->add_option("--block-size", f->block_size, "GPTQ lazy-batch block (default 128)");
  c->add_option("--policy", f->policy, "uniform | keep | lim | zd | random | sensitivity (default uniform)");
  c->add_option("--target-bpw", f->target_bpw, "Average bits per weight for lim/zd/random/sensitivity");
  c->add_option("--bit-options", f->bit_options, "Bit widths to choose from, e.g. 2,3,4,8");
  c->add_option("--keep-fp16-layers", f->keep_fp16_layers, "Layer ranges kept in 16-bit, e.g. 16-31 or 0-3,40-47");
  c->add_option("--components", f->components, "attn,mlp (default both)");
  c->add_option("--schedule", f->schedule, "sequential | pipeline (default sequential)");
  c->add_option("--comm", f->comm, "auto | mpi | nccl (default auto)");
  c->add_option("--device", f->device, "auto | cpu | cuda (default auto)");
  bool_flag("resume", f->resume, "Resume an interrupted job in --output");
  c->add_flag("--force", f->force, "Replace the checkpoint in a non-empty output directory");
  c->add_flag("--dry-run", f->dry_run, "Calibrate only and print LIM and ZD of every layer");
  c->add_flag("--quiet", f->quiet, "No progress output");
  c->add_option("--progress", f->progress, "human | json (JSON lines on stderr) | quiet")->capture_default_str();
  c->add_option("--progress-file", f->progress_file, "Also append JSON progress lines to this file");
  c->add_option("--blas-threads", f->blas_threads, "OpenBLAS threads per rank (default: all with one rank, 1 with several)")
      ->check(CLI::Range(0, 1024));
  c->add_flag("--json", f->json_out, "Print the manifest (or dry-run scores) as JSON on stdout");
  c->callback([f] { run(*f); });
}

SHARDQ_REGISTER_COMMAND(setup_quantize);

}  // namespace
}  // namespace shardq::app
