// meshlockctl check: what one connection from a pod to a target gets, and why.
#include <cstdio>
#include <memory>

#include "cli/offline.h"
#include "common/command.h"

namespace meshlock::cli {
namespace {

void printText(const policy::ConnectionReport& r) {
  auto join = [](const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
    return s.empty() ? std::string("-") : s;
  };
  std::printf("%s -> %s\n", r.from.c_str(), r.to.c_str());
  std::printf("  destination:  %s\n", r.destination.c_str());
  std::printf("  client TLS:   %-13s (%s)\n", std::string(policy::toString(r.client_tls)).c_str(),
              join(r.client_decided_by).c_str());
  std::printf("  server mode:  %-13s (%s)\n", std::string(policy::toString(r.server_mode)).c_str(),
              join(r.server_decided_by).c_str());
  std::printf("  outcome:      %s\n", std::string(policy::toString(r.outcome)).c_str());
  std::printf("  expect peer:  %s\n", join(r.expected_identities).c_str());
  std::printf("  min TLS:      %s\n", r.min_tls_version.c_str());
  if (r.backends.size() > 1 || r.backends_disagree) {
    std::printf("  backends:\n");
    for (const auto& b : r.backends) {
      std::printf("    %-30s %-15s port %-5u %-13s -> %-10s = %s\n", b.pod.empty() ? "(not a pod)" : b.pod.c_str(),
                  b.ip.c_str(), static_cast<unsigned>(b.port), std::string(policy::toString(b.client_tls)).c_str(),
                  std::string(policy::toString(b.server_mode)).c_str(), std::string(policy::toString(b.outcome)).c_str());
    }
  }
  for (const auto& note : r.notes) std::printf("  note: %s\n", note.c_str());
}

struct CheckOptions : OfflineOptions {
  std::string from;
  std::string to;
};

CommandAction setup(CLI::App& sub) {
  auto opts = std::make_shared<CheckOptions>();
  addOfflineOptions(sub, *opts);
  sub.add_option("--from", opts->from, "client pod, NAMESPACE/POD (required)");
  sub.add_option("--to", opts->to, "host:port, ip:port or NAMESPACE/POD:port (required)");
  return [opts]() -> int {
    if (!checkOfflineOptions(*opts)) return kExitUsage;
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
    auto model = loadOffline(opts->manifests);
    if (!model) {
      std::fprintf(stderr, "error: %s\n", model.error().describe().c_str());
      return kExitInputError;
    }
    printManifestErrors(model->errors);
    auto report = policy::checkConnection(*model->index, *from, *to);
    if (!report) {
      std::fprintf(stderr, "error: %s\n", report.error().message.c_str());
      return kExitInputError;
    }
    if (opts->output == "json") {
      std::printf("%s\n", toJson(*report).dump(2).c_str());
    } else {
      printText(*report);
    }
    return model->errors.empty() ? kExitOk : kExitInputError;
  };
}

const CommandRegistrar registrar{Command{
    "check", "offline: what a connection from a pod to a target gets (client TLS, server mode, outcome) and why",
    setup}};

}  // namespace
}  // namespace meshlock::cli
