// Subcommands register themselves here, one file each, so the binaries'
// main() wires them without knowing them (agent/cmd/*.cpp, agent/cli/*.cpp).
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace meshlock {

// Given its CLI11 subcommand, a command adds its options and returns the
// action to run when it is chosen. The action returns the process exit code.
using CommandAction = std::function<int()>;
using CommandSetup = std::function<CommandAction(CLI::App& sub)>;

struct Command {
  std::string name;
  std::string help;
  CommandSetup setup;
};

inline std::vector<Command>& registeredCommands() {
  static std::vector<Command> commands;
  return commands;
}

struct CommandRegistrar {
  explicit CommandRegistrar(Command command) {
    registeredCommands().push_back(std::move(command));
  }
};

// Builds the subcommands onto `app`, parses argv and runs the chosen one.
// Returns the exit code (CLI11's own codes for usage errors).
int runRegisteredCommands(CLI::App& app, int argc, char** argv);

}  // namespace meshlock
