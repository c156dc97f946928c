// meshsim: turns this machine into Kubernetes nodes with pods, laid out as a
// kubelet would, for meshlock's end-to-end tests, demo and benchmarks.
// Each subcommand lives in its own cmd_*.cpp.
#include <signal.h>

#include <CLI/CLI.hpp>

#include "common/command.h"

int main(int argc, char** argv) {
  // A tool that exits without reading its stdin must not kill meshsim; the
  // children meshsim starts get the default back before they exec.
  signal(SIGPIPE, SIG_IGN);
  CLI::App app{"meshsim: Kubernetes nodes and pods on one machine, for meshlock's tests"};
  app.set_version_flag("--version", std::string("meshsim ") + MESHLOCK_VERSION);
  return meshlock::runRegisteredCommands(app, argc, argv);
}
