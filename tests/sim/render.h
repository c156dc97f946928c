// Text meshsim writes: the Kubernetes manifests of a run, each node's
// nftables ruleset standing in for kube-proxy, and each pod's hosts and
// resolv.conf standing in for cluster DNS. Pure functions of the layout.
#pragma once

#include <map>
#include <string>

#include "layout.h"

namespace meshsim {

// File name → multi-document YAML, one file per object kind
// (namespace.yaml, pod.yaml, service.yaml, endpoints.yaml, and for extra
// manifests <kind>.<group>.yaml such as peerauthentication.security.istio.io.yaml).
[[nodiscard]] std::map<std::string, std::string> renderManifests(const Layout& layout);

// Every manifest as one multi-document stream (for `meshsim manifests`).
[[nodiscard]] std::string renderAllManifests(const Layout& layout);

// The file an extra manifest is written to.
[[nodiscard]] std::string manifestFileName(const YAML::Node& manifest);

// The same ruleset for every node: ClusterIP:port → backend IP:targetPort.
inline constexpr std::string_view kNftTable = "meshsim";
[[nodiscard]] std::string renderNftRuleset(const Layout& layout);

[[nodiscard]] std::string renderHosts(const Layout& layout, const PodLayout& pod);
[[nodiscard]] std::string renderResolvConf(const PodLayout& pod);

// The ClusterIP a Service's backends answer on, per protocol/port.
struct ServiceBackends {
  const ServiceSpec* service;
  std::vector<Ipv4> backends;
};
[[nodiscard]] std::vector<ServiceBackends> serviceBackends(const Layout& layout);

}  // namespace meshsim
