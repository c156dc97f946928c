// Mesh policy decisions, as Istio would make them: pure functions of a
// config::ClusterState (no I/O, no clock, no globals).
//
//   auto index = PolicyIndex::build(state);          // once per config change
//   index->inbound(pod_uid, port)      -> InboundDecision  (server side, per connection)
//   index->outbound(pod_uid, ip, port) -> OutboundDecision (client side, per connection)
//   index->outbound(pod_uid, "web.shop.svc.cluster.local", port)
//
// Lookups are hash-map based and allocate nothing on success. Decisions point
// into the index (resources, identities, backends): keep the index alive
// (it is handed out as shared_ptr<const PolicyIndex>) while you use them.
//
// Semantics (docs/policy.md has the long form):
//  - inbound: workload PeerAuthentication > namespace > mesh (root namespace);
//    UNSET inherits; portLevelMtls only on selector policies; oldest wins,
//    then name; default PERMISSIVE. Maistra Policy / SMCP map onto these.
//  - outbound: DestinationRule from the client's namespace, then the
//    service's, then the root namespace; most specific host; exportTo;
//    portLevelSettings over trafficPolicy.tls; else auto mTLS; else DISABLE.
//  - a pod is served by meshlock when its namespace is enrolled and it did not
//    opt out; an unserved client sends plaintext (ClientTls::kNone), an
//    unserved server has no proxy (ServerMode::kNone).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/error.h"
#include "config/types.h"
#include "policy/authorization.h"

namespace meshlock::policy {

using config::IpAddress;
using config::PodUid;
using config::SpiffeId;

// What the server side of a connection does (conformance `server_mode`).
enum class ServerMode : uint8_t { kNone, kDisable, kPermissive, kStrict };
// What the client side sends (conformance `client_tls`).
enum class ClientTls : uint8_t { kNone, kDisable, kSimple, kMutual, kIstioMutual };
// What the two ends produce together.
enum class Outcome : uint8_t { kMtls, kTls, kPlaintext, kRefused, kBroken };
// How mesh mTLS crosses the network (docs/hbone.md): on the destination's own
// port with ALPN istio (sidecars, meshlock), or as an HBONE stream to its 15008.
enum class Tunnel : uint8_t { kNone, kIstioMtls, kHbone };

[[nodiscard]] std::string_view toString(ServerMode mode);
[[nodiscard]] std::string_view toString(ClientTls tls);
[[nodiscard]] std::string_view toString(Outcome outcome);
[[nodiscard]] std::string_view toString(Tunnel tunnel);
[[nodiscard]] std::optional<ServerMode> parseServerMode(std::string_view text);
[[nodiscard]] std::optional<ClientTls> parseClientTls(std::string_view text);
[[nodiscard]] std::optional<Outcome> parseOutcome(std::string_view text);

// The outcome table: one client setting against one server mode.
[[nodiscard]] Outcome combine(ClientTls client, ServerMode server);

// Why a decision was made: a resource, or a built-in rule.
enum class ReasonKind : uint8_t {
  kResource,        // `resource` decided it
  kDefault,         // nothing set: PERMISSIVE inbound
  kAutoMtls,        // no TLS setting: auto mTLS picked
  kNoAutoMtls,      // no TLS setting and auto mTLS off: plaintext
  kNotEnrolled,     // namespace not enrolled: meshlock does not serve the pod
  kOptedOut,        // pod label meshlock.io/mtls=disabled (or host network)
  kOutsideMesh,     // destination is not a pod meshlock knows
  kEnrolled,        // served: namespace label meshlock.io/mtls=enabled
  kEnrolledAmbient, // served: namespace label istio.io/dataplane-mode=ambient
  kSidecar,         // not served: the pod has an Istio sidecar (container istio-proxy), which does mTLS
  kZtunnel,         // not served: Istio's ztunnel captures the pod (annotation ambient.istio.io/redirection=enabled)
  kGatewayCredential,  // SIMPLE/MUTUAL with credentialName in a rule without workloadSelector: no TLS at a sidecar
};

struct Reason {
  ReasonKind kind = ReasonKind::kDefault;
  const config::ObjectRef* resource = nullptr;  // for kResource (points into the index)
  uint16_t port = 0;                            // non-zero when a port-level setting decided
  [[nodiscard]] std::string describe() const;   // "PeerAuthentication/shop/default", "auto mTLS", ...
};

// A short list of reasons, held inline (no allocation per decision).
class DecidedBy {
 public:
  void add(Reason r) {
    if (count_ < items_.size()) items_[count_++] = r;
  }
  [[nodiscard]] const Reason* begin() const { return items_.data(); }
  [[nodiscard]] const Reason* end() const { return items_.data() + count_; }
  [[nodiscard]] std::size_t size() const { return count_; }
  [[nodiscard]] std::vector<std::string> describe() const;
  [[nodiscard]] std::string text() const;  // describe(), joined with ", "

 private:
  std::array<Reason, 4> items_{};
  uint8_t count_ = 0;
};

struct InboundDecision {
  ServerMode mode = ServerMode::kNone;
  DecidedBy decided_by;
};

// One pod (or address) behind a destination, with the port the connection reaches.
struct Backend {
  const config::Pod* pod = nullptr;  // nullptr: an address that is no pod meshlock knows
  IpAddress ip;
  uint16_t port = 0;  // container port (target port)
};

struct OutboundDecision {
  ClientTls client_tls = ClientTls::kNone;
  ServerMode server_mode = ServerMode::kNone;  // of the backends (the first, if they differ)
  Outcome outcome = Outcome::kPlaintext;
  Tunnel tunnel = Tunnel::kNone;   // how mesh mTLS travels to the (first) backend
  bool backends_disagree = false;  // backends differ in server mode or auto-mTLS result
  // Secure naming: SPIFFE IDs the server must present (ISTIO_MUTUAL), or the
  // rule's subjectAltNames (any TLS mode). Points into the index.
  std::span<const std::string> expected_identities;
  const config::ClientTlsSettings* tls = nullptr;  // the DestinationRule's TLS settings, if one applied
  config::TlsVersion min_tls_version = config::TlsVersion::kTls12;
  // What the destination resolved to.
  const config::Service* service = nullptr;  // the service reached (or attributed to a pod)
  const config::ServiceEntry* service_entry = nullptr;  // or the Istio ServiceEntry whose host or address it is
  uint16_t service_port = 0;
  std::span<const Backend> backends;          // the service port's backends
  const config::Pod* pod = nullptr;           // set when the destination is one pod (pod IP, NS/POD)
  uint16_t pod_port = 0;
  std::string_view host;  // the hostname used for DestinationRule lookup; empty if none
  DecidedBy client_decided_by;
  DecidedBy server_decided_by;
};

// A destination as the agent sees it (an IP) or as a user names it (a host).
struct Destination {
  std::optional<IpAddress> ip;
  std::string host;  // FQDN or short name; ignored when ip is set
};

// Mesh-wide settings resolved from Istio / SMCP / the istio ConfigMap.
struct MeshSettings {
  std::string control_namespace = "istio-system";  // empty: the settings of namespaces outside every mesh
  std::string root_namespace = "istio-system";      // empty likewise: no mesh-wide policy reaches them
  std::string trust_domain = "cluster.local";
  std::string domain_suffix = "cluster.local";
  bool enable_auto_mtls = true;
  config::TlsVersion min_protocol_version = config::TlsVersion::kTls12;
  // What a DestinationRule without exportTo exports (meshConfig.defaultDestinationRuleExportTo; empty: "*").
  std::vector<std::string> default_destination_rule_export_to;
  std::vector<const config::ObjectRef*> decided_by;  // resources that set these
};

// Hash for string-keyed maps that are looked up with string_views (no allocation).
struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
template <typename V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

class PolicyIndex {
 public:
  // Builds every index once. The state is moved in and owned.
  [[nodiscard]] static std::shared_ptr<const PolicyIndex> build(config::ClusterState state);

  // The primary mesh (the first control plane's; node-wide settings such as
  // the agent's trust domain come from it).
  [[nodiscard]] const MeshSettings& mesh() const { return meshes_.front(); }
  // The mesh that governs a namespace: the first control plane whose
  // discovery (ServiceMeshMemberRoll, discoverySelectors, or none: every
  // namespace) takes it; defaults with no root namespace when none does.
  [[nodiscard]] const MeshSettings& meshFor(std::string_view ns) const;
  // Whether `ns` is the root namespace of a mesh (its policies without selector are mesh-wide).
  [[nodiscard]] bool isRootNamespace(std::string_view ns) const { return meshRootedAt(ns).has_value(); }
  // Every control plane's mesh, primary first.
  [[nodiscard]] std::vector<const MeshSettings*> meshes() const;
  // Whether a mesh (one of meshes()) takes the namespace by its discovery rules,
  // whether or not an earlier mesh already governs it.
  [[nodiscard]] bool discovers(const MeshSettings& mesh, const config::Namespace& ns) const;
  [[nodiscard]] const config::ClusterState& state() const { return state_; }

  // Pods, by what the agent and the CLI know them by.
  [[nodiscard]] const config::Pod* podByUid(const PodUid& uid) const;
  [[nodiscard]] const config::Pod* podByIp(const IpAddress& ip) const;
  [[nodiscard]] const config::Pod* podByName(std::string_view ns, std::string_view name) const;
  [[nodiscard]] const config::Service* serviceByHost(std::string_view fqdn) const;
  [[nodiscard]] const config::Service* serviceByIp(const IpAddress& ip) const;
  // Whether a host is in the registry: a Service's name, or a ServiceEntry host
  // (exact, or under one of its wildcards), whatever the entry's exportTo.
  [[nodiscard]] bool inRegistry(std::string_view host) const;
  [[nodiscard]] std::vector<const config::Pod*> podsOnNode(std::string_view node) const;

  // Whether meshlock terminates and originates TLS for this pod.
  [[nodiscard]] bool served(const config::Pod& pod) const;
  // Whether the pod has an Istio (Envoy) sidecar: not served by meshlock, but
  // a mesh peer whose inbound mode follows the PeerAuthentications as ours does.
  [[nodiscard]] bool hasSidecar(const config::Pod& pod) const;
  // Whether Istio's ztunnel captures the pod: not served by meshlock; a mesh
  // peer that takes mesh mTLS as HBONE only (docs/hbone.md).
  [[nodiscard]] bool capturedByZtunnel(const config::Pod& pod) const;
  // The pod takes mesh mTLS as HBONE on its 15008: meshlock's, ztunnel's, or labelled a native tunnel.
  [[nodiscard]] bool takesHbone(const config::Pod& pod) const;
  [[nodiscard]] Reason servedReason(const config::Pod& pod) const;
  [[nodiscard]] SpiffeId identityOf(const config::Pod& pod) const;

  // Server side: the mode for a connection to `port` (a container port) of the pod.
  // kNone when neither meshlock nor an Istio sidecar serves the pod (or the uid is unknown).
  [[nodiscard]] InboundDecision inbound(const PodUid& pod, uint16_t port) const;
  [[nodiscard]] InboundDecision inbound(const config::Pod& pod, uint16_t port) const;

  // Client side: what a connection from `source` to the destination gets.
  // Fails only when the source pod is unknown.
  [[nodiscard]] Result<OutboundDecision> outbound(const PodUid& source, const Destination& dst,
                                                  uint16_t port) const;
  [[nodiscard]] OutboundDecision outbound(const config::Pod& source, const Destination& dst,
                                          uint16_t port) const;
  // A connection straight to a pod (NS/POD:port): the port is a container port.
  [[nodiscard]] OutboundDecision outboundToPod(const config::Pod& source, const config::Pod& dst,
                                               uint16_t port) const;

  // The fully qualified name of a service: <name>.<ns>.svc.<domain suffix>.
  [[nodiscard]] std::string fqdn(const config::Service& svc) const;
  // The service an inbound connection to `port` (a container port) of `pod`
  // is attributed to: the first service port whose endpoints are this pod and
  // port; nullptr when none is. Uses the index built with the services.
  [[nodiscard]] const config::Service* serviceForPodPort(const config::Pod& pod, uint16_t port) const;
  // The pods (and addresses) behind one service port, ordered by namespace/name.
  [[nodiscard]] std::span<const Backend> backendsOf(const config::Service& svc, uint16_t service_port) const;
  // The DestinationRule a client uses for a host (Istio's lookup order), if any.
  [[nodiscard]] const config::DestinationRule* destinationRuleFor(const config::Pod& client,
                                                                  std::string_view host) const;
  // A rule's TLS settings for a service port: the first portLevelSettings entry
  // for it replaces trafficPolicy (its tls or none); else trafficPolicy.tls.
  // `rule_port`, when given, is set to the port if a port entry decided.
  [[nodiscard]] static const config::ClientTlsSettings* portTls(const config::DestinationRule& rule, uint16_t port,
                                                                uint16_t* rule_port = nullptr);
  // A rule's host as Istio resolves it (short names in the rule's namespace, lower case).
  [[nodiscard]] std::string ruleHost(const config::DestinationRule& rule) const;
  // Whether a resolved rule host ("*.local", "web.shop.svc.cluster.local") covers `host`.
  [[nodiscard]] static bool hostMatches(std::string_view rule_host, std::string_view host);
  // Who may connect to a pod: AuthorizationPolicy at L4 (authorization.h).
  [[nodiscard]] const AuthorizationIndex& authorization() const { return *authorization_; }

  // Rules and policies meshlock made for ServiceMeshControlPlane mesh-wide mTLS.
  [[nodiscard]] std::vector<const config::DestinationRule*> syntheticRules() const;

  // Implementation types, public only so the .cpp's helpers can name them.
  struct PodEntry;
  struct ServiceEntry;
  struct MergedRule;
  struct IstioServiceEntry;
  struct MeshScope;
  struct RuleSet;
  struct NamespaceEntry;

  PolicyIndex();
  ~PolicyIndex();
  PolicyIndex(const PolicyIndex&) = delete;
  PolicyIndex& operator=(const PolicyIndex&) = delete;

 private:
  // `root`: the root namespace of the client's mesh.
  [[nodiscard]] const config::DestinationRule* findDestinationRule(const config::Pod& client, const std::string& root,
                                                                   std::string_view host,
                                                                   const std::string* service_ns) const;
  [[nodiscard]] OutboundDecision decide(const config::Pod& source, const config::Service* svc,
                                        uint16_t service_port, std::string_view host,
                                        std::span<const Backend> backends,
                                        std::span<const std::string> identities,
                                        const config::ServiceEntry* entry = nullptr) const;
  // The ServiceEntry (visible to the client's namespace) with this host, and the
  // entry's host that matched (exact first, then the longest wildcard).
  [[nodiscard]] std::pair<const IstioServiceEntry*, std::string_view> serviceEntryFor(const config::Pod& client,
                                                                                     std::string_view host) const;
  [[nodiscard]] const IstioServiceEntry* serviceEntryForIp(const config::Pod& client, const IpAddress& ip) const;
  [[nodiscard]] OutboundDecision outboundToServiceEntry(const config::Pod& source, const IstioServiceEntry& entry,
                                                        std::string_view host, uint16_t port) const;
  [[nodiscard]] OutboundDecision outboundToService(const config::Pod& source, std::size_t service,
                                                   uint16_t port) const;

  [[nodiscard]] std::size_t podIndex(const config::Pod& pod) const;

  [[nodiscard]] std::size_t meshIndex(std::string_view ns) const;
  [[nodiscard]] bool governs(std::size_t mesh, std::string_view ns, const config::Labels& labels) const;
  // The mesh whose root namespace `ns` is, if any.
  [[nodiscard]] std::optional<std::size_t> meshRootedAt(std::string_view ns) const;

  config::ClusterState state_;
  std::vector<MeshSettings> meshes_;  // control planes' meshes, then the one for namespaces outside all
  std::vector<MeshScope> mesh_scopes_;
  std::size_t unmeshed_ = 0;          // index of the settings for namespaces outside every mesh
  std::size_t mesh_for_unknown_ = 0;  // for namespaces without a Namespace object
  StringMap<std::size_t> mesh_by_namespace_;
  StringMap<std::size_t> mesh_by_root_;
  std::vector<PodEntry> pods_;
  std::vector<ServiceEntry> services_;
  std::unordered_map<const config::Pod*, std::size_t> pod_by_address_;  // entries follow state_.pods
  std::unordered_map<const config::Service*, std::size_t> service_by_address_;
  std::unordered_map<PodUid, std::size_t> pod_by_uid_;
  std::unordered_map<IpAddress, std::size_t> pod_by_ip_;
  StringMap<std::size_t> pod_by_name_;  // "ns/name"
  StringMap<std::size_t> service_by_host_;
  std::unordered_map<IpAddress, std::size_t> service_by_ip_;
  StringMap<std::unique_ptr<NamespaceEntry>> namespaces_;
  StringMap<std::unique_ptr<RuleSet>> root_local_rules_;  // each root namespace's private rules (istiod's rootNamespaceLocal)
  std::vector<IstioServiceEntry> service_entries_;
  StringMap<std::vector<std::size_t>> service_entry_by_host_;
  std::vector<std::pair<std::string, std::size_t>> service_entry_wildcards_;  // suffix after '*', longest first
  std::vector<std::pair<IpPrefix, std::size_t>> service_entry_by_address_;  // the root namespace's private rules (istiod's rootNamespaceLocal)
  std::vector<std::unique_ptr<config::DestinationRule>> synthetic_rules_;
  std::vector<std::unique_ptr<config::PeerAuthentication>> synthetic_peer_auths_;
  std::vector<std::unique_ptr<config::ObjectRef>> refs_;
  std::unique_ptr<AuthorizationIndex> authorization_;
};

// ---- Targets as users write them (meshlockctl, conformance) -------------------

struct PodRef {
  std::string ns;
  std::string name;
};

struct Target {
  enum class Kind : uint8_t { kPod, kIp, kHost } kind = Kind::kHost;
  PodRef pod;      // kPod
  IpAddress ip;    // kIp
  std::string host;  // kHost
  uint16_t port = 0;
};

// "NS/POD"
[[nodiscard]] Result<PodRef> parsePodRef(std::string_view text);
// "NS/POD:port", "ip:port", "[v6]:port" or "host:port"
[[nodiscard]] Result<Target> parseTarget(std::string_view text);

// Everything `meshlockctl check` reports for one pair, with names as strings.
struct ConnectionReport {
  std::string from;
  std::string to;
  ClientTls client_tls = ClientTls::kNone;
  ServerMode server_mode = ServerMode::kNone;
  Outcome outcome = Outcome::kPlaintext;
  std::vector<std::string> expected_identities;
  std::vector<std::string> decided_by;  // client side first, then server side
  std::vector<std::string> client_decided_by;
  std::vector<std::string> server_decided_by;
  std::string destination;              // "service shop/web port 80 → 1 pod(s)", "pod shop/web", ...
  std::string min_tls_version;
  // How the bytes cross the network (docs/hbone.md): "istio_mtls" (mesh mTLS
  // on the destination's port, ALPN istio, as sidecars speak it), "hbone"
  // (HTTP/2 CONNECT to the destination's 15008) or "none" (plaintext, or TLS
  // a DestinationRule originates). meshlock originates istio_mtls; it takes
  // both from its peers.
  std::string tunnel = "none";
  bool backends_disagree = false;
  // Each backend of a service destination, with its own decision.
  struct BackendReport {
    std::string pod;  // "ns/name", or empty for an address that is no known pod
    std::string ip;
    uint16_t port = 0;
    ClientTls client_tls = ClientTls::kNone;
    ServerMode server_mode = ServerMode::kNone;
    Outcome outcome = Outcome::kPlaintext;
  };
  std::vector<BackendReport> backends;
  // AuthorizationPolicy at the destination's agent (the first backend's pod):
  // "allow", "deny" or "audit"; nullopt when meshlock does not serve the
  // destination (nobody enforces then). The policy is "NS/NAME" or nullopt.
  std::optional<std::string> authorization;
  std::optional<std::string> authorization_policy;
  std::string authorization_reason;
  std::vector<std::string> notes;  // why, in words
};

// The function behind `meshlockctl check` (and the conformance test).
// Fails for an unknown source pod or an unknown NS/POD target.
[[nodiscard]] Result<ConnectionReport> checkConnection(const PolicyIndex& index, const PodRef& from,
                                                       const Target& to);

}  // namespace meshlock::policy
