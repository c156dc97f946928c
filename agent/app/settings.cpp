// Agent settings from YAML: strict keys, typed values, errors that name the field.
#include "app/settings.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <fstream>
#include <limits>
#include <type_traits>
#include <sstream>

namespace meshlock::app {
namespace {

Result<std::string> scalar(const YAML::Node& node, std::string_view key) {
  if (!node.IsScalar()) return fail(std::string(key) + ": expected a string");
  return node.as<std::string>();
}

Result<unsigned long> unsignedValue(const YAML::Node& node, std::string_view key) {
  auto text = scalar(node, key);
  if (!text) return std::unexpected(text.error());
  try {
    std::size_t used = 0;
    unsigned long value = std::stoul(*text, &used);
    if (used != text->size() || text->starts_with('-')) throw std::invalid_argument(*text);
    return value;
  } catch (const std::exception&) {
    return fail(std::string(key) + ": expected a non-negative integer, got \"" + *text + "\"");
  }
}

}  // namespace

Result<IoBackend> parseIoBackend(std::string_view text) {
  if (text == "auto") return IoBackend::Auto;
  if (text == "uring" || text == "io_uring") return IoBackend::IoUring;
  if (text == "epoll") return IoBackend::Epoll;
  return fail("io: expected auto, uring or epoll, got \"" + std::string(text) + "\"");
}

Result<LogFormat> parseLogFormat(std::string_view text) {
  if (text == "text") return LogFormat::Text;
  if (text == "json") return LogFormat::Json;
  return fail("logFormat: expected text or json, got \"" + std::string(text) + "\"");
}

Result<CaMode> parseCaMode(std::string_view text) {
  if (text == "auto") return CaMode::Auto;
  if (text == "istiod") return CaMode::Istiod;
  if (text == "files") return CaMode::Files;
  if (text == "generated") return CaMode::Generated;
  return fail("caMode: expected auto, istiod, files or generated, got \"" + std::string(text) + "\"");
}

Result<AgentSettings> parseSettings(std::string_view yaml, std::string_view origin,
                                    AgentSettings settings) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::Exception& e) {
    return fail(std::string(origin) + ": not valid YAML: " + e.what());
  }
  if (root.IsNull()) return settings;
  if (!root.IsMap()) return fail(std::string(origin) + ": expected a mapping of settings");

  for (const auto& entry : root) {
    // A key may be any YAML node ("[a]: 1", "{b: c}: 1"); only a scalar names a setting.
    if (!entry.first.IsScalar()) return fail(std::string(origin) + ": a setting's name must be a string");
    const std::string key = entry.first.as<std::string>();
    const YAML::Node& value = entry.second;
    auto where = [&](const Error& e) { return std::unexpected(e.context(origin)); };
    auto path = [&](std::filesystem::path& out) -> Status {
      auto text = scalar(value, key);
      if (!text) return std::unexpected(text.error());
      out = *text;
      return {};
    };
    auto text = [&](std::string& out) -> Status {
      auto got = scalar(value, key);
      if (!got) return std::unexpected(got.error());
      out = *got;
      return {};
    };
    // A scalar through one of the parse* functions below.
    auto parsed = [&](auto& out, auto parse) -> Status {
      auto got = scalar(value, key);
      if (!got) return std::unexpected(got.error());
      auto result = parse(*got);
      if (!result) return std::unexpected(result.error());
      out = *result;
      return {};
    };
    auto toggle = [&](bool& out) {
      return parsed(out, [&](std::string_view got) { return parseSwitch(key, got); });
    };
    auto number = [&](auto& out, unsigned long max) -> Status {
      auto n = unsignedValue(value, key);
      if (!n) return std::unexpected(n.error());
      if (*n > max) return fail(key + ": at most " + std::to_string(max));
      out = static_cast<std::remove_reference_t<decltype(out)>>(*n);
      return {};
    };
    auto seconds = [&](std::chrono::seconds& out) {
      unsigned long n = 0;
      Status got = number(n, std::numeric_limits<unsigned long>::max());
      if (got) out = std::chrono::seconds(n);
      return got;
    };
    constexpr unsigned long kMaxCount = 100'000'000;
    Status status;
    if (key == "node") status = text(settings.node_name);
    else if (key == "clusterId") status = text(settings.cluster_id);
    else if (key == "manifestsDir") status = path(settings.manifests_dir);
    else if (key == "kubeconfig") status = path(settings.kubeconfig);
    else if (key == "serviceAccountDir") status = path(settings.service_account_dir);
    else if (key == "cgroupRoot") status = path(settings.cgroup_root);
    else if (key == "bpfPinDir") status = path(settings.bpf_pin_dir);
    else if (key == "stateDir") status = path(settings.state_dir);
    else if (key == "caDir") status = path(settings.ca_dir);
    else if (key == "caMode") status = parsed(settings.ca_mode, parseCaMode);
    else if (key == "caAddress") status = text(settings.ca_address);
    else if (key == "caServerName") status = text(settings.ca_server_name);
    else if (key == "caRootFile") status = path(settings.ca_root_file);
    else if (key == "caTokenFile") status = path(settings.ca_token_file);
    else if (key == "adminSocket") status = path(settings.admin_socket);
    else if (key == "adminAddress") status = text(settings.admin_address);
    else if (key == "metricsAddress") status = text(settings.metrics_address);
    else if (key == "logLevel") status = text(settings.log_level);
    else if (key == "threads") status = number(settings.threads, std::numeric_limits<unsigned>::max());
    else if (key == "certLifetimeSeconds") status = seconds(settings.cert_lifetime);
    else if (key == "drainDeadlineSeconds") status = seconds(settings.drain_deadline);
    else if (key == "maxConnections") status = number(settings.max_connections, kMaxCount);
    else if (key == "maxConnectionsPerPod") status = number(settings.max_connections_per_pod, kMaxCount);
    else if (key == "maxPendingHandshakes") status = number(settings.max_pending_handshakes, kMaxCount);
    else if (key == "maxPendingHandshakesPerSource") status = number(settings.max_pending_handshakes_per_source, kMaxCount);
    else if (key == "accessLogRefusalsPerSecond") status = number(settings.access_log_refusals_per_second, kMaxCount);
    else if (key == "maxSourceBytes") status = number(settings.max_source_bytes, 1ull << 40);
    else if (key == "maxSourceObjects") status = number(settings.max_source_objects, kMaxCount);
    else if (key == "io") status = parsed(settings.io, parseIoBackend);
    else if (key == "podLegShortcut") status = parsed(settings.pod_leg_shortcut, capture::parseLegShortcut);
    else if (key == "logFormat") status = parsed(settings.log_format, parseLogFormat);
    else if (key == "accessLog") status = toggle(settings.access_log);
    else if (key == "adminSocketTakeOver") status = toggle(settings.admin_socket_take_over);
    else if (key == "handoverSocket") status = text(settings.handover_socket);
    else if (key == "mountBpffs") status = toggle(settings.mount_bpffs);
    else return fail(std::string(origin) + ": unknown setting \"" + key + "\"");
    if (!status) return where(status.error());
  }
  return settings;
}

Result<bool> parseSwitch(std::string_view key, std::string_view text) {
  if (text == "on" || text == "true" || text == "yes") return true;
  if (text == "off" || text == "false" || text == "no") return false;
  return fail(std::string(key) + ": expected on or off, got \"" + std::string(text) + "\"");
}

Result<AgentSettings> loadSettingsFile(const std::filesystem::path& file, AgentSettings base) {
  std::ifstream in(file);
  if (!in) return failErrno("settings file " + file.string() + ": cannot open");
  std::stringstream text;
  text << in.rdbuf();
  return parseSettings(text.str(), file.string(), std::move(base));
}

ConnectionCaps connectionCapsFor(const AgentSettings& settings, uint64_t fd_limit) {
  ConnectionCaps caps;
  caps.fd_limit = fd_limit;
  const uint64_t usable = fd_limit > 2 * kReservedFds ? fd_limit - kReservedFds : fd_limit / 2;
  const auto fit = [&](uint32_t configured, uint64_t ceiling, uint64_t otherwise) {
    const uint64_t chosen = configured == 0 ? std::min(otherwise, ceiling) : configured;
    if (chosen > ceiling) caps.clamped = true;
    return static_cast<uint32_t>(std::max<uint64_t>(1, std::min(chosen, ceiling)));
  };
  caps.max_connections = fit(settings.max_connections, usable / 2, usable / 2);
  caps.max_connections_per_pod = fit(settings.max_connections_per_pod, caps.max_connections, caps.max_connections);
  caps.max_pending_handshakes =
      fit(settings.max_pending_handshakes, caps.max_connections, std::min<uint64_t>(4096, caps.max_connections / 4));
  caps.max_pending_handshakes_per_source =
      fit(settings.max_pending_handshakes_per_source, caps.max_pending_handshakes, 256);
  return caps;
}

Status validateSettings(const AgentSettings& settings) {
  if (settings.node_name.empty()) return fail("node: required (the Kubernetes node this agent serves)");
  // The cluster source (manifestsDir, kubeconfig or in-cluster) is chosen, and its absence named, at start.
  if (settings.cluster_id.empty()) return fail("clusterId: must not be empty (istiod's default is \"Kubernetes\")");
  if (settings.cluster_id == "unknown")
    return fail("clusterId: \"unknown\" is Istio's value for a cluster it does not know; Kiali discards such telemetry");
  if (settings.threads > 1024) return fail("threads: at most 1024");
  if (settings.cert_lifetime.count() < 10) return fail("certLifetimeSeconds: at least 10");
  if (settings.max_source_bytes == 0) return fail("maxSourceBytes: at least 1");
  if (settings.max_source_objects == 0) return fail("maxSourceObjects: at least 1");
  if (settings.ca_mode == CaMode::Istiod) {
    if (settings.ca_address.empty()) return fail("caAddress: required with caMode istiod");
    if (settings.ca_root_file.empty()) return fail("caRootFile: required with caMode istiod (the mesh root)");
    if (settings.ca_token_file.empty()) return fail("caTokenFile: required with caMode istiod (a token for istio-ca)");
  }
  return {};
}

std::filesystem::path handoverSocketOf(const AgentSettings& settings) {
  if (settings.handover_socket == "off") return {};
  if (!settings.handover_socket.empty()) return settings.handover_socket;
  // Beside the admin socket and named after it: two agents of one host
  // (meshsim's nodes) never share it.
  return settings.admin_socket.parent_path() / (settings.admin_socket.stem().string() + "-handover.sock");
}

}  // namespace meshlock::app
