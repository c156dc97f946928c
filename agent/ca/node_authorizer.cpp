// The node authorizer (node_authorizer.h).
#include "ca/node_authorizer.h"

#include <fmt/format.h>

#include <algorithm>

namespace meshlock::ca {

PodDirectory::PodDirectory(const config::ClusterState& state) {
  for (const auto& pod : state.pods) {
    // istiod's informer leaves out Failed pods and pods with no node or account.
    if (pod.terminated || pod.node_name.empty() || pod.service_account.empty()) continue;
    pods_[pod.ns() + "/" + pod.name()] = PodInfo{pod.meta.uid, pod.service_account, pod.node_name};
    on_node_.emplace(pod.node_name, pod.ns(), pod.service_account);
  }
}

const PodDirectory::PodInfo* PodDirectory::find(const std::string& ns, const std::string& name) const {
  auto it = pods_.find(ns + "/" + name);
  return it == pods_.end() ? nullptr : &it->second;
}

bool PodDirectory::hasAccountOnNode(const std::string& node, const std::string& ns, const std::string& sa) const {
  return on_node_.contains({node, ns, sa});
}

Decision authorizeImpersonation(const ReviewedToken& caller, const identity::SpiffeId& requested,
                                const identity::TrustDomain& trust_domain,
                                const std::vector<std::string>& trusted_node_accounts, const PodDirectory& pods) {
  auto refuse = [](std::string reason, std::string message) { return Decision{false, std::move(reason), std::move(message)}; };
  if (std::find(trusted_node_accounts.begin(), trusted_node_accounts.end(), caller.account()) == trusted_node_accounts.end())
    return refuse("not_node_account", fmt::format("caller ({}) is not allowed to impersonate", caller.account()));
  if (requested.trustDomain().name() != trust_domain.name())
    return refuse("bad_identity", fmt::format("{} is not in this CA's trust domain {}", requested.uri(), trust_domain.name()));
  if (caller.pod_name.empty() || caller.pod_uid.empty())
    return refuse("unbound_token", fmt::format("the token of {} is not bound to a pod (a projected token is needed)",
                                               caller.account()));
  const PodDirectory::PodInfo* pod = pods.find(caller.ns, caller.pod_name);
  if (pod == nullptr) return refuse("pod_not_found", fmt::format("pod {}/{} not found", caller.ns, caller.pod_name));
  if (pod->uid != caller.pod_uid)
    return refuse("pod_uid_mismatch", fmt::format("pod found, but UID does not match: {} vs {}", pod->uid, caller.pod_uid));
  if (pod->service_account != caller.service_account)
    return refuse("pod_account_mismatch", fmt::format("pod found, but ServiceAccount does not match: {} vs {}",
                                                      pod->service_account, caller.service_account));
  if (!pods.hasAccountOnNode(pod->node, requested.ns(), requested.serviceAccount()))
    return refuse("not_on_node", fmt::format("no instances of \"{}/{}\" found on node \"{}\"", requested.ns(),
                                             requested.serviceAccount(), pod->node));
  return Decision{true, "allowed", fmt::format("{} on node {}", requested.uri(), pod->node)};
}

}  // namespace meshlock::ca
