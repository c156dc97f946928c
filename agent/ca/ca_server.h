// `meshlock-agent ca` put together: the pods of every node from the
// Kubernetes API (for the node authorizer), TokenReviews, the signing CA,
// Istio's CA API on gRPC over TLS, and /ready + /metrics over plain HTTP.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "ca/ca_service.h"
#include "common/error.h"

namespace meshlock::ca {

struct CaServerOptions {
  // The API: a kubeconfig, else in-cluster (service_host set, the pod's service account).
  std::filesystem::path kubeconfig;
  std::filesystem::path service_account_dir;
  std::string service_host;
  std::string service_port;
  // The CA in Istio's plug-in layout (the cacerts Secret, mounted only here);
  // an empty directory gets a generated root (development only, said loudly).
  std::filesystem::path ca_dir;
  std::string listen = "0.0.0.0:15012";      // istiod's CA port
  std::string admin_address = "0.0.0.0:15014";  // /ready, /healthz/ready, /metrics (istiod's monitoring port)
  // DNS names of the serving certificate, what agents set as caServerName.
  std::vector<std::string> serving_names{"meshlock-ca.meshlock-system.svc"};
  std::chrono::seconds serving_lifetime{std::chrono::hours(24)};
  std::vector<std::string> audiences{"istio-ca"};
  // The ConfigMap (key root-cert.pem) the CA keeps the mesh root in, in its
  // own namespace, for the agents to mount as caRootFile; empty: none.
  std::string root_configmap = "meshlock-ca-root-cert";
  CaServiceConfig service;
};

class CaServer {
 public:
  [[nodiscard]] static Result<std::unique_ptr<CaServer>> start(CaServerOptions options);
  ~CaServer();
  CaServer(const CaServer&) = delete;
  CaServer& operator=(const CaServer&) = delete;

  // Every node's pods listed once: until then impersonation is refused UNAVAILABLE.
  [[nodiscard]] bool ready() const;
  [[nodiscard]] uint16_t port() const;

  struct Impl;

 private:
  explicit CaServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace meshlock::ca
