// Spec parsing and validation for meshsim. Every error names the field path.
#include "spec.h"

#include <algorithm>
#include <charconv>
#include <fmt/format.h>
#include <set>

namespace meshsim {

using meshlock::fail;
using meshlock::Result;
using meshlock::Status;

std::string Ipv4::str() const {
  return fmt::format("{}.{}.{}.{}", value >> 24, (value >> 16) & 0xff, (value >> 8) & 0xff, value & 0xff);
}

static uint32_t prefixMask(int prefix) { return prefix == 0 ? 0 : ~uint32_t{0} << (32 - prefix); }

bool Cidr::contains(Ipv4 ip) const { return (ip.value & prefixMask(prefix)) == network.value; }
Ipv4 Cidr::last() const { return Ipv4{network.value | ~prefixMask(prefix)}; }
std::string Cidr::str() const { return fmt::format("{}/{}", network.str(), prefix); }
bool Cidr::overlaps(const Cidr& other) const { return contains(other.network) || other.contains(network); }

std::optional<Ipv4> parseIpv4(std::string_view text) {
  uint32_t value = 0;
  for (int i = 0; i < 4; ++i) {
    size_t end = i < 3 ? text.find('.') : text.size();
    if (end == std::string_view::npos) return std::nullopt;
    std::string_view part = text.substr(0, end);
    if (part.empty() || part.size() > 3 || (part.size() > 1 && part[0] == '0')) return std::nullopt;
    unsigned octet = 0;
    auto [ptr, ec] = std::from_chars(part.data(), part.data() + part.size(), octet);
    if (ec != std::errc{} || ptr != part.data() + part.size() || octet > 255) return std::nullopt;
    value = (value << 8) | octet;
    text = i < 3 ? text.substr(end + 1) : std::string_view();
  }
  return Ipv4{value};
}

std::optional<Cidr> parseCidr(std::string_view text) {
  size_t slash = text.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  auto ip = parseIpv4(text.substr(0, slash));
  std::string_view bits = text.substr(slash + 1);
  int prefix = -1;
  auto [ptr, ec] = std::from_chars(bits.data(), bits.data() + bits.size(), prefix);
  if (!ip || bits.empty() || ec != std::errc{} || ptr != bits.data() + bits.size() || prefix < 0 || prefix > 32)
    return std::nullopt;
  if ((ip->value & ~prefixMask(prefix)) != 0) return std::nullopt;
  return Cidr{*ip, prefix};
}

std::string_view name(CgroupDriver driver) { return driver == CgroupDriver::Systemd ? "systemd" : "cgroupfs"; }
std::string_view name(QosClass qos) {
  switch (qos) {
    case QosClass::Guaranteed: return "Guaranteed";
    case QosClass::Burstable: return "Burstable";
    case QosClass::BestEffort: return "BestEffort";
  }
  MESHLOCK_CHECK(false);
}

static bool isAlnumLower(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

bool isDnsLabel(std::string_view name) {
  if (name.empty() || name.size() > 63) return false;
  if (!isAlnumLower(name.front()) || !isAlnumLower(name.back())) return false;
  return std::all_of(name.begin(), name.end(), [](char c) { return isAlnumLower(c) || c == '-'; });
}

bool isDnsSubdomain(std::string_view name) {
  if (name.empty() || name.size() > 253) return false;
  size_t pos = 0;
  while (true) {
    size_t dot = name.find('.', pos);
    if (!isDnsLabel(name.substr(pos, dot == std::string_view::npos ? std::string_view::npos : dot - pos)))
      return false;
    if (dot == std::string_view::npos) return true;
    pos = dot + 1;
  }
}

static bool isQualifiedName(std::string_view name) {
  auto alnum = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; };
  if (name.empty() || name.size() > 63 || !alnum(name.front()) || !alnum(name.back())) return false;
  return std::all_of(name.begin(), name.end(), [&](char c) { return alnum(c) || c == '-' || c == '_' || c == '.'; });
}

bool isLabelKey(std::string_view key) {
  size_t slash = key.find('/');
  if (slash == std::string_view::npos) return isQualifiedName(key);
  return isDnsSubdomain(key.substr(0, slash)) && isQualifiedName(key.substr(slash + 1));
}

bool isLabelValue(std::string_view value) { return value.empty() || isQualifiedName(value); }

bool isRunName(std::string_view name) { return name.size() <= 24 && isDnsLabel(name); }

const NodeSpec* Spec::findNode(std::string_view node) const {
  for (const auto& n : nodes)
    if (n.name == node) return &n;
  return nullptr;
}
const NamespaceSpec* Spec::findNamespace(std::string_view ns) const {
  for (const auto& n : namespaces)
    if (n.name == ns) return &n;
  return nullptr;
}
const PodSpec* Spec::findPod(std::string_view ns, std::string_view pod) const {
  for (const auto& p : pods)
    if (p.ns == ns && p.name == pod) return &p;
  return nullptr;
}

std::vector<const PodSpec*> selectedPods(const Spec& spec, const ServiceSpec& service) {
  std::vector<const PodSpec*> out;
  if (!service.selector || service.selector->empty()) return out;  // empty selector selects nothing, as k8s
  for (const auto& pod : spec.pods) {
    if (pod.ns != service.ns) continue;
    bool match = std::all_of(service.selector->begin(), service.selector->end(), [&](const auto& kv) {
      auto it = pod.labels.find(kv.first);
      return it != pod.labels.end() && it->second == kv.second;
    });
    if (match) out.push_back(&pod);
  }
  return out;
}

namespace {

// Field-by-field reader: each helper knows the path of what it reads.
std::string quote(std::string_view s) { return fmt::format("\"{}\"", s); }

Status checkFields(const YAML::Node& node, const std::string& path, std::initializer_list<std::string_view> allowed) {
  if (!node.IsMap()) return fail(path + ": expected a mapping");
  for (const auto& kv : node) {
    std::string key = kv.first.Scalar();
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      std::string list;
      for (auto a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
      return fail(fmt::format("{}.{}: unknown field (expected one of: {})", path, key, list));
    }
  }
  return {};
}

Result<std::string> readString(const YAML::Node& parent, std::string_view key, const std::string& path,
                               bool required) {
  YAML::Node node = parent[std::string(key)];
  std::string field = path.empty() ? std::string(key) : path + "." + std::string(key);
  if (!node || node.IsNull()) {
    if (required) return fail(field + ": required");
    return std::string();
  }
  if (!node.IsScalar()) return fail(field + ": expected a string");
  return node.Scalar();
}

Result<int> readPort(const YAML::Node& node, const std::string& field) {
  if (!node.IsScalar()) return fail(field + ": expected a port number (1-65535)");
  const std::string& text = node.Scalar();
  int port = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), port);
  if (text.empty() || ec != std::errc{} || ptr != text.data() + text.size() || port < 1 || port > 65535)
    return fail(fmt::format("{}: {} is not a port number (1-65535)", field, quote(text)));
  return port;
}

Result<Labels> readLabels(const YAML::Node& parent, std::string_view key, const std::string& path) {
  Labels labels;
  YAML::Node node = parent[std::string(key)];
  std::string field = path + "." + std::string(key);
  if (!node || node.IsNull()) return labels;
  if (!node.IsMap()) return fail(field + ": expected a mapping of label keys to values");
  for (const auto& kv : node) {
    std::string k = kv.first.Scalar();
    if (!isLabelKey(k)) return fail(fmt::format("{}: {} is not a valid label key", field, quote(k)));
    if (!kv.second.IsScalar() && !kv.second.IsNull())
      return fail(fmt::format("{}.{}: expected a string", field, k));
    std::string v = kv.second.IsNull() ? "" : kv.second.Scalar();
    if (!isLabelValue(v)) return fail(fmt::format("{}.{}: {} is not a valid label value", field, k, quote(v)));
    labels[k] = v;
  }
  return labels;
}

bool isUid(std::string_view uid) {
  if (uid.size() != 36) return false;
  for (size_t i = 0; i < uid.size(); ++i) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash != (uid[i] == '-')) return false;
    if (!dash && !std::isxdigit(static_cast<unsigned char>(uid[i]))) return false;
    if (!dash && std::isupper(static_cast<unsigned char>(uid[i]))) return false;
  }
  return true;
}

template <typename F>
Status forEachItem(const YAML::Node& root, std::string_view key, bool required, F&& each) {
  YAML::Node list = root[std::string(key)];
  if (!list || list.IsNull()) {
    if (required) return fail(std::string(key) + ": required, at least one entry");
    return {};
  }
  if (!list.IsSequence()) return fail(std::string(key) + ": expected a list");
  if (required && list.size() == 0) return fail(std::string(key) + ": required, at least one entry");
  for (size_t i = 0; i < list.size(); ++i) {
    if (auto st = each(list[i], fmt::format("{}[{}]", key, i)); !st) return st;
  }
  return {};
}

// Kinds meshsim generates itself; declaring them as extra manifests would
// describe a cluster different from the one built.
constexpr std::string_view kGeneratedKinds[] = {"Namespace", "Pod", "Service", "Endpoints"};

}  // namespace

Status checkManifest(const YAML::Node& node, const std::string& path) {
  if (!node.IsMap()) return fail(path + ": expected a Kubernetes object (a mapping)");
  auto apiVersion = readString(node, "apiVersion", path, true);
  if (!apiVersion) return std::unexpected(apiVersion.error());
  auto kind = readString(node, "kind", path, true);
  if (!kind) return std::unexpected(kind.error());
  YAML::Node meta = node["metadata"];
  if (!meta || !meta.IsMap()) return fail(path + ".metadata: required, a mapping with a name");
  auto name = readString(meta, "name", path + ".metadata", true);
  if (!name) return std::unexpected(name.error());
  auto ns = readString(meta, "namespace", path + ".metadata", false);
  if (!ns) return std::unexpected(ns.error());
  if (*apiVersion == "v1" &&
      std::find(std::begin(kGeneratedKinds), std::end(kGeneratedKinds), *kind) != std::end(kGeneratedKinds))
    return fail(fmt::format("{}.kind: {} objects are generated by meshsim; declare them in the spec instead", path,
                            *kind));
  return {};
}

Result<std::vector<YAML::Node>> parseManifests(std::string_view yamlText, std::string_view where) {
  std::vector<YAML::Node> docs;
  try {
    for (YAML::Node doc : YAML::LoadAll(std::string(yamlText))) {
      if (doc.IsNull()) continue;
      if (doc["kind"] && doc["kind"].IsScalar() && doc["kind"].Scalar() == "List" && doc["items"].IsSequence()) {
        for (auto item : doc["items"]) docs.push_back(item);
      } else {
        docs.push_back(doc);
      }
    }
  } catch (const YAML::Exception& e) {
    return fail(fmt::format("{}: invalid YAML at line {}, column {}: {}", where, e.mark.line + 1, e.mark.column + 1,
                            e.msg));
  }
  for (size_t i = 0; i < docs.size(); ++i) {
    if (auto st = checkManifest(docs[i], fmt::format("{}[{}]", where, i)); !st) return std::unexpected(st.error());
  }
  return docs;
}

Result<Spec> parseSpec(std::string_view yamlText) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yamlText));
  } catch (const YAML::Exception& e) {
    return fail(fmt::format("spec: invalid YAML at line {}, column {}: {}", e.mark.line + 1, e.mark.column + 1, e.msg));
  }
  if (!root.IsMap()) return fail("spec: expected a mapping with nodes, namespaces, pods, services, manifests");
  for (const auto& kv : root) {
    std::string key = kv.first.Scalar();
    if (key != "nodes" && key != "namespaces" && key != "pods" && key != "services" && key != "manifests" &&
        key != "cgroupDriver")
      return fail(key + ": unknown field (expected one of: cgroupDriver, nodes, namespaces, pods, services, manifests)");
  }

  Spec spec;
  auto driver = readString(root, "cgroupDriver", "", false);
  if (!driver) return std::unexpected(driver.error());
  if (driver->empty() || *driver == "systemd") {
    spec.cgroupDriver = CgroupDriver::Systemd;
  } else if (*driver == "cgroupfs") {
    spec.cgroupDriver = CgroupDriver::Cgroupfs;
  } else {
    return fail(fmt::format("cgroupDriver: {} is not one of systemd, cgroupfs", quote(*driver)));
  }

  // Nodes.
  auto st = forEachItem(root, "nodes", true, [&](const YAML::Node& n, const std::string& path) -> Status {
    if (auto s = checkFields(n, path, {"name", "podCIDR"}); !s) return s;
    if (spec.nodes.size() >= 253) return fail(path + ": meshsim supports at most 253 nodes");
    NodeSpec node;
    auto nm = readString(n, "name", path, true);
    if (!nm) return std::unexpected(nm.error());
    if (!isDnsLabel(*nm))
      return fail(fmt::format("{}.name: {} is not a valid node name (lowercase RFC 1123 label)", path, quote(*nm)));
    if (spec.findNode(*nm)) return fail(fmt::format("{}.name: duplicate node {}", path, quote(*nm)));
    node.name = *nm;
    auto cidrText = readString(n, "podCIDR", path, false);
    if (!cidrText) return std::unexpected(cidrText.error());
    if (cidrText->empty()) {
      node.podCidr = Cidr{Ipv4{(10u << 24) | (244u << 16) | (uint32_t(spec.nodes.size() + 1) << 8)}, 24};
    } else {
      auto cidr = parseCidr(*cidrText);
      if (!cidr)
        return fail(fmt::format("{}.podCIDR: {} is not an IPv4 CIDR with zero host bits (like 10.244.1.0/24)", path,
                                quote(*cidrText)));
      if (cidr->prefix < 8 || cidr->prefix > 29)
        return fail(fmt::format("{}.podCIDR: {} must have a prefix between /8 and /29", path, cidr->str()));
      node.podCidr = *cidr;
    }
    if (node.podCidr.overlaps(kFabricCidr))
      return fail(fmt::format("{}.podCIDR: {} overlaps meshsim's node fabric {}", path, node.podCidr.str(),
                              kFabricCidr.str()));
    for (size_t j = 0; j < spec.nodes.size(); ++j) {
      if (spec.nodes[j].podCidr.overlaps(node.podCidr))
        return fail(fmt::format("{}.podCIDR: {} overlaps nodes[{}].podCIDR {}", path, node.podCidr.str(), j,
                                spec.nodes[j].podCidr.str()));
    }
    spec.nodes.push_back(node);
    return {};
  });
  if (!st) return std::unexpected(st.error());

  // Namespaces.
  st = forEachItem(root, "namespaces", false, [&](const YAML::Node& n, const std::string& path) -> Status {
    if (auto s = checkFields(n, path, {"name", "labels"}); !s) return s;
    auto nm = readString(n, "name", path, true);
    if (!nm) return std::unexpected(nm.error());
    if (!isDnsLabel(*nm))
      return fail(fmt::format("{}.name: {} is not a valid namespace name (lowercase RFC 1123 label)", path, quote(*nm)));
    if (spec.findNamespace(*nm)) return fail(fmt::format("{}.name: duplicate namespace {}", path, quote(*nm)));
    auto labels = readLabels(n, "labels", path);
    if (!labels) return std::unexpected(labels.error());
    spec.namespaces.push_back({*nm, *labels});
    return {};
  });
  if (!st) return std::unexpected(st.error());

  // Pods: read first, then assign addresses, so explicit IPs are never handed out twice.
  std::vector<bool> ipGiven;
  std::vector<std::string> podPaths;
  st = forEachItem(root, "pods", false, [&](const YAML::Node& n, const std::string& path) -> Status {
    if (auto s = checkFields(n, path, {"name", "namespace", "node", "serviceAccount", "labels", "ports", "ip", "uid",
                                       "qosClass"});
        !s)
      return s;
    PodSpec pod;
    auto nm = readString(n, "name", path, true);
    if (!nm) return std::unexpected(nm.error());
    if (!isDnsLabel(*nm))
      return fail(fmt::format("{}.name: {} is not a valid pod name (lowercase RFC 1123 label)", path, quote(*nm)));
    pod.name = *nm;
    auto ns = readString(n, "namespace", path, false);
    if (!ns) return std::unexpected(ns.error());
    pod.ns = ns->empty() ? "default" : *ns;
    if (!spec.findNamespace(pod.ns))
      return fail(fmt::format("{}.namespace: unknown namespace {} (declare it under namespaces)", path, quote(pod.ns)));
    if (spec.findPod(pod.ns, pod.name))
      return fail(fmt::format("{}.name: duplicate pod {}", path, quote(pod.ns + "/" + pod.name)));
    auto node = readString(n, "node", path, true);
    if (!node) return std::unexpected(node.error());
    if (!spec.findNode(*node)) return fail(fmt::format("{}.node: unknown node {}", path, quote(*node)));
    pod.node = *node;
    auto sa = readString(n, "serviceAccount", path, false);
    if (!sa) return std::unexpected(sa.error());
    if (!sa->empty()) {
      if (!isDnsSubdomain(*sa))
        return fail(fmt::format("{}.serviceAccount: {} is not a valid service account name", path, quote(*sa)));
      pod.serviceAccount = *sa;
    }
    auto labels = readLabels(n, "labels", path);
    if (!labels) return std::unexpected(labels.error());
    pod.labels = *labels;
    if (YAML::Node ports = n["ports"]; ports && !ports.IsNull()) {
      if (!ports.IsSequence()) return fail(path + ".ports: expected a list of port numbers");
      for (size_t i = 0; i < ports.size(); ++i) {
        auto port = readPort(ports[i], fmt::format("{}.ports[{}]", path, i));
        if (!port) return std::unexpected(port.error());
        if (std::find(pod.ports.begin(), pod.ports.end(), *port) != pod.ports.end())
          return fail(fmt::format("{}.ports[{}]: duplicate port {}", path, i, *port));
        pod.ports.push_back(*port);
      }
    }
    auto ipText = readString(n, "ip", path, false);
    if (!ipText) return std::unexpected(ipText.error());
    ipGiven.push_back(!ipText->empty());
    if (!ipText->empty()) {
      auto ip = parseIpv4(*ipText);
      if (!ip) return fail(fmt::format("{}.ip: {} is not an IPv4 address", path, quote(*ipText)));
      const NodeSpec* nodeSpec = spec.findNode(pod.node);
      if (!nodeSpec->podCidr.contains(*ip))
        return fail(fmt::format("{}.ip: {} is not in {}'s podCIDR {}", path, ip->str(), pod.node,
                                nodeSpec->podCidr.str()));
      if (*ip == nodeSpec->podCidr.first() || *ip == nodeSpec->podCidr.last() ||
          ip->value == nodeSpec->podCidr.first().value + 1)
        return fail(fmt::format("{}.ip: {} is reserved in {} (network, bridge .1 or broadcast address)", path,
                                ip->str(), nodeSpec->podCidr.str()));
      for (size_t j = 0; j < spec.pods.size(); ++j) {
        if (ipGiven[j] && spec.pods[j].ip == *ip)
          return fail(fmt::format("{}.ip: {} is already used by pods[{}] ({}/{})", path, ip->str(), j,
                                  spec.pods[j].ns, spec.pods[j].name));
      }
      pod.ip = *ip;
    }
    auto uid = readString(n, "uid", path, false);
    if (!uid) return std::unexpected(uid.error());
    if (!uid->empty()) {
      if (!isUid(*uid))
        return fail(fmt::format("{}.uid: {} is not a lowercase UUID (like 3f6c2a9e-5b1d-4c8e-9a7f-0d2e4b6c8a10)", path,
                                quote(*uid)));
      for (size_t j = 0; j < spec.pods.size(); ++j) {
        if (spec.pods[j].uid == *uid)
          return fail(fmt::format("{}.uid: {} is already used by pods[{}]", path, *uid, j));
      }
      pod.uid = *uid;
      pod.uidGiven = true;
    }
    auto qos = readString(n, "qosClass", path, false);
    if (!qos) return std::unexpected(qos.error());
    if (qos->empty() || *qos == "BestEffort") {
      pod.qos = QosClass::BestEffort;
    } else if (*qos == "Burstable") {
      pod.qos = QosClass::Burstable;
    } else if (*qos == "Guaranteed") {
      pod.qos = QosClass::Guaranteed;
    } else {
      return fail(fmt::format("{}.qosClass: {} is not one of Guaranteed, Burstable, BestEffort", path, quote(*qos)));
    }
    podPaths.push_back(path);
    spec.pods.push_back(pod);
    return {};
  });
  if (!st) return std::unexpected(st.error());

  // Sequential addresses for the pods without one: .2, .3, ... in spec order.
  for (const auto& node : spec.nodes) {
    std::set<uint32_t> used;
    for (size_t i = 0; i < spec.pods.size(); ++i)
      if (ipGiven[i] && spec.pods[i].node == node.name) used.insert(spec.pods[i].ip.value);
    uint32_t next = node.podCidr.first().value + 2;
    for (size_t i = 0; i < spec.pods.size(); ++i) {
      if (ipGiven[i] || spec.pods[i].node != node.name) continue;
      while (used.contains(next)) ++next;
      if (next >= node.podCidr.last().value)
        return fail(fmt::format("{}: no free address left in {}'s podCIDR {}", podPaths[i], node.name,
                                node.podCidr.str()));
      spec.pods[i].ip = Ipv4{next};
      used.insert(next++);
    }
  }

  // Services.
  st = forEachItem(root, "services", false, [&](const YAML::Node& n, const std::string& path) -> Status {
    if (auto s = checkFields(n, path, {"name", "namespace", "clusterIP", "ports", "selector", "endpoints"}); !s)
      return s;
    ServiceSpec svc;
    auto nm = readString(n, "name", path, true);
    if (!nm) return std::unexpected(nm.error());
    if (!isDnsLabel(*nm))
      return fail(fmt::format("{}.name: {} is not a valid service name (lowercase RFC 1123 label)", path, quote(*nm)));
    svc.name = *nm;
    auto ns = readString(n, "namespace", path, false);
    if (!ns) return std::unexpected(ns.error());
    svc.ns = ns->empty() ? "default" : *ns;
    if (!spec.findNamespace(svc.ns))
      return fail(fmt::format("{}.namespace: unknown namespace {} (declare it under namespaces)", path, quote(svc.ns)));
    for (const auto& other : spec.services)
      if (other.ns == svc.ns && other.name == svc.name)
        return fail(fmt::format("{}.name: duplicate service {}", path, quote(svc.ns + "/" + svc.name)));
    auto ipText = readString(n, "clusterIP", path, true);
    if (!ipText) return std::unexpected(ipText.error());
    auto ip = parseIpv4(*ipText);
    if (!ip) return fail(fmt::format("{}.clusterIP: {} is not an IPv4 address", path, quote(*ipText)));
    for (size_t j = 0; j < spec.nodes.size(); ++j)
      if (spec.nodes[j].podCidr.contains(*ip))
        return fail(fmt::format("{}.clusterIP: {} is inside nodes[{}].podCIDR {}", path, ip->str(), j,
                                spec.nodes[j].podCidr.str()));
    if (kFabricCidr.contains(*ip))
      return fail(fmt::format("{}.clusterIP: {} is inside meshsim's node fabric {}", path, ip->str(),
                              kFabricCidr.str()));
    for (size_t j = 0; j < spec.services.size(); ++j)
      if (spec.services[j].clusterIp == *ip)
        return fail(fmt::format("{}.clusterIP: {} is already used by services[{}] ({}/{})", path, ip->str(), j,
                                spec.services[j].ns, spec.services[j].name));
    svc.clusterIp = *ip;

    YAML::Node ports = n["ports"];
    if (!ports || !ports.IsSequence() || ports.size() == 0)
      return fail(path + ".ports: required, a list of {name, port, targetPort}");
    for (size_t i = 0; i < ports.size(); ++i) {
      std::string pp = fmt::format("{}.ports[{}]", path, i);
      if (auto s = checkFields(ports[i], pp, {"name", "port", "targetPort", "protocol"}); !s) return s;
      ServicePort sp;
      auto pn = readString(ports[i], "name", pp, false);
      if (!pn) return std::unexpected(pn.error());
      sp.name = *pn;
      if (!sp.name.empty() && !isDnsLabel(sp.name))
        return fail(fmt::format("{}.name: {} is not a valid port name", pp, quote(sp.name)));
      if (sp.name.empty() && ports.size() > 1) return fail(pp + ".name: required when a service has several ports");
      if (!ports[i]["port"]) return fail(pp + ".port: required");
      auto port = readPort(ports[i]["port"], pp + ".port");
      if (!port) return std::unexpected(port.error());
      sp.port = *port;
      sp.targetPort = sp.port;
      if (ports[i]["targetPort"]) {
        auto tp = readPort(ports[i]["targetPort"], pp + ".targetPort");
        if (!tp) return std::unexpected(tp.error());
        sp.targetPort = *tp;
      }
      auto proto = readString(ports[i], "protocol", pp, false);
      if (!proto) return std::unexpected(proto.error());
      if (!proto->empty()) {
        if (*proto != "TCP" && *proto != "UDP")
          return fail(fmt::format("{}.protocol: {} is not supported (TCP or UDP)", pp, quote(*proto)));
        sp.protocol = *proto;
      }
      for (const auto& other : svc.ports) {
        if (!sp.name.empty() && other.name == sp.name)
          return fail(fmt::format("{}.name: duplicate port name {}", pp, quote(sp.name)));
        if (other.port == sp.port && other.protocol == sp.protocol)
          return fail(fmt::format("{}.port: duplicate port {}/{}", pp, sp.port, sp.protocol));
      }
      svc.ports.push_back(sp);
    }

    YAML::Node selector = n["selector"];
    YAML::Node endpoints = n["endpoints"];
    if (selector && !selector.IsNull() && endpoints && !endpoints.IsNull())
      return fail(path + ".endpoints: not allowed with a selector (endpoints are for selector-less services)");
    if (selector && !selector.IsNull()) {
      auto labels = readLabels(n, "selector", path);
      if (!labels) return std::unexpected(labels.error());
      svc.selector = *labels;
    }
    if (endpoints && !endpoints.IsNull()) {
      if (!endpoints.IsSequence()) return fail(path + ".endpoints: expected a list of IPv4 addresses");
      for (size_t i = 0; i < endpoints.size(); ++i) {
        std::string ep = fmt::format("{}.endpoints[{}]", path, i);
        if (!endpoints[i].IsScalar()) return fail(ep + ": expected an IPv4 address");
        auto epIp = parseIpv4(endpoints[i].Scalar());
        if (!epIp) return fail(fmt::format("{}: {} is not an IPv4 address", ep, quote(endpoints[i].Scalar())));
        if (std::find(svc.endpoints.begin(), svc.endpoints.end(), *epIp) != svc.endpoints.end())
          return fail(fmt::format("{}: duplicate endpoint {}", ep, epIp->str()));
        svc.endpoints.push_back(*epIp);
      }
    }
    spec.services.push_back(svc);
    return {};
  });
  if (!st) return std::unexpected(st.error());

  // Extra manifests, kept as written.
  st = forEachItem(root, "manifests", false, [&](const YAML::Node& n, const std::string& path) -> Status {
    if (auto s = checkManifest(n, path); !s) return s;
    spec.manifests.push_back(YAML::Clone(n));
    return {};
  });
  if (!st) return std::unexpected(st.error());
  return spec;
}

}  // namespace meshsim
