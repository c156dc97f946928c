// The agent's own settings (not mesh policy): where things live on the node,
// which addresses to serve, how many threads. From a YAML file, then flags.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "capture/leg_shortcut.h"
#include "common/error.h"
#include "config/manifest.h"

namespace meshlock::app {

enum class IoBackend { Auto, IoUring, Epoll };
enum class LogFormat { Text, Json };
// Where workload certificates come from (docs/identity.md). Auto: the plug-in
// files when caDir holds ca-cert.pem, else a generated root (as before caMode).
enum class CaMode { Auto, Istiod, Files, Generated };

struct AgentSettings {
  std::string node_name;                                 // pods with this spec.nodeName are ours
  // The mesh's cluster name, as istiod's CLUSTER_ID (default "Kubernetes"): the
  // source_cluster / destination_cluster of Istio's metrics. Kiali discards
  // series whose cluster is "unknown".
  std::string cluster_id = "Kubernetes";
  std::filesystem::path manifests_dir;                   // cluster state, watched with inotify (wins if set)
  std::filesystem::path kubeconfig;                      // else: the Kubernetes API from this kubeconfig
  std::filesystem::path service_account_dir = "/var/run/secrets/kubernetes.io/serviceaccount";  // else: in-cluster
  std::chrono::seconds initial_sync_wait{10};            // start-up waits this long for the first full state
  std::filesystem::path cgroup_root;                     // empty: find the cgroup v2 mount
  std::filesystem::path bpf_pin_dir = "/sys/fs/bpf/meshlock";
  bool mount_bpffs = true;                               // off: bpf_pin_dir must already be on a bpffs
  std::filesystem::path state_dir = "/var/lib/meshlock";
  std::filesystem::path ca_dir = "/etc/cacerts";         // Istio plug-in CA layout, if present
  CaMode ca_mode = CaMode::Auto;
  // caMode istiod: Istio's CA API (ztunnel's defaults). The token is re-read for every request.
  std::string ca_address = "istiod.istio-system.svc:15012";
  std::string ca_server_name;                            // empty: the host of caAddress
  std::filesystem::path ca_root_file = "/var/run/secrets/istio/root-cert.pem";  // istio-ca-root-cert
  std::filesystem::path ca_token_file = "/var/run/secrets/tokens/istio-token";  // audience istio-ca
  std::filesystem::path admin_socket = "/run/meshlock/admin.sock";
  bool admin_socket_take_over = false;                   // replace a live agent's socket (rolling update)
  // Where the newest agent takes established connections over at an upgrade
  // (docs/upgrade.md). Empty: beside the admin socket, "<its stem>-handover.sock";
  // "off": no handover (an upgrade drains them).
  std::string handover_socket;
  std::string admin_address = "127.0.0.1:15000";
  std::string metrics_address = "0.0.0.0:15020";
  unsigned threads = 0;                                  // 0: one per core
  IoBackend io = IoBackend::Auto;
  // App <-> agent bytes in the pod without loopback TCP (docs/datapath.md).
  capture::LegShortcut pod_leg_shortcut = capture::LegShortcut::Off;
  LogFormat log_format = LogFormat::Text;
  std::string log_level = "info";
  bool access_log = true;                                // one line per connection when it ends
  std::chrono::seconds cert_lifetime{24 * 3600};
  std::chrono::seconds drain_deadline{20};
  // Connection caps; 0: sized from RLIMIT_NOFILE at start (connectionCapsFor).
  uint32_t max_connections = 0;                    // engine connections (each up to two fds)
  uint32_t max_connections_per_pod = 0;
  uint32_t max_pending_handshakes = 0;             // not yet relaying, on the whole node
  uint32_t max_pending_handshakes_per_source = 0;  // of those, from one peer IP address
  // Access-log lines of connections refused before their handshake, per pod
  // and reason; the rest are counted and summed up in a "suppressed" line.
  uint32_t access_log_refusals_per_second = 10;
  // What the cluster source may hold (config::SourceLimits): manifest bytes
  // read, and objects in effect from either source.
  uint64_t max_source_bytes = config::SourceLimits{}.max_bytes;
  uint64_t max_source_objects = config::SourceLimits{}.max_objects;
};

// The caps the engine gets, from the settings and the open-file limit.
struct ConnectionCaps {
  uint32_t max_connections = 0;
  uint32_t max_connections_per_pod = 0;
  uint32_t max_pending_handshakes = 0;
  uint32_t max_pending_handshakes_per_source = 0;
  uint64_t fd_limit = 0;    // RLIMIT_NOFILE's soft limit they were sized for
  bool clamped = false;     // a configured cap was lowered to fit the fd limit
};
// Fds not counted for connections: listeners (four per served pod), netns
// handles, BPF objects, rings, admin sockets.
inline constexpr uint64_t kReservedFds = 1024;
// Each connection may hold two fds (accepted and upstream): the default is
// every fd but the reserve; pending handshakes default to a quarter of that
// (at most 4,096) and 256 per source (at most the pending cap).
// The handover socket's path (empty when handover is off).
[[nodiscard]] std::filesystem::path handoverSocketOf(const AgentSettings& settings);
[[nodiscard]] ConnectionCaps connectionCapsFor(const AgentSettings& settings, uint64_t fd_limit);

// Reads the YAML settings file; unknown keys are an error naming the key, so a
// typo never silently falls back to a default.
[[nodiscard]] Result<AgentSettings> loadSettingsFile(const std::filesystem::path& file,
                                                     AgentSettings base = {});
[[nodiscard]] Result<AgentSettings> parseSettings(std::string_view yaml, std::string_view origin,
                                                  AgentSettings base = {});
// Settings that cannot work together or are missing, named one by one.
[[nodiscard]] Status validateSettings(const AgentSettings& settings);

[[nodiscard]] Result<IoBackend> parseIoBackend(std::string_view text);
[[nodiscard]] Result<LogFormat> parseLogFormat(std::string_view text);
[[nodiscard]] Result<CaMode> parseCaMode(std::string_view text);
// "on"/"off" (also true/false, yes/no), for switches given as flags.
[[nodiscard]] Result<bool> parseSwitch(std::string_view key, std::string_view text);

}  // namespace meshlock::app
