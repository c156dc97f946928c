// The mesh root, published where node agents mount it: a ConfigMap with key
// root-cert.pem in the CA's namespace, as istiod publishes
// istio-ca-root-cert into every namespace (istio/istio
// pilot/pkg/bootstrap/namespacecontroller; the key name is the same).
#pragma once

#include <string>

#include "common/error.h"
#include "config/kube/transport.h"

namespace meshlock::ca {

inline constexpr const char* kRootConfigMapKey = "root-cert.pem";

// Creates or replaces ConfigMap `ns`/`name` holding `root_pem`; an unchanged
// one is left alone. Errors name the HTTP status and the API's message.
[[nodiscard]] Status publishRootConfigMap(config::kube::HttpTransport& api, const std::string& bearer,
                                          const std::string& ns, const std::string& name, const std::string& root_pem);

}  // namespace meshlock::ca
