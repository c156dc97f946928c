// What the admin API shows of the cluster state and the policy decided from it
// (GET /config_dump, /policy, /check, and the decision columns of
// /connections): pure functions of a policy index, so they are tested with
// manifests alone, without an agent.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "config/types.h"
#include "policy/policy.h"

namespace meshlock::app {

// Namespaces, pods, services, endpoints and the mesh resources, as read.
[[nodiscard]] nlohmann::json clusterStateJson(const config::ClusterState& state);

// The whole dump: {"node", "cluster", "mesh", "synthetic_destination_rules",
// "policy" (one explainPod per pod on `node`, plus "namespace" and "name"),
// "identities" (given: the identity part's view), "warnings"}.
[[nodiscard]] nlohmann::json configDumpJson(const policy::PolicyIndex& index, std::string_view node,
                                            nlohmann::json identities);

// What the policy says about one live connection, for /connections.
struct ConnectionDecision {
  std::optional<std::string> destination_service;  // FQDN of the service reached, if any
  std::optional<std::string> decided_by;           // "DestinationRule/shop/web (ISTIO_MUTUAL)", ...
};

// `local` is the pod the agent serves on this end: the source of an outbound
// connection (which went to destination:port), the destination of an inbound
// one (accepted on its port `port`). Decided by the current index, as a new
// connection would be.
[[nodiscard]] ConnectionDecision decideConnection(const policy::PolicyIndex& index, const config::Pod& local,
                                                  bool outbound, const std::optional<config::IpAddress>& destination,
                                                  std::uint16_t port);

}  // namespace meshlock::app
