// The kinds the agent lists and watches, one table entry each: adding a kind
// (AuthorizationPolicy, ServiceEntry) is adding an entry here, a decoder in
// config/manifest.cpp and a line in deploy/daemonset/base/rbac.yaml.
#pragma once

#include <string>
#include <vector>

namespace meshlock::config::kube {

enum class Selection {
  kAll,
  kThisNode,    // fieldSelector=spec.nodeName=NODE
  kOtherNodes,  // fieldSelector=spec.nodeName!=NODE
  kIstioMeshConfigMap,  // fieldSelector=metadata.name=istio
};

struct ResourceKind {
  std::string name;                   // status and metric label: "pods.local", "peerauthentications"
  std::string group;                  // "" for the core group
  std::vector<std::string> versions;  // the versions the agent's decoder understands, newest first
  std::string resource;               // plural, as in the URL
  std::string kind;                   // what list items are (they carry no kind of their own)
  Selection selection = Selection::kAll;
  // A custom resource: its group may be missing (CRD not installed), which is
  // listed-and-empty, looked for again later. The version comes from discovery.
  bool custom = false;
};

// Every kind config/manifest.cpp decodes, except core Endpoints (the
// EndpointSlices say the same; listing both would count each address twice).
[[nodiscard]] const std::vector<ResourceKind>& agentResourceKinds();

// What `meshlock-agent ca` watches: the pods of every node (its node authorizer).
[[nodiscard]] const std::vector<ResourceKind>& caResourceKinds();

// The fieldSelector value for `selection` on node `node` (empty: none).
[[nodiscard]] std::string fieldSelector(Selection selection, const std::string& node);

// "/api/v1/pods", "/apis/security.istio.io/v1/peerauthentications".
[[nodiscard]] std::string collectionPath(const ResourceKind& kind, const std::string& version);

// Percent-encodes a query value (RFC 3986 unreserved characters stay).
[[nodiscard]] std::string urlEncode(const std::string& value);

// From a discovery APIGroup document (GET /apis/<group>): the group's
// preferred version if the agent understands it, else the newest it
// understands that the server serves; empty if none.
[[nodiscard]] std::string chooseVersion(const ResourceKind& kind, const std::string& preferred,
                                        const std::vector<std::string>& served);

}  // namespace meshlock::config::kube
