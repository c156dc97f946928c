// meshlockctl check: what one connection from a pod to a target gets, and why —
// from a manifest directory (--manifests) or from the live agent's policy
// (--admin, or no --manifests).
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "admin/http_message.h"
#include "cli/offline.h"
#include "common/command.h"

namespace meshlock::cli {
namespace {

struct CheckOptions : OfflineOptions {
  std::string from;
  std::string to;
  LiveOptions live;
  CLI::Option* admin_option = nullptr;
};

int runLive(const CheckOptions& opts) {
  LiveOptions live = opts.live;
  if (opts.admin_option->count() == 0) {
    if (const char* env = std::getenv("MESHLOCK_ADMIN"); env != nullptr && *env != '\0') live.admin = env;
  }
  auto client = makeClient(live);
  if (!client) return reportError(client.error());
  auto report = client->getJson("/check?from=" + admin::percentEncode(opts.from) +
                                "&to=" + admin::percentEncode(opts.to));
  if (!report) return reportError(report.error());
  if (!printOfflineStructured(*report, opts.output)) printCheckText(*report);
  return kExitOk;
}

CommandAction setup(CLI::App& sub) {
  auto opts = std::make_shared<CheckOptions>();
  addOfflineOptions(sub, *opts);
  sub.add_option("--from", opts->from, "client pod, NAMESPACE/POD (required)");
  sub.add_option("--to", opts->to, "host:port, ip:port or NAMESPACE/POD:port (required)");
  // No envname here: $MESHLOCK_ADMIN must not turn an offline check live.
  opts->admin_option = sub.add_option("--admin", opts->live.admin,
                                      "ask the live agent (unix:/path or http://127.0.0.1:15000); the default "
                                      "without --manifests ($MESHLOCK_ADMIN, else unix:/run/meshlock/admin.sock)");
  sub.add_option("--timeout", opts->live.timeout_seconds, "seconds to wait for the agent")->check(CLI::PositiveNumber);
  return [opts]() -> int {
    const bool live = opts->manifests.empty() || opts->admin_option->count() > 0;
    if (!checkOfflineOptions(*opts, live)) return kExitUsage;
    if (!opts->manifests.empty() && opts->admin_option->count() > 0) {
      std::fprintf(stderr, "error: --manifests (offline) and --admin (live) exclude each other\n");
      return kExitUsage;
    }
    auto from = policy::parsePodRef(opts->from);
    if (!from) {
      std::fprintf(stderr, "error: --from: %s\n", from.error().message.c_str());
      return kExitUsage;
    }
    auto to = policy::parseTarget(opts->to);
    if (!to) {
      std::fprintf(stderr, "error: --to: %s\n", to.error().message.c_str());
      return kExitUsage;
    }
    if (live) return runLive(*opts);
    auto model = openOffline(*opts);
    if (!model) return model.error();
    auto report = policy::checkConnection(*model->index, *from, *to);
    if (!report) {
      std::fprintf(stderr, "error: %s\n", report.error().message.c_str());
      return kExitInputError;
    }
    const nlohmann::json j = policy::toJson(*report);
    if (!printOfflineStructured(j, opts->output)) printCheckText(j);
    return model->errors.empty() ? kExitOk : kExitInputError;
  };
}

const CommandRegistrar registrar{Command{
    "check",
    "what a connection from a pod to a target gets (client TLS, server mode, outcome) and why: offline "
    "with --manifests, else from the live agent",
    setup}};

}  // namespace
}  // namespace meshlock::cli
