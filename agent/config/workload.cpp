#include "config/workload.h"

namespace meshlock::config {
namespace {

std::string firstLabel(const Labels& labels, std::initializer_list<std::string_view> keys) {
  for (std::string_view key : keys) {
    if (auto it = labels.find(std::string(key)); it != labels.end() && !it->second.empty()) return it->second;
  }
  return {};
}

// Pods of a Deployment are named <deployment>-<pod-template-hash>-<suffix>;
// Istio's workload name is the Deployment's. Without the hash label the pod
// is its own workload (a bare pod, a StatefulSet member keeps its name too).
std::string deploymentName(const Pod& pod) {
  const std::string hash = firstLabel(pod.labels(), {"pod-template-hash"});
  const std::string& name = pod.name();
  if (hash.empty()) return name;
  const std::string marker = "-" + hash + "-";
  if (size_t at = name.rfind(marker); at != std::string::npos && at > 0) return name.substr(0, at);
  if (name.size() > hash.size() + 1 && name.ends_with("-" + hash)) return name.substr(0, name.size() - hash.size() - 1);
  return name;
}

}  // namespace

WorkloadMeta workloadOf(const Pod& pod) {
  WorkloadMeta out;
  out.name = deploymentName(pod);
  out.app = firstLabel(pod.labels(), {"app.kubernetes.io/name", "app"});
  out.version = firstLabel(pod.labels(), {"app.kubernetes.io/version", "version"});
  out.canonical_service = firstLabel(pod.labels(), {"service.istio.io/canonical-name"});
  if (out.canonical_service.empty()) out.canonical_service = out.app.empty() ? out.name : out.app;
  out.canonical_revision = firstLabel(pod.labels(), {"service.istio.io/canonical-revision"});
  if (out.canonical_revision.empty()) out.canonical_revision = out.version.empty() ? "latest" : out.version;
  return out;
}

}  // namespace meshlock::config
