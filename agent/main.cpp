// meshlock-agent: the per-node daemon. This is the composition root: every
// part is created and wired here, and each subcommand lives in agent/cmd/.
#include <CLI/CLI.hpp>

#include "common/command.h"

int main(int argc, char** argv) {
  CLI::App app{"meshlock-agent: sidecar-free mTLS for the pods of this node"};
  app.set_version_flag("--version", std::string("meshlock-agent ") + MESHLOCK_VERSION);
  return meshlock::runRegisteredCommands(app, argc, argv);
}
