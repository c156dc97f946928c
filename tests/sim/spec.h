// The meshsim spec: the nodes, namespaces, pods, services and extra manifests
// a run builds. Parsing is pure (no I/O) and checks everything before
// anything is created, naming the offending field ("pods[2].node: ...").
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace meshsim {

// An IPv4 address in host byte order.
struct Ipv4 {
  uint32_t value = 0;
  [[nodiscard]] std::string str() const;
  friend bool operator==(Ipv4, Ipv4) = default;
  friend auto operator<=>(Ipv4, Ipv4) = default;
};

struct Cidr {
  Ipv4 network;
  int prefix = 24;
  [[nodiscard]] bool contains(Ipv4 ip) const;
  [[nodiscard]] Ipv4 first() const { return network; }
  [[nodiscard]] Ipv4 last() const;  // the broadcast address
  [[nodiscard]] std::string str() const;
  [[nodiscard]] bool overlaps(const Cidr& other) const;
};

[[nodiscard]] std::optional<Ipv4> parseIpv4(std::string_view text);
[[nodiscard]] std::optional<Cidr> parseCidr(std::string_view text);  // host bits must be 0

// Nodes reach each other over this subnet in the fabric namespace, like kind's
// docker network: node i has 172.18.0.(i+2). Pod CIDRs and ClusterIPs may not
// overlap it.
inline constexpr Cidr kFabricCidr{Ipv4{(172u << 24) | (18u << 16)}, 24};

enum class CgroupDriver { Systemd, Cgroupfs };
enum class QosClass { Guaranteed, Burstable, BestEffort };
[[nodiscard]] std::string_view name(CgroupDriver driver);
[[nodiscard]] std::string_view name(QosClass qos);

using Labels = std::map<std::string, std::string>;

struct NodeSpec {
  std::string name;
  Cidr podCidr;
};

struct NamespaceSpec {
  std::string name;
  Labels labels;
};

struct PodSpec {
  std::string name;
  std::string ns;
  std::string node;
  std::string serviceAccount = "default";
  Labels labels;
  std::vector<int> ports;
  Ipv4 ip;          // explicit or assigned sequentially in the node's pod CIDR
  std::string uid;  // explicit or derived from the run name, namespace and name
  bool uidGiven = false;
  QosClass qos = QosClass::BestEffort;
};

struct ServicePort {
  std::string name;
  int port = 0;
  int targetPort = 0;
  std::string protocol = "TCP";
};

struct ServiceSpec {
  std::string name;
  std::string ns;
  Ipv4 clusterIp;
  std::vector<ServicePort> ports;
  std::optional<Labels> selector;  // absent: a selector-less service
  std::vector<Ipv4> endpoints;     // only for selector-less services
};

struct Spec {
  CgroupDriver cgroupDriver = CgroupDriver::Systemd;
  std::vector<NodeSpec> nodes;
  std::vector<NamespaceSpec> namespaces;
  std::vector<PodSpec> pods;
  std::vector<ServiceSpec> services;
  std::vector<YAML::Node> manifests;  // written beside the generated ones, untouched

  [[nodiscard]] const NodeSpec* findNode(std::string_view node) const;
  [[nodiscard]] const NamespaceSpec* findNamespace(std::string_view ns) const;
  [[nodiscard]] const PodSpec* findPod(std::string_view ns, std::string_view pod) const;
};

// Parses and validates a spec. Pod UIDs not given are left empty here; the
// layout derives them from the run name so parallel runs never share one.
[[nodiscard]] meshlock::Result<Spec> parseSpec(std::string_view yamlText);

// The pods a service's selector picks (empty for selector-less services).
[[nodiscard]] std::vector<const PodSpec*> selectedPods(const Spec& spec, const ServiceSpec& service);

// Kubernetes name rules, shared by the spec parser and the CLI.
[[nodiscard]] bool isDnsLabel(std::string_view name);       // RFC 1123 label, <= 63
[[nodiscard]] bool isDnsSubdomain(std::string_view name);   // RFC 1123 subdomain, <= 253
[[nodiscard]] bool isLabelKey(std::string_view key);
[[nodiscard]] bool isLabelValue(std::string_view value);
[[nodiscard]] bool isRunName(std::string_view name);        // [a-z0-9-], <= 24

// Parses a Kubernetes manifest for `apply`/`delete`: every document must be a
// map with apiVersion, kind and metadata.name. `where` prefixes errors.
[[nodiscard]] meshlock::Result<std::vector<YAML::Node>> parseManifests(std::string_view yamlText,
                                                                       std::string_view where);
[[nodiscard]] meshlock::Status checkManifest(const YAML::Node& node, const std::string& path);

}  // namespace meshsim
