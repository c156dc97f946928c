// Shared plumbing of meshlockctl's offline commands.
#include "cli/offline.h"

#include <CLI/CLI.hpp>

#include <cstdio>

namespace meshlock::cli {

using nlohmann::json;

Result<OfflineModel> loadOffline(const std::string& path, const std::string& default_namespace) {
  config::ParseOptions options;
  options.default_namespace = default_namespace.empty() ? std::nullopt : std::optional(default_namespace);
  auto loaded = config::loadManifestDirectory(path, options);
  if (!loaded) return std::unexpected(loaded.error());
  OfflineModel model;
  model.errors = std::move(loaded->errors);
  model.ignored_kinds = std::move(loaded->ignored_kinds);
  model.index = policy::PolicyIndex::build(std::move(loaded->state));
  return model;
}

void printManifestErrors(const std::vector<config::ManifestError>& errors) {
  for (const auto& e : errors) std::fprintf(stderr, "error: %s\n", e.describe().c_str());
}

void addOfflineOptions(CLI::App& sub, OfflineOptions& options) {
  declareOutputFormats(sub, {"text", "json", "yaml"});
  sub.add_option("--manifests", options.manifests, "directory (or file) of Kubernetes manifests (required)");
  sub.add_option("-o,--output", options.output, "text (default), json or yaml");
  sub.add_option("-n,--namespace", options.ns,
                 "the namespace of objects that have no metadata.namespace (as kubectl apply -n); "
                 "without it such objects are errors");
}

bool checkOfflineOptions(const OfflineOptions& options, bool manifests_optional) {
  if (options.manifests.empty() && !manifests_optional) {
    std::fprintf(stderr, "error: --manifests PATH is required\n");
    return false;
  }
  if (options.output != "text" && options.output != "json" && options.output != "yaml") {
    std::fprintf(stderr, "error: -o must be text, json or yaml, not \"%s\"\n", options.output.c_str());
    return false;
  }
  return true;
}

std::expected<OfflineModel, int> openOffline(const OfflineOptions& options) {
  auto model = loadOffline(options.manifests, options.ns);
  if (!model) {
    std::fprintf(stderr, "error: %s\n", model.error().describe().c_str());
    return std::unexpected(kExitInputError);
  }
  printManifestErrors(model->errors);
  return std::move(*model);
}

bool printOfflineStructured(const json& value, const std::string& output) {
  if (output == "json") {
    std::printf("%s\n", value.dump(2).c_str());
    return true;
  }
  if (output == "yaml") {
    printYaml(value);
    return true;
  }
  return false;
}

namespace {

std::string text(const json& object, const char* key) {
  const auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::string joined(const json& list, const char* empty) {
  std::string s;
  if (list.is_array())
    for (const auto& x : list) s += (s.empty() ? "" : ", ") + (x.is_string() ? x.get<std::string>() : x.dump());
  return s.empty() ? std::string(empty) : s;
}

}  // namespace

void printCheckText(const json& r) {
  std::printf("%s -> %s\n", text(r, "from").c_str(), text(r, "to").c_str());
  std::printf("  destination:  %s\n", text(r, "destination").c_str());
  std::printf("  client TLS:   %-13s (%s)\n", text(r, "client_tls").c_str(),
              joined(r.value("client_decided_by", json::array()), "-").c_str());
  std::printf("  server mode:  %-13s (%s)\n", text(r, "server_mode").c_str(),
              joined(r.value("server_decided_by", json::array()), "-").c_str());
  std::printf("  outcome:      %s\n", text(r, "outcome").c_str());
  std::printf("  tunnel:       %s\n", text(r, "tunnel").c_str());
  std::printf("  expect peer:  %s\n", joined(r.value("expected_identities", json::array()), "-").c_str());
  std::printf("  min TLS:      %s\n", text(r, "min_tls_version").c_str());
  if (r.contains("authorization") && r["authorization"].is_string())
    std::printf("  authorized:   %s\n", text(r, "authorization_reason").c_str());
  const json backends = r.value("backends", json::array());
  if (backends.size() > 1 || r.value("backends_disagree", false)) {
    std::printf("  backends:\n");
    for (const auto& b : backends) {
      const std::string pod = text(b, "pod");
      std::printf("    %-30s %-15s port %-5u %-13s -> %-10s = %s\n", pod.empty() ? "(not a pod)" : pod.c_str(),
                  text(b, "ip").c_str(), b.value("port", 0u), text(b, "client_tls").c_str(),
                  text(b, "server_mode").c_str(), text(b, "outcome").c_str());
    }
  }
  for (const auto& note : r.value("notes", json::array())) std::printf("  note: %s\n", note.get<std::string>().c_str());
}

void printPodPolicyText(const json& j) {
  const std::string node = text(j, "node");
  const std::string ip = text(j, "ip");
  std::printf("pod %s (uid %s, node %s, ip %s)\n", text(j, "pod").c_str(), text(j, "uid").c_str(),
              node.empty() ? "-" : node.c_str(), ip.empty() ? "-" : ip.c_str());
  std::printf("  identity: %s\n", text(j, "identity").c_str());
  std::printf("  served by meshlock: %s (%s)\n", j.value("served", false) ? "yes" : "no",
              text(j, "served_reason").c_str());
  std::printf("  mesh: root namespace %s, auto mTLS %s, min TLS %s\n", text(j, "root_namespace").c_str(),
              j.value("auto_mtls", true) ? "on" : "off", text(j, "min_tls_version").c_str());
  std::printf("inbound:\n");
  for (const auto& p : j.value("inbound", json::array())) {
    std::printf("  port %-5d %-11s %s\n", p.value("port", 0), text(p, "mode").c_str(),
                joined(p.value("decided_by", json::array()), "").c_str());
  }
  const json other = j.value("inbound_other_ports", json::object());
  std::printf("  other ports %-11s %s\n", text(other, "mode").c_str(),
              joined(other.value("decided_by", json::array()), "").c_str());
  const json policies = j.value("authorization_policies", json::array());
  if (!policies.empty()) {
    std::printf("authorization (policies: %s):\n", joined(policies, "-").c_str());
    for (const auto& a : j.value("inbound_authorization", json::array())) {
      std::printf("  %-40s port %-5d %-9s %-5s %s\n", text(a, "from").c_str(), a.value("port", 0),
                  text(a, "outcome").c_str(), text(a, "authorization").c_str(),
                  text(a, "authorization_reason").c_str());
    }
    if (j.value("inbound_authorization_truncated", false)) std::printf("  ... (more sources: --sources N)\n");
  }
  std::printf("outbound:\n");
  for (const auto& o : j.value("outbound", json::array())) {
    std::printf("  %-45s %-13s -> %-10s = %-9s %s\n", text(o, "to").c_str(), text(o, "client_tls").c_str(),
                text(o, "server_mode").c_str(), text(o, "outcome").c_str(),
                joined(o.value("decided_by", json::array()), "").c_str());
  }
}

}  // namespace meshlock::cli
