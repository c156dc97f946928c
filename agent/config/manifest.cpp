// YAML/JSON manifests → ClusterState. yaml-cpp throws; every exception stops
// at the document (or file) boundary and becomes a ManifestError.
#include "config/manifest.h"

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <fstream>
#include <sstream>
#include <system_error>

namespace meshlock::config {
namespace {

// Thrown inside one document's parse only; caught in parseDocument.
struct FieldError {
  std::string field;
  std::string message;
};

std::string join(std::string_view path, std::string_view key) {
  if (path.empty()) return std::string(key);
  return std::string(path) + "." + std::string(key);
}

std::string indexed(std::string_view path, std::size_t i) {
  return std::string(path) + "[" + std::to_string(i) + "]";
}

[[noreturn]] void failAt(std::string field, std::string message) {
  throw FieldError{std::move(field), std::move(message)};
}

// The two trees one decoder reads: yaml-cpp nodes (manifest files) and
// nlohmann::json values (the Kubernetes API). Both say the same things in
// the same words, so an object decodes (and fails) alike from either source.
class YamlTree {
 public:
  YamlTree() : node_(YAML::NodeType::Undefined) {}
  explicit YamlTree(YAML::Node node) : node_(std::move(node)) {}
  [[nodiscard]] bool defined() const { return node_.IsDefined(); }
  [[nodiscard]] bool null() const { return node_.IsNull(); }
  [[nodiscard]] bool isMap() const { return node_.IsMap(); }
  [[nodiscard]] bool isList() const { return node_.IsSequence(); }
  [[nodiscard]] bool isScalar() const { return node_.IsScalar(); }
  [[nodiscard]] std::string scalar() const { return node_.Scalar(); }
  [[nodiscard]] YamlTree child(std::string_view key) const { return YamlTree(node_[std::string(key)]); }
  [[nodiscard]] std::size_t size() const { return node_.size(); }
  [[nodiscard]] YamlTree item(std::size_t i) const { return YamlTree(node_[i]); }
  // nullopt when a key is not a scalar.
  [[nodiscard]] std::optional<std::vector<std::pair<std::string, YamlTree>>> entries() const {
    std::vector<std::pair<std::string, YamlTree>> out;
    for (const auto& kv : node_) {
      if (!kv.first.IsScalar()) return std::nullopt;
      out.emplace_back(kv.first.Scalar(), YamlTree(kv.second));
    }
    return out;
  }
  [[nodiscard]] std::string_view typeName() const {
    switch (node_.Type()) {
      case YAML::NodeType::Map: return "a map";
      case YAML::NodeType::Sequence: return "a list";
      case YAML::NodeType::Scalar: return "a scalar";
      case YAML::NodeType::Null: return "null";
      default: return "nothing";
    }
  }

 private:
  YAML::Node node_;
};

// A JSON value by pointer (nullptr: absent); the document outlives the decode.
// Numbers and booleans read as the text YAML would have given.
class JsonTree {
 public:
  JsonTree() = default;
  explicit JsonTree(const nlohmann::json* value) : value_(value) {}
  [[nodiscard]] bool defined() const { return value_ != nullptr; }
  [[nodiscard]] bool null() const { return value_ != nullptr && value_->is_null(); }
  [[nodiscard]] bool isMap() const { return value_ != nullptr && value_->is_object(); }
  [[nodiscard]] bool isList() const { return value_ != nullptr && value_->is_array(); }
  [[nodiscard]] bool isScalar() const { return value_ != nullptr && value_->is_primitive() && !value_->is_null(); }
  [[nodiscard]] std::string scalar() const {
    if (value_->is_string()) return value_->get_ref<const std::string&>();
    if (value_->is_boolean()) return value_->get<bool>() ? "true" : "false";
    if (value_->is_number_integer()) return std::to_string(value_->get<int64_t>());
    if (value_->is_number_unsigned()) return std::to_string(value_->get<uint64_t>());
    return value_->dump();
  }
  [[nodiscard]] JsonTree child(std::string_view key) const {
    auto it = value_->find(key);
    return JsonTree(it == value_->end() ? nullptr : &*it);
  }
  [[nodiscard]] std::size_t size() const { return value_->size(); }
  [[nodiscard]] JsonTree item(std::size_t i) const { return JsonTree(&(*value_)[i]); }
  [[nodiscard]] std::optional<std::vector<std::pair<std::string, JsonTree>>> entries() const {
    std::vector<std::pair<std::string, JsonTree>> out;
    out.reserve(value_->size());
    for (auto it = value_->begin(); it != value_->end(); ++it) out.emplace_back(it.key(), JsonTree(&it.value()));
    return out;
  }
  [[nodiscard]] std::string_view typeName() const {
    if (value_ == nullptr) return "nothing";
    if (value_->is_object()) return "a map";
    if (value_->is_array()) return "a list";
    if (value_->is_null()) return "null";
    return "a scalar";
  }

 private:
  const nlohmann::json* value_ = nullptr;
};

// A node and the path that led to it, for error messages.
template <typename Tree>
class At {
 public:
  At(Tree node, std::string path) : node_(std::move(node)), path_(std::move(path)) {}

  [[nodiscard]] bool present() const { return node_.defined() && !node_.null(); }
  [[nodiscard]] bool defined() const { return node_.defined(); }
  [[nodiscard]] bool isMap() const { return node_.isMap(); }
  [[nodiscard]] bool isList() const { return node_.isList(); }
  [[nodiscard]] std::string_view typeName() const { return node_.typeName(); }
  [[nodiscard]] const std::string& path() const { return path_; }

  // The child `key` of a map (absent if this is absent).
  [[nodiscard]] At operator[](std::string_view key) const {
    if (!present()) return At(Tree(), join(path_, key));
    if (!node_.isMap()) failAt(path_, "expected a map, found " + std::string(typeName()));
    return At(node_.child(key), join(path_, key));
  }

  [[nodiscard]] std::vector<At> list() const {
    std::vector<At> out;
    if (!present()) return out;
    if (!node_.isList()) failAt(path_, "expected a list, found " + std::string(typeName()));
    const std::size_t n = node_.size();
    out.reserve(n);
    for (std::size_t i = 0; i < n; ++i) out.emplace_back(node_.item(i), indexed(path_, i));
    return out;
  }

  [[nodiscard]] std::vector<std::pair<std::string, At>> entries() const {
    std::vector<std::pair<std::string, At>> out;
    if (!present()) return out;
    if (!node_.isMap()) failAt(path_, "expected a map, found " + std::string(typeName()));
    auto kvs = node_.entries();
    if (!kvs) failAt(path_, "map key is not a scalar");
    for (auto& [key, value] : *kvs) {
      std::string child_path = join(path_, key);
      out.emplace_back(std::move(key), At(std::move(value), std::move(child_path)));
    }
    return out;
  }

  [[nodiscard]] std::optional<std::string> optString() const {
    if (!present()) return std::nullopt;
    if (!node_.isScalar()) failAt(path_, "expected a string, found " + std::string(typeName()));
    return node_.scalar();
  }
  [[nodiscard]] std::string string(std::string fallback = {}) const {
    return optString().value_or(std::move(fallback));
  }
  [[nodiscard]] std::string required() const {
    auto s = optString();
    if (!s || s->empty()) failAt(path_, "required field is missing");
    return *s;
  }

  [[nodiscard]] std::optional<bool> optBool() const {
    auto s = optString();
    if (!s) return std::nullopt;
    if (*s == "true" || *s == "True" || *s == "TRUE") return true;
    if (*s == "false" || *s == "False" || *s == "FALSE") return false;
    failAt(path_, "expected true or false, found \"" + *s + "\"");
  }

  [[nodiscard]] std::optional<int64_t> optInt() const {
    auto s = optString();
    if (!s) return std::nullopt;
    int64_t v = 0;
    auto [end, ec] = std::from_chars(s->data(), s->data() + s->size(), v);
    if (ec != std::errc() || end != s->data() + s->size()) {
      failAt(path_, "expected a number, found \"" + *s + "\"");
    }
    return v;
  }

  [[nodiscard]] std::optional<uint16_t> optPort() const {
    auto v = optInt();
    if (!v) return std::nullopt;
    if (*v < 1 || *v > 65535) failAt(path_, "port " + std::to_string(*v) + " is not in 1..65535");
    return static_cast<uint16_t>(*v);
  }

  [[nodiscard]] uint16_t requiredPort() const {
    auto port = optPort();
    if (!port) failAt(path_, "required field is missing");
    return *port;
  }

  [[nodiscard]] Labels labels() const {
    Labels out;
    for (auto& [key, value] : entries()) out[key] = value.string();
    return out;
  }

  [[nodiscard]] std::vector<std::string> strings() const {
    std::vector<std::string> out;
    for (const At& item : list()) out.push_back(item.string());
    return out;
  }

  [[nodiscard]] std::optional<IpAddress> optIp() const {
    auto s = optString();
    if (!s || s->empty() || *s == "None") return std::nullopt;
    auto ip = IpAddress::parse(*s);
    if (!ip) failAt(path_, "\"" + *s + "\" is not an IP address");
    return ip;
  }

 private:
  Tree node_;
  std::string path_;
};

template <typename N>
PeerMode peerModeAt(const At<N>& at) {
  std::string text = at.string();
  if (text.empty()) return PeerMode::kUnset;
  auto mode = parsePeerMode(text);
  if (!mode) failAt(at.path(), "unknown mode \"" + text + "\" (want UNSET, DISABLE, PERMISSIVE or STRICT)");
  return *mode;
}

template <typename N>
TlsVersion tlsVersionAt(const At<N>& at) {
  std::string text = at.string();
  auto v = parseTlsVersion(text);
  if (!v) failAt(at.path(), "unknown TLS version \"" + text + "\" (want TLS_AUTO, TLSV1_2 or TLSV1_3)");
  return *v;
}

template <typename N>
ClientTlsSettings tlsAt(const At<N>& at) {
  ClientTlsSettings tls;
  std::string mode = at["mode"].string("DISABLE");
  auto parsed = parseTlsMode(mode);
  if (!parsed) {
    failAt(at["mode"].path(), "unknown TLS mode \"" + mode + "\" (want DISABLE, SIMPLE, MUTUAL or ISTIO_MUTUAL)");
  }
  tls.mode = *parsed;
  tls.sni = at["sni"].string();
  tls.subject_alt_names = at["subjectAltNames"].strings();
  tls.ca_certificates = at["caCertificates"].string();
  tls.client_certificate = at["clientCertificate"].string();
  tls.private_key = at["privateKey"].string();
  tls.credential_name = at["credentialName"].string();
  tls.insecure_skip_verify = at["insecureSkipVerify"].optBool().value_or(false);
  return tls;
}

// mTLS- and identity-relevant fields meshlock does not apply, per kind, with
// why (docs/policy.md has the full field table). A path segment ending in
// "[]" walks every item of a list.
struct UnappliedField {
  std::string_view path;
  std::string_view why;
};

constexpr std::string_view kWhyCiphers = "meshlock uses BoringSSL's AEAD suites and curves, whatever is configured";
constexpr std::string_view kWhyAliases = "peers of alias trust domains are not accepted (one trust domain per mesh)";

const std::vector<UnappliedField>* unappliedFieldsOf(std::string_view group, std::string_view kind) {
  static const std::vector<UnappliedField> destination_rule = {
      {"spec.trafficPolicy.tls.caCrl", "certificate revocation lists are not checked"},
      {"spec.trafficPolicy.portLevelSettings[].tls.caCrl", "certificate revocation lists are not checked"},
      {"spec.trafficPolicy.tunnel", "tunnelling to the upstream (HTTP CONNECT) is not done"},
      {"spec.trafficPolicy.proxyProtocol", "the PROXY protocol header is not sent"},
  };
  static const std::vector<UnappliedField> service_entry = {
      {"spec.endpoints[].serviceAccount", "secure naming uses subjectAltNames and the selected pods' service accounts"},
      {"spec.endpoints[].network", "multi-network endpoints are not supported"},
  };
  static const std::vector<UnappliedField> istio = {
      {"spec.values.global.caAddress", "certificates come from meshlock's own CA settings (--ca-mode)"},
  };
  static const std::vector<UnappliedField> smcp = {
      {"spec.security.trust.additionalDomains", kWhyAliases},
      {"spec.security.controlPlane.tls.cipherSuites", kWhyCiphers},
      {"spec.security.controlPlane.tls.ecdhCurves", kWhyCiphers},
      {"spec.security.controlPlane.tls.maxProtocolVersion", "meshlock always allows up to TLS 1.3"},
      {"spec.security.certificateAuthority", "certificates come from meshlock's own CA settings (--ca-mode)"},
      {"spec.istio.global.trustDomainAliases", kWhyAliases},
      {"spec.istio.global.tls", kWhyCiphers},
  };
  static const std::vector<UnappliedField> legacy_policy = {
      {"spec.origins", "JWT origins need HTTP: not applicable at L4"},
      {"spec.principalBinding", "JWT principal binding needs HTTP: not applicable at L4"},
  };
  if (group == "networking.istio.io" && kind == "DestinationRule") return &destination_rule;
  if (group == "networking.istio.io" && kind == "ServiceEntry") return &service_entry;
  if (group == "sailoperator.io" && kind == "Istio") return &istio;
  if (group == "install.istio.io" && kind == "IstioOperator") return &istio;
  if (group == "maistra.io" && kind == "ServiceMeshControlPlane") return &smcp;
  if ((group == "authentication.maistra.io" || group == "authentication.istio.io") &&
      (kind == "Policy" || kind == "ServiceMeshPolicy" || kind == "MeshPolicy")) {
    return &legacy_policy;
  }
  return nullptr;
}

// Whether `path` (dot-separated, "name[]" walks a list) is present below `node`.
template <typename N>
bool fieldPresent(const At<N>& node, std::string_view path) {
  if (!node.present()) return false;
  if (path.empty()) return true;
  const std::size_t dot = path.find('.');
  std::string_view segment = path.substr(0, dot);
  const std::string_view rest = dot == std::string_view::npos ? std::string_view() : path.substr(dot + 1);
  if (!node.isMap()) return false;
  if (segment.ends_with("[]")) {
    segment.remove_suffix(2);
    const At<N> list = node[segment];
    if (!list.present() || !list.isList()) return false;
    for (const At<N>& item : list.list()) {
      if (fieldPresent(item, rest)) return true;
    }
    return false;
  }
  return fieldPresent(node[segment], rest);
}

// The MeshConfig fields (Istio's values.meshConfig, IstioOperator's
// meshConfig, the istio ConfigMap's data.mesh), relative to the MeshConfig.
const std::vector<UnappliedField>& unappliedMeshConfigFields() {
  static const std::vector<UnappliedField> fields = {
      {"trustDomainAliases", kWhyAliases},
      {"meshMTLS.ecdhCurves", kWhyCiphers},
      {"tlsDefaults", kWhyCiphers},
      {"caCertificates", "extra roots for the mesh are not trusted"},
  };
  return fields;
}

template <typename N>
void noteUnapplied(const At<N>& node, const std::vector<UnappliedField>& fields, std::string_view prefix,
                   std::vector<std::string>& out) {
  for (const UnappliedField& f : fields) {
    if (fieldPresent(node, f.path)) out.push_back(std::string(prefix) + std::string(f.path) + ": " + std::string(f.why));
  }
}

template <typename N>
std::vector<std::string> unappliedFieldsIn(const At<N>& doc, std::string_view group, std::string_view kind) {
  std::vector<std::string> out;
  if (const auto* fields = unappliedFieldsOf(group, kind)) noteUnapplied(doc, *fields, "", out);
  if (group == "sailoperator.io" && kind == "Istio") {
    noteUnapplied(doc["spec"]["values"]["meshConfig"], unappliedMeshConfigFields(), "spec.values.meshConfig.", out);
  } else if (group == "install.istio.io" && kind == "IstioOperator") {
    noteUnapplied(doc["spec"]["meshConfig"], unappliedMeshConfigFields(), "spec.meshConfig.", out);
  }
  return out;
}

template <typename N>
ObjectMeta metaAt(const At<N>& doc, std::string kind, std::string api_version, bool namespaced,
                  const SourceLocation& where, const std::optional<std::string>& default_namespace) {
  ObjectMeta meta;
  At md = doc["metadata"];
  if (!md.present()) failAt(md.path(), "required field is missing");
  meta.ref.kind = std::move(kind);
  meta.ref.name = md["name"].required();
  if (namespaced) {
    meta.ref.ns = md["namespace"].string();
    if (meta.ref.ns.empty()) {
      if (!default_namespace) {
        failAt(md["namespace"].path(), meta.ref.kind + " " + meta.ref.name +
                                           " has no namespace: give it one, or pass -n NAMESPACE to place "
                                           "objects without one (as kubectl apply -n does)");
      }
      meta.ref.ns = *default_namespace;
    }
  }
  meta.api_version = std::move(api_version);
  meta.uid = md["uid"].string();
  meta.labels = md["labels"].labels();
  meta.creation_timestamp = md["creationTimestamp"].string();
  for (const At<N>& owner : md["ownerReferences"].list()) {
    const bool controller = owner["controller"].optBool().value_or(false);
    if (meta.owner && !controller) continue;
    meta.owner = OwnerRef{owner["kind"].string(), owner["name"].string()};
    if (controller) break;
  }
  meta.source = where;
  const std::string group = meta.api_version.find('/') == std::string::npos
                                ? std::string()
                                : meta.api_version.substr(0, meta.api_version.find('/'));
  meta.unapplied = unappliedFieldsIn(doc, group, meta.ref.kind);
  return meta;
}

template <typename N>
void parsePod(const At<N>& doc, ObjectMeta meta, ClusterState& out) {
  Pod pod;
  pod.meta = std::move(meta);
  pod.uid = PodUid(pod.meta.uid.empty() ? pod.meta.ref.ns + "/" + pod.meta.ref.name : pod.meta.uid);
  At spec = doc["spec"];
  std::string sa = spec["serviceAccountName"].string();
  if (sa.empty()) sa = spec["serviceAccount"].string();
  if (!sa.empty()) pod.service_account = sa;
  pod.node_name = spec["nodeName"].string();
  pod.host_network = spec["hostNetwork"].optBool().value_or(false);
  pod.ztunnel = doc["metadata"]["annotations"][kAmbientRedirectionAnnotation].string() == "enabled";
  if (auto tunnel = pod.meta.labels.find(kTunnelLabel); tunnel != pod.meta.labels.end())
    pod.native_tunnel = tunnel->second == "http";
  for (const char* list : {"containers", "initContainers"}) {
    for (const At<N>& c : spec[list].list()) {
      // Init containers only count when they are sidecars (restartPolicy: Always).
      if (std::string_view(list) == "initContainers" && c["restartPolicy"].string() != "Always") continue;
      if (c["name"].string() == kIstioProxyContainer) pod.istio_proxy = true;
      for (const At<N>& p : c["ports"].list()) {
        ContainerPort port;
        port.port = p["containerPort"].requiredPort();
        port.name = p["name"].string();
        port.protocol = p["protocol"].string("TCP");
        pod.ports.push_back(std::move(port));
      }
    }
  }
  At status = doc["status"];
  pod.ip = status["podIP"].optIp();
  for (const At<N>& entry : status["podIPs"].list()) {
    if (auto ip = entry["ip"].optIp()) pod.ips.push_back(*ip);
  }
  if (pod.ip && std::find(pod.ips.begin(), pod.ips.end(), *pod.ip) == pod.ips.end()) {
    pod.ips.insert(pod.ips.begin(), *pod.ip);
  }
  if (!pod.ip && !pod.ips.empty()) pod.ip = pod.ips.front();
  std::string phase = status["phase"].string();
  pod.terminated = phase == "Succeeded" || phase == "Failed";
  out.pods.push_back(std::move(pod));
}

template <typename N>
void parseService(const At<N>& doc, ObjectMeta meta, ClusterState& out) {
  Service svc;
  svc.meta = std::move(meta);
  At spec = doc["spec"];
  svc.type = spec["type"].string("ClusterIP");
  svc.external_name = spec["externalName"].string();
  svc.cluster_ip = spec["clusterIP"].optIp();
  for (const At<N>& ip : spec["clusterIPs"].list()) {
    if (auto parsed = ip.optIp()) svc.cluster_ips.push_back(*parsed);
  }
  if (svc.cluster_ip && std::find(svc.cluster_ips.begin(), svc.cluster_ips.end(), *svc.cluster_ip) ==
                            svc.cluster_ips.end()) {
    svc.cluster_ips.insert(svc.cluster_ips.begin(), *svc.cluster_ip);
  }
  if (!svc.cluster_ip && !svc.cluster_ips.empty()) svc.cluster_ip = svc.cluster_ips.front();
  if (spec["selector"].present()) {
    Labels selector = spec["selector"].labels();
    if (!selector.empty()) svc.selector = std::move(selector);
  }
  for (const At<N>& p : spec["ports"].list()) {
    ServicePort port;
    port.port = p["port"].requiredPort();
    port.name = p["name"].string();
    port.protocol = p["protocol"].string("TCP");
    At target = p["targetPort"];
    if (!target.present()) {
      port.target.number = port.port;
    } else {
      std::string text = target.string();
      bool numeric = !text.empty() && text.find_first_not_of("0123456789") == std::string::npos;
      if (numeric) {
        port.target.number = *target.optPort();
      } else {
        port.target.name = text;
      }
    }
    svc.ports.push_back(std::move(port));
  }
  out.services.push_back(std::move(svc));
}

template <typename N>
EndpointAddress endpointAddressAt(const At<N>& addr, std::string_view ip_field) {
  EndpointAddress a;
  auto ip = addr[ip_field].optIp();
  if (!ip) failAt(addr[ip_field].path(), "required field is missing");
  a.ip = *ip;
  At ref = addr["targetRef"];
  if (ref.present() && ref["kind"].string() == "Pod") a.pod_name = ref["name"].string();
  return a;
}

template <typename N>
void parseEndpoints(const At<N>& doc, ObjectMeta meta, ClusterState& out) {
  ServiceEndpoints eps;
  eps.meta = std::move(meta);
  eps.service = eps.meta.ref.name;
  for (const At<N>& subset : doc["subsets"].list()) {
    for (const char* list : {"addresses", "notReadyAddresses"}) {
      for (const At<N>& addr : subset[list].list()) eps.addresses.push_back(endpointAddressAt(addr, "ip"));
    }
    for (const At<N>& p : subset["ports"].list()) {
      eps.ports.push_back({p["name"].string(), p["port"].requiredPort()});
    }
  }
  out.endpoints.push_back(std::move(eps));
}

template <typename N>
void parseEndpointSlice(const At<N>& doc, ObjectMeta meta, ClusterState& out) {
  ServiceEndpoints eps;
  eps.meta = std::move(meta);
  auto it = eps.meta.labels.find("kubernetes.io/service-name");
  if (it == eps.meta.labels.end()) {
    failAt("metadata.labels", "EndpointSlice without the kubernetes.io/service-name label");
  }
  eps.service = it->second;
  for (const At<N>& ep : doc["endpoints"].list()) {
    At ref = ep["targetRef"];
    std::string pod = ref.present() && ref["kind"].string() == "Pod" ? ref["name"].string() : "";
    for (const At<N>& addr : ep["addresses"].list()) {
      auto ip = addr.optIp();
      if (ip) eps.addresses.push_back({*ip, pod});
    }
  }
  for (const At<N>& p : doc["ports"].list()) {
    auto port = p["port"].optPort();
    if (port) eps.ports.push_back({p["name"].string(), *port});
  }
  out.endpoints.push_back(std::move(eps));
}

template <typename N>
void parsePeerAuthentication(const At<N>& doc, ObjectMeta meta, ClusterState& out) {
  PeerAuthentication pa;
  pa.meta = std::move(meta);
  At spec = doc["spec"];
  if (spec["selector"].present()) pa.selector = spec["selector"]["matchLabels"].labels();
  At mtls = spec["mtls"];
  if (mtls.present()) pa.mode = peerModeAt(mtls["mode"]);
  pa.port_level_declared = spec["portLevelMtls"].present();
  for (auto& [key, value] : spec["portLevelMtls"].entries()) {
    int64_t port = 0;
    auto [end, ec] = std::from_chars(key.data(), key.data() + key.size(), port);
    if (ec != std::errc() || end != key.data() + key.size() || port < 1 || port > 65535) {
      failAt(value.path(), "portLevelMtls key \"" + key + "\" is not a port number");
    }
    pa.port_level[static_cast<uint16_t>(port)] = peerModeAt(value["mode"]);
  }
  out.peer_authentications.push_back(std::move(pa));
}

// security.istio.io AuthorizationPolicy. Every field is kept as written; the
// fields that need an HTTP request are recorded by name (what the L4
// evaluation does with them is agent/policy/authorization.cpp's business).
template <typename N>
void parseAuthorizationPolicy(const At<N>& doc, ObjectMeta meta, ClusterState& out) {
  AuthorizationPolicy ap;
  ap.meta = std::move(meta);
  At spec = doc["spec"];
  if (spec["selector"].present()) ap.selector = spec["selector"]["matchLabels"].labels();
  auto targetRef = [](const At<N>& ref) { return ref["kind"].string() + "/" + ref["name"].string(); };
  if (spec["targetRef"].present()) ap.target_refs.push_back(targetRef(spec["targetRef"]));
  for (const At<N>& ref : spec["targetRefs"].list()) ap.target_refs.push_back(targetRef(ref));
  const std::string action = spec["action"].string("ALLOW");
  if (action == "ALLOW") ap.action = AuthzAction::kAllow;
  else if (action == "DENY") ap.action = AuthzAction::kDeny;
  else if (action == "AUDIT") ap.action = AuthzAction::kAudit;
  else if (action == "CUSTOM") ap.action = AuthzAction::kCustom;
  else failAt(spec["action"].path(), "unknown action \"" + action + "\" (want ALLOW, DENY, AUDIT or CUSTOM)");
  ap.provider = spec["provider"]["name"].string();
  auto l7 = [](const At<N>& at, std::initializer_list<const char*> names, std::vector<std::string>& found) {
    for (const char* name : names)
      if (at[name].present()) found.emplace_back(name);
  };
  for (const At<N>& rule_at : spec["rules"].list()) {
    AuthzRule rule;
    for (const At<N>& from : rule_at["from"].list()) {
      At source = from["source"];
      AuthzSource s;
      s.principals = source["principals"].strings();
      s.not_principals = source["notPrincipals"].strings();
      s.namespaces = source["namespaces"].strings();
      s.not_namespaces = source["notNamespaces"].strings();
      s.service_accounts = source["serviceAccounts"].strings();
      s.not_service_accounts = source["notServiceAccounts"].strings();
      s.ip_blocks = source["ipBlocks"].strings();
      s.not_ip_blocks = source["notIpBlocks"].strings();
      s.remote_ip_blocks = source["remoteIpBlocks"].strings();
      s.not_remote_ip_blocks = source["notRemoteIpBlocks"].strings();
      l7(source, {"requestPrincipals", "notRequestPrincipals"}, s.l7_fields);
      rule.from.push_back(std::move(s));
    }
    for (const At<N>& to : rule_at["to"].list()) {
      At operation = to["operation"];
      AuthzOperation o;
      o.ports = operation["ports"].strings();
      o.not_ports = operation["notPorts"].strings();
      l7(operation, {"hosts", "notHosts", "methods", "notMethods", "paths", "notPaths"}, o.l7_fields);
      rule.to.push_back(std::move(o));
    }
    for (const At<N>& when : rule_at["when"].list()) {
      rule.when.push_back(AuthzCondition{.key = when["key"].required(),
                                         .values = when["values"].strings(),
                                         .not_values = when["notValues"].strings()});
    }
    ap.rules.push_back(std::move(rule));
  }
  out.authorization_policies.push_back(std::move(ap));
}

// authentication.maistra.io/v1 (and authentication.istio.io/v1alpha1) Policy,
// ServiceMeshPolicy, MeshPolicy: `peers: [{mtls: {}}]` is STRICT,
// `mtls: {mode: PERMISSIVE}` PERMISSIVE; no mtls peer at all means mTLS is not
// used (DISABLE), as in Istio 1.x.
template <typename N>
void parseLegacyPolicy(const At<N>& doc, ObjectMeta meta, bool mesh_wide, ClusterState& out) {
  PeerAuthentication pa;
  pa.meta = std::move(meta);
  pa.mesh_wide_kind = mesh_wide;
  At spec = doc["spec"];
  pa.mode = PeerMode::kDisable;
  for (const At<N>& peer : spec["peers"].list()) {
    if (!peer.isMap()) failAt(peer.path(), "expected a map, found " + std::string(peer.typeName()));
    At at = peer["mtls"];
    if (!at.defined()) continue;
    std::string mode = at["mode"].string("STRICT");
    if (mode == "STRICT") {
      pa.mode = PeerMode::kStrict;
    } else if (mode == "PERMISSIVE") {
      pa.mode = PeerMode::kPermissive;
    } else {
      failAt(at["mode"].path(), "unknown mode \"" + mode + "\" (want STRICT or PERMISSIVE)");
    }
    break;
  }
  for (const At<N>& target : spec["targets"].list()) {
    LegacyPolicyTarget t;
    t.service = target["name"].required();
    for (const At<N>& port : target["ports"].list()) {
      if (auto number = port["number"].optPort()) {
        t.port_numbers.push_back(*number);
      } else if (auto name = port["name"].optString(); name && !name->empty()) {
        t.port_names.push_back(*name);
      } else {
        failAt(port.path(), "a target port needs number or name");
      }
    }
    pa.maistra_targets.push_back(std::move(t));
  }
  out.peer_authentications.push_back(std::move(pa));
}

template <typename N>
void parseDestinationRule(const At<N>& doc, ObjectMeta meta, ClusterState& out) {
  DestinationRule dr;
  dr.meta = std::move(meta);
  At spec = doc["spec"];
  dr.host = spec["host"].required();
  dr.export_to = spec["exportTo"].strings();
  if (spec["workloadSelector"].present()) {
    Labels selector = spec["workloadSelector"]["matchLabels"].labels();
    if (!selector.empty()) dr.workload_selector = std::move(selector);
  }
  At policy = spec["trafficPolicy"];
  dr.has_traffic_policy = policy.present();
  if (policy["tls"].present()) dr.tls = tlsAt(policy["tls"]);
  for (const At<N>& setting : policy["portLevelSettings"].list()) {
    PortTlsSettings pls;
    pls.port = setting["port"]["number"].requiredPort();
    if (setting["tls"].present()) pls.tls = tlsAt(setting["tls"]);
    dr.port_level.push_back(std::move(pls));
  }
  for (const At<N>& subset : spec["subsets"].list()) {
    if (subset["trafficPolicy"]["tls"].present()) dr.subsets_with_tls.push_back(subset["name"].string());
  }
  out.destination_rules.push_back(std::move(dr));
}

// networking.istio.io ServiceEntry: what DestinationRule lookup and the
// destination resolution need (hosts, addresses, ports, location, resolution,
// endpoints, workloadSelector, exportTo, subjectAltNames).
template <typename N>
void parseServiceEntry(const At<N>& doc, ObjectMeta meta, ClusterState& out) {
  ServiceEntry se;
  se.meta = std::move(meta);
  At spec = doc["spec"];
  se.hosts = spec["hosts"].strings();
  if (se.hosts.empty()) failAt(spec["hosts"].path(), "required field is missing (at least one host)");
  se.addresses = spec["addresses"].strings();
  for (const At<N>& port : spec["ports"].list()) {
    ServiceEntryPort p;
    p.number = port["number"].requiredPort();
    p.name = port["name"].string();
    p.protocol = port["protocol"].string();
    p.target_port = port["targetPort"].optPort().value_or(0);
    se.ports.push_back(std::move(p));
  }
  const std::string location = spec["location"].string("MESH_EXTERNAL");
  if (location == "MESH_EXTERNAL") {
    se.location = ServiceEntryLocation::kMeshExternal;
  } else if (location == "MESH_INTERNAL") {
    se.location = ServiceEntryLocation::kMeshInternal;
  } else {
    failAt(spec["location"].path(), "unknown location \"" + location + "\" (want MESH_EXTERNAL or MESH_INTERNAL)");
  }
  const std::string resolution = spec["resolution"].string("NONE");
  if (resolution == "NONE") {
    se.resolution = ServiceEntryResolution::kNone;
  } else if (resolution == "STATIC") {
    se.resolution = ServiceEntryResolution::kStatic;
  } else if (resolution == "DNS") {
    se.resolution = ServiceEntryResolution::kDns;
  } else if (resolution == "DNS_ROUND_ROBIN") {
    se.resolution = ServiceEntryResolution::kDnsRoundRobin;
  } else {
    failAt(spec["resolution"].path(),
           "unknown resolution \"" + resolution + "\" (want NONE, STATIC, DNS or DNS_ROUND_ROBIN)");
  }
  for (const At<N>& endpoint : spec["endpoints"].list()) {
    ServiceEntryEndpoint e;
    e.address = endpoint["address"].string();
    if (!e.address.empty()) e.ip = IpAddress::parse(e.address);
    for (auto& [name, port] : endpoint["ports"].entries()) {
      auto number = port.optPort();
      if (number) e.ports[name] = *number;
    }
    e.labels = endpoint["labels"].labels();
    se.endpoints.push_back(std::move(e));
  }
  if (spec["workloadSelector"].present()) se.workload_selector = spec["workloadSelector"]["labels"].labels();
  se.export_to = spec["exportTo"].strings();
  se.subject_alt_names = spec["subjectAltNames"].strings();
  out.service_entries.push_back(std::move(se));
}

// metav1.LabelSelector; an unknown operator is an error (the API server rejects it too).
template <typename N>
LabelSelector labelSelectorAt(const At<N>& at) {
  LabelSelector selector;
  selector.match_labels = at["matchLabels"].labels();
  for (const At<N>& e : at["matchExpressions"].list()) {
    LabelSelector::Requirement r;
    r.key = e["key"].required();
    r.op = e["operator"].required();
    if (r.op != "In" && r.op != "NotIn" && r.op != "Exists" && r.op != "DoesNotExist") {
      failAt(e["operator"].path(), "unknown operator \"" + r.op + "\" (want In, NotIn, Exists or DoesNotExist)");
    }
    r.values = e["values"].strings();
    selector.match_expressions.push_back(std::move(r));
  }
  return selector;
}

// maistra.io/v1 ServiceMeshMemberRoll.
template <typename N>
void parseMemberRoll(const At<N>& doc, ObjectMeta meta, ClusterState& out) {
  MemberRoll roll;
  roll.meta = std::move(meta);
  At spec = doc["spec"];
  roll.members = spec["members"].strings();
  for (const At<N>& selector : spec["memberSelectors"].list()) roll.member_selectors.push_back(labelSelectorAt(selector));
  out.member_rolls.push_back(std::move(roll));
}

// core v1 Secret (config/credentials.h says which keys are read).
template <typename N>
void parseSecret(const At<N>& doc, ObjectMeta meta, ClusterState& out) {
  Secret secret;
  secret.meta = std::move(meta);
  secret.type = doc["type"].string("Opaque");
  for (auto& [key, value] : doc["data"].entries()) {
    auto bytes = decodeBase64(value.string());
    if (!bytes) failAt(value.path(), "not valid base64");
    secret.data[key] = std::move(*bytes);
  }
  for (auto& [key, value] : doc["stringData"].entries()) secret.data[key] = value.string();
  out.secrets.push_back(std::move(secret));
}

// core v1 ConfigMap other than the mesh config: what a `configmap://`
// credentialName may name (only its CA keys are read). binaryData is not:
// Istio reads `data` (ExtractRootFromString).
template <typename N>
void parseConfigMap(const At<N>& doc, ObjectMeta meta, ClusterState& out) {
  ConfigMap map;
  map.meta = std::move(meta);
  for (auto& [key, value] : doc["data"].entries()) map.data[key] = value.string();
  out.config_maps.push_back(std::move(map));
}

template <typename N>
void meshConfigAt(const At<N>& mc, MeshConfigValues& values) {
  for (const At<N>& selector : mc["discoverySelectors"].list()) {
    values.discovery_selectors.push_back(labelSelectorAt(selector));
  }
  values.enable_auto_mtls = mc["enableAutoMtls"].optBool();
  if (auto td = mc["trustDomain"].optString(); td && !td->empty()) values.trust_domain = td;
  if (auto root = mc["rootNamespace"].optString(); root && !root->empty()) values.root_namespace = root;
  At version = mc["meshMTLS"]["minProtocolVersion"];
  if (version.present()) values.min_protocol_version = tlsVersionAt(version);
  if (At exports = mc["defaultDestinationRuleExportTo"]; exports.present()) {
    std::vector<std::string> list;
    for (const At<N>& e : exports.list()) list.push_back(e.string());
    values.default_destination_rule_export_to = std::move(list);
  }
}

// sailoperator.io Istio (meshConfig under spec.values) and install.istio.io
// IstioOperator (spec.meshConfig, as istioctl installs): istiod runs in
// spec.namespace (default istio-system).
template <typename N>
void parseIstio(const At<N>& doc, ObjectMeta meta, ControlPlaneKind kind, ClusterState& out) {
  ControlPlane cp;
  cp.meta = std::move(meta);
  cp.kind = kind;
  At spec = doc["spec"];
  cp.control_namespace = spec["namespace"].string("istio-system");
  meshConfigAt(kind == ControlPlaneKind::kIstio ? spec["values"]["meshConfig"] : spec["meshConfig"], cp.mesh);
  out.control_planes.push_back(std::move(cp));
}

// Maistra writes TLS versions as TLSv1_0 .. TLSv1_3 (and TLS_AUTO). meshlock
// never goes below TLS 1.2: an older minimum means TLS 1.2 (docs/policy.md).
template <typename N>
TlsVersion smcpTlsVersionAt(const At<N>& at) {
  const std::string text = at.string();
  if (text == "TLS_AUTO") return TlsVersion::kAuto;
  if (text == "TLSv1_0" || text == "TLSv1_1" || text == "TLSv1_2") return TlsVersion::kTls12;
  if (text == "TLSv1_3") return TlsVersion::kTls13;
  failAt(at.path(), "unknown TLS version \"" + text + "\" (want TLS_AUTO, TLSv1_0, TLSv1_1, TLSv1_2 or TLSv1_3)");
}

template <typename N>
void parseSmcp(const At<N>& doc, ObjectMeta meta, bool v2, ClusterState& out) {
  ControlPlane cp;
  cp.meta = std::move(meta);
  cp.control_namespace = cp.meta.ref.ns;
  At spec = doc["spec"];
  if (v2) {
    cp.kind = ControlPlaneKind::kSmcpV2;
    At dp = spec["security"]["dataPlane"];
    cp.mesh_mtls = dp["mtls"].optBool().value_or(false);
    cp.mesh.enable_auto_mtls = dp["automtls"].optBool();
    if (auto td = spec["security"]["trust"]["domain"].optString(); td && !td->empty()) cp.mesh.trust_domain = td;
    // "the minimum and maximum TLS version used by mesh components" (OSSM 2.x
    // security docs; maistra/istio-operator sets global.tls.minProtocolVersion).
    At version = spec["security"]["controlPlane"]["tls"]["minProtocolVersion"];
    if (version.present()) cp.mesh.min_protocol_version = smcpTlsVersionAt(version);
  } else {
    cp.kind = ControlPlaneKind::kSmcpV1;
    At global = spec["istio"]["global"];
    cp.mesh_mtls = global["mtls"]["enabled"].optBool().value_or(false);
    // The v1.1 chart's default is `global.mtls.auto: false`, written into the
    // mesh config as enableAutoMtls (maistra/istio-operator
    // resources/helm/v1.1/istio/values.yaml, templates/configmap.yaml).
    cp.mesh.enable_auto_mtls = global["mtls"]["auto"].optBool().value_or(false);
    if (auto td = global["trustDomain"].optString(); td && !td->empty()) cp.mesh.trust_domain = td;
  }
  out.control_planes.push_back(std::move(cp));
}

// The `istio` ConfigMap: `data.mesh` is itself a YAML MeshConfig.
template <typename N>
void parseMeshConfigMap(const At<N>& doc, ObjectMeta meta, ClusterState& out) {
  At mesh = doc["data"]["mesh"];
  ControlPlane cp;
  cp.meta = std::move(meta);
  cp.kind = ControlPlaneKind::kMeshConfigMap;
  cp.control_namespace = cp.meta.ref.ns;
  if (auto text = mesh.optString()) {
    YAML::Node inner;
    try {
      inner = YAML::Load(*text);
    } catch (const YAML::Exception& e) {
      failAt(mesh.path(), "invalid YAML: " + e.msg + " at line " + std::to_string(e.mark.line + 1));
    }
    const At<YamlTree> config(YamlTree(inner), mesh.path());
    meshConfigAt(config, cp.mesh);
    noteUnapplied(config, unappliedMeshConfigFields(), "data.mesh.", cp.meta.unapplied);
  }
  out.control_planes.push_back(std::move(cp));
}

struct DocContext {
  std::string_view origin;
  int document;
  ParsedManifests& out;
  const ParseOptions& options;
  // What the items of an API list leave out (they carry no apiVersion/kind).
  std::string_view default_api_version = {};
  std::string_view default_kind = {};
};

template <typename N>
void parseObject(const At<N>& doc, DocContext& ctx);

// One object (a document, or an item of a List). Errors stop at this boundary.
template <typename N>
void parseObjectGuarded(const At<N>& doc, DocContext& ctx) {
  try {
    parseObject(doc, ctx);
  } catch (const FieldError& e) {
    ctx.out.errors.push_back({std::string(ctx.origin), ctx.document, e.field, e.message});
  } catch (const YAML::Exception& e) {
    ctx.out.errors.push_back({std::string(ctx.origin), ctx.document, doc.path(), e.msg});
  } catch (const std::exception& e) {
    ctx.out.errors.push_back({std::string(ctx.origin), ctx.document, doc.path(), e.what()});
  }
}

template <typename N>
void parseObject(const At<N>& doc, DocContext& ctx) {
  if (!doc.isMap()) failAt(doc.path(), "expected a Kubernetes object (a map), found " + std::string(doc.typeName()));
  std::string api = doc["apiVersion"].present() || ctx.default_api_version.empty()
                        ? doc["apiVersion"].required()
                        : std::string(ctx.default_api_version);
  std::string kind = doc["kind"].present() || ctx.default_kind.empty() ? doc["kind"].required()
                                                                       : std::string(ctx.default_kind);
  SourceLocation where{std::string(ctx.origin), ctx.document};
  std::string group = api.substr(0, api.find('/'));
  if (api.find('/') == std::string::npos) group.clear();  // core "v1"

  if (kind.ends_with("List") && doc["items"].present()) {
    for (const At<N>& item : doc["items"].list()) parseObjectGuarded(item, ctx);
    return;
  }
  ClusterState& out = ctx.out.state;
  if (group.empty() && kind == "Namespace") {
    out.namespaces.push_back({metaAt(doc, kind, api, false, where, ctx.options.default_namespace)});
  } else if (group.empty() && kind == "Pod") {
    parsePod(doc, metaAt(doc, kind, api, true, where, ctx.options.default_namespace), out);
  } else if (group.empty() && kind == "Service") {
    parseService(doc, metaAt(doc, kind, api, true, where, ctx.options.default_namespace), out);
  } else if (group.empty() && kind == "Endpoints") {
    parseEndpoints(doc, metaAt(doc, kind, api, true, where, ctx.options.default_namespace), out);
  } else if (group == "discovery.k8s.io" && kind == "EndpointSlice") {
    parseEndpointSlice(doc, metaAt(doc, kind, api, true, where, ctx.options.default_namespace), out);
  } else if (group == "security.istio.io" && kind == "PeerAuthentication") {
    parsePeerAuthentication(doc, metaAt(doc, kind, api, true, where, ctx.options.default_namespace), out);
  } else if (group == "security.istio.io" && kind == "AuthorizationPolicy") {
    parseAuthorizationPolicy(doc, metaAt(doc, kind, api, true, where, ctx.options.default_namespace), out);
  } else if (group == "networking.istio.io" && kind == "DestinationRule") {
    parseDestinationRule(doc, metaAt(doc, kind, api, true, where, ctx.options.default_namespace), out);
  } else if (group == "networking.istio.io" && kind == "ServiceEntry") {
    parseServiceEntry(doc, metaAt(doc, kind, api, true, where, ctx.options.default_namespace), out);
  } else if (group == "install.istio.io" && kind == "IstioOperator") {
    parseIstio(doc, metaAt(doc, kind, api, true, where, ctx.options.default_namespace), ControlPlaneKind::kIstioOperator,
               out);
  } else if (group == "sailoperator.io" && kind == "Istio") {
    parseIstio(doc, metaAt(doc, kind, api, false, where, ctx.options.default_namespace), ControlPlaneKind::kIstio, out);
  } else if (group == "maistra.io" && kind == "ServiceMeshMemberRoll") {
    parseMemberRoll(doc, metaAt(doc, kind, api, true, where, ctx.options.default_namespace), out);
  } else if (group == "maistra.io" && kind == "ServiceMeshControlPlane") {
    parseSmcp(doc, metaAt(doc, kind, api, true, where, ctx.options.default_namespace), api == "maistra.io/v2", out);
  } else if ((group == "authentication.maistra.io" || group == "authentication.istio.io") && kind == "Policy") {
    parseLegacyPolicy(doc, metaAt(doc, kind, api, true, where, ctx.options.default_namespace), false, out);
  } else if ((group == "authentication.maistra.io" && kind == "ServiceMeshPolicy") ||
             (group == "authentication.istio.io" && kind == "MeshPolicy")) {
    parseLegacyPolicy(doc, metaAt(doc, kind, api, kind != "MeshPolicy", where, ctx.options.default_namespace), true, out);
  } else if (group.empty() && kind == "Secret") {
    parseSecret(doc, metaAt(doc, kind, api, true, where, ctx.options.default_namespace), out);
  } else if (group.empty() && kind == "ConfigMap") {
    ObjectMeta meta = metaAt(doc, kind, api, true, where, ctx.options.default_namespace);
    if (meta.ref.name == "istio") {
      parseMeshConfigMap(doc, std::move(meta), out);
    } else {
      parseConfigMap(doc, std::move(meta), out);
    }
  } else {
    std::string name = doc["metadata"]["name"].string();
    ctx.out.ignored.push_back(where.describe() + ": " + api + " " + kind + " " + name + " (kind not used)");
    ++ctx.out.ignored_kinds[api + " " + kind];
  }
}

}  // namespace

std::string ManifestError::describe() const {
  std::string s = origin;
  if (document >= 0) s += ": document " + std::to_string(document + 1);
  if (!field.empty()) s += ": " + field;
  return s + ": " + message;
}

namespace {

// Splits a multi-document text at "---" lines (and "..." ends) so a syntax
// error in one document does not hide the others.
struct RawDocument {
  std::string_view text;
  int first_line = 0;  // 0-based line of the document's first line in the file
};

std::vector<RawDocument> splitDocuments(std::string_view text) {
  std::vector<RawDocument> docs;
  std::size_t start = 0;
  int start_line = 0;
  int line = 0;
  bool has_content = false;
  std::size_t pos = 0;
  auto flush = [&](std::size_t end) {
    if (has_content) docs.push_back({text.substr(start, end - start), start_line});
    has_content = false;
  };
  while (pos <= text.size()) {
    std::size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    std::string_view l = text.substr(pos, eol - pos);
    bool separator = l.starts_with("---") && (l.size() == 3 || l[3] == ' ' || l[3] == '\t' || l[3] == '\r');
    bool end_marker = l.starts_with("...") && (l.size() == 3 || l[3] == ' ' || l[3] == '\r');
    if (separator || end_marker) {
      flush(pos);
      start = separator ? pos + 3 : eol;  // "--- {a: 1}" keeps the rest of the line
      start_line = line;
      if (separator) {
        std::string_view rest = l.substr(3);
        if (rest.find_first_not_of(" \t\r") != std::string_view::npos && rest.find_first_not_of(" \t\r") != rest.find('#')) {
          has_content = true;
        }
      }
    } else {
      std::size_t first = l.find_first_not_of(" \t\r");
      if (first != std::string_view::npos && l[first] != '#' && l[first] != '%') has_content = true;
    }
    if (eol == text.size()) break;
    pos = eol + 1;
    ++line;
  }
  flush(text.size());
  return docs;
}

}  // namespace

ParsedManifests parseManifests(std::string_view text, std::string_view origin, const ParseOptions& options) {
  ParsedManifests out;
  std::vector<RawDocument> raw;
  try {
    raw = splitDocuments(text);
  } catch (const std::exception& e) {
    out.errors.push_back({std::string(origin), -1, "", std::string("cannot read: ") + e.what()});
    return out;
  }
  for (std::size_t i = 0; i < raw.size(); ++i) {
    DocContext ctx{origin, static_cast<int>(i), out, options};
    YAML::Node node;
    try {
      // The separator line is kept in the text so yaml-cpp's line numbers match the file's.
      node = YAML::Load(std::string(raw[i].text));
    } catch (const YAML::Exception& e) {
      int line = raw[i].first_line + e.mark.line + 1;
      out.errors.push_back({std::string(origin), ctx.document, "",
                            "invalid YAML at line " + std::to_string(line) + ", column " +
                                std::to_string(e.mark.column + 1) + ": " + e.msg});
      continue;
    } catch (const std::exception& e) {
      out.errors.push_back({std::string(origin), ctx.document, "", std::string("cannot parse: ") + e.what()});
      continue;
    }
    if (!node.IsDefined() || node.IsNull()) continue;
    parseObjectGuarded(At<YamlTree>(YamlTree(node), ""), ctx);
  }
  return out;
}

ParsedManifests decodeApiObject(const nlohmann::json& object, std::string_view origin,
                                std::string_view api_version, std::string_view kind) {
  ParsedManifests out;
  static const ParseOptions kApiOptions;  // API objects always carry their namespace
  DocContext ctx{origin, -1, out, kApiOptions, api_version, kind};
  parseObjectGuarded(At<JsonTree>(JsonTree(&object), ""), ctx);
  return out;
}

std::optional<std::string> decodeBase64(std::string_view text) {
  // yaml-cpp's decoder (YAML's !!binary) skips whitespace and answers
  // nothing at all for a character outside the alphabet.
  const std::vector<unsigned char> bytes = YAML::DecodeBase64(std::string(text));
  if (bytes.empty() && text.find_first_not_of(" \t\r\n") != std::string_view::npos) return std::nullopt;
  return std::string(bytes.begin(), bytes.end());
}

bool isManifestFile(const std::filesystem::path& path) {
  std::string name = path.filename().string();
  if (name.empty() || name.front() == '.') return false;
  std::string ext = path.extension().string();
  return ext == ".yaml" || ext == ".yml" || ext == ".json";
}

Result<std::vector<std::filesystem::path>> listManifestFiles(const std::filesystem::path& root) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::vector<fs::path> files;
  auto status = fs::status(root, ec);
  if (ec) return failErrno("manifests " + root.string() + ": cannot read", ec.value());
  if (fs::is_regular_file(status)) {
    files.push_back(root);
    return files;
  }
  if (!fs::is_directory(status)) return fail("manifests " + root.string() + ": not a file or directory");
  fs::recursive_directory_iterator it(root, fs::directory_options::follow_directory_symlink, ec);
  if (ec) return failErrno("manifests " + root.string() + ": cannot list", ec.value());
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) break;
    const fs::path& p = it->path();
    if (p.filename().string().starts_with(".")) {
      if (it->is_directory(ec)) it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file(ec) && isManifestFile(p)) files.push_back(p);
  }
  if (ec) return failErrno("manifests " + root.string() + ": cannot list", ec.value());
  std::sort(files.begin(), files.end());
  return files;
}

namespace {

ParsedManifests readManifestFile(const std::filesystem::path& file, const ParseOptions& options) {
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    ParsedManifests out;
    out.errors.push_back({file.string(), -1, "", std::string("cannot open: ") + std::strerror(errno)});
    return out;
  }
  std::ostringstream text;
  text << in.rdbuf();
  ParsedManifests parsed = parseManifests(text.str(), file.string(), options);
  for (const std::string& line : parsed.ignored) spdlog::debug("manifests: ignored {}", line);
  return parsed;
}

}  // namespace

void ManifestSet::reloadFile(const std::filesystem::path& file) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec)) {
    files_.erase(file);
    return;
  }
  uint64_t other_bytes = 0, other_objects = 0;
  for (const auto& [path, other] : files_) {
    if (path == file) continue;
    other_bytes += other.bytes;
    other_objects += other.last_good.objectCount();
  }
  FileState& fs = files_[file];
  // Over a limit: not taken, and what is in effect for the file stays.
  auto refuse = [&](std::string message) {
    fs.current = ParsedManifests{};
    fs.current.errors.push_back({file.string(), -1, "", std::move(message)});
    fs.keeping_last_good = fs.ever_good;
  };
  const uint64_t size = std::filesystem::file_size(file, ec);
  if (!ec && other_bytes + size > limits_.max_bytes) {
    return refuse(fmt::format("{} bytes, with the other manifests {}, over the source's limit of {} bytes "
                              "(setting maxSourceBytes): not read",
                              size, other_bytes + size, limits_.max_bytes));
  }
  fs.current = readManifestFile(file, options_);
  if (const uint64_t objects = fs.current.state.objectCount(); other_objects + objects > limits_.max_objects) {
    return refuse(fmt::format("{} objects, with the other manifests {}, over the source's limit of {} objects "
                              "(setting maxSourceObjects): not taken",
                              objects, other_objects + objects, limits_.max_objects));
  }
  if (fs.current.errors.empty() || !fs.ever_good) fs.bytes = ec ? 0 : size;
  if (fs.current.errors.empty()) {
    fs.last_good = fs.current.state;
    fs.ever_good = true;
    fs.keeping_last_good = false;
  } else if (fs.ever_good) {
    fs.keeping_last_good = true;  // a half-written or broken file must not drop what it held
  } else {
    fs.last_good = fs.current.state;  // never good: what did parse is better than nothing
    fs.keeping_last_good = false;
  }
}

Status ManifestSet::reload(const std::filesystem::path& root) {
  auto files = listManifestFiles(root);
  if (!files) return std::unexpected(files.error());
  std::map<std::filesystem::path, FileState> kept;
  for (const auto& file : *files) {
    auto it = files_.find(file);
    if (it != files_.end()) kept.emplace(file, std::move(it->second));
  }
  files_ = std::move(kept);
  for (const auto& file : *files) reloadFile(file);
  return {};
}

ClusterState ManifestSet::state() const {
  ClusterState all;
  for (const auto& [path, fs] : files_) all.append(fs.last_good);
  return all;
}

std::vector<ManifestError> ManifestSet::errors() const {
  std::vector<ManifestError> all;
  for (const auto& [path, fs] : files_) {
    all.insert(all.end(), fs.current.errors.begin(), fs.current.errors.end());
    if (fs.keeping_last_good) {
      all.push_back({path.string(), -1, "", "keeping the last good contents of this file until it is fixed"});
    }
  }
  return all;
}

Result<LoadedManifests> loadManifestDirectory(const std::filesystem::path& root, const ParseOptions& options) {
  ManifestSet set({}, options);
  if (auto st = set.reload(root); !st) return std::unexpected(st.error());
  return LoadedManifests{set.state(), set.errors(), set.ignoredKinds()};
}

std::map<std::string, std::size_t> ManifestSet::ignoredKinds() const {
  std::map<std::string, std::size_t> out;
  for (const auto& [path, file] : files_) {
    for (const auto& [kind, count] : file.current.ignored_kinds) out[kind] += count;
  }
  return out;
}

}  // namespace meshlock::config
