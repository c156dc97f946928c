// The workload a pod belongs to, named as Istio names it in telemetry
// (source_workload, source_app, canonical service and revision), so that
// Kiali and the Istio dashboards group meshlock's metrics like a sidecar's.
#pragma once

#include <string>

#include "config/types.h"

namespace meshlock::config {

struct WorkloadMeta {
  std::string name;                // the Deployment (pod name minus the ReplicaSet hash), else the pod
  std::string app;                 // app.kubernetes.io/name, else app; empty when neither
  std::string version;             // app.kubernetes.io/version, else version; empty when neither
  std::string canonical_service;   // service.istio.io/canonical-name, else app, else name
  std::string canonical_revision;  // service.istio.io/canonical-revision, else version, else "latest"
};

[[nodiscard]] WorkloadMeta workloadOf(const Pod& pod);

}  // namespace meshlock::config
