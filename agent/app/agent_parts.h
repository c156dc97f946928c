// The agent's parts and their wiring, shared by the composition root
// (agent.cpp) and its admin endpoints (admin_endpoints.cpp). Not for anyone else.
#pragma once

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <set>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "admin/meshlock_metrics.h"
#include "admin/metrics.h"
#include "admin/router.h"
#include "admin/server.h"
#include "app/agent.h"
#include "app/connection_report.h"
#include "capture/datapath.h"
#include "config/source.h"
#include "engine/engine.h"
#include "identity/destination_tls.h"
#include "identity/identity_manager.h"
#include "kmod-free/probe.h"
#include "policy/policy.h"
#include "upgrade/handover.h"

namespace meshlock::app {

using PolicyRef = std::shared_ptr<const policy::PolicyIndex>;

// A pod this agent serves: its identity, netns and engine listeners.
struct ServedPod {
  config::PodUid uid;
  std::string name;  // "ns/name"
  identity::SpiffeId id;
  std::shared_ptr<UniqueFd> netns;
  std::vector<engine::ListenerId> listeners;
  bool fail_closed = false;
};

struct Agent::Parts {
  AgentSettings settings;
  std::filesystem::path cgroup_root;
  std::chrono::system_clock::time_point started_at = std::chrono::system_clock::now();
  std::atomic<bool> ready{false};
  // False while a wanted pod could not be served: not ready then, so a
  // rolling update does not stop the old agent before this one serves all.
  std::atomic<bool> all_pods_served{false};
  // Steady-clock ms of the main loop's last turn (liveness, /healthz/live).
  std::atomic<std::int64_t> loop_beat_ms{0};
  std::atomic<std::uint64_t> hbone_picks{0};  // round robin over a service's HBONE backends
  kmodfree::ProbeReport kernel;  // the start-up probe, as /status shows it
  std::unique_ptr<config::ClusterSource> source;  // manifests or the Kubernetes API
  std::unique_ptr<identity::IdentityManager> identities;
  std::unique_ptr<identity::DestinationTlsContexts> destination_tls;
  std::optional<capture::Datapath> datapath;
  std::unique_ptr<engine::Engine> engine;
  // The newest agent's side of an upgrade; goes before the engine it feeds.
  std::unique_ptr<upgrade::HandoverReceiver> handover;

  // Written by the reconcile loop, read by admin handlers.
  mutable std::mutex served_mutex;
  std::map<config::PodUid, ServedPod> served;
  // STRICT pods waiting for their certificate from a remote CA: registered in
  // capture fail-closed without listeners, so their connections are refused.
  std::set<config::PodUid> held_closed;
  // Set while a wanted pod could not be served: reconcile again then (backoff 1 s → 30 s).
  std::optional<std::chrono::steady_clock::time_point> serve_retry_at;
  std::chrono::seconds serve_retry_delay{1};

  mutable std::mutex policy_mutex;
  PolicyRef policy;

  admin::MetricsRegistry registry;
  std::optional<admin::MeshlockMetrics> metrics;
  std::shared_ptr<ReportSinks> reports;  // metrics and access log per connection
  std::unique_ptr<admin::HttpServer> admin_server;      // the Unix socket
  std::unique_ptr<admin::HttpServer> admin_tcp_server;  // adminAddress (127.0.0.1:15000)
  std::unique_ptr<admin::HttpServer> metrics_server;    // metricsAddress (0.0.0.0:15020)

  void beat() {
    loop_beat_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::steady_clock::now().time_since_epoch()).count();
  }
  PolicyRef currentPolicy() const {
    std::lock_guard lock(policy_mutex);
    return policy;
  }

  Result<engine::OutboundPlan> planOutbound(const config::PodUid& source, const identity::SpiffeId& source_id,
                                            const std::shared_ptr<UniqueFd>& netns,
                                            const engine::AcceptedSocket& accepted);
  // Sockets to a pod's app, opened in its netns (and marked for the pod-local
  // shortcut when it is on).
  engine::SocketFactory appSocketFactory(const std::shared_ptr<UniqueFd>& netns) const;
  Result<engine::InboundPlan> planInbound(const config::PodUid& pod, const identity::SpiffeId& pod_id,
                                          const std::shared_ptr<UniqueFd>& netns,
                                          const engine::AcceptedSocket& accepted);
  // HBONE on the pod's port 15008: each stream decided by the current policy.
  Result<engine::InboundPlan> planTunnel(const config::PodUid& pod, const identity::SpiffeId& pod_id,
                                         const std::shared_ptr<UniqueFd>& netns,
                                         const engine::AcceptedSocket& accepted);
  // The labels and names known of a connection to or from a served pod before it starts.
  PlannedConnection planReport(const config::Pod& pod, const identity::SpiffeId& pod_id, bool outbound) const;
  // An inbound connection's (or HBONE stream's) report, from `peer` to the pod's `app` address.
  std::unique_ptr<ConnectionReport> inboundReport(const policy::PolicyIndex& policy, const config::Pod& pod,
                                                  const identity::SpiffeId& pod_id, const engine::SocketAddress& peer,
                                                  const engine::SocketAddress& app, const policy::InboundDecision& decision,
                                                  engine::InboundMode mode, bool tunnel = false) const;
  Status servePod(const PolicyRef& policy, const config::Pod& pod);
  void holdClosed(const PolicyRef& policy, const config::Pod& pod);
  void withdrawPod(const config::PodUid& uid);
  void reconcile(const PolicyRef& policy);
  void applyUpdate(const config::ManifestUpdate& update);

  // agent_upgrade.cpp: established connections between agent processes.
  Status startHandover();
  // Offers this agent's established connections to a newer agent; false
  // when none took the offer (not there yet, not ready). Quiet (but for
  // errors) unless `log_refusal` or something was handed over.
  bool offerConnections(bool log_refusal);
  // The report of a connection another agent process handed over.
  std::unique_ptr<engine::ConnectionObserver> handedReport(const engine::HandedConnection& handed) const;

  // admin_endpoints.cpp: the admin API (Unix socket + 127.0.0.1) and metrics/readiness,
  // each endpoint with its own budget, routes from one table.
  Status startAdmin();
  // The admin handlers, one family per file (admin_<family>.cpp).
  admin::Handler readyHandler();        // admin_health.cpp
  admin::Handler liveHandler();         // admin_health.cpp
  admin::Handler statusHandler();       // admin_status.cpp
  admin::Handler connectionsHandler();  // admin_connections.cpp
  admin::Handler refusedHandler();      // admin_connections.cpp
  admin::Handler certsHandler();        // admin_certs.cpp
  admin::Handler captureHandler();      // admin_capture.cpp
  admin::Handler workloadsHandler();    // admin_config.cpp
  admin::Handler configDumpHandler();   // admin_config.cpp
  admin::Handler policyHandler();       // admin_config.cpp
  admin::Handler checkHandler();        // admin_config.cpp
  // admin_metrics_export.cpp: the parts' figures into their families, at each scrape.
  void collectMetrics();
};

}  // namespace meshlock::app
