// Subcommands register themselves: each cmd_<name>.cpp defines a setup function that adds
// its CLI11 subcommand (options, help text with defaults, and a callback doing the work)
// and registers it with SHARDQ_REGISTER_COMMAND. Callbacks report failure by throwing; main
// prints one line "shardq <cmd>: error: <what>" and exits non-zero.
#pragma once

#include <functional>
#include <vector>

#include <CLI/CLI.hpp>

namespace shardq::app {

using CommandSetup = void (*)(CLI::App& root);

std::vector<CommandSetup>& command_registry();

struct CommandRegistrar {
  explicit CommandRegistrar(CommandSetup setup) { command_registry().push_back(setup); }
};

}  // namespace shardq::app

#define SHARDQ_REGISTER_COMMAND(setup) \
  static const ::shardq::app::CommandRegistrar shardq_registrar_##setup { setup }
