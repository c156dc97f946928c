// The cluster state meshlock reads: namespaces, pods, services, endpoints and
// the Istio / Maistra mesh resources, as plain typed values (no YAML here).
//
// Produced by config/manifest.h (parseManifests, loadManifestDirectory) and
// config/watcher.h (ManifestWatcher); consumed by policy/policy.h.
// Every object keeps its ObjectRef (kind/namespace/name) and where it was
// read from, so decisions and errors can name it.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/ip_address.h"
#include "config/shared_list.h"

namespace meshlock::config {

// A string with a meaning, so a pod uid is never passed where a name is due.
template <typename Tag>
class StrongString {
 public:
  StrongString() = default;
  explicit StrongString(std::string value) : value_(std::move(value)) {}
  [[nodiscard]] const std::string& str() const { return value_; }
  [[nodiscard]] bool empty() const { return value_.empty(); }
  auto operator<=>(const StrongString&) const = default;

 private:
  std::string value_;
};

using PodUid = StrongString<struct PodUidTag>;      // metadata.uid
using SpiffeId = StrongString<struct SpiffeIdTag>;  // spiffe://<trust domain>/ns/<ns>/sa/<sa>

[[nodiscard]] SpiffeId spiffeIdFor(std::string_view trust_domain, std::string_view ns,
                                   std::string_view service_account);

using meshlock::IpAddress;

using Labels = std::map<std::string, std::string, std::less<>>;

// True when every selector label is present in `labels` with the same value.
[[nodiscard]] bool selectorMatches(const Labels& selector, const Labels& labels);

// A Kubernetes LabelSelector (metav1.LabelSelector): matchLabels and
// matchExpressions (In, NotIn, Exists, DoesNotExist), all ANDed. An empty
// selector matches everything.
struct LabelSelector {
  struct Requirement {
    std::string key;
    std::string op;  // In, NotIn, Exists, DoesNotExist
    std::vector<std::string> values;
    bool operator==(const Requirement&) const = default;
  };
  Labels match_labels;
  std::vector<Requirement> match_expressions;
  [[nodiscard]] bool matches(const Labels& labels) const;
  bool operator==(const LabelSelector&) const = default;
};

// Where an object was read from: file (or other origin) and document index (0-based).
struct SourceLocation {
  std::string origin;
  int document = 0;
  [[nodiscard]] std::string describe() const;  // "dir/a.yaml: document 2" (1-based for humans)
  bool operator==(const SourceLocation&) const = default;
};

// kind/namespace/name: how decisions name the resource that made them.
struct ObjectRef {
  std::string kind;
  std::string ns;  // empty for cluster-scoped kinds
  std::string name;
  [[nodiscard]] std::string toString() const;  // "PeerAuthentication/shop/default"
  auto operator<=>(const ObjectRef&) const = default;
};

// metadata.ownerReferences: the controller (or, without one, the first owner).
struct OwnerRef {
  std::string kind;  // ReplicaSet, StatefulSet, DaemonSet, Job, ...
  std::string name;
  bool operator==(const OwnerRef&) const = default;
};

struct ObjectMeta {
  ObjectRef ref;
  std::string api_version;
  std::string uid;
  Labels labels;
  std::string creation_timestamp;  // RFC 3339 as written; empty sorts first (oldest), as in Istio
  std::optional<OwnerRef> owner;
  SourceLocation source;
  // mTLS- or identity-relevant fields present in the object that meshlock
  // reads but does not apply: "spec.trafficPolicy.tls.caCrl: <why>" (validate ML030).
  std::vector<std::string> unapplied;
  bool operator==(const ObjectMeta&) const = default;
};

// Istio's order among policies at the same level: oldest first, then name, then namespace.
[[nodiscard]] bool olderThan(const ObjectMeta& a, const ObjectMeta& b);

// ---- Kubernetes core ----------------------------------------------------------

inline constexpr std::string_view kEnrollLabel = "meshlock.io/mtls";          // ns: enabled; pod: disabled
inline constexpr std::string_view kAmbientLabel = "istio.io/dataplane-mode";  // ns: ambient; pod: none
// Set on every pod Istio's injector gave an Envoy sidecar (value "istio"); istiod's
// auto mTLS reads it from endpoints (pilot/pkg/model: IstioTLSModeLabel). Pods
// meshlock serves may carry it too, so sidecar clients send them mTLS.
inline constexpr std::string_view kIstioTlsModeLabel = "security.istio.io/tlsMode";
// The annotation istio-cni sets on pods whose traffic ztunnel captures (value "enabled").
inline constexpr std::string_view kAmbientRedirectionAnnotation = "ambient.istio.io/redirection";
// istiod's TunnelLabel (pilot/pkg/model/service.go): "http" says the pod takes
// HBONE on its own port 15008 (a native tunnel), as meshlock's pods can.
inline constexpr std::string_view kTunnelLabel = "networking.istio.io/tunnel";
// The container Istio's injector adds (pkg/kube/inject: ProxyContainerName).
inline constexpr std::string_view kIstioProxyContainer = "istio-proxy";
// Namespace labels that turn sidecar injection on (istio-injection=enabled, istio.io/rev=<revision>).
inline constexpr std::string_view kInjectionLabel = "istio-injection";
inline constexpr std::string_view kRevisionLabel = "istio.io/rev";

struct Namespace {
  ObjectMeta meta;
  bool operator==(const Namespace&) const = default;
};

struct ContainerPort {
  std::string name;  // may be empty
  uint16_t port = 0;
  std::string protocol = "TCP";
  bool operator==(const ContainerPort&) const = default;
};

struct Pod {
  ObjectMeta meta;
  PodUid uid;  // metadata.uid, or "<ns>/<name>" when the manifest has none
  std::string service_account = "default";
  std::string node_name;
  std::optional<IpAddress> ip;   // status.podIP
  std::vector<IpAddress> ips;    // status.podIPs (includes ip)
  std::vector<ContainerPort> ports;
  bool host_network = false;
  bool terminated = false;  // status.phase Succeeded or Failed: no longer an endpoint
  bool istio_proxy = false;  // a container (or sidecar init container) named istio-proxy: Istio injected Envoy
  bool ztunnel = false;      // annotation ambient.istio.io/redirection=enabled: Istio's ztunnel captures it
  bool native_tunnel = false;  // label networking.istio.io/tunnel=http: it takes HBONE itself
  [[nodiscard]] const std::string& ns() const { return meta.ref.ns; }
  [[nodiscard]] const std::string& name() const { return meta.ref.name; }
  [[nodiscard]] const Labels& labels() const { return meta.labels; }
  [[nodiscard]] std::optional<uint16_t> containerPortNamed(std::string_view name) const;
  [[nodiscard]] bool hasContainerPort(uint16_t port) const;
  bool operator==(const Pod&) const = default;  // an API relist publishes only what changed
};

// A Service's targetPort: a number, or the name of a container port.
struct TargetPort {
  uint16_t number = 0;  // when name is empty
  std::string name;
  bool operator==(const TargetPort&) const = default;
};

struct ServicePort {
  std::string name;
  uint16_t port = 0;
  TargetPort target;
  std::string protocol = "TCP";
  bool operator==(const ServicePort&) const = default;
};

struct Service {
  ObjectMeta meta;
  std::optional<IpAddress> cluster_ip;  // none for headless / ExternalName
  std::vector<IpAddress> cluster_ips;
  std::optional<Labels> selector;  // nullopt: endpoints come from Endpoints/EndpointSlice
  std::vector<ServicePort> ports;
  std::string type = "ClusterIP";
  std::string external_name;
  [[nodiscard]] const std::string& ns() const { return meta.ref.ns; }
  [[nodiscard]] const std::string& name() const { return meta.ref.name; }
  bool operator==(const Service&) const = default;
};

// One Endpoints object or EndpointSlice, reduced to what policy needs.
struct EndpointAddress {
  IpAddress ip;
  std::string pod_name;  // targetRef of kind Pod, if any
  bool operator==(const EndpointAddress&) const = default;
};
struct EndpointPort {
  std::string name;
  uint16_t port = 0;
  bool operator==(const EndpointPort&) const = default;
};
struct ServiceEndpoints {
  ObjectMeta meta;
  std::string service;  // Endpoints: its name; EndpointSlice: kubernetes.io/service-name
  std::vector<EndpointAddress> addresses;
  std::vector<EndpointPort> ports;
  bool operator==(const ServiceEndpoints&) const = default;
};

// ---- Istio / Maistra ------------------------------------------------------------

enum class PeerMode : uint8_t { kUnset, kDisable, kPermissive, kStrict };
enum class TlsMode : uint8_t { kDisable, kSimple, kMutual, kIstioMutual };
enum class TlsVersion : uint8_t { kAuto, kTls12, kTls13 };

[[nodiscard]] std::string_view toString(PeerMode mode);
[[nodiscard]] std::string_view toString(TlsMode mode);
[[nodiscard]] std::string_view toString(TlsVersion version);
[[nodiscard]] std::optional<PeerMode> parsePeerMode(std::string_view text);
[[nodiscard]] std::optional<TlsMode> parseTlsMode(std::string_view text);
[[nodiscard]] std::optional<TlsVersion> parseTlsVersion(std::string_view text);

// A legacy (Istio 1.x / Maistra) Policy target: a service in the policy's
// namespace, optionally limited to some of its ports (by number or name).
struct LegacyPolicyTarget {
  std::string service;
  std::vector<uint16_t> port_numbers;
  std::vector<std::string> port_names;
  bool operator==(const LegacyPolicyTarget&) const = default;
};

// PeerAuthentication, or a Maistra/Istio 1.x authentication Policy,
// ServiceMeshPolicy or MeshPolicy expressed as one (meta.ref.kind tells which).
struct PeerAuthentication {
  ObjectMeta meta;
  std::optional<Labels> selector;       // matchLabels; nullopt or empty = namespace/mesh wide
  std::optional<PeerMode> mode;         // nullopt when spec.mtls is absent (= UNSET)
  std::map<uint16_t, PeerMode> port_level;  // portLevelMtls, keyed by container port
  bool port_level_declared = false;          // portLevelMtls present, even empty (Istio rejects `{}`)
  std::vector<LegacyPolicyTarget> maistra_targets;  // legacy Policy `targets`
  bool mesh_wide_kind = false;               // MeshPolicy / ServiceMeshPolicy
  [[nodiscard]] bool hasSelector() const { return selector && !selector->empty(); }
  bool operator==(const PeerAuthentication&) const = default;
};

struct ClientTlsSettings {
  TlsMode mode = TlsMode::kDisable;
  std::string sni;
  std::vector<std::string> subject_alt_names;
  std::string ca_certificates;
  std::string client_certificate;
  std::string private_key;
  std::string credential_name;
  bool insecure_skip_verify = false;
  bool operator==(const ClientTlsSettings&) const = default;
};

struct PortTlsSettings {
  uint16_t port = 0;  // service port
  std::optional<ClientTlsSettings> tls;
  bool operator==(const PortTlsSettings&) const = default;
};

struct DestinationRule {
  ObjectMeta meta;
  std::string host;  // as written
  std::vector<std::string> export_to;
  std::optional<Labels> workload_selector;
  std::optional<ClientTlsSettings> tls;     // trafficPolicy.tls
  std::vector<PortTlsSettings> port_level;  // trafficPolicy.portLevelSettings
  bool has_traffic_policy = false;          // trafficPolicy present, even without tls: merging keeps the first
  std::vector<std::string> subsets_with_tls;  // subsets whose trafficPolicy sets tls (not applied: no VirtualService)
  bool synthetic = false;  // made by meshlock for a ServiceMeshControlPlane's mesh-wide mTLS
  bool operator==(const DestinationRule&) const = default;
};

// ---- networking.istio.io ServiceEntry (v1, v1beta1, v1alpha3) -------------------

// Hosts added to the mesh's registry (istio/api networking/v1alpha3/service_entry.proto).
// A DestinationRule applies only to hosts of the registry: Services and these.
enum class ServiceEntryLocation : uint8_t { kMeshExternal, kMeshInternal };
enum class ServiceEntryResolution : uint8_t { kNone, kStatic, kDns, kDnsRoundRobin };

struct ServiceEntryPort {
  uint16_t number = 0;
  std::string name;
  std::string protocol;
  uint16_t target_port = 0;  // 0: the endpoint's port for this name, else `number`
  bool operator==(const ServiceEntryPort&) const = default;
};

struct ServiceEntryEndpoint {
  std::string address;            // an IP, a host name (DNS), or unix:// (not used)
  std::optional<IpAddress> ip;    // when `address` is an IP
  std::map<std::string, uint16_t> ports;  // port name → endpoint port
  Labels labels;
  bool operator==(const ServiceEntryEndpoint&) const = default;
};

struct ServiceEntry {
  ObjectMeta meta;
  std::vector<std::string> hosts;      // as written (lower-cased at lookup)
  std::vector<std::string> addresses;  // IPs or CIDRs, as written
  std::vector<ServiceEntryPort> ports;
  ServiceEntryLocation location = ServiceEntryLocation::kMeshExternal;  // the proto's default (0)
  ServiceEntryResolution resolution = ServiceEntryResolution::kNone;
  std::vector<ServiceEntryEndpoint> endpoints;
  std::optional<Labels> workload_selector;  // endpoints are the selected pods
  std::vector<std::string> export_to;
  std::vector<std::string> subject_alt_names;
  bool operator==(const ServiceEntry&) const = default;
};

// ---- security.istio.io AuthorizationPolicy (v1, v1beta1) -----------------------

enum class AuthzAction : uint8_t { kAllow, kDeny, kAudit, kCustom };

// One `from[].source`: the fields present are ANDed, the values of one field
// ORed (istio/api security/v1beta1/authorization_policy.proto). Strings as
// written; agent/policy/authorization.cpp compiles them.
struct AuthzSource {
  std::vector<std::string> principals, not_principals;
  std::vector<std::string> namespaces, not_namespaces;
  std::vector<std::string> service_accounts, not_service_accounts;
  std::vector<std::string> ip_blocks, not_ip_blocks;
  std::vector<std::string> remote_ip_blocks, not_remote_ip_blocks;
  std::vector<std::string> l7_fields;  // fields that need a request (requestPrincipals, ...), by name
  bool operator==(const AuthzSource&) const = default;
};

// One `to[].operation`.
struct AuthzOperation {
  std::vector<std::string> ports, not_ports;
  std::vector<std::string> l7_fields;  // hosts, methods, paths and their not*, by name
  bool operator==(const AuthzOperation&) const = default;
};

// One `when[]` condition.
struct AuthzCondition {
  std::string key;
  std::vector<std::string> values, not_values;
  bool operator==(const AuthzCondition&) const = default;
};

struct AuthzRule {
  std::vector<AuthzSource> from;
  std::vector<AuthzOperation> to;
  std::vector<AuthzCondition> when;
  bool operator==(const AuthzRule&) const = default;
};

struct AuthorizationPolicy {
  ObjectMeta meta;
  std::optional<Labels> selector;       // matchLabels; nullopt or empty = namespace/mesh wide
  std::vector<std::string> target_refs;  // "Kind/name": Gateway or Service targets, not a node proxy's
  AuthzAction action = AuthzAction::kAllow;
  std::string provider;  // CUSTOM's provider.name
  std::vector<AuthzRule> rules;  // none: the policy matches nothing (ALLOW: allow-nothing)
  [[nodiscard]] bool hasSelector() const { return selector && !selector->empty(); }
  bool operator==(const AuthorizationPolicy&) const = default;
};

// The mesh-wide settings one resource contributes. Unset fields say nothing.
struct MeshConfigValues {
  std::vector<LabelSelector> discovery_selectors;  // meshConfig.discoverySelectors: namespaces this control plane sees
  std::optional<bool> enable_auto_mtls;
  std::optional<std::string> trust_domain;
  std::optional<std::string> root_namespace;
  std::optional<TlsVersion> min_protocol_version;
  // meshConfig.defaultDestinationRuleExportTo: what a DestinationRule without
  // exportTo exports (empty: public, "*")
  std::optional<std::vector<std::string>> default_destination_rule_export_to;
  bool operator==(const MeshConfigValues&) const = default;
};

enum class ControlPlaneKind : uint8_t { kIstio, kIstioOperator, kSmcpV1, kSmcpV2, kMeshConfigMap };

// sailoperator.io/v1 Istio, maistra.io/v1|v2 ServiceMeshControlPlane, or the
// `istio` ConfigMap's `mesh` key.
struct ControlPlane {
  ObjectMeta meta;
  ControlPlaneKind kind = ControlPlaneKind::kIstio;
  std::string control_namespace;  // Istio: spec.namespace (default istio-system); others: metadata.namespace
  MeshConfigValues mesh;
  bool mesh_mtls = false;  // SMCP: mesh-wide STRICT + ISTIO_MUTUAL for *.local
  bool operator==(const ControlPlane&) const = default;
};

// maistra.io/v1 ServiceMeshMemberRoll (named `default`, in the control plane's
// namespace): the namespaces that belong to that ServiceMeshControlPlane's mesh.
struct MemberRoll {
  ObjectMeta meta;
  std::vector<std::string> members;              // spec.members ("*": every namespace)
  std::vector<LabelSelector> member_selectors;   // spec.memberSelectors
  bool operator==(const MemberRoll&) const = default;
};

// A core v1 Secret that a DestinationRule's credentialName names: only the
// referenced ones are read from the API (config/kube), any from manifests.
// `data` holds the decoded bytes, with `stringData` merged over it as the API
// server merges it on write.
struct Secret {
  ObjectMeta meta;
  std::string type;  // "kubernetes.io/tls", "Opaque", ...
  std::map<std::string, std::string> data;
  bool operator==(const Secret&) const = default;
};

// A core v1 ConfigMap that a `configmap://` credentialName names: only its CA
// keys are read (config/credentials.h).
struct ConfigMap {
  ObjectMeta meta;
  std::map<std::string, std::string> data;
  bool operator==(const ConfigMap&) const = default;
};

// Whether a service account may list the Secrets of its namespace, as the
// Kubernetes API answered a SubjectAccessReview (config/credentials.h: a
// MUTUAL credentialName's client key is used only for such a pod's account).
struct SecretAccess {
  std::string ns;
  std::string service_account;
  bool allowed = false;
  std::string reason;  // the review's reason, or why it could not be asked
  bool operator==(const SecretAccess&) const = default;
};

// Everything read from a source, in input order. Objects are shared and
// immutable (SharedList): copying a state, as every update does, copies
// pointers.
struct ClusterState {
  SharedList<Namespace> namespaces;
  SharedList<Pod> pods;
  SharedList<Service> services;
  SharedList<ServiceEndpoints> endpoints;
  SharedList<PeerAuthentication> peer_authentications;
  SharedList<DestinationRule> destination_rules;
  SharedList<ControlPlane> control_planes;
  SharedList<AuthorizationPolicy> authorization_policies;
  SharedList<ServiceEntry> service_entries;
  SharedList<MemberRoll> member_rolls;
  SharedList<Secret> secrets;
  SharedList<ConfigMap> config_maps;  // those configmap:// credentials name (the mesh config is a ControlPlane)
  SharedList<SecretAccess> secret_access;
  // Set by a source that asks SubjectAccessReviews (the Kubernetes API): a
  // MUTUAL credentialName then needs the client's account allowed. Manifests
  // hold Secrets their writer chose to give: no review.
  bool secret_access_reviewed = false;

  void append(const ClusterState& other);
  [[nodiscard]] std::size_t objectCount() const;
  bool operator==(const ClusterState&) const = default;
};

}  // namespace meshlock::config

template <typename Tag>
struct std::hash<meshlock::config::StrongString<Tag>> {
  std::size_t operator()(const meshlock::config::StrongString<Tag>& s) const noexcept {
    return std::hash<std::string>{}(s.str());
  }
};

template <>
struct std::hash<meshlock::config::IpAddress> {
  std::size_t operator()(const meshlock::config::IpAddress& ip) const noexcept {
    std::size_t h = 1469598103934665603ull;
    for (uint8_t b : ip.bytes()) h = (h ^ b) * 1099511628211ull;
    return h ^ (ip.isV4() ? 4 : 6);
  }
};
