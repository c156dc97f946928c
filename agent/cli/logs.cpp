// meshlockctl logs: read or change the agent's log level at run time.
#include <memory>

#include "admin/http_message.h"
#include "cli/output.h"
#include "common/command.h"

namespace meshlock::cli {
namespace {

int runLogs(const LiveOptions& options, const std::string& level) {
  auto client = makeClient(options);
  if (!client) return reportError(client.error());
  auto answer = level.empty() ? client->getJson("/logging")
                              : client->postJson("/logging?level=" + admin::percentEncode(level));
  if (!answer) return reportError(answer.error());
  if (printStructured(*answer, parseFormat(options.output))) return kExitOk;
  if (answer->contains("previous")) {
    std::printf("log level: %s -> %s\n", field(*answer, "previous").c_str(), field(*answer, "level").c_str());
  } else {
    std::printf("log level: %s\n", field(*answer, "level").c_str());
  }
  return kExitOk;
}

const CommandRegistrar kLogs{{
    "logs",
    "Show the agent's log level, or change it with --level",
    [](CLI::App& sub) -> CommandAction {
      auto options = std::make_shared<LiveOptions>();
      auto level = std::make_shared<std::string>();
      addLiveOptions(sub, *options);
      sub.add_option("-l,--level", *level, "new level: trace, debug, info, warn, error, critical, off")
          ->check(CLI::IsMember({"trace", "debug", "info", "warn", "warning", "error", "critical", "off"}));
      return [options, level] { return runLogs(*options, *level); };
    },
}};

}  // namespace
}  // namespace meshlock::cli
