#include "app/connection_report.h"

#include <array>
#include <nlohmann/json.hpp>
#include <tuple>

#include "identity/peer_verifier.h"

namespace meshlock::app {
namespace {

constexpr std::string_view kMutualTls = "mutual_tls";

std::string orEmpty(std::string_view value) { return value == admin::kUnknown ? std::string() : std::string(value); }

std::string workloadRef(const std::string& ns, const std::string& workload) {
  if (ns == admin::kUnknown || workload == admin::kUnknown) return {};
  return ns + "/" + workload;
}

// mutual_tls | tls | plaintext | passthrough: how meshlock carried the bytes.
std::string_view carriage(const PlannedConnection& planned, const engine::ConnectionSnapshot& snapshot) {
  if (snapshot.tls) return planned.mesh_mtls ? kMutualTls : "tls";
  if (!planned.outbound && planned.policy == "DISABLE") return "passthrough";
  return "plaintext";
}

}  // namespace

std::string_view tunnelOf(const engine::ConnectionSnapshot& snapshot, bool mesh_mtls) {
  if (snapshot.tunnel == "hbone") return "hbone";
  return snapshot.tls && mesh_mtls ? "istio_mtls" : "none";
}

void labelWorkload(const config::Pod& pod, bool source, std::string_view cluster_id, admin::IstioTcpLabels& l) {
  const config::WorkloadMeta w = config::workloadOf(pod);
  auto [workload, ns, service, revision, app, version, cluster] =
      source ? std::tie(l.source_workload, l.source_workload_namespace, l.source_canonical_service,
                        l.source_canonical_revision, l.source_app, l.source_version, l.source_cluster)
             : std::tie(l.destination_workload, l.destination_workload_namespace, l.destination_canonical_service,
                        l.destination_canonical_revision, l.destination_app, l.destination_version,
                        l.destination_cluster);
  cluster = cluster_id;
  workload = w.name;
  ns = pod.ns();
  service = w.canonical_service;
  revision = w.canonical_revision;
  if (!w.app.empty()) app = w.app;
  if (!w.version.empty()) version = w.version;
}

void labelService(std::string fqdn, const config::Service& svc, std::string_view cluster_id,
                  admin::IstioTcpLabels& labels) {
  labels.destination_service = std::move(fqdn);
  labels.destination_service_name = svc.name();
  labels.destination_service_namespace = svc.ns();
  labels.destination_cluster = cluster_id;
}

std::string handshakeFailureLabel(engine::ConnectionEnd end, std::string_view reason) {
  if (end == engine::ConnectionEnd::HandshakeTimeout) return "timeout";
  // The identity part's verdict on the peer's certificate, when it gave one.
  // It reads "<name>: <detail>", the name starting a word ("OPENSSL_internal:" is not "internal:").
  for (int i = 0; i <= static_cast<int>(identity::VerifyError::kInternal); ++i) {
    const std::string needle = std::string(identity::toString(static_cast<identity::VerifyError>(i))) + ":";
    for (size_t at = reason.find(needle); at != std::string_view::npos; at = reason.find(needle, at + 1)) {
      if (at == 0 || reason[at - 1] == ' ' || reason[at - 1] == '(') return needle.substr(0, needle.size() - 1);
    }
  }
  struct Pattern {
    std::string_view needle;
    std::string_view label;
  };
  static constexpr std::array kPatterns{
      Pattern{"CERTIFICATE_REQUIRED", "no_client_certificate"},
      Pattern{"PEER_DID_NOT_RETURN_A_CERTIFICATE", "no_client_certificate"},
      Pattern{"ALERT_UNKNOWN_CA", "peer_refused_certificate"},
      Pattern{"ALERT_BAD_CERTIFICATE", "peer_refused_certificate"},
      Pattern{"ALERT_CERTIFICATE", "peer_refused_certificate"},
      Pattern{"ALERT_ACCESS_DENIED", "peer_refused_certificate"},
      Pattern{"PROTOCOL_VERSION", "protocol_version"},
      Pattern{"UNSUPPORTED_PROTOCOL", "protocol_version"},
      Pattern{"WRONG_VERSION_NUMBER", "protocol_version"},
      Pattern{"NO_SHARED_CIPHER", "no_shared_cipher"},
      Pattern{"HANDSHAKE_FAILURE", "handshake_failure_alert"},
      Pattern{"NO_RENEGOTIATION", "renegotiation"},
      Pattern{"RECORD_TOO_LARGE", "bad_record"},
      Pattern{"WRONG_VERSION", "protocol_version"},
      Pattern{"peer closed", "peer_closed"},
      Pattern{"unexpected end of stream", "peer_closed"},
  };
  for (const Pattern& p : kPatterns) {
    if (reason.find(p.needle) != std::string_view::npos) return std::string(p.label);
  }
  return "other";
}

ConnectionReport::ConnectionReport(std::shared_ptr<ReportSinks> sinks, PlannedConnection planned)
    : sinks_(std::move(sinks)), planned_(std::move(planned)) {}

void ConnectionReport::established(const engine::ConnectionSnapshot& snapshot) {
  admin::IstioTcpLabels& labels = planned_.labels;
  const std::string_view how = carriage(planned_, snapshot);
  if (snapshot.tls && planned_.mesh_mtls) {
    std::string& peer = planned_.outbound ? labels.destination_principal : labels.source_principal;
    std::string& local = planned_.outbound ? labels.source_principal : labels.destination_principal;
    peer = snapshot.tls->peer_identity;
    local = planned_.local_principal;
    labels.connection_security_policy = std::string(kMutualTls);
  } else {
    labels.connection_security_policy = "none";
  }
  tcp_ = sinks_->istio.forConnection(labels);
  tcp_.opened.inc();
  if (pending_to_upstream_ != 0) tcp_.received_bytes.inc(pending_to_upstream_);
  if (pending_to_downstream_ != 0) tcp_.sent_bytes.inc(pending_to_downstream_);
  sinks_->meshlock.connections.labels({direction(), how}).inc();
  active_ = sinks_->meshlock.active_connections.labels({direction(), how});
  active_.add(1);
  established_ = true;
  if (snapshot.tls && !planned_.adopted) {
    // A TLS 1.3 client learns that the server refused its certificate only
    // from the first record after the handshake: count success once the
    // server has said something, or the connection ended otherwise.
    if (planned_.outbound && !snapshot.tls->resumed) {
      handshake_success_pending_ = true;
    } else {
      countHandshakeSuccess();
    }
  }
}

void ConnectionReport::countHandshakeSuccess() {
  handshake_success_pending_ = false;
  sinks_->meshlock.handshakes.labels({direction(), "success", "ok"}).inc();
}

void ConnectionReport::transferred(uint64_t to_upstream, uint64_t to_downstream) {
  if (!established_) {
    pending_to_upstream_ += to_upstream;
    pending_to_downstream_ += to_downstream;
    return;
  }
  if (to_downstream != 0 && handshake_success_pending_) countHandshakeSuccess();
  // Istio's view: received from the client, sent back to it.
  if (to_upstream != 0) tcp_.received_bytes.inc(to_upstream);
  if (to_downstream != 0) tcp_.sent_bytes.inc(to_downstream);
}

void ConnectionReport::closed(const engine::ConnectionSnapshot& snapshot, engine::ConnectionEnd end,
                              std::string_view reason) {
  using engine::ConnectionEnd;
  if (end == ConnectionEnd::HandshakeFailed || end == ConnectionEnd::HandshakeTimeout) {
    sinks_->meshlock.handshakes.labels({direction(), "failure", handshakeFailureLabel(end, reason)}).inc();
  } else if (handshake_success_pending_) {
    countHandshakeSuccess();
  }
  if (end == ConnectionEnd::RefusedPlaintext) {
    sinks_->meshlock.plaintext_refused
        .labels({planned_.labels.destination_workload_namespace, planned_.labels.destination_workload,
                 planned_.port != 0 ? std::to_string(planned_.port) : std::string("other")})
        .inc();
  }
  if (established_) {
    tcp_.closed.inc();
    active_.add(-1);
  } else if (end == ConnectionEnd::ConnectFailed || end == ConnectionEnd::ConnectTimeout ||
             end == ConnectionEnd::Denied) {
    // As Envoy reports an upstream connection failure (UF), and ztunnel a
    // connection its policy refused (DENY): opened and closed, with the flag.
    planned_.labels.response_flags = end == ConnectionEnd::Denied ? "DENY" : "UF";
    admin::IstioTcpConnectionMetrics tcp = sinks_->istio.forConnection(planned_.labels);
    tcp.opened.inc();
    tcp.closed.inc();
  }
  if (end == ConnectionEnd::Denied) {
    sinks_->meshlock.authorization_denied
        .labels({planned_.labels.destination_workload_namespace, planned_.labels.destination_workload,
                 snapshot.denied_by.empty() ? std::string("none") : snapshot.denied_by})
        .inc();
  }

  const bool refused = RefusalLog::isRefusal(end);
  if (!sinks_->access_log && !refused) return;
  const admin::IstioTcpLabels& labels = planned_.labels;
  AccessRecord record;
  record.direction = direction();
  record.pod = planned_.pod;
  record.source = snapshot.peer.toString();
  record.source_workload = workloadRef(labels.source_workload_namespace, labels.source_workload);
  record.source_principal = orEmpty(labels.source_principal);
  record.destination = snapshot.upstream.toString();
  record.destination_service = orEmpty(labels.destination_service);
  record.destination_workload = workloadRef(labels.destination_workload_namespace, labels.destination_workload);
  record.destination_principal = orEmpty(labels.destination_principal);
  record.policy = planned_.policy;
  record.decided_by = planned_.decided_by;
  record.security = established_ ? std::string(carriage(planned_, snapshot)) : "none";
  if (record.security == "passthrough" || record.security == "plaintext") record.security = "none";
  record.tunnel = tunnelOf(snapshot, planned_.mesh_mtls);
  if (snapshot.tls) {
    record.tls_version = snapshot.tls->version;
    record.tls_cipher = snapshot.tls->cipher;
    record.tls_resumed = snapshot.tls->resumed;
    if (planned_.mesh_mtls) {
      // A refused peer's identity is still worth seeing; the labels only have it once established.
      std::string& peer = planned_.outbound ? record.destination_principal : record.source_principal;
      if (peer.empty()) peer = snapshot.tls->peer_identity;
    }
  }
  record.bytes_to_upstream = snapshot.bytes_to_upstream;
  record.bytes_to_downstream = snapshot.bytes_to_downstream;
  record.duration = snapshot.age;
  record.end = engine::toString(end);
  record.reason = std::string(reason);
  if (sinks_->access_log) {
    if (established_) sinks_->access_log->write(record);
    else sinks_->writeRefusal(record);
  }
  if (refused) sinks_->refusals->record(std::move(record));
}

void ReportSinks::writeRefusal(const AccessRecord& record) const {
  std::vector<AccessLogLimiter::Suppressed> before;
  const bool write = refusal_lines->admit(record.pod, record.end, AccessLogLimiter::Clock::now(), before);
  for (const auto& s : before) access_log->writeSuppressed(s.pod, s.end, s.lines, s.over);
  if (write) access_log->write(record);
}

void ReportSinks::flushSuppressed() const {
  if (!access_log) return;
  for (const auto& s : refusal_lines->flush(AccessLogLimiter::Clock::now()))
    access_log->writeSuppressed(s.pod, s.end, s.lines, s.over);
}

void ReportSinks::setupFailed(AccessRecord record) const {
  record.security = "none";
  record.end = "setup_failed";
  if (access_log) writeRefusal(record);
  refusals->record(std::move(record));
}

std::string ConnectionReport::handoverState() const {
  nlohmann::json labels = nlohmann::json::object();
  for (const admin::IstioTcpLabels::Field& f : admin::IstioTcpLabels::fields()) labels[f.name] = planned_.labels.*f.member;
  return nlohmann::json{{"outbound", planned_.outbound},
                        {"pod", planned_.pod},
                        {"local_principal", planned_.local_principal},
                        {"policy", planned_.policy},
                        {"decided_by", planned_.decided_by},
                        {"port", planned_.port},
                        {"mesh_mtls", planned_.mesh_mtls},
                        {"labels", std::move(labels)}}
      .dump();
}

std::optional<PlannedConnection> plannedFromHandover(std::string_view state) {
  const nlohmann::json j = nlohmann::json::parse(state, nullptr, false);
  if (!j.is_object() || !j.contains("labels") || !j["labels"].is_object()) return std::nullopt;
  try {
    PlannedConnection planned;
    planned.outbound = j.at("outbound").get<bool>();
    planned.pod = j.at("pod").get<std::string>();
    planned.local_principal = j.at("local_principal").get<std::string>();
    planned.policy = j.at("policy").get<std::string>();
    planned.decided_by = j.at("decided_by").get<std::string>();
    planned.port = j.at("port").get<uint16_t>();
    planned.mesh_mtls = j.at("mesh_mtls").get<bool>();
    const nlohmann::json& labels = j["labels"];
    for (const admin::IstioTcpLabels::Field& f : admin::IstioTcpLabels::fields()) {
      if (auto it = labels.find(f.name); it != labels.end() && it->is_string()) planned.labels.*f.member = it->get<std::string>();
    }
    planned.adopted = true;
    return planned;
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
}

}  // namespace meshlock::app
