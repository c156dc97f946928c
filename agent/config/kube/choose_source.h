// Which source the agent reads the cluster from, in this order:
// a manifest directory if one is given; else a kubeconfig file if one is
// given; else the in-cluster service account when KUBERNETES_SERVICE_HOST is
// set; else a start-up error naming the three.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "config/kube/endpoint.h"
#include "config/source.h"

namespace meshlock::config::kube {

struct SourceChoice {
  std::filesystem::path manifests_dir;
  std::filesystem::path kubeconfig;
  std::filesystem::path service_account_dir{std::string(kDefaultServiceAccountDir)};
  std::string service_host;  // KUBERNETES_SERVICE_HOST
  std::string service_port;  // KUBERNETES_SERVICE_PORT
  std::string node_name;
  SourceLimits limits;  // settings maxSourceBytes, maxSourceObjects
};

[[nodiscard]] Result<std::unique_ptr<ClusterSource>> openClusterSource(const SourceChoice& choice);

}  // namespace meshlock::config::kube
