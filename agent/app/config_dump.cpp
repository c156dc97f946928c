// The cluster state and policy as the admin API shows them (config_dump.h).
#include "app/config_dump.h"

#include "policy/report_json.h"
#include "policy/validate.h"

namespace meshlock::app {
namespace {

using nlohmann::json;

json labelsJson(const config::Labels& labels) {
  json j = json::object();
  for (const auto& [key, value] : labels) j[key] = value;
  return j;
}

json optionalLabels(const std::optional<config::Labels>& labels) {
  return labels ? labelsJson(*labels) : json(nullptr);
}

json ipJson(const std::optional<config::IpAddress>& ip) { return ip ? json(ip->toString()) : json(nullptr); }

json ipsJson(const std::vector<config::IpAddress>& ips) {
  json j = json::array();
  for (const auto& ip : ips) j.push_back(ip.toString());
  return j;
}

// The metadata every object carries, as the first keys of its JSON.
json metaJson(const config::ObjectMeta& meta) {
  return {{"kind", meta.ref.kind},
          {"api_version", meta.api_version},
          {"namespace", meta.ref.ns.empty() ? json(nullptr) : json(meta.ref.ns)},
          {"name", meta.ref.name},
          {"uid", meta.uid.empty() ? json(nullptr) : json(meta.uid)},
          {"labels", labelsJson(meta.labels)},
          {"creation_timestamp", meta.creation_timestamp.empty() ? json(nullptr) : json(meta.creation_timestamp)},
          {"source", meta.source.describe()}};
}

json tlsJson(const std::optional<config::ClientTlsSettings>& tls) {
  if (!tls) return nullptr;
  auto text = [](const std::string& s) { return s.empty() ? json(nullptr) : json(s); };
  return {{"mode", std::string(config::toString(tls->mode))},
          {"sni", text(tls->sni)},
          {"subject_alt_names", tls->subject_alt_names},
          {"ca_certificates", text(tls->ca_certificates)},
          {"client_certificate", text(tls->client_certificate)},
          {"private_key", text(tls->private_key)},
          {"credential_name", text(tls->credential_name)},
          {"insecure_skip_verify", tls->insecure_skip_verify}};
}

json destinationRuleJson(const config::DestinationRule& rule) {
  json j = metaJson(rule.meta);
  j["host"] = rule.host;
  j["export_to"] = rule.export_to;
  j["workload_selector"] = optionalLabels(rule.workload_selector);
  j["tls"] = tlsJson(rule.tls);
  j["port_level"] = json::array();
  for (const auto& p : rule.port_level) j["port_level"].push_back({{"port", p.port}, {"tls", tlsJson(p.tls)}});
  j["synthetic"] = rule.synthetic;
  return j;
}

std::string_view controlPlaneKind(config::ControlPlaneKind kind) {
  switch (kind) {
    case config::ControlPlaneKind::kIstio: return "Istio";
    case config::ControlPlaneKind::kIstioOperator: return "IstioOperator";
    case config::ControlPlaneKind::kSmcpV1: return "ServiceMeshControlPlane/v1";
    case config::ControlPlaneKind::kSmcpV2: return "ServiceMeshControlPlane/v2";
    case config::ControlPlaneKind::kMeshConfigMap: return "ConfigMap istio (mesh)";
  }
  return "unknown";
}


}  // namespace

json clusterStateJson(const config::ClusterState& state) {
  json namespaces = json::array();
  for (const auto& ns : state.namespaces) namespaces.push_back(metaJson(ns.meta));

  json pods = json::array();
  for (const auto& pod : state.pods) {
    json j = metaJson(pod.meta);
    j["pod_uid"] = pod.uid.str();
    j["service_account"] = pod.service_account;
    j["node"] = pod.node_name.empty() ? json(nullptr) : json(pod.node_name);
    j["ip"] = ipJson(pod.ip);
    j["ips"] = ipsJson(pod.ips);
    j["ports"] = json::array();
    for (const auto& p : pod.ports)
      j["ports"].push_back({{"name", p.name.empty() ? json(nullptr) : json(p.name)}, {"port", p.port},
                            {"protocol", p.protocol}});
    j["host_network"] = pod.host_network;
    j["terminated"] = pod.terminated;
    pods.push_back(std::move(j));
  }

  json services = json::array();
  for (const auto& svc : state.services) {
    json j = metaJson(svc.meta);
    j["type"] = svc.type;
    j["cluster_ip"] = ipJson(svc.cluster_ip);
    j["cluster_ips"] = ipsJson(svc.cluster_ips);
    j["selector"] = optionalLabels(svc.selector);
    j["external_name"] = svc.external_name.empty() ? json(nullptr) : json(svc.external_name);
    j["ports"] = json::array();
    for (const auto& p : svc.ports) {
      j["ports"].push_back({{"name", p.name.empty() ? json(nullptr) : json(p.name)},
                            {"port", p.port},
                            {"target_port", p.target.name.empty() ? json(p.target.number) : json(p.target.name)},
                            {"protocol", p.protocol}});
    }
    services.push_back(std::move(j));
  }

  json endpoints = json::array();
  for (const auto& ep : state.endpoints) {
    json j = metaJson(ep.meta);
    j["service"] = ep.service;
    j["addresses"] = json::array();
    for (const auto& a : ep.addresses)
      j["addresses"].push_back({{"ip", a.ip.toString()}, {"pod", a.pod_name.empty() ? json(nullptr) : json(a.pod_name)}});
    j["ports"] = json::array();
    for (const auto& p : ep.ports)
      j["ports"].push_back({{"name", p.name.empty() ? json(nullptr) : json(p.name)}, {"port", p.port}});
    endpoints.push_back(std::move(j));
  }

  json peer_authentications = json::array();
  for (const auto& pa : state.peer_authentications) {
    json j = metaJson(pa.meta);
    j["selector"] = optionalLabels(pa.selector);
    j["mode"] = std::string(config::toString(pa.mode.value_or(config::PeerMode::kUnset)));
    j["port_level"] = json::object();
    for (const auto& [port, mode] : pa.port_level) j["port_level"][std::to_string(port)] = std::string(config::toString(mode));
    j["mesh_wide"] = pa.mesh_wide_kind;
    j["targets"] = json::array();
    for (const auto& t : pa.maistra_targets)
      j["targets"].push_back({{"service", t.service}, {"ports", t.port_numbers}, {"port_names", t.port_names}});
    peer_authentications.push_back(std::move(j));
  }

  json destination_rules = json::array();
  for (const auto& rule : state.destination_rules) destination_rules.push_back(destinationRuleJson(rule));

  json control_planes = json::array();
  for (const auto& cp : state.control_planes) {
    json j = metaJson(cp.meta);
    j["control_plane_kind"] = std::string(controlPlaneKind(cp.kind));
    j["control_namespace"] = cp.control_namespace;
    json mesh = json::object();
    mesh["enable_auto_mtls"] = cp.mesh.enable_auto_mtls ? json(*cp.mesh.enable_auto_mtls) : json(nullptr);
    mesh["trust_domain"] = cp.mesh.trust_domain ? json(*cp.mesh.trust_domain) : json(nullptr);
    mesh["root_namespace"] = cp.mesh.root_namespace ? json(*cp.mesh.root_namespace) : json(nullptr);
    mesh["min_protocol_version"] = cp.mesh.min_protocol_version
                                       ? json(std::string(config::toString(*cp.mesh.min_protocol_version)))
                                       : json(nullptr);
    j["mesh_config"] = mesh;
    j["mesh_mtls"] = cp.mesh_mtls;
    control_planes.push_back(std::move(j));
  }

  return {{"namespaces", namespaces},
          {"pods", pods},
          {"services", services},
          {"endpoints", endpoints},
          {"peer_authentications", peer_authentications},
          {"destination_rules", destination_rules},
          {"control_planes", control_planes}};
}

json configDumpJson(const policy::PolicyIndex& index, std::string_view node, json identities) {
  json policies = json::array();
  for (const config::Pod* pod : index.podsOnNode(node)) {
    json j = policy::explainPod(index, *pod);
    j["namespace"] = pod->ns();
    j["name"] = pod->name();
    policies.push_back(std::move(j));
  }
  json synthetic = json::array();
  for (const config::DestinationRule* rule : index.syntheticRules()) synthetic.push_back(destinationRuleJson(*rule));
  json warnings = json::array();
  for (const policy::Finding& f : policy::validate(index)) {
    warnings.push_back({{"code", f.code}, {"severity", std::string(policy::toString(f.severity))},
                        {"resource", f.resource}, {"message", f.message}});
  }
  return {{"node", std::string(node)},
          {"cluster", clusterStateJson(index.state())},
          {"mesh", policy::toJson(index.mesh())},
          {"synthetic_destination_rules", synthetic},
          {"policy", policies},
          {"identities", std::move(identities)},
          {"warnings", warnings}};
}

ConnectionDecision decideConnection(const policy::PolicyIndex& index, const config::Pod& local, bool outbound,
                                    const std::optional<config::IpAddress>& destination, std::uint16_t port) {
  ConnectionDecision out;
  if (outbound) {
    if (!destination) return out;
    const policy::OutboundDecision d = index.outbound(local, policy::Destination{.ip = *destination, .host = {}}, port);
    if (d.service != nullptr) {
      out.destination_service = index.fqdn(*d.service);
    } else if (!d.host.empty()) {
      out.destination_service = std::string(d.host);
    }
    out.decided_by = d.client_decided_by.text() + " (" + std::string(policy::toString(d.client_tls)) + ")";
    return out;
  }
  const policy::InboundDecision d = index.inbound(local, port);
  out.decided_by = d.decided_by.text() + " (" + std::string(policy::toString(d.mode)) + ")";
  // The service the client most likely addressed.
  if (const config::Service* svc = index.serviceForPodPort(local, port)) out.destination_service = index.fqdn(*svc);
  return out;
}

}  // namespace meshlock::app
