// Shared plumbing of meshlockctl's offline commands.
#include "cli/offline.h"

#include <CLI/CLI.hpp>

#include <cstdio>

namespace meshlock::cli {

Result<OfflineModel> loadOffline(const std::string& path) {
  auto loaded = config::loadManifestDirectory(path);
  if (!loaded) return std::unexpected(loaded.error());
  OfflineModel model;
  model.errors = std::move(loaded->errors);
  model.index = policy::PolicyIndex::build(std::move(loaded->state));
  return model;
}

void printManifestErrors(const std::vector<config::ManifestError>& errors) {
  for (const auto& e : errors) std::fprintf(stderr, "error: %s\n", e.describe().c_str());
}

nlohmann::json toJson(const policy::ConnectionReport& r) {
  nlohmann::json j;
  j["from"] = r.from;
  j["to"] = r.to;
  j["client_tls"] = std::string(policy::toString(r.client_tls));
  j["server_mode"] = std::string(policy::toString(r.server_mode));
  j["outcome"] = std::string(policy::toString(r.outcome));
  j["expected_identities"] = r.expected_identities;
  j["decided_by"] = r.decided_by;
  j["client_decided_by"] = r.client_decided_by;
  j["server_decided_by"] = r.server_decided_by;
  j["destination"] = r.destination;
  j["min_tls_version"] = r.min_tls_version;
  j["backends_disagree"] = r.backends_disagree;
  j["backends"] = nlohmann::json::array();
  for (const auto& b : r.backends) {
    j["backends"].push_back({{"pod", b.pod},
                             {"ip", b.ip},
                             {"port", b.port},
                             {"client_tls", std::string(policy::toString(b.client_tls))},
                             {"server_mode", std::string(policy::toString(b.server_mode))},
                             {"outcome", std::string(policy::toString(b.outcome))}});
  }
  j["notes"] = r.notes;
  return j;
}

void addOfflineOptions(CLI::App& sub, OfflineOptions& options) {
  sub.add_option("--manifests", options.manifests, "directory (or file) of Kubernetes manifests (required)");
  sub.add_option("-o,--output", options.output, "text (default) or json");
}

bool checkOfflineOptions(const OfflineOptions& options) {
  if (options.manifests.empty()) {
    std::fprintf(stderr, "error: --manifests PATH is required\n");
    return false;
  }
  if (options.output != "text" && options.output != "json") {
    std::fprintf(stderr, "error: -o must be text or json, not \"%s\"\n", options.output.c_str());
    return false;
  }
  return true;
}

}  // namespace meshlock::cli
