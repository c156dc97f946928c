// Manifests, YAML or JSON, as the manifest directory (a ConfigMap anyone with
// edit rights fills) hands them to the agent: parsed, then the policy built
// from whatever loaded and every pod's decisions asked, so a hostile object
// exercises the composition as well as the decoder.
#include <algorithm>
#include <cstdint>
#include <string_view>

#include "config/manifest.h"
#include "policy/policy.h"

using namespace meshlock;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  config::ParsedManifests parsed = config::parseManifests(text, "fuzz.yaml");
  for (const config::ManifestError& error : parsed.errors) (void)error.describe();
  const auto index = policy::PolicyIndex::build(std::move(parsed.state));
  const config::ClusterState& state = index->state();
  const size_t pods = std::min<size_t>(state.pods.size(), 8);
  for (size_t i = 0; i < pods; ++i) {
    const config::Pod& pod = state.pods[i];
    (void)index->served(pod);
    for (const config::ContainerPort& port : pod.ports) (void)index->inbound(pod, port.port);
    for (size_t s = 0; s < std::min<size_t>(state.services.size(), 8); ++s) {
      const config::Service& svc = state.services[s];
      for (const config::ServicePort& port : svc.ports) {
        (void)index->outbound(pod, policy::Destination{.ip = svc.cluster_ip.value_or(IpAddress{}), .host = {}}, port.port);
        (void)index->destinationRuleFor(pod, index->fqdn(svc));
      }
    }
    for (size_t j = 0; j < pods; ++j)
      for (const config::ContainerPort& port : state.pods[j].ports) (void)index->outboundToPod(pod, state.pods[j], port.port);
  }
  return 0;
}
