// shardq: distributed post-training quantization of Llama-family models.
// Subcommands live in cmd_<name>.cpp; see ../shared/DESIGN.md for the contracts.
#include <cstdio>
#include <exception>
#include <string>

#include <CLI/CLI.hpp>

#include "apps/shardq/command.hpp"
#include "common/error.hpp"
#include "common/log.hpp"
#include "kernels/cpu/blas.hpp"

namespace shardq::app {

std::vector<CommandSetup>& command_registry() {
  static std::vector<CommandSetup> registry;
  return registry;
}

}  // namespace shardq::app

int main(int argc, char** argv) {
  shardq::cpu::blas_select_kernels(argv);
  CLI::App app{"shardq — distributed post-training quantization of Llama-family models"};
  app.require_subcommand(1);
  // The OpenBLAS kernel set goes with the version: results of the CPU products depend on it.
  app.set_version_flag("--version", "shardq 0.1.0 (OpenBLAS kernels: " + shardq::cpu::blas_kernels() + ")");
  for (auto setup : shardq::app::command_registry()) setup(app);

  std::string which = "shardq";
  try {
    app.parse(argc, argv);
    return 0;
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    for (const CLI::App* sub : app.get_subcommands()) which = "shardq " + sub->get_name();
    std::fprintf(stderr, "%s: error: %s\n", which.c_str(), shardq::one_line(e.what()).c_str());
    return 1;
  }
}
