// Publishing the mesh root (root_publisher.h).
#include "ca/root_publisher.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "config/kube/resources.h"

namespace meshlock::ca {

Status publishRootConfigMap(config::kube::HttpTransport& api, const std::string& bearer, const std::string& ns,
                            const std::string& name, const std::string& root_pem) {
  const std::string collection = "/api/v1/namespaces/" + config::kube::urlEncode(ns) + "/configmaps";
  const std::string item = collection + "/" + config::kube::urlEncode(name);
  auto current = api.get(item, bearer);
  if (!current) return std::unexpected(current.error());
  nlohmann::json object = {{"apiVersion", "v1"},
                           {"kind", "ConfigMap"},
                           {"metadata", {{"name", name}, {"namespace", ns}, {"labels", {{"app", "meshlock-ca"}}}}},
                           {"data", {{kRootConfigMapKey, root_pem}}}};
  Result<config::kube::HttpResponse> written = fail("");
  if (current->status == 404) {
    written = api.send("POST", collection, bearer, object.dump());
  } else if (current->status / 100 == 2) {
    auto existing = nlohmann::json::parse(current->body, nullptr, false);
    if (!existing.is_discarded() && existing.value("data", nlohmann::json::object()).value(kRootConfigMapKey, "") == root_pem)
      return {};
    // A replace carries the resourceVersion read, so a concurrent writer (the other replica) wins cleanly.
    if (!existing.is_discarded()) object["metadata"]["resourceVersion"] = existing["metadata"].value("resourceVersion", "");
    written = api.send("PUT", item, bearer, object.dump());
  } else {
    return fail(fmt::format("GET {}: HTTP {} {}", item, current->status, current->body));
  }
  if (!written) return std::unexpected(written.error());
  if (written->status / 100 != 2)
    return fail(fmt::format("writing ConfigMap {}/{}: HTTP {} {}", ns, name, written->status, written->body));
  return {};
}

}  // namespace meshlock::ca
