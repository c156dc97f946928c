// Parses the command line and dispatches to the registered subcommand.
#include "common/command.h"

#include <map>

namespace meshlock {

int runRegisteredCommands(CLI::App& app, int argc, char** argv) {
  std::map<CLI::App*, CommandAction> actions;
  for (const Command& command : registeredCommands()) {
    CLI::App* sub = app.add_subcommand(command.name, command.help);
    actions[sub] = command.setup(*sub);
  }
  app.require_subcommand(0, 1);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version print and succeed; every usage error is exit 2,
    // which scripts can tell from a failed operation (1).
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  for (auto& [sub, action] : actions) {
    if (sub->parsed()) return action();
  }
  std::fputs(app.help().c_str(), stdout);
  return 2;
}

}  // namespace meshlock
