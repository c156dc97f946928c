#include "config/workload.h"

#include <algorithm>

namespace meshlock::config {
namespace {

std::string firstLabel(const Labels& labels, std::initializer_list<std::string_view> keys) {
  for (std::string_view key : keys) {
    if (auto it = labels.find(std::string(key)); it != labels.end() && !it->second.empty()) return it->second;
  }
  return {};
}

// Istio's workload name (its GetDeployMetaFromPod): the controller that owns
// the pod, with a ReplicaSet traced back to its Deployment (the pod template
// hash removed) and a Job to its CronJob (the schedule suffix removed). A pod
// without owner references is its own workload, unless its name shows a
// Deployment's (<deployment>-<pod-template-hash>-<suffix>).
std::string deploymentName(const Pod& pod) {
  const std::string hash = firstLabel(pod.labels(), {"pod-template-hash"});
  const std::optional<OwnerRef>& owner = pod.meta.owner;
  if (owner && !owner->name.empty()) {
    if (owner->kind == "ReplicaSet" && !hash.empty() && owner->name.ends_with("-" + hash))
      return owner->name.substr(0, owner->name.size() - hash.size() - 1);
    if (owner->kind == "Job") {
      // CronJob jobs are <cronjob>-<scheduled time in minutes>.
      const size_t dash = owner->name.rfind('-');
      if (dash != std::string::npos && dash > 0 && dash + 1 < owner->name.size() &&
          std::all_of(owner->name.begin() + static_cast<std::ptrdiff_t>(dash) + 1, owner->name.end(),
                      [](char c) { return c >= '0' && c <= '9'; }))
        return owner->name.substr(0, dash);
    }
    return owner->name;
  }
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
