// The table of watched kinds.
#include "config/kube/resources.h"

#include <algorithm>

namespace meshlock::config::kube {

const std::vector<ResourceKind>& agentResourceKinds() {
  static const std::vector<ResourceKind> kinds = {
      {"pods.local", "", {"v1"}, "pods", "Pod", Selection::kThisNode, false},
      // Other nodes' pods: their IPs, service accounts and labels (secure naming, auto mTLS).
      {"pods.other", "", {"v1"}, "pods", "Pod", Selection::kOtherNodes, false},
      {"namespaces", "", {"v1"}, "namespaces", "Namespace", Selection::kAll, false},
      {"services", "", {"v1"}, "services", "Service", Selection::kAll, false},
      {"endpointslices", "discovery.k8s.io", {"v1"}, "endpointslices", "EndpointSlice", Selection::kAll, false},
      {"configmaps.istio", "", {"v1"}, "configmaps", "ConfigMap", Selection::kIstioMeshConfigMap, false},
      {"peerauthentications", "security.istio.io", {"v1", "v1beta1"}, "peerauthentications", "PeerAuthentication",
       Selection::kAll, true},
      {"authorizationpolicies", "security.istio.io", {"v1", "v1beta1"}, "authorizationpolicies",
       "AuthorizationPolicy", Selection::kAll, true},
      {"destinationrules", "networking.istio.io", {"v1", "v1beta1", "v1alpha3"}, "destinationrules",
       "DestinationRule", Selection::kAll, true},
      {"serviceentries", "networking.istio.io", {"v1", "v1beta1", "v1alpha3"}, "serviceentries", "ServiceEntry",
       Selection::kAll, true},
      {"istios", "sailoperator.io", {"v1"}, "istios", "Istio", Selection::kAll, true},
      {"istiooperators", "install.istio.io", {"v1alpha1"}, "istiooperators", "IstioOperator", Selection::kAll, true},
      {"servicemeshcontrolplanes", "maistra.io", {"v2", "v1"}, "servicemeshcontrolplanes",
       "ServiceMeshControlPlane", Selection::kAll, true},
      {"servicemeshmemberrolls", "maistra.io", {"v1"}, "servicemeshmemberrolls", "ServiceMeshMemberRoll",
       Selection::kAll, true},
      {"policies.maistra", "authentication.maistra.io", {"v1"}, "policies", "Policy", Selection::kAll, true},
      {"servicemeshpolicies", "authentication.maistra.io", {"v1"}, "servicemeshpolicies", "ServiceMeshPolicy",
       Selection::kAll, true},
      // Istio 1.x authentication: gone from current Istio, kept for old clusters as the manifests are.
      {"policies.istio", "authentication.istio.io", {"v1alpha1"}, "policies", "Policy", Selection::kAll, true},
      {"meshpolicies", "authentication.istio.io", {"v1alpha1"}, "meshpolicies", "MeshPolicy", Selection::kAll, true},
  };
  return kinds;
}

const std::vector<ResourceKind>& caResourceKinds() {
  static const std::vector<ResourceKind> kinds = {{"pods", "", {"v1"}, "pods", "Pod", Selection::kAll, false}};
  return kinds;
}

std::string fieldSelector(Selection selection, const std::string& node) {
  switch (selection) {
    case Selection::kThisNode: return "spec.nodeName=" + node;
    case Selection::kOtherNodes: return "spec.nodeName!=" + node;
    case Selection::kIstioMeshConfigMap: return "metadata.name=istio";
    case Selection::kAll: break;
  }
  return {};
}

std::string collectionPath(const ResourceKind& kind, const std::string& version) {
  if (kind.group.empty()) return "/api/" + version + "/" + kind.resource;
  return "/apis/" + kind.group + "/" + version + "/" + kind.resource;
}

std::string urlEncode(const std::string& value) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : value) {
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
        c == '_' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

std::string chooseVersion(const ResourceKind& kind, const std::string& preferred,
                          const std::vector<std::string>& served) {
  auto understood = [&](const std::string& v) {
    return std::find(kind.versions.begin(), kind.versions.end(), v) != kind.versions.end();
  };
  if (!preferred.empty() && understood(preferred)) return preferred;
  for (const std::string& v : kind.versions) {
    if (std::find(served.begin(), served.end(), v) != served.end()) return v;
  }
  return {};
}

}  // namespace meshlock::config::kube
