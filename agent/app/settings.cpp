// Agent settings from YAML: strict keys, typed values, errors that name the field.
#include "app/settings.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <fstream>
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
    else if (key == "adminSocket") status = path(settings.admin_socket);
    else if (key == "adminAddress") status = text(settings.admin_address);
    else if (key == "metricsAddress") status = text(settings.metrics_address);
    else if (key == "logLevel") status = text(settings.log_level);
    else if (key == "threads") {
      auto n = unsignedValue(value, key);
      if (!n) return where(n.error());
      settings.threads = static_cast<unsigned>(*n);
    } else if (key == "certLifetimeSeconds") {
      auto n = unsignedValue(value, key);
      if (!n) return where(n.error());
      settings.cert_lifetime = std::chrono::seconds(*n);
    } else if (key == "drainDeadlineSeconds") {
      auto n = unsignedValue(value, key);
      if (!n) return where(n.error());
      settings.drain_deadline = std::chrono::seconds(*n);
    } else if (key == "maxConnections" || key == "maxConnectionsPerPod" || key == "maxPendingHandshakes" ||
               key == "maxPendingHandshakesPerSource" || key == "accessLogRefusalsPerSecond") {
      auto n = unsignedValue(value, key);
      if (!n) return where(n.error());
      if (*n > 100'000'000) return where(Error{key + ": at most 100000000"});
      uint32_t& field = key == "maxConnections"         ? settings.max_connections
                        : key == "maxConnectionsPerPod" ? settings.max_connections_per_pod
                        : key == "maxPendingHandshakes" ? settings.max_pending_handshakes
                        : key == "maxPendingHandshakesPerSource" ? settings.max_pending_handshakes_per_source
                                                                 : settings.access_log_refusals_per_second;
      field = static_cast<uint32_t>(*n);
    } else if (key == "io") {
      auto got = scalar(value, key);
      if (!got) return where(got.error());
      auto io = parseIoBackend(*got);
      if (!io) return where(io.error());
      settings.io = *io;
    } else if (key == "accessLog") {
      auto got = scalar(value, key);
      if (!got) return where(got.error());
      auto on = parseSwitch(key, *got);
      if (!on) return where(on.error());
      settings.access_log = *on;
    } else if (key == "adminSocketTakeOver") {
      auto got = scalar(value, key);
      if (!got) return where(got.error());
      auto on = parseSwitch(key, *got);
      if (!on) return where(on.error());
      settings.admin_socket_take_over = *on;
    } else if (key == "mountBpffs") {
      auto got = scalar(value, key);
      if (!got) return where(got.error());
      auto on = parseSwitch(key, *got);
      if (!on) return where(on.error());
      settings.mount_bpffs = *on;
    } else if (key == "logFormat") {
      auto got = scalar(value, key);
      if (!got) return where(got.error());
      auto format = parseLogFormat(*got);
      if (!format) return where(format.error());
      settings.log_format = *format;
    } else {
      return fail(std::string(origin) + ": unknown setting \"" + key + "\"");
    }
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
  return {};
}

}  // namespace meshlock::app
