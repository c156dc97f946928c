// Builds the policy index from a ClusterState and answers per-connection
// questions from it. Istio's own logic is cited where we follow it:
// pilot/pkg/security/authn (ComposePeerAuthentication) for inbound,
// pilot/pkg/model/push_context.go (destinationRule) for outbound lookup.
#include "policy/policy.h"

#include "config/credentials.h"
#include "policy/selector_index.h"

#include <algorithm>
#include <set>

namespace meshlock::policy {

using config::ClusterState;
using config::DestinationRule;
using config::PeerAuthentication;
using config::PeerMode;
using config::Pod;
using config::Service;
using config::TlsMode;

// ---- Names ------------------------------------------------------------------------

std::string_view toString(ServerMode mode) {
  switch (mode) {
    case ServerMode::kNone: return "NONE";
    case ServerMode::kDisable: return "DISABLE";
    case ServerMode::kPermissive: return "PERMISSIVE";
    case ServerMode::kStrict: return "STRICT";
  }
  return "?";
}

std::string_view toString(ClientTls tls) {
  switch (tls) {
    case ClientTls::kNone: return "NONE";
    case ClientTls::kDisable: return "DISABLE";
    case ClientTls::kSimple: return "SIMPLE";
    case ClientTls::kMutual: return "MUTUAL";
    case ClientTls::kIstioMutual: return "ISTIO_MUTUAL";
  }
  return "?";
}

std::string_view toString(Outcome outcome) {
  switch (outcome) {
    case Outcome::kMtls: return "mtls";
    case Outcome::kTls: return "tls";
    case Outcome::kPlaintext: return "plaintext";
    case Outcome::kRefused: return "refused";
    case Outcome::kBroken: return "broken";
  }
  return "?";
}

std::string_view toString(Tunnel tunnel) {
  switch (tunnel) {
    case Tunnel::kNone: return "none";
    case Tunnel::kIstioMtls: return "istio_mtls";
    case Tunnel::kHbone: return "hbone";
  }
  return "?";
}

std::optional<ServerMode> parseServerMode(std::string_view text) {
  for (ServerMode m : {ServerMode::kNone, ServerMode::kDisable, ServerMode::kPermissive, ServerMode::kStrict}) {
    if (toString(m) == text) return m;
  }
  return std::nullopt;
}

std::optional<ClientTls> parseClientTls(std::string_view text) {
  for (ClientTls t : {ClientTls::kNone, ClientTls::kDisable, ClientTls::kSimple, ClientTls::kMutual,
                      ClientTls::kIstioMutual}) {
    if (toString(t) == text) return t;
  }
  return std::nullopt;
}

std::optional<Outcome> parseOutcome(std::string_view text) {
  for (Outcome o : {Outcome::kMtls, Outcome::kTls, Outcome::kPlaintext, Outcome::kRefused, Outcome::kBroken}) {
    if (toString(o) == text) return o;
  }
  return std::nullopt;
}

Outcome combine(ClientTls client, ServerMode server) {
  switch (client) {
    case ClientTls::kNone:
    case ClientTls::kDisable:
      // Plaintext: only a STRICT server turns it away.
      return server == ServerMode::kStrict ? Outcome::kRefused : Outcome::kPlaintext;
    case ClientTls::kIstioMutual:
      // Mesh mTLS needs a mesh server that terminates it; DISABLE hands the
      // TLS bytes to the app untouched, no proxy means the app sees them too.
      return server == ServerMode::kPermissive || server == ServerMode::kStrict ? Outcome::kMtls
                                                                               : Outcome::kBroken;
    case ClientTls::kSimple:
    case ClientTls::kMutual:
      // TLS with non-mesh certificates: fine towards a server that speaks TLS
      // itself (no proxy, DISABLE, or PERMISSIVE's passthrough of non-mesh TLS);
      // STRICT demands a mesh client certificate and fails the handshake.
      return server == ServerMode::kStrict ? Outcome::kBroken : Outcome::kTls;
  }
  return Outcome::kBroken;
}

std::string Reason::describe() const {
  std::string s;
  switch (kind) {
    case ReasonKind::kResource: s = resource ? resource->toString() : "?"; break;
    case ReasonKind::kDefault: s = "default"; break;
    case ReasonKind::kAutoMtls: s = "auto mTLS"; break;
    case ReasonKind::kNoAutoMtls: s = "auto mTLS disabled"; break;
    case ReasonKind::kNotEnrolled: s = "namespace not enrolled"; break;
    case ReasonKind::kOptedOut: s = "pod opted out"; break;
    case ReasonKind::kOutsideMesh: s = "outside the mesh"; break;
    case ReasonKind::kEnrolled: s = "namespace label meshlock.io/mtls=enabled"; break;
    case ReasonKind::kEnrolledAmbient: s = "namespace label istio.io/dataplane-mode=ambient"; break;
    case ReasonKind::kSidecar: s = "Istio sidecar (container istio-proxy)"; break;
    case ReasonKind::kZtunnel: s = "Istio ztunnel (annotation ambient.istio.io/redirection=enabled)"; break;
    case ReasonKind::kGatewayCredential:
      s = "credentialName without workloadSelector applies at gateways only: no TLS from a sidecar";
      break;
  }
  if (port != 0) s += " (port " + std::to_string(port) + ")";
  return s;
}

std::vector<std::string> DecidedBy::describe() const {
  std::vector<std::string> out;
  for (const Reason& r : *this) out.push_back(r.describe());
  return out;
}

std::string DecidedBy::text() const {
  std::string out;
  for (const Reason& r : *this) {
    if (!out.empty()) out += ", ";
    out += r.describe();
  }
  return out;
}

// ---- Index internals -----------------------------------------------------------

struct PortMode {
  uint16_t port;
  ServerMode mode;
  Reason reason;
};

struct PolicyIndex::PodEntry {
  const Pod* pod = nullptr;
  bool served = false;
  bool sidecar = false;  // an Envoy sidecar does its mTLS
  bool ztunnel = false;  // Istio's ztunnel captures it (HBONE)
  bool hbone = false;    // takes mesh mTLS as HBONE on its 15008 (ztunnel's, or a native tunnel)
  std::size_t mesh = 0;  // the mesh that governs its namespace (index into meshes_)
  Reason served_reason;
  ServerMode mode = ServerMode::kPermissive;  // inbound, ports without a port-level setting
  Reason mode_reason;
  std::vector<PortMode> port_modes;
  std::vector<std::string> identity;  // one SPIFFE ID (a vector so decisions can span it)
  // (service index, service port index) pairs for which this pod is a backend.
  std::vector<std::pair<std::size_t, std::size_t>> attributions;
};

struct PolicyIndex::ServiceEntry {
  const Service* svc = nullptr;
  std::string fqdn;
  std::vector<std::vector<Backend>> backends;  // parallel to svc->ports
  std::vector<std::string> identities;         // sorted, unique
};

// Several DestinationRules for one host, merged as istiod merges them
// (pilot/pkg/model/destination_rule.go mergeDestinationRule at 86c9f01f): the
// first rule (selectors first, then oldest) is kept; a later one for the same
// host with the same exportTo is folded in: its subsets are added, and its
// trafficPolicy is taken only when the merged rule has none yet.
struct PolicyIndex::MergedRule {
  const DestinationRule* first = nullptr;   // selector and host come from it
  const DestinationRule* policy = nullptr;  // whose trafficPolicy applies; null: none has one
  std::vector<const DestinationRule*> from;
  std::set<std::string> export_to;  // as istiod keeps it: {"."} for selector rules
};

// DestinationRules of one pool (a namespace's local or exported rules), by host.
struct PolicyIndex::RuleSet {
  StringMap<std::vector<MergedRule>> exact;
  StringMap<std::vector<MergedRule>> wildcards;  // by host with its '*'
  std::vector<std::string> wildcard_order;       // most specific first (host.MoreSpecific)
};

struct PolicyIndex::NamespaceEntry {
  bool enrolled = false;
  ReasonKind enrolled_by = ReasonKind::kNotEnrolled;  // kEnrolled or kEnrolledAmbient when enrolled
  const PeerAuthentication* namespace_policy = nullptr;
  std::vector<const PeerAuthentication*> workload_policies;  // oldest first
  RuleSet local;     // rules of this namespace visible to its own clients (istiod's namespaceLocal)
  RuleSet exported;  // rules of this namespace for other namespaces' clients (exportedByNamespace)
};

// An Istio ServiceEntry's hosts in the registry, with the backends of each
// declared port (endpoints, or the pods its workloadSelector picks).
struct PolicyIndex::IstioServiceEntry {
  const config::ServiceEntry* se = nullptr;
  std::vector<std::string> hosts;              // lower case, as written otherwise
  std::vector<std::vector<Backend>> backends;  // parallel to se->ports
  std::vector<std::string> identities;         // subjectAltNames, else the pods' SPIFFE IDs
};

// What decides which namespaces a mesh governs.
struct PolicyIndex::MeshScope {
  bool smcp = false;                                // a ServiceMeshControlPlane's mesh: member rolls count
  std::vector<config::LabelSelector> selectors;     // meshConfig.discoverySelectors
  std::vector<const config::MemberRoll*> rolls;     // ServiceMeshMemberRolls in its namespace
};

PolicyIndex::PolicyIndex() = default;
PolicyIndex::~PolicyIndex() = default;

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

ServerMode toServerMode(PeerMode mode) {
  switch (mode) {
    case PeerMode::kDisable: return ServerMode::kDisable;
    case PeerMode::kStrict: return ServerMode::kStrict;
    default: return ServerMode::kPermissive;
  }
}

ClientTls toClientTls(TlsMode mode) {
  switch (mode) {
    case TlsMode::kDisable: return ClientTls::kDisable;
    case TlsMode::kSimple: return ClientTls::kSimple;
    case TlsMode::kMutual: return ClientTls::kMutual;
    case TlsMode::kIstioMutual: return ClientTls::kIstioMutual;
  }
  return ClientTls::kDisable;
}

Reason byResource(const config::ObjectMeta& meta, uint16_t port = 0) {
  return Reason{ReasonKind::kResource, &meta.ref, port};
}

bool isLegacyNamespacePolicy(const PeerAuthentication& pa) {
  return pa.meta.ref.kind == "Policy";
}

// mergeDestinationRule, with ENABLE_ENHANCED_DESTINATIONRULE_MERGE on (its
// default): rules merge only when their exportTo sets are equal, or the new one
// is a superset (then it is also kept on its own); rules with different
// selectors never merge.
void mergeRule(PolicyIndex::RuleSet& set, const std::string& host, const DestinationRule* rule,
               const std::set<std::string>& export_to) {
  auto& list = host.starts_with("*") ? set.wildcards[host] : set.exact[host];
  bool append_separately = true;
  for (PolicyIndex::MergedRule& merged : list) {
    if (export_to == merged.export_to) {
      append_separately = false;
    } else if (!merged.export_to.empty() &&
               std::includes(export_to.begin(), export_to.end(), merged.export_to.begin(), merged.export_to.end())) {
      append_separately = true;
    } else {
      append_separately = true;
      continue;
    }
    const auto& existing = merged.first->workload_selector;
    const auto& incoming = rule->workload_selector;
    const bool both_without = !existing && !incoming;
    const bool both_with = existing && incoming;
    if (both_with && *existing != *incoming) {
      append_separately = true;
      continue;
    }
    if (both_without || both_with) append_separately = false;
    merged.from.push_back(rule);
    if (!merged.policy && rule->has_traffic_policy) merged.policy = rule;
  }
  if (append_separately) {
    list.push_back(PolicyIndex::MergedRule{
        .first = rule, .policy = rule->has_traffic_policy ? rule : nullptr, .from = {rule}, .export_to = export_to});
  }
}

// host.MoreSpecific: longest first, then alphabetical (wildcards only here).
void orderWildcards(PolicyIndex::RuleSet& set) {
  set.wildcard_order.clear();
  for (const auto& [host, list] : set.wildcards) set.wildcard_order.push_back(host);
  std::sort(set.wildcard_order.begin(), set.wildcard_order.end(), [](const std::string& a, const std::string& b) {
    return a.size() != b.size() ? a.size() > b.size() : a < b;
  });
}

// MostSpecificHostMatch (pilot/pkg/model/config.go): the exact host, else the
// most specific wildcard whose suffix the host ends with.
const std::vector<PolicyIndex::MergedRule>* mostSpecificHostMatch(const PolicyIndex::RuleSet& set,
                                                                  std::string_view host) {
  if (auto it = set.exact.find(host); it != set.exact.end()) return &it->second;
  for (const std::string& wildcard : set.wildcard_order) {
    if (host.ends_with(std::string_view(wildcard).substr(1))) return &set.wildcards.find(wildcard)->second;
  }
  return nullptr;
}

}  // namespace

std::string PolicyIndex::fqdn(const Service& svc) const {
  return svc.name() + "." + svc.ns() + ".svc." + mesh().domain_suffix;
}

// A DestinationRule host as Istio resolves it: short names in the rule's namespace.
static std::string resolveRuleHost(const DestinationRule& rule, std::string_view suffix) {
  std::string host = lower(rule.host);
  if (host.ends_with(".")) host.pop_back();
  if (host == "*" || host.find('.') != std::string::npos) return host;
  return host + "." + rule.meta.ref.ns + ".svc." + std::string(suffix);
}

std::shared_ptr<const PolicyIndex> PolicyIndex::build(ClusterState input) {
  auto index = std::shared_ptr<PolicyIndex>(new PolicyIndex());
  PolicyIndex& ix = *index;
  ix.state_ = std::move(input);
  ClusterState& st = ix.state_;
  const SelectorIndex selectors(st.pods);  // positions in st.pods = entries in pods_

  // Meshes. Each control plane namespace is one mesh (an Istio, IstioOperator
  // or ServiceMeshControlPlane names it; the `istio` ConfigMap of that
  // namespace joins it), in rank then age order: the first is the primary.
  // The Istio resource names the control plane namespace; an SMCP's own
  // namespace stands in for it; meshConfig.rootNamespace overrides the root.
  {
    std::vector<const config::ControlPlane*> planes;
    for (const auto& cp : st.control_planes) planes.push_back(&cp);
    auto rank = [](const config::ControlPlane* cp) {
      switch (cp->kind) {
        case config::ControlPlaneKind::kIstio: return 0;
        case config::ControlPlaneKind::kIstioOperator: return 1;
        case config::ControlPlaneKind::kSmcpV2: return 2;
        case config::ControlPlaneKind::kSmcpV1: return 3;
        case config::ControlPlaneKind::kMeshConfigMap: return 4;
      }
      return 5;
    };
    std::stable_sort(planes.begin(), planes.end(), [&](const auto* a, const auto* b) {
      if (rank(a) != rank(b)) return rank(a) < rank(b);
      return olderThan(a->meta, b->meta);
    });
    std::vector<std::string> control_namespaces;
    for (const auto* cp : planes) {
      if (cp->kind != config::ControlPlaneKind::kMeshConfigMap &&
          std::find(control_namespaces.begin(), control_namespaces.end(), cp->control_namespace) ==
              control_namespaces.end()) {
        control_namespaces.push_back(cp->control_namespace);
      }
    }
    if (control_namespaces.empty()) control_namespaces.push_back("istio-system");
    ix.meshes_.resize(control_namespaces.size());
    ix.mesh_scopes_.resize(control_namespaces.size());
    for (std::size_t g = 0; g < control_namespaces.size(); ++g) {
      const std::string& control_ns = control_namespaces[g];
      MeshSettings& m = ix.meshes_[g];
      MeshScope& scope = ix.mesh_scopes_[g];
      m.control_namespace = control_ns;
      m.root_namespace = control_ns;
      bool set_auto = false, set_td = false, set_root = false, set_version = false, set_exports = false;
      for (const auto* cp : planes) {
        if (cp->control_namespace != control_ns) continue;  // another mesh's (the ConfigMap: its namespace's)
        // Only the first control plane of each setting speaks (validation warns about the others).
        bool used = false;
        if (!set_auto && cp->mesh.enable_auto_mtls) m.enable_auto_mtls = *cp->mesh.enable_auto_mtls, set_auto = used = true;
        if (!set_td && cp->mesh.trust_domain) m.trust_domain = *cp->mesh.trust_domain, set_td = used = true;
        if (!set_root && cp->mesh.root_namespace) m.root_namespace = *cp->mesh.root_namespace, set_root = used = true;
        if (!set_version && cp->mesh.min_protocol_version) {
          m.min_protocol_version = *cp->mesh.min_protocol_version;
          if (m.min_protocol_version == config::TlsVersion::kAuto) m.min_protocol_version = config::TlsVersion::kTls12;
          set_version = used = true;
        }
        if (!set_exports && cp->mesh.default_destination_rule_export_to) {
          m.default_destination_rule_export_to = *cp->mesh.default_destination_rule_export_to;
          set_exports = used = true;
        }
        if (!cp->mesh.discovery_selectors.empty()) used = true;
        scope.selectors.insert(scope.selectors.end(), cp->mesh.discovery_selectors.begin(),
                               cp->mesh.discovery_selectors.end());
        if (cp->kind == config::ControlPlaneKind::kSmcpV1 || cp->kind == config::ControlPlaneKind::kSmcpV2) {
          scope.smcp = true;
        }
        if (used || cp->kind != config::ControlPlaneKind::kMeshConfigMap) m.decided_by.push_back(&cp->meta.ref);
      }
      if (scope.smcp) {
        for (const config::MemberRoll& roll : st.member_rolls) {
          if (roll.meta.ref.ns == control_ns) scope.rolls.push_back(&roll);
        }
      }
    }
    // Which mesh governs each namespace: the first whose discovery takes it.
    // A control plane's own and root namespaces are always its own; an SMCP
    // with a ServiceMeshMemberRoll takes its members; a control plane with
    // discoverySelectors the namespaces they select; one with neither takes
    // every namespace (meshlock's enrollment label stands in for membership).
    // Namespaces outside every mesh get defaults and no root namespace (no mesh-wide policy reaches them).
    ix.unmeshed_ = ix.meshes_.size();
    ix.meshes_.emplace_back();
    ix.meshes_.back().root_namespace.clear();
    ix.meshes_.back().control_namespace.clear();
    ix.mesh_scopes_.emplace_back();
    auto assign = [&](const std::string& ns, const config::Labels& labels) {
      if (ix.mesh_by_namespace_.contains(ns)) return;
      std::size_t chosen = ix.unmeshed_;
      for (std::size_t g = 0; g < ix.unmeshed_; ++g) {
        if (ix.governs(g, ns, labels)) {
          chosen = g;
          break;
        }
      }
      ix.mesh_by_namespace_.emplace(ns, chosen);
    };
    for (std::size_t g = 0; g < ix.unmeshed_; ++g) {
      ix.mesh_by_namespace_.emplace(ix.meshes_[g].control_namespace, g);
      ix.mesh_by_namespace_.emplace(ix.meshes_[g].root_namespace, g);
      ix.mesh_by_root_.emplace(ix.meshes_[g].root_namespace, g);
    }
    for (const auto& ns : st.namespaces) assign(ns.meta.ref.name, ns.meta.labels);
    // Namespaces known only from their objects: no labels to select on.
    ix.mesh_for_unknown_ = ix.unmeshed_;
    for (std::size_t g = 0; g < ix.unmeshed_; ++g) {
      if (ix.governs(g, "", {})) {
        ix.mesh_for_unknown_ = g;
        break;
      }
    }
    // ServiceMeshControlPlane mesh-wide mTLS: what the operator creates in
    // the control plane namespace (maistra/istio-operator
    // resources/helm/overlays/mesh-config/templates/enable-mesh-mtls.yaml: a
    // mesh-wide STRICT policy, a `*.local` ISTIO_MUTUAL rule and the
    // `api-server` DISABLE rule for kubernetes.default, which has no proxy),
    // named after the SMCP so decisions point at it.
    for (const auto& cp : st.control_planes) {
      if (!cp.mesh_mtls) continue;
      const MeshSettings& m = ix.meshes_[ix.meshIndex(cp.control_namespace)];
      auto pa = std::make_unique<PeerAuthentication>();
      pa->meta = cp.meta;
      pa->meta.ref.ns = m.root_namespace;
      pa->meta.ref.name = cp.meta.ref.name;
      pa->meta.ref.kind = "ServiceMeshControlPlane";
      pa->mode = PeerMode::kStrict;
      pa->mesh_wide_kind = true;
      ix.synthetic_peer_auths_.push_back(std::move(pa));
      auto dr = std::make_unique<DestinationRule>();
      dr->meta = ix.synthetic_peer_auths_.back()->meta;
      dr->host = "*.local";
      dr->tls = config::ClientTlsSettings{.mode = TlsMode::kIstioMutual};
      dr->has_traffic_policy = true;
      dr->synthetic = true;
      auto api_server = std::make_unique<DestinationRule>(*dr);
      api_server->host = "kubernetes.default.svc." + m.domain_suffix;
      api_server->tls = config::ClientTlsSettings{.mode = TlsMode::kDisable};
      ix.synthetic_rules_.push_back(std::move(dr));
      ix.synthetic_rules_.push_back(std::move(api_server));
    }
  }
  auto nsEntry = [&](const std::string& ns) -> NamespaceEntry& {
    auto& slot = ix.namespaces_[ns];
    if (!slot) slot = std::make_unique<NamespaceEntry>();
    return *slot;
  };
  for (const auto& ns : st.namespaces) {
    const auto& labels = ns.meta.labels;
    auto enroll = labels.find(config::kEnrollLabel);
    auto ambient = labels.find(config::kAmbientLabel);
    NamespaceEntry& entry = nsEntry(ns.meta.ref.name);
    if (enroll != labels.end() && enroll->second == "enabled") {
      entry.enrolled_by = ReasonKind::kEnrolled;
    } else if (ambient != labels.end() && ambient->second == "ambient") {
      entry.enrolled_by = ReasonKind::kEnrolledAmbient;
    }
    entry.enrolled = entry.enrolled_by != ReasonKind::kNotEnrolled;
  }

  // PeerAuthentications by level (ComposePeerAuthentication), the mesh-wide
  // level once per mesh (its root namespace's).
  std::vector<const PeerAuthentication*> mesh_policy(ix.meshes_.size(), nullptr);
  auto consider = [](const PeerAuthentication*& slot, const PeerAuthentication* pa) {
    if (!slot || olderThan(pa->meta, slot->meta)) slot = pa;
  };
  std::vector<const PeerAuthentication*> all_pas;
  for (const auto& pa : st.peer_authentications) all_pas.push_back(&pa);
  for (const auto& pa : ix.synthetic_peer_auths_) all_pas.push_back(pa.get());
  // Istio 1.x Policy with targets: a workload policy for the pods behind each
  // target service, on the targeted ports only when ports are listed.
  for (const auto& pa : st.peer_authentications) {
    if (!isLegacyNamespacePolicy(pa) || pa.maistra_targets.empty()) continue;
    for (const auto& target : pa.maistra_targets) {
      const Service* svc = nullptr;
      for (const Service& s : st.services) {
        if (s.ns() == pa.meta.ref.ns && s.name() == target.service) svc = &s;
      }
      if (!svc || !svc->selector) continue;  // validation reports it (ML012)
      auto wl = std::make_unique<PeerAuthentication>(pa);
      wl->maistra_targets.clear();
      wl->selector = svc->selector;
      if (!target.port_numbers.empty() || !target.port_names.empty()) {
        wl->mode = PeerMode::kUnset;
        for (const auto& sp : svc->ports) {
          bool listed = std::find(target.port_numbers.begin(), target.port_numbers.end(), sp.port) !=
                            target.port_numbers.end() ||
                        std::find(target.port_names.begin(), target.port_names.end(), sp.name) !=
                            target.port_names.end();
          if (!listed) continue;
          std::optional<uint16_t> container = sp.target.name.empty() ? std::optional<uint16_t>(sp.target.number)
                                                                     : std::nullopt;
          if (!container) {
            selectors.forEachMatch(svc->ns(), *svc->selector, [&](std::size_t i) {
              if (!container) container = st.pods[i].containerPortNamed(sp.target.name);
            });
          }
          if (container) wl->port_level[*container] = pa.mode.value_or(PeerMode::kUnset);
        }
      }
      ix.synthetic_peer_auths_.push_back(std::move(wl));
      all_pas.push_back(ix.synthetic_peer_auths_.back().get());
    }
  }
  for (const PeerAuthentication* pa : all_pas) {
    if (isLegacyNamespacePolicy(*pa) && !pa->hasSelector()) {
      // Istio 1.x: only the policy named `default` without targets is namespace-wide.
      if (pa->meta.ref.name == "default" && pa->maistra_targets.empty()) {
        consider(nsEntry(pa->meta.ref.ns).namespace_policy, pa);
      }
    } else if (pa->mesh_wide_kind) {
      // ServiceMeshPolicy: its SMCP's mesh; MeshPolicy (cluster-scoped): the primary one.
      consider(mesh_policy[pa->meta.ref.ns.empty() ? 0 : ix.meshIndex(pa->meta.ref.ns)], pa);
    } else if (!pa->hasSelector()) {
      if (auto g = ix.meshRootedAt(pa->meta.ref.ns)) {
        consider(mesh_policy[*g], pa);
      } else {
        consider(nsEntry(pa->meta.ref.ns).namespace_policy, pa);
      }
    } else if (!ix.meshRootedAt(pa->meta.ref.ns)) {  // Istio ignores selector policies in the root namespace
      nsEntry(pa->meta.ref.ns).workload_policies.push_back(pa);
    }
  }
  for (auto& [name, entry] : ix.namespaces_) {
    std::stable_sort(entry->workload_policies.begin(), entry->workload_policies.end(),
                     [](const auto* a, const auto* b) { return olderThan(a->meta, b->meta); });
  }

  // The oldest matching workload policy of each pod (the lists are sorted oldest first).
  std::vector<const PeerAuthentication*> workload_policy(st.pods.size(), nullptr);
  for (const auto& [name, entry] : ix.namespaces_) {
    for (const PeerAuthentication* pa : entry->workload_policies) {
      selectors.forEachMatch(name, *pa->selector, [&](std::size_t i) {
        if (!workload_policy[i]) workload_policy[i] = pa;
      });
    }
  }

  // Pods.
  ix.pods_.reserve(st.pods.size());
  ix.pod_by_address_.reserve(st.pods.size());
  ix.pod_by_uid_.reserve(st.pods.size());
  ix.pod_by_ip_.reserve(st.pods.size());
  ix.pod_by_name_.reserve(st.pods.size());
  for (const Pod& pod : st.pods) {
    PodEntry e;
    e.pod = &pod;
    e.mesh = ix.meshIndex(pod.ns());
    NamespaceEntry& ns = nsEntry(pod.ns());
    auto opt = pod.labels().find(config::kEnrollLabel);
    auto ambient = pod.labels().find(config::kAmbientLabel);
    bool opted_out = (opt != pod.labels().end() && opt->second == "disabled") ||
                     (ambient != pod.labels().end() && ambient->second == "none") || pod.host_network;
    // A pod Istio injected a sidecar into (its istio-proxy container) is its
    // sidecar's: meshlock leaves it alone (two proxies on one pod would each
    // wrap the other's TLS) and treats it as a mesh peer, as istiod's auto
    // mTLS does with the injector's tlsMode label.
    e.sidecar = pod.istio_proxy && !pod.host_network;
    e.ztunnel = pod.ztunnel && !e.sidecar && !pod.host_network;  // istio-cni annotates what ztunnel captures
    e.served = ns.enrolled && !opted_out && !e.sidecar && !e.ztunnel;
    // meshlock's own pods take HBONE on 15008 (docs/hbone.md), labelled or not.
    e.hbone = (e.ztunnel || pod.native_tunnel || e.served) && !e.sidecar && !pod.host_network;
    e.served_reason = Reason{e.sidecar      ? ReasonKind::kSidecar
                             : e.ztunnel    ? ReasonKind::kZtunnel
                             : !ns.enrolled ? ReasonKind::kNotEnrolled
                             : opted_out    ? ReasonKind::kOptedOut
                                            : ns.enrolled_by,
                             nullptr, 0};
    // Mesh, then namespace, then workload; UNSET (or no mtls) inherits.
    e.mode = ServerMode::kPermissive;
    e.mode_reason = Reason{ReasonKind::kDefault, nullptr, 0};
    auto apply = [&](const PeerAuthentication* pa) {
      if (pa && pa->mode && *pa->mode != PeerMode::kUnset) {
        e.mode = toServerMode(*pa->mode);
        e.mode_reason = byResource(pa->meta);
      }
    };
    apply(mesh_policy[e.mesh]);
    apply(ns.namespace_policy);
    std::size_t idx = ix.pods_.size();
    if (const PeerAuthentication* pa = workload_policy[idx]) {  // the oldest matching workload policy wins
      apply(pa);
      for (const auto& [port, mode] : pa->port_level) {
        if (mode == PeerMode::kUnset) {
          e.port_modes.push_back({port, e.mode, e.mode_reason});
        } else {
          e.port_modes.push_back({port, toServerMode(mode), byResource(pa->meta, port)});
        }
      }
    }
    e.identity.push_back(config::spiffeIdFor(ix.meshes_[e.mesh].trust_domain, pod.ns(), pod.service_account).str());
    ix.pods_.push_back(std::move(e));
    ix.pod_by_address_.emplace(&pod, idx);
    ix.pod_by_uid_.emplace(pod.uid, idx);
    for (const auto& ip : pod.ips) {
      if (!pod.terminated || !ix.pod_by_ip_.contains(ip)) ix.pod_by_ip_[ip] = idx;
    }
    ix.pod_by_name_.emplace(pod.ns() + "/" + pod.name(), idx);
  }

  // Services and their backends.
  std::unordered_map<std::string, std::vector<const config::ServiceEndpoints*>> endpoints_by_service;
  for (const auto& eps : st.endpoints) endpoints_by_service[eps.meta.ref.ns + "/" + eps.service].push_back(&eps);

  ix.services_.reserve(st.services.size());
  ix.service_by_address_.reserve(st.services.size());
  ix.service_by_host_.reserve(st.services.size());
  ix.service_by_ip_.reserve(st.services.size());
  for (const Service& svc : st.services) {
    ServiceEntry se;
    se.svc = &svc;
    se.fqdn = ix.fqdn(svc);
    se.backends.resize(svc.ports.size());
    std::set<std::string> identities;
    std::size_t sidx = ix.services_.size();
    if (svc.selector) {
      selectors.forEachMatch(svc.ns(), *svc.selector, [&](std::size_t pi) {
        PodEntry& pe = ix.pods_[pi];
        if (pe.pod->terminated) return;  // no longer an endpoint
        bool any = false;
        for (std::size_t p = 0; p < svc.ports.size(); ++p) {
          const auto& target = svc.ports[p].target;
          std::optional<uint16_t> port = target.name.empty() ? std::optional<uint16_t>(target.number)
                                                             : pe.pod->containerPortNamed(target.name);
          if (!port) continue;  // Kubernetes leaves the pod out of this port's endpoints
          se.backends[p].push_back(Backend{pe.pod, pe.pod->ip.value_or(IpAddress{}), *port});
          pe.attributions.emplace_back(sidx, p);
          any = true;
        }
        if (any || svc.ports.empty()) identities.insert(pe.identity.front());
      });
    } else {
      for (const auto* eps : endpoints_by_service[svc.ns() + "/" + svc.name()]) {
        for (std::size_t p = 0; p < svc.ports.size(); ++p) {
          const config::ServicePort& sp = svc.ports[p];
          std::optional<uint16_t> port;
          for (const auto& ep : eps->ports) {
            if (ep.name == sp.name || eps->ports.size() == 1) port = ep.port;
          }
          if (!port) continue;
          for (const auto& addr : eps->addresses) {
            const Pod* pod = nullptr;
            std::size_t pi = 0;
            if (!addr.pod_name.empty()) {
              if (auto it = ix.pod_by_name_.find(svc.ns() + "/" + addr.pod_name); it != ix.pod_by_name_.end()) {
                pi = it->second, pod = ix.pods_[pi].pod;
              }
            }
            if (!pod) {
              if (auto it = ix.pod_by_ip_.find(addr.ip); it != ix.pod_by_ip_.end()) pi = it->second, pod = ix.pods_[pi].pod;
            }
            se.backends[p].push_back(Backend{pod, addr.ip, *port});
            if (pod) {
              ix.pods_[pi].attributions.emplace_back(sidx, p);
              identities.insert(ix.pods_[pi].identity.front());
            }
          }
        }
      }
    }
    se.identities.assign(identities.begin(), identities.end());
    ix.service_by_address_.emplace(&svc, sidx);
    ix.service_by_host_.emplace(se.fqdn, sidx);
    for (const auto& ip : svc.cluster_ips) ix.service_by_ip_.emplace(ip, sidx);
    ix.services_.push_back(std::move(se));
  }
  // Backends in a stable order: by namespace and name.
  for (auto& se : ix.services_) {
    for (auto& list : se.backends) {
      std::stable_sort(list.begin(), list.end(), [](const Backend& a, const Backend& b) {
        if (a.pod && b.pod) return std::tie(a.pod->ns(), a.pod->name()) < std::tie(b.pod->ns(), b.pod->name());
        return a.pod != nullptr && b.pod == nullptr;
      });
    }
  }

  // ServiceEntries: their hosts join the registry (exact and wildcard), their
  // addresses and static endpoint IPs resolve to their first host.
  ix.service_entries_.reserve(st.service_entries.size());
  for (const config::ServiceEntry& entry : st.service_entries) {
    IstioServiceEntry e;
    e.se = &entry;
    for (const std::string& written : entry.hosts) e.hosts.push_back(lower(written));
    e.backends.resize(entry.ports.size());
    std::set<std::string> identities;
    auto add = [&](const Pod* pod, const IpAddress& ip, const std::map<std::string, uint16_t>& named) {
      for (std::size_t p = 0; p < entry.ports.size(); ++p) {
        const config::ServiceEntryPort& port = entry.ports[p];
        uint16_t target = port.target_port ? port.target_port : port.number;
        if (auto it = named.find(port.name); it != named.end()) target = it->second;
        e.backends[p].push_back(Backend{pod, ip, target});
      }
      if (pod) identities.insert(ix.pods_[ix.podIndex(*pod)].identity.front());
    };
    if (entry.workload_selector) {
      selectors.forEachMatch(entry.meta.ref.ns, *entry.workload_selector, [&](std::size_t pi) {
        const Pod* pod = ix.pods_[pi].pod;
        if (!pod->terminated) add(pod, pod->ip.value_or(IpAddress{}), {});
      });
    } else {
      for (const config::ServiceEntryEndpoint& endpoint : entry.endpoints) {
        const Pod* pod = endpoint.ip ? ix.podByIp(*endpoint.ip) : nullptr;
        add(pod, endpoint.ip.value_or(IpAddress{}), endpoint.ports);
      }
    }
    if (!entry.subject_alt_names.empty()) {
      e.identities = entry.subject_alt_names;
    } else {
      e.identities.assign(identities.begin(), identities.end());
    }
    const std::size_t idx = ix.service_entries_.size();
    for (const std::string& host : e.hosts) {
      if (host.starts_with("*")) {
        ix.service_entry_wildcards_.emplace_back(host.substr(1), idx);
      } else {
        ix.service_entry_by_host_[host].push_back(idx);
      }
    }
    for (const std::string& address : entry.addresses) {
      if (auto prefix = IpPrefix::parse(address)) ix.service_entry_by_address_.emplace_back(*prefix, idx);
    }
    if (entry.resolution == config::ServiceEntryResolution::kStatic) {
      for (const auto& endpoint : entry.endpoints) {
        if (endpoint.ip) ix.service_entry_by_address_.emplace_back(*IpPrefix::parse(endpoint.ip->toString()), idx);
      }
    }
    ix.service_entries_.push_back(std::move(e));
  }
  std::stable_sort(ix.service_entry_wildcards_.begin(), ix.service_entry_wildcards_.end(),
                   [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });

  // DestinationRules into istiod's three pools (PushContext.setDestinationRules):
  // per namespace the rules its own clients see and the rules it exports, and
  // the root namespace's private rules. Rules with a selector are private to
  // their namespace whatever their exportTo says. Merged in istiod's order:
  // selector rules first, then by creation time, name, namespace.
  std::vector<const DestinationRule*> rules;
  for (const auto& dr : st.destination_rules) rules.push_back(&dr);
  for (const auto& dr : ix.synthetic_rules_) rules.push_back(dr.get());
  std::stable_sort(rules.begin(), rules.end(), [](const DestinationRule* a, const DestinationRule* b) {
    if (a->workload_selector.has_value() != b->workload_selector.has_value()) return a->workload_selector.has_value();
    return olderThan(a->meta, b->meta);
  });
  for (const DestinationRule* dr : rules) {
    const std::string host = resolveRuleHost(*dr, ix.mesh().domain_suffix);
    const std::string& own = dr->meta.ref.ns;
    std::set<std::string> export_to;
    if (dr->workload_selector) {
      export_to.insert(".");
    } else {
      export_to.insert(dr->export_to.begin(), dr->export_to.end());
    }
    NamespaceEntry& ns = nsEntry(own);
    if (export_to.empty() || export_to.contains("*") || export_to.contains(".") || export_to.contains(own)) {
      mergeRule(ns.local, host, dr, export_to);
    }
    // Without exportTo the governing mesh's meshConfig.defaultDestinationRuleExportTo
    // decides, and istiod honours only "." there (PushContext.setDestinationRules,
    // initDefaultExportMaps; unset means "*"). The rule keeps its empty set.
    const auto& defaults = ix.meshes_[ix.meshIndex(own)].default_destination_rule_export_to;
    const bool private_only =
        (export_to.empty() && std::find(defaults.begin(), defaults.end(), ".") != defaults.end()) ||
        (export_to.size() == 1 && (export_to.contains(".") || export_to.contains(own)));
    if (!private_only) {
      mergeRule(ns.exported, host, dr, export_to);
    } else if (ix.meshRootedAt(own)) {
      auto& pool = ix.root_local_rules_[own];
      if (!pool) pool = std::make_unique<RuleSet>();
      mergeRule(*pool, host, dr, export_to);
    }
  }
  for (auto& [name, entry] : ix.namespaces_) {
    orderWildcards(entry->local);
    orderWildcards(entry->exported);
  }
  for (auto& [root_ns, pool] : ix.root_local_rules_) orderWildcards(*pool);
  const PolicyIndex* self = &ix;
  ix.authorization_ = std::make_unique<AuthorizationIndex>(
      st, [self](std::string_view ns) -> const std::string& { return self->meshFor(ns).root_namespace; });
  return index;
}

// ---- Lookups ---------------------------------------------------------------------

const Pod* PolicyIndex::podByUid(const PodUid& uid) const {
  auto it = pod_by_uid_.find(uid);
  return it == pod_by_uid_.end() ? nullptr : pods_[it->second].pod;
}

const Pod* PolicyIndex::podByIp(const IpAddress& ip) const {
  auto it = pod_by_ip_.find(ip);
  return it == pod_by_ip_.end() ? nullptr : pods_[it->second].pod;
}

const Pod* PolicyIndex::podByName(std::string_view ns, std::string_view name) const {
  std::string key;
  key.reserve(ns.size() + name.size() + 1);
  key.append(ns).append("/").append(name);
  auto it = pod_by_name_.find(key);
  return it == pod_by_name_.end() ? nullptr : pods_[it->second].pod;
}

const Service* PolicyIndex::serviceByHost(std::string_view fqdn) const {
  auto it = service_by_host_.find(fqdn);
  return it == service_by_host_.end() ? nullptr : services_[it->second].svc;
}

const Service* PolicyIndex::serviceByIp(const IpAddress& ip) const {
  auto it = service_by_ip_.find(ip);
  return it == service_by_ip_.end() ? nullptr : services_[it->second].svc;
}

std::vector<const Pod*> PolicyIndex::podsOnNode(std::string_view node) const {
  std::vector<const Pod*> out;
  for (const auto& pe : pods_) {
    if (pe.pod->node_name == node) out.push_back(pe.pod);
  }
  return out;
}

// A rule's TLS settings for one service port, as Istio picks them
// (pilot/pkg/networking/util/util.go GetPortLevelTrafficPolicy): the first
// portLevelSettings entry for the port replaces the top-level trafficPolicy
// wholesale, so an entry without `tls` has none (auto mTLS decides), it does
// not inherit trafficPolicy.tls. `rule_port` is set when a port entry decided.
const config::ClientTlsSettings* PolicyIndex::portTls(const DestinationRule& rule, uint16_t port,
                                                     uint16_t* rule_port) {
  for (const config::PortTlsSettings& pls : rule.port_level) {
    if (pls.port != port) continue;
    if (rule_port) *rule_port = port;
    return pls.tls ? &*pls.tls : nullptr;
  }
  return rule.tls ? &*rule.tls : nullptr;
}

// The entry of a pod of this index (its objects are shared, not contiguous).
std::size_t PolicyIndex::podIndex(const Pod& pod) const {
  auto it = pod_by_address_.find(&pod);
  MESHLOCK_CHECK(it != pod_by_address_.end());
  return it->second;
}

bool PolicyIndex::served(const Pod& pod) const { return pods_[podIndex(pod)].served; }

bool PolicyIndex::hasSidecar(const Pod& pod) const { return pods_[podIndex(pod)].sidecar; }

bool PolicyIndex::capturedByZtunnel(const Pod& pod) const { return pods_[podIndex(pod)].ztunnel; }
bool PolicyIndex::takesHbone(const Pod& pod) const { return pods_[podIndex(pod)].hbone; }

// Which namespaces a mesh takes: a control plane's own and root namespaces
// always; an SMCP with a ServiceMeshMemberRoll its members; a control plane
// with discoverySelectors the namespaces they select; one with neither every
// namespace (meshlock's enrollment label stands in for membership).
bool PolicyIndex::governs(std::size_t g, std::string_view ns, const config::Labels& labels) const {
  const MeshScope& scope = mesh_scopes_[g];
  const MeshSettings& m = meshes_[g];
  if (ns == m.control_namespace || ns == m.root_namespace) return true;
  if (!scope.rolls.empty()) {
    for (const config::MemberRoll* roll : scope.rolls) {
      for (const std::string& member : roll->members) {
        if (member == "*" || member == ns) return true;
      }
      for (const auto& selector : roll->member_selectors) {
        if (selector.matches(labels)) return true;
      }
    }
    return false;
  }
  if (!scope.selectors.empty()) {
    return std::any_of(scope.selectors.begin(), scope.selectors.end(),
                       [&](const config::LabelSelector& sel) { return sel.matches(labels); });
  }
  return true;
}

bool PolicyIndex::discovers(const MeshSettings& mesh, const config::Namespace& ns) const {
  const auto g = static_cast<std::size_t>(&mesh - meshes_.data());
  return g < unmeshed_ && governs(g, ns.meta.ref.name, ns.meta.labels);
}

std::size_t PolicyIndex::meshIndex(std::string_view ns) const {
  auto it = mesh_by_namespace_.find(ns);
  return it == mesh_by_namespace_.end() ? mesh_for_unknown_ : it->second;
}

const MeshSettings& PolicyIndex::meshFor(std::string_view ns) const { return meshes_[meshIndex(ns)]; }

std::optional<std::size_t> PolicyIndex::meshRootedAt(std::string_view ns) const {
  if (ns.empty()) return std::nullopt;
  auto it = mesh_by_root_.find(ns);
  if (it == mesh_by_root_.end()) return std::nullopt;
  return it->second;
}

std::vector<const MeshSettings*> PolicyIndex::meshes() const {
  std::vector<const MeshSettings*> out;
  for (std::size_t g = 0; g < unmeshed_; ++g) out.push_back(&meshes_[g]);
  return out;
}

Reason PolicyIndex::servedReason(const Pod& pod) const { return pods_[podIndex(pod)].served_reason; }

SpiffeId PolicyIndex::identityOf(const Pod& pod) const {
  return SpiffeId(pods_[podIndex(pod)].identity.front());
}

InboundDecision PolicyIndex::inbound(const PodUid& uid, uint16_t port) const {
  auto it = pod_by_uid_.find(uid);
  if (it == pod_by_uid_.end()) {
    InboundDecision d;
    d.decided_by.add(Reason{ReasonKind::kOutsideMesh, nullptr, 0});
    return d;
  }
  return inbound(*pods_[it->second].pod, port);
}

InboundDecision PolicyIndex::inbound(const Pod& pod, uint16_t port) const {
  const PodEntry& e = pods_[podIndex(pod)];
  InboundDecision d;
  if (!e.served && !e.sidecar && !e.ztunnel) {
    d.mode = ServerMode::kNone;
    d.decided_by.add(e.served_reason);
    return d;
  }
  // A sidecar or ztunnel applies the same PeerAuthentications.
  if (!e.served) d.decided_by.add(e.served_reason);
  for (const PortMode& pm : e.port_modes) {
    if (pm.port == port) {
      d.mode = pm.mode;
      d.decided_by.add(pm.reason);
      return d;
    }
  }
  d.mode = e.mode;
  d.decided_by.add(e.mode_reason);
  return d;
}

namespace {

// The rules of a pool exported to the client's namespace, for the most specific host.
std::vector<const PolicyIndex::MergedRule*> exportedTo(const PolicyIndex::RuleSet& set, std::string_view host,
                                                       const std::string& client_ns) {
  std::vector<const PolicyIndex::MergedRule*> out;
  if (const auto* list = mostSpecificHostMatch(set, host)) {
    for (const auto& merged : *list) {
      if (merged.export_to.empty() || merged.export_to.contains("*") || merged.export_to.contains(client_ns)) {
        out.push_back(&merged);
      }
    }
  }
  return out;
}

}  // namespace

// PushContext.destinationRule, then SidecarScope.DestinationRule
// (pilot/pkg/model/push_context.go, sidecar.go at 86c9f01f):
//  1. the client's namespace: its local pool (for a client in the root
//     namespace, only the root namespace's private rules);
//  2. the service's namespace: the rules it exports to the client's namespace;
//  3. the root namespace: the rules it exports to the client's namespace.
// The first step whose most specific host matches gives the candidates, even
// when none of them then applies to the client. Among them, a rule of the
// client's own namespace whose selector matches the client wins; otherwise the
// last one without a selector.
const DestinationRule* PolicyIndex::findDestinationRule(const Pod& client, const std::string& root,
                                                        std::string_view host,
                                                        const std::string* service_ns) const {
  std::vector<const MergedRule*> candidates;
  const RuleSet* first_pool = nullptr;
  if (client.ns() != root) {
    if (auto it = namespaces_.find(client.ns()); it != namespaces_.end()) first_pool = &it->second->local;
  } else if (auto it = root_local_rules_.find(root); it != root_local_rules_.end()) {
    first_pool = it->second.get();
  }
  if (first_pool) {
    if (const auto* list = mostSpecificHostMatch(*first_pool, host)) {
      for (const auto& merged : *list) candidates.push_back(&merged);
    }
  }
  for (const std::string* owner : {service_ns, &root}) {
    if (!candidates.empty() || !owner) continue;
    if (auto it = namespaces_.find(*owner); it != namespaces_.end()) {
      candidates = exportedTo(it->second->exported, host, client.ns());
    }
  }
  const MergedRule* catch_all = nullptr;
  for (const MergedRule* merged : candidates) {
    const auto& selector = merged->first->workload_selector;
    if (!selector) {
      catch_all = merged;
    } else if (merged->first->meta.ref.ns == client.ns() && config::selectorMatches(*selector, client.labels())) {
      return merged->policy ? merged->policy : merged->first;
    }
  }
  if (!catch_all) return nullptr;
  return catch_all->policy ? catch_all->policy : catch_all->first;
}

namespace {

// What a client sends one backend and what the two ends make of it. Auto
// mTLS: mesh mTLS to an endpoint whose proxy accepts it, plaintext otherwise.
// Mesh mTLS travels as HBONE to a pod that takes it (meshlock's, ztunnel's,
// native tunnels: istiod's setTunnelProtocol), else on the app's port with
// ALPN istio (sidecars). A tunnel's end takes HBONE as mTLS whatever the
// port's mode; ztunnel takes nothing else, so auto mTLS sends its pods HBONE
// even where their mode is DISABLE.
struct BackendChoice {
  ClientTls client;
  Outcome outcome;
  Tunnel tunnel;
};
// SIMPLE/MUTUAL naming a Secret from a rule without workloadSelector:
// istiod leaves such a rule's TLS to gateways ("privilegedCredentialLookup"; a
// configmap:// CA is readable by anyone and stays).
bool gatewayOnlyCredential(const DestinationRule& rule, const config::ClientTlsSettings& tls) {
  return (tls.mode == TlsMode::kSimple || tls.mode == TlsMode::kMutual) && !tls.credential_name.empty() &&
         !config::namesConfigMap(tls.credential_name) && !config::credentialApplies(rule);
}

BackendChoice backendDecision(ClientTls fixed, bool auto_mtls, ServerMode mode, bool hbone, bool ztunnel) {
  ClientTls client = fixed;
  if (auto_mtls) {
    client = (mode == ServerMode::kNone || mode == ServerMode::kDisable) && !ztunnel ? ClientTls::kDisable
                                                                                     : ClientTls::kIstioMutual;
  }
  if (client != ClientTls::kIstioMutual) return {client, combine(client, mode), Tunnel::kNone};
  if (hbone) return {client, Outcome::kMtls, Tunnel::kHbone};
  return {client, combine(client, mode), Tunnel::kIstioMtls};
}

}  // namespace

OutboundDecision PolicyIndex::decide(const Pod& source, const Service* svc, uint16_t service_port,
                                     std::string_view host, std::span<const Backend> backends,
                                     std::span<const std::string> identities,
                                     const config::ServiceEntry* entry) const {
  OutboundDecision d;
  const PodEntry& src = pods_[podIndex(source)];
  const MeshSettings& mesh = meshes_[src.mesh];  // per connection: no namespace lookup
  d.min_tls_version = mesh.min_protocol_version;
  d.service = svc;
  d.service_port = service_port;
  d.backends = backends;
  d.host = host;

  // Client side.
  const config::ClientTlsSettings* tls = nullptr;
  const DestinationRule* rule = nullptr;
  uint16_t rule_port = 0;
  if (!host.empty()) {
    const std::string* registry_ns = svc ? &svc->ns() : entry ? &entry->meta.ref.ns : nullptr;
    rule = findDestinationRule(source, mesh.root_namespace, host, registry_ns);
    if (rule) tls = portTls(*rule, service_port, &rule_port);
  }
  enum class Side { kFixed, kAuto } side = Side::kFixed;
  if (!src.served) {
    d.client_tls = ClientTls::kNone;
    d.client_decided_by.add(src.served_reason);
  } else if (tls) {
    d.client_tls = toClientTls(tls->mode);
    d.tls = tls;
    d.client_decided_by.add(byResource(rule->meta, rule_port));
    if (gatewayOnlyCredential(*rule, *tls)) {
      // A sidecar builds no TLS context at all for such a rule
      // (buildUpstreamClusterTLSContext, cluster_tls.go): the app's bytes go as they are.
      d.client_tls = ClientTls::kDisable;
      d.tls = nullptr;
      d.client_decided_by.add(Reason{ReasonKind::kGatewayCredential, nullptr, 0});
    }
  } else if (mesh.enable_auto_mtls) {
    side = Side::kAuto;
    d.client_decided_by.add(Reason{ReasonKind::kAutoMtls, nullptr, 0});
  } else {
    d.client_tls = ClientTls::kDisable;
    d.client_decided_by.add(Reason{ReasonKind::kNoAutoMtls, nullptr, 0});
  }

  // Server side, per backend; the first backend is reported, differences flagged.
  bool first = true;
  for (const Backend& b : backends) {
    InboundDecision in;
    if (b.pod) {
      in = inbound(*b.pod, b.port);
    } else {
      in.decided_by.add(Reason{ReasonKind::kOutsideMesh, nullptr, 0});
    }
    const auto [client, outcome, tunnel] =
        backendDecision(d.client_tls, side == Side::kAuto, in.mode, b.pod && pods_[podIndex(*b.pod)].hbone,
                        b.pod && pods_[podIndex(*b.pod)].ztunnel);
    if (first) {
      d.client_tls = client;
      d.server_mode = in.mode;
      d.outcome = outcome;
      d.tunnel = tunnel;
      d.server_decided_by = in.decided_by;
      first = false;
    } else if (client != d.client_tls || in.mode != d.server_mode || outcome != d.outcome) {
      d.backends_disagree = true;
    }
  }
  if (first) {
    // No backend: nothing meshlock knows is behind this destination.
    if (side == Side::kAuto) d.client_tls = ClientTls::kDisable;
    d.server_mode = ServerMode::kNone;
    d.server_decided_by.add(Reason{ReasonKind::kOutsideMesh, nullptr, 0});
    d.outcome = combine(d.client_tls, d.server_mode);
    if (d.client_tls == ClientTls::kIstioMutual) d.tunnel = Tunnel::kIstioMtls;
  }

  // Secure naming.
  if (d.client_tls == ClientTls::kIstioMutual) {
    d.expected_identities = tls && !tls->subject_alt_names.empty()
                                ? std::span<const std::string>(tls->subject_alt_names)
                                : identities;
  } else if ((d.client_tls == ClientTls::kSimple || d.client_tls == ClientTls::kMutual) && tls) {
    d.expected_identities = tls->subject_alt_names;
  }
  return d;
}

OutboundDecision PolicyIndex::outboundToService(const Pod& source, std::size_t service, uint16_t port) const {
  const ServiceEntry& se = services_[service];
  for (std::size_t p = 0; p < se.svc->ports.size(); ++p) {
    if (se.svc->ports[p].port == port) {
      return decide(source, se.svc, port, se.fqdn, se.backends[p], se.identities);
    }
  }
  // A port the service does not expose: nothing answers behind it.
  return decide(source, se.svc, port, se.fqdn, {}, {});
}

OutboundDecision PolicyIndex::outboundToPod(const Pod& source, const Pod& dst, uint16_t port) const {
  const PodEntry& de = pods_[podIndex(dst)];
  // The service this pod serves on that port names it for DestinationRules.
  const Service* svc = nullptr;
  uint16_t service_port = 0;
  std::string_view host;
  for (const auto& [si, pi] : de.attributions) {
    const ServiceEntry& se = services_[si];
    for (const Backend& b : se.backends[pi]) {
      if (b.pod == &dst && b.port == port) {
        svc = se.svc, service_port = se.svc->ports[pi].port, host = se.fqdn;
        break;
      }
    }
    if (svc) break;
  }
  Backend self{&dst, dst.ip.value_or(IpAddress{}), port};
  OutboundDecision d = decide(source, svc, service_port, host, std::span<const Backend>(&self, 1), de.identity);
  d.backends = {};
  d.pod = &dst;
  d.pod_port = port;
  return d;
}

OutboundDecision PolicyIndex::outbound(const Pod& source, const Destination& dst, uint16_t port) const {
  if (dst.ip) {
    if (auto it = service_by_ip_.find(*dst.ip); it != service_by_ip_.end()) {
      return outboundToService(source, it->second, port);
    }
    if (auto it = pod_by_ip_.find(*dst.ip); it != pod_by_ip_.end()) {
      return outboundToPod(source, *pods_[it->second].pod, port);
    }
    if (const IstioServiceEntry* entry = serviceEntryForIp(source, *dst.ip)) {
      return outboundToServiceEntry(source, *entry, entry->hosts.front(), port);
    }
    return decide(source, nullptr, port, {}, {}, {});  // passthrough: no host to look up rules for
  }
  std::string host = lower(dst.host);
  if (host.ends_with(".")) host.pop_back();
  if (auto it = service_by_host_.find(host); it != service_by_host_.end()) {
    return outboundToService(source, it->second, port);
  }
  // Short names as the pod's resolver would expand them (search path <ns>.svc.<suffix>, svc.<suffix>, <suffix>).
  const std::string& suffix = mesh().domain_suffix;
  for (const std::string& candidate : {host + "." + source.ns() + ".svc." + suffix, host + ".svc." + suffix,
                                       host + "." + suffix}) {
    if (auto it = service_by_host_.find(candidate); it != service_by_host_.end()) {
      return outboundToService(source, it->second, port);
    }
  }
  if (auto [entry, entry_host] = serviceEntryFor(source, host); entry) {
    return outboundToServiceEntry(source, *entry, entry_host, port);
  }
  // Neither a Service nor a ServiceEntry: istiod has no cluster for the host,
  // the connection passes through and no DestinationRule applies to it
  // (PushContext.destinationRule returns nothing without a service).
  return decide(source, nullptr, port, {}, {}, {});
}

namespace {

bool entryVisibleTo(const config::ServiceEntry& se, std::string_view client_ns) {
  if (se.export_to.empty()) return true;
  for (const std::string& e : se.export_to) {
    if (e == "*" || e == client_ns || (e == "." && client_ns == se.meta.ref.ns)) return true;
  }
  return false;
}

}  // namespace

std::pair<const PolicyIndex::IstioServiceEntry*, std::string_view> PolicyIndex::serviceEntryFor(
    const Pod& client, std::string_view host) const {
  if (auto it = service_entry_by_host_.find(host); it != service_entry_by_host_.end()) {
    for (std::size_t idx : it->second) {
      const IstioServiceEntry& e = service_entries_[idx];
      if (!entryVisibleTo(*e.se, client.ns())) continue;
      for (const std::string& h : e.hosts) {
        if (h == host) return {&e, h};
      }
    }
  }
  for (const auto& [suffix, idx] : service_entry_wildcards_) {
    const IstioServiceEntry& e = service_entries_[idx];
    if (host.size() > suffix.size() && host.ends_with(suffix) && entryVisibleTo(*e.se, client.ns())) {
      for (const std::string& h : e.hosts) {
        if (h.size() == suffix.size() + 1 && std::string_view(h).substr(1) == suffix) return {&e, h};
      }
    }
  }
  return {nullptr, {}};
}

bool PolicyIndex::inRegistry(std::string_view host) const {
  if (serviceByHost(host) || service_entry_by_host_.contains(host)) return true;
  for (const auto& [suffix, idx] : service_entry_wildcards_) {
    if (host.size() > suffix.size() && host.ends_with(suffix)) return true;
  }
  return false;
}

const PolicyIndex::IstioServiceEntry* PolicyIndex::serviceEntryForIp(const Pod& client, const IpAddress& ip) const {
  const IstioServiceEntry* best = nullptr;
  unsigned best_length = 0;
  for (const auto& [prefix, idx] : service_entry_by_address_) {
    const IstioServiceEntry& e = service_entries_[idx];
    if (prefix.contains(ip) && (!best || prefix.length() > best_length) && entryVisibleTo(*e.se, client.ns())) {
      best = &e, best_length = prefix.length();
    }
  }
  return best;
}

OutboundDecision PolicyIndex::outboundToServiceEntry(const Pod& source, const IstioServiceEntry& entry,
                                                     std::string_view host, uint16_t port) const {
  for (std::size_t p = 0; p < entry.se->ports.size(); ++p) {
    if (entry.se->ports[p].number != port) continue;
    OutboundDecision d = decide(source, nullptr, port, host, entry.backends[p], entry.identities, entry.se);
    d.service_entry = entry.se;
    return d;
  }
  // A port the entry does not declare: istiod builds no cluster for it.
  OutboundDecision d = decide(source, nullptr, port, {}, {}, {});
  d.service_entry = entry.se;
  return d;
}

Result<OutboundDecision> PolicyIndex::outbound(const PodUid& source, const Destination& dst, uint16_t port) const {
  const Pod* pod = podByUid(source);
  if (!pod) return fail("outbound: unknown source pod uid " + source.str());
  return outbound(*pod, dst, port);
}

const Service* PolicyIndex::serviceForPodPort(const Pod& pod, uint16_t port) const {
  auto it = pod_by_uid_.find(pod.uid);
  if (it == pod_by_uid_.end()) return nullptr;
  for (const auto& [service, service_port] : pods_[it->second].attributions) {
    const ServiceEntry& se = services_[service];
    for (const Backend& b : se.backends[service_port])
      if (b.pod == &pod && b.port == port) return se.svc;
  }
  return nullptr;
}

std::span<const Backend> PolicyIndex::backendsOf(const Service& svc, uint16_t service_port) const {
  auto it = service_by_address_.find(&svc);
  MESHLOCK_CHECK(it != service_by_address_.end());
  const ServiceEntry& se = services_[it->second];
  for (std::size_t p = 0; p < svc.ports.size(); ++p) {
    if (svc.ports[p].port == service_port) return se.backends[p];
  }
  return {};
}

const DestinationRule* PolicyIndex::destinationRuleFor(const Pod& client, std::string_view host) const {
  const Service* svc = serviceByHost(host);
  return findDestinationRule(client, meshFor(client.ns()).root_namespace, host, svc ? &svc->ns() : nullptr);
}

std::string PolicyIndex::ruleHost(const DestinationRule& rule) const {
  return resolveRuleHost(rule, mesh().domain_suffix);
}

bool PolicyIndex::hostMatches(std::string_view rule_host, std::string_view host) {
  if (rule_host == "*") return true;
  if (rule_host.starts_with("*")) {
    std::string_view suffix = rule_host.substr(1);
    return host.size() > suffix.size() && host.ends_with(suffix);
  }
  return rule_host == host;
}

std::vector<const DestinationRule*> PolicyIndex::syntheticRules() const {
  std::vector<const DestinationRule*> out;
  for (const auto& r : synthetic_rules_) out.push_back(r.get());
  return out;
}

// ---- Targets and the check report --------------------------------------------------

Result<PodRef> parsePodRef(std::string_view text) {
  auto slash = text.find('/');
  if (slash == std::string_view::npos || slash == 0 || slash + 1 == text.size() ||
      text.find('/', slash + 1) != std::string_view::npos) {
    return fail("\"" + std::string(text) + "\" is not NAMESPACE/POD");
  }
  return PodRef{std::string(text.substr(0, slash)), std::string(text.substr(slash + 1))};
}

Result<Target> parseTarget(std::string_view text) {
  auto bad = [&](std::string why) {
    return fail("target \"" + std::string(text) + "\": " + why +
                " (want host:port, ip:port, [ipv6]:port or NAMESPACE/POD:port)");
  };
  std::string_view where;
  std::string_view port_text;
  if (text.starts_with("[")) {
    auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return bad("bad IPv6 form");
    }
    where = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return bad("no port");
    where = text.substr(0, colon);
    port_text = text.substr(colon + 1);
    if (where.find(':') != std::string_view::npos) return bad("IPv6 addresses go in brackets");
  }
  if (where.empty()) return bad("no host");
  unsigned port = 0;
  if (port_text.empty() || port_text.size() > 5 ||
      port_text.find_first_not_of("0123456789") != std::string_view::npos) {
    return bad("port is not a number");
  }
  for (char c : port_text) port = port * 10 + static_cast<unsigned>(c - '0');
  if (port < 1 || port > 65535) return bad("port out of range 1..65535");
  Target t;
  t.port = static_cast<uint16_t>(port);
  if (where.find('/') != std::string_view::npos) {
    auto pod = parsePodRef(where);
    if (!pod) return bad(pod.error().message);
    t.kind = Target::Kind::kPod;
    t.pod = *pod;
  } else if (auto ip = IpAddress::parse(where)) {
    t.kind = Target::Kind::kIp;
    t.ip = *ip;
  } else {
    for (char c : where) {
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_')) {
        return bad("not a valid host name");
      }
    }
    t.kind = Target::Kind::kHost;
    t.host = std::string(where);
  }
  return t;
}

Result<ConnectionReport> checkConnection(const PolicyIndex& index, const PodRef& from, const Target& to) {
  const Pod* source = index.podByName(from.ns, from.name);
  if (!source) return fail("unknown pod " + from.ns + "/" + from.name + " (no such Pod in the manifests)");
  OutboundDecision d;
  ConnectionReport r;
  r.from = from.ns + "/" + from.name;
  switch (to.kind) {
    case Target::Kind::kPod: {
      const Pod* dst = index.podByName(to.pod.ns, to.pod.name);
      if (!dst) return fail("unknown pod " + to.pod.ns + "/" + to.pod.name + " (no such Pod in the manifests)");
      d = index.outboundToPod(*source, *dst, to.port);
      r.to = to.pod.ns + "/" + to.pod.name + ":" + std::to_string(to.port);
      break;
    }
    case Target::Kind::kIp:
      d = index.outbound(*source, Destination{to.ip, {}}, to.port);
      r.to = (to.ip.isV4() ? to.ip.toString() : "[" + to.ip.toString() + "]") + ":" + std::to_string(to.port);
      break;
    case Target::Kind::kHost:
      d = index.outbound(*source, Destination{std::nullopt, to.host}, to.port);
      r.to = to.host + ":" + std::to_string(to.port);
      break;
  }
  r.client_tls = d.client_tls;
  r.server_mode = d.server_mode;
  r.outcome = d.outcome;
  r.tunnel = std::string(toString(d.tunnel));
  r.backends_disagree = d.backends_disagree;
  r.min_tls_version = std::string(config::toString(d.min_tls_version));
  for (const std::string& id : d.expected_identities) r.expected_identities.push_back(id);
  r.client_decided_by = d.client_decided_by.describe();
  r.server_decided_by = d.server_decided_by.describe();
  for (const Reason& reason : d.client_decided_by) r.decided_by.push_back(reason.describe());
  for (const Reason& reason : d.server_decided_by) {
    std::string s = reason.describe();
    if (std::find(r.decided_by.begin(), r.decided_by.end(), s) == r.decided_by.end()) r.decided_by.push_back(s);
  }
  if (d.pod) {
    r.destination = "pod " + d.pod->ns() + "/" + d.pod->name() + " port " + std::to_string(d.pod_port);
    if (d.service) r.destination += " (service " + d.service->ns() + "/" + d.service->name() + ")";
    if (!d.pod->hasContainerPort(d.pod_port)) {
      r.notes.push_back("port " + std::to_string(d.pod_port) + " is not a declared container port of the pod");
    }
  } else if (d.service) {
    r.destination = "service " + d.service->ns() + "/" + d.service->name() + " port " +
                    std::to_string(d.service_port) + " → " + std::to_string(d.backends.size()) + " backend(s)";
    if (d.backends.empty()) r.notes.push_back("no backend pod behind this service port");
  } else if (d.service_entry) {
    const config::ServiceEntry& se = *d.service_entry;
    const bool external = se.location == config::ServiceEntryLocation::kMeshExternal;
    if (d.host.empty()) {
      r.destination = "ServiceEntry " + se.meta.ref.ns + "/" + se.meta.ref.name + " (port not declared)";
      r.notes.push_back("ServiceEntry " + se.meta.ref.ns + "/" + se.meta.ref.name + " does not declare port " +
                        std::to_string(d.service_port) + ": passthrough, no DestinationRule applies");
    } else {
      r.destination = "ServiceEntry " + se.meta.ref.ns + "/" + se.meta.ref.name + " host " + std::string(d.host) +
                      " port " + std::to_string(d.service_port) + (external ? " (MESH_EXTERNAL)" : " (MESH_INTERNAL)") +
                      " → " + std::to_string(d.backends.size()) + " endpoint(s)";
    }
  } else {
    r.destination = "outside the mesh";
    if (to.kind == Target::Kind::kHost) {
      r.notes.push_back("no Service or ServiceEntry has this host: the connection passes through and no "
                        "DestinationRule applies (add a ServiceEntry to originate TLS to it)");
    }
  }
  const Pod* behind = d.pod ? d.pod : (!d.backends.empty() ? d.backends.front().pod : nullptr);
  if (behind && index.capturedByZtunnel(*behind)) {
    r.notes.push_back("the destination is captured by Istio's ztunnel (ambient), which takes mesh mTLS as HBONE "
                      "only: meshlock sends it an HBONE stream to the pod's port 15008");
  } else if (behind && index.takesHbone(*behind) && r.tunnel == "hbone") {
    r.notes.push_back("mesh mTLS goes as an HBONE stream to the destination's port 15008, pooled with the source "
                      "pod's other connections to it");
  }
  bool auto_mtls = d.client_decided_by.size() > 0 && d.client_decided_by.begin()->kind == ReasonKind::kAutoMtls;
  for (const Backend& b : d.backends) {
    ConnectionReport::BackendReport br;
    if (b.pod) br.pod = b.pod->ns() + "/" + b.pod->name();
    br.ip = b.ip.toString();
    br.port = b.port;
    br.server_mode = b.pod ? index.inbound(*b.pod, b.port).mode : ServerMode::kNone;
    const BackendChoice choice =
        backendDecision(d.client_tls, auto_mtls, br.server_mode, b.pod && index.takesHbone(*b.pod),
                        b.pod && index.capturedByZtunnel(*b.pod));
    br.client_tls = choice.client;
    br.outcome = choice.outcome;
    r.backends.push_back(std::move(br));
  }
  if (d.backends_disagree) {
    r.notes.push_back("backends do not all get the same decision; the first one (by namespace/name) is shown");
  }
  // Who may connect, decided where the connection is terminated: the
  // destination pod's agent, with the peer's identity only when it is mTLS.
  const Pod* dst_pod = d.pod ? d.pod : (!d.backends.empty() ? d.backends.front().pod : nullptr);
  if (dst_pod && index.served(*dst_pod)) {
    const uint16_t dst_port = d.pod ? d.pod_port : d.backends.front().port;
    const std::string principal = r.outcome == Outcome::kMtls ? index.identityOf(*source).str() : std::string();
    AuthzRequest request{.source_principal = principal,
                         .source_ip = source->ip.value_or(IpAddress()),
                         .destination_ip = dst_pod->ip.value_or(IpAddress()),
                         .destination_port = dst_port,
                         .sni = {}};
    AuthzDecision authz = index.authorization().decide(*dst_pod, request);
    r.authorization = std::string(authz.keyword());
    if (authz.policy) r.authorization_policy = authz.policyName();
    r.authorization_reason = authz.describe();
    if (authz.result == AuthzResult::kDeny) r.notes.push_back("refused by authorization: " + authz.describe());
  }
  return r;
}

}  // namespace meshlock::policy
