// meshlockctl: the debug CLI. Offline commands evaluate a manifest directory;
// live ones talk to an agent's admin API. Each command lives in its own file.
#include <CLI/CLI.hpp>

#include "common/command.h"

int main(int argc, char** argv) {
  CLI::App app{"meshlockctl: see what meshlock encrypts, refuses, and why"};
  app.set_version_flag("--version", std::string("meshlockctl ") + MESHLOCK_VERSION);
  return meshlock::runRegisteredCommands(app, argc, argv);
}
