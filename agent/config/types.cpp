// Small behaviour of the cluster-state value types.
#include "config/types.h"

#include <algorithm>

#include <arpa/inet.h>

#include <cstring>
#include <tuple>

namespace meshlock::config {

SpiffeId spiffeIdFor(std::string_view trust_domain, std::string_view ns,
                     std::string_view service_account) {
  std::string id = "spiffe://";
  id.append(trust_domain).append("/ns/").append(ns).append("/sa/").append(service_account);
  return SpiffeId(std::move(id));
}

bool selectorMatches(const Labels& selector, const Labels& labels) {
  for (const auto& [key, value] : selector) {
    auto it = labels.find(key);
    if (it == labels.end() || it->second != value) return false;
  }
  return true;
}

std::string SourceLocation::describe() const {
  return origin + ": document " + std::to_string(document + 1);
}

std::string ObjectRef::toString() const {
  if (ns.empty()) return kind + "/" + name;
  return kind + "/" + ns + "/" + name;
}

bool olderThan(const ObjectMeta& a, const ObjectMeta& b) {
  return std::tie(a.creation_timestamp, a.ref.name, a.ref.ns) <
         std::tie(b.creation_timestamp, b.ref.name, b.ref.ns);
}

std::optional<uint16_t> Pod::containerPortNamed(std::string_view port_name) const {
  for (const ContainerPort& p : ports) {
    if (!p.name.empty() && p.name == port_name) return p.port;
  }
  return std::nullopt;
}

bool Pod::hasContainerPort(uint16_t port) const {
  for (const ContainerPort& p : ports) {
    if (p.port == port) return true;
  }
  return false;
}

std::string_view toString(PeerMode mode) {
  switch (mode) {
    case PeerMode::kUnset: return "UNSET";
    case PeerMode::kDisable: return "DISABLE";
    case PeerMode::kPermissive: return "PERMISSIVE";
    case PeerMode::kStrict: return "STRICT";
  }
  return "?";
}

std::string_view toString(TlsMode mode) {
  switch (mode) {
    case TlsMode::kDisable: return "DISABLE";
    case TlsMode::kSimple: return "SIMPLE";
    case TlsMode::kMutual: return "MUTUAL";
    case TlsMode::kIstioMutual: return "ISTIO_MUTUAL";
  }
  return "?";
}

std::string_view toString(TlsVersion version) {
  switch (version) {
    case TlsVersion::kAuto: return "TLS_AUTO";
    case TlsVersion::kTls12: return "TLSV1_2";
    case TlsVersion::kTls13: return "TLSV1_3";
  }
  return "?";
}

std::optional<PeerMode> parsePeerMode(std::string_view text) {
  if (text == "UNSET") return PeerMode::kUnset;
  if (text == "DISABLE") return PeerMode::kDisable;
  if (text == "PERMISSIVE") return PeerMode::kPermissive;
  if (text == "STRICT") return PeerMode::kStrict;
  return std::nullopt;
}

std::optional<TlsMode> parseTlsMode(std::string_view text) {
  if (text == "DISABLE") return TlsMode::kDisable;
  if (text == "SIMPLE") return TlsMode::kSimple;
  if (text == "MUTUAL") return TlsMode::kMutual;
  if (text == "ISTIO_MUTUAL") return TlsMode::kIstioMutual;
  return std::nullopt;
}

std::optional<TlsVersion> parseTlsVersion(std::string_view text) {
  if (text == "TLS_AUTO") return TlsVersion::kAuto;
  if (text == "TLSV1_2") return TlsVersion::kTls12;
  if (text == "TLSV1_3") return TlsVersion::kTls13;
  return std::nullopt;
}

void ClusterState::append(const ClusterState& other) {
  namespaces.append(other.namespaces);
  pods.append(other.pods);
  services.append(other.services);
  endpoints.append(other.endpoints);
  peer_authentications.append(other.peer_authentications);
  destination_rules.append(other.destination_rules);
  control_planes.append(other.control_planes);
  authorization_policies.append(other.authorization_policies);
  service_entries.append(other.service_entries);
  member_rolls.append(other.member_rolls);
  secrets.append(other.secrets);
  config_maps.append(other.config_maps);
  secret_access.append(other.secret_access);
  secret_access_reviewed = secret_access_reviewed || other.secret_access_reviewed;
}

bool LabelSelector::matches(const Labels& labels) const {
  if (!selectorMatches(match_labels, labels)) return false;
  for (const Requirement& r : match_expressions) {
    auto it = labels.find(r.key);
    const bool has = it != labels.end();
    const bool in = has && std::find(r.values.begin(), r.values.end(), it->second) != r.values.end();
    if (r.op == "In" && !in) return false;
    if (r.op == "NotIn" && in) return false;
    if (r.op == "Exists" && !has) return false;
    if (r.op == "DoesNotExist" && has) return false;
  }
  return true;
}

std::size_t ClusterState::objectCount() const {
  return namespaces.size() + pods.size() + services.size() + endpoints.size() +
         peer_authentications.size() + destination_rules.size() + control_planes.size() +
         authorization_policies.size() + service_entries.size() + member_rolls.size() + secrets.size() +
         config_maps.size();
}

}  // namespace meshlock::config
