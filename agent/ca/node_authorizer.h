// Which certificates a node agent may have: only for service accounts with a
// pod on the agent's own node, found from the pod its token is bound to.
// istiod's node authorizer, check for check (istio/istio
// security/pkg/server/ca/node_auth.go, ClusterNodeAuthorizer
// .authenticateImpersonation at 86c9f01f). Pure: tested with tables.
#pragma once

#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "ca/token_review.h"
#include "config/types.h"
#include "identity/spiffe_id.h"

namespace meshlock::ca {

// The pods the CA knows, indexed for the two questions it asks.
class PodDirectory {
 public:
  PodDirectory() = default;
  explicit PodDirectory(const config::ClusterState& state);

  struct PodInfo {
    std::string uid;
    std::string service_account;
    std::string node;
  };
  [[nodiscard]] const PodInfo* find(const std::string& ns, const std::string& name) const;
  // Some pod of NS/SA is scheduled on `node` (and has not ended).
  [[nodiscard]] bool hasAccountOnNode(const std::string& node, const std::string& ns, const std::string& sa) const;
  [[nodiscard]] std::size_t size() const { return pods_.size(); }

 private:
  std::unordered_map<std::string, PodInfo> pods_;  // "ns/name"
  std::set<std::tuple<std::string, std::string, std::string>> on_node_;  // (node, ns, sa)
};

struct Decision {
  bool allowed = false;
  std::string reason;   // metric label: "allowed", "not_node_account", "bad_identity", "pod_not_found", ...
  std::string message;  // for the log and the caller
};

// May `caller` (a reviewed token) have a certificate for `requested`?
// `trusted_node_accounts` are "namespace/serviceaccount" (istiod's
// CA_TRUSTED_NODE_ACCOUNTS). Unlike istiod, the requested trust domain must
// be the mesh's: this CA signs for one trust domain.
[[nodiscard]] Decision authorizeImpersonation(const ReviewedToken& caller, const identity::SpiffeId& requested,
                                              const identity::TrustDomain& trust_domain,
                                              const std::vector<std::string>& trusted_node_accounts,
                                              const PodDirectory& pods);

}  // namespace meshlock::ca
