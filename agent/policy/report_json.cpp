// JSON renderings of policy decisions (report_json.h).
#include "policy/report_json.h"

#include <set>

namespace meshlock::policy {

using nlohmann::json;

json toJson(const ConnectionReport& r) {
  json j;
  j["from"] = r.from;
  j["to"] = r.to;
  j["client_tls"] = std::string(toString(r.client_tls));
  j["server_mode"] = std::string(toString(r.server_mode));
  j["outcome"] = std::string(toString(r.outcome));
  j["expected_identities"] = r.expected_identities;
  j["decided_by"] = r.decided_by;
  j["client_decided_by"] = r.client_decided_by;
  j["server_decided_by"] = r.server_decided_by;
  j["destination"] = r.destination;
  j["min_tls_version"] = r.min_tls_version;
  j["tunnel"] = r.tunnel;
  j["backends_disagree"] = r.backends_disagree;
  j["backends"] = json::array();
  for (const auto& b : r.backends) {
    j["backends"].push_back({{"pod", b.pod},
                             {"ip", b.ip},
                             {"port", b.port},
                             {"client_tls", std::string(toString(b.client_tls))},
                             {"server_mode", std::string(toString(b.server_mode))},
                             {"outcome", std::string(toString(b.outcome))}});
  }
  j["authorization"] = r.authorization ? json(*r.authorization) : json(nullptr);
  j["authorization_policy"] = r.authorization_policy ? json(*r.authorization_policy) : json(nullptr);
  j["authorization_reason"] = r.authorization_reason;
  j["notes"] = r.notes;
  return j;
}

namespace {

// What each known source pod gets from the pod's authorization policies, per
// container port, as `check` decides it for that pair (mTLS sources with their
// principal, plaintext ones without). Bounded: a cluster can have many pods.
void addInboundAuthorization(const PolicyIndex& ix, const config::Pod& pod, size_t limit, json& j) {
  json rows = json::array();
  bool truncated = false;
  if (ix.served(pod) && ix.authorization().anyApplies(pod)) {
    std::set<uint16_t> ports;
    for (const auto& p : pod.ports) ports.insert(p.port);
    for (const config::Pod& source : ix.state().pods) {
      if (&source == &pod || !source.ip) continue;
      const PodRef from{source.ns(), source.name()};
      for (uint16_t port : ports) {
        if (rows.size() == limit) {
          truncated = true;
          break;
        }
        Target t;
        t.kind = Target::Kind::kPod;
        t.pod = PodRef{pod.ns(), pod.name()};
        t.port = port;
        auto r = checkConnection(ix, from, t);
        if (!r || !r->authorization) continue;
        rows.push_back({{"from", r->from},
                        {"port", port},
                        {"outcome", std::string(toString(r->outcome))},
                        {"authorization", *r->authorization},
                        {"authorization_policy", r->authorization_policy ? json(*r->authorization_policy) : json()},
                        {"authorization_reason", r->authorization_reason}});
      }
      if (truncated) break;
    }
  }
  j["inbound_authorization"] = std::move(rows);
  j["inbound_authorization_truncated"] = truncated;
}

}  // namespace

json explainPod(const PolicyIndex& ix, const config::Pod& pod, const ExplainOptions& options) {
  json j;
  j["pod"] = pod.ns() + "/" + pod.name();
  j["uid"] = pod.uid.str();
  j["node"] = pod.node_name;
  j["ip"] = pod.ip ? pod.ip->toString() : "";
  j["service_account"] = pod.service_account;
  j["identity"] = ix.identityOf(pod).str();
  j["served"] = ix.served(pod);
  j["served_reason"] = ix.servedReason(pod).describe();  // what enrolled or excluded it, as /workloads says
  j["min_tls_version"] = std::string(config::toString(ix.meshFor(pod.ns()).min_protocol_version));
  j["auto_mtls"] = ix.meshFor(pod.ns()).enable_auto_mtls;
  j["root_namespace"] = ix.meshFor(pod.ns()).root_namespace;
  j["inbound"] = json::array();
  std::set<uint16_t> ports;
  for (const auto& p : pod.ports) ports.insert(p.port);
  for (uint16_t port : ports) {
    auto in = ix.inbound(pod, port);
    j["inbound"].push_back(
        {{"port", port}, {"mode", std::string(toString(in.mode))}, {"decided_by", in.decided_by.describe()}});
  }
  auto other = ix.inbound(pod, 0);
  j["authorization_policies"] = json::array();
  for (const config::AuthorizationPolicy* p : ix.authorization().applying(pod))
    j["authorization_policies"].push_back(p->meta.ref.ns + "/" + p->meta.ref.name);
  j["inbound_other_ports"] = {{"mode", std::string(toString(other.mode))},
                              {"decided_by", other.decided_by.describe()}};
  if (options.per_source_limit > 0) addInboundAuthorization(ix, pod, options.per_source_limit, j);
  j["outbound"] = json::array();
  const PodRef ref{pod.ns(), pod.name()};
  for (const auto& svc : ix.state().services) {
    for (const auto& sp : svc.ports) {
      Target t;
      t.kind = Target::Kind::kHost;
      t.host = ix.fqdn(svc);
      t.port = sp.port;
      if (auto r = checkConnection(ix, ref, t)) j["outbound"].push_back(toJson(*r));
    }
  }
  return j;
}

json toJson(const MeshSettings& mesh) {
  json decided_by = json::array();
  for (const config::ObjectRef* ref : mesh.decided_by) decided_by.push_back(ref->toString());
  return {{"root_namespace", mesh.root_namespace},
          {"trust_domain", mesh.trust_domain},
          {"domain_suffix", mesh.domain_suffix},
          {"enable_auto_mtls", mesh.enable_auto_mtls},
          {"min_protocol_version", std::string(config::toString(mesh.min_protocol_version))},
          {"decided_by", decided_by}};
}

}  // namespace meshlock::policy
