// What the agent records about each connection the engine relays: Istio's
// istio_tcp_* metrics with the workloads and principals on both ends,
// meshlock's handshake and refusal counters, and the access-log line. The
// engine calls it (an engine::ConnectionObserver) from the connection's worker.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "admin/istio_metrics.h"
#include "admin/meshlock_metrics.h"
#include "app/access_log.h"
#include "app/access_log_limiter.h"
#include "app/refusal_log.h"
#include "config/types.h"
#include "config/workload.h"
#include "engine/engine.h"

namespace meshlock::app {

// Where reports go; one per agent, shared by every connection.
struct ReportSinks {
  admin::IstioTcpMetrics istio;
  admin::MeshlockMetrics& meshlock;
  std::unique_ptr<AccessLog> access_log;  // empty: access log off
  std::shared_ptr<RefusalLog> refusals = std::make_shared<RefusalLog>();
  // Access-log lines of connections that never got established, per pod and end.
  std::shared_ptr<AccessLogLimiter> refusal_lines = std::make_shared<AccessLogLimiter>(10);

  // Writes a never-established connection's line if the limit allows.
  void writeRefusal(const AccessRecord& record) const;
  // Writes the "suppressed" summaries whose second is over (the agent's loop, about once a second).
  void flushSuppressed() const;

  // A connection that ended before it was planned (the agent could not set it
  // up): logged and kept among the refusals like any other.
  void setupFailed(AccessRecord record) const;
};

// What is known when the connection is planned; the engine adds the rest.
struct PlannedConnection {
  bool outbound = true;
  std::string pod;                   // the served pod, ns/name
  std::string local_principal;       // the served pod's SPIFFE ID
  admin::IstioTcpLabels labels;      // all but principals and security policy
  std::string policy;                // access log `policy`
  std::string decided_by;
  // The pod's port, for meshlock_plaintext_refused_total: 0 (exported as
  // "other") unless it is a declared container port, so a port scan cannot
  // create 65,535 series.
  uint16_t port = 0;
  bool mesh_mtls = false;            // TLS with mesh identities (ISTIO_MUTUAL / inbound mTLS)
  bool adopted = false;              // handed over by the previous agent: its handshake was counted there
};

// What the previous agent's report said of a connection handed over to this
// one (ConnectionReport::handoverState), marked adopted; nullopt when it said
// nothing this version reads (an older agent, or not JSON).
[[nodiscard]] std::optional<PlannedConnection> plannedFromHandover(std::string_view state);

class ConnectionReport final : public engine::ConnectionObserver {
 public:
  ConnectionReport(std::shared_ptr<ReportSinks> sinks, PlannedConnection planned);

  void established(const engine::ConnectionSnapshot& snapshot) override;
  void transferred(uint64_t to_upstream, uint64_t to_downstream) override;
  void closed(const engine::ConnectionSnapshot& snapshot, engine::ConnectionEnd end,
              std::string_view reason) override;
  // For the next agent process at an upgrade: the decision and the labels as
  // they stand (JSON; plannedFromHandover reads it).
  [[nodiscard]] std::string handoverState() const override;

 private:
  [[nodiscard]] const char* direction() const { return planned_.outbound ? "outbound" : "inbound"; }
  void countHandshakeSuccess();

  std::shared_ptr<ReportSinks> sinks_;
  PlannedConnection planned_;
  admin::IstioTcpConnectionMetrics tcp_;  // set by `established`
  admin::Gauge active_;                   // meshlock_active_connections{direction,mode}
  bool established_ = false;
  uint64_t pending_to_upstream_ = 0;  // bytes before `established` (PERMISSIVE's first bytes)
  uint64_t pending_to_downstream_ = 0;
  bool handshake_success_pending_ = false;
};

// Istio's workload labels of one end of a connection (`source` or the
// destination) that is a pod of this cluster's state: its cluster is ours, as
// the mesh is one cluster. An end that is not in the state keeps "unknown",
// as ztunnel reports a peer it has no workload for.
void labelWorkload(const config::Pod& pod, bool source, std::string_view cluster_id, admin::IstioTcpLabels& labels);
// The destination service's labels (`fqdn` as the policy resolves the name);
// a service of the state is in our cluster whichever backend answers.
void labelService(std::string fqdn, const config::Service& svc, std::string_view cluster_id,
                  admin::IstioTcpLabels& labels);

// How the bytes crossed the network, for `tunnel` in the access log, in
// /connections and in check: "hbone" (a stream of an HBONE tunnel),
// "istio_mtls" (mesh mTLS on the app's port, as Istio's sidecars speak it) or "none".
[[nodiscard]] std::string_view tunnelOf(const engine::ConnectionSnapshot& snapshot, bool mesh_mtls);

// A bounded label for why a handshake failed, from the engine's reason text:
// the identity part's VerifyError names ("unknown_ca", "san_mismatch", ...),
// else a few BoringSSL causes ("protocol_version", "peer_refused_certificate",
// "no_client_certificate", "peer_closed", "timeout"), else "other".
[[nodiscard]] std::string handshakeFailureLabel(engine::ConnectionEnd end, std::string_view reason);

}  // namespace meshlock::app
