// A Kubernetes watch stream as the API server (or whoever stands in its
// place on the network path, or a user with create rights on a CRD the agent
// reads) sends it: newline-separated JSON events, each object decoded by the
// agent's decoder as the kind the watch is for (the first byte picks it from
// the agent's resource table), then the policy built from what decoded.
#include <cstdint>
#include <string_view>

#include <nlohmann/json.hpp>

#include "config/kube/resources.h"
#include "config/manifest.h"
#include "policy/policy.h"

using namespace meshlock;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const auto& kinds = config::kube::agentResourceKinds();
  const config::kube::ResourceKind& kind = kinds[data[0] % kinds.size()];
  const std::string api_version = kind.group.empty() ? kind.versions.front() : kind.group + "/" + kind.versions.front();
  std::string_view stream(reinterpret_cast<const char*>(data) + 1, size - 1);
  config::ClusterState state;
  while (!stream.empty()) {
    const size_t end = stream.find('\n');
    const std::string_view line = stream.substr(0, end);
    stream = end == std::string_view::npos ? std::string_view{} : stream.substr(end + 1);
    const nlohmann::json event = nlohmann::json::parse(line, nullptr, false);
    if (!event.is_object()) continue;
    auto object = event.find("object");
    if (object == event.end() || !object->is_object()) continue;
    config::ParsedManifests parsed = config::decodeApiObject(*object, "fuzz watch", api_version, kind.kind);
    for (const config::ManifestError& error : parsed.errors) (void)error.describe();
    state.append(parsed.state);
  }
  const auto index = policy::PolicyIndex::build(std::move(state));
  for (const config::Pod& pod : index->state().pods) {
    (void)index->served(pod);
    for (const config::ContainerPort& port : pod.ports) (void)index->inbound(pod, port.port);
  }
  return 0;
}
