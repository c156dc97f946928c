// meshlock-agent: the per-node daemon. This is the composition root's entry:
// `run` (agent/cmd/run.cpp → agent/app) wires every part; the other
// subcommands live in agent/cmd/, one file each.
#include <CLI/CLI.hpp>

#include <string_view>
#include <vector>

#include "common/command.h"

int main(int argc, char** argv) {
  CLI::App app{"meshlock-agent: sidecar-free mTLS for the pods of this node"};
  app.set_version_flag("--version", std::string("meshlock-agent ") + MESHLOCK_VERSION);
  // `meshlock-agent --uninstall [--pin-dir DIR]` is the documented spelling of
  // the `uninstall` subcommand (DaemonSet pre-stop hooks and runbooks use it).
  std::vector<char*> args(argv, argv + argc);
  for (char*& arg : args) {
    if (std::string_view(arg) == "--uninstall") arg = const_cast<char*>("uninstall");
  }
  return meshlock::runRegisteredCommands(app, static_cast<int>(args.size()), args.data());
}
