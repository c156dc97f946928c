#include "config/kube/choose_source.h"

#include <spdlog/spdlog.h>

#include "config/kube/kube_source.h"
#include "config/kube/neon_transport.h"

namespace meshlock::config::kube {

Result<std::unique_ptr<ClusterSource>> openClusterSource(const SourceChoice& choice) {
  if (!choice.manifests_dir.empty()) {
    auto source = ManifestSource::start(choice.manifests_dir, choice.limits);
    if (!source) return std::unexpected(source.error().context("manifests " + choice.manifests_dir.string()));
    return std::unique_ptr<ClusterSource>(std::move(*source));
  }
  Result<ApiEndpoint> endpoint = fail("");
  if (!choice.kubeconfig.empty()) {
    endpoint = loadKubeconfig(choice.kubeconfig);
  } else if (!choice.service_host.empty()) {
    endpoint = inClusterEndpoint(choice.service_host, choice.service_port, choice.service_account_dir);
  } else {
    return fail(
        "no cluster source: give --manifests DIR (setting manifestsDir), or --kubeconfig FILE (setting "
        "kubeconfig), or run in a pod (KUBERNETES_SERVICE_HOST set, service account in " +
        choice.service_account_dir.string() + ", setting serviceAccountDir)");
  }
  if (!endpoint) return std::unexpected(endpoint.error());
  auto transports = makeNeonTransportFactory(*endpoint);
  if (!transports) return std::unexpected(transports.error());
  KubeSourceOptions options;
  options.node_name = choice.node_name;
  options.max_objects = choice.limits.max_objects;
  options.origin = endpoint->origin;
  spdlog::info("cluster state from the Kubernetes API at {} ({})", endpoint->server, endpoint->origin);
  auto token = std::make_shared<BearerToken>(*endpoint);
  return std::unique_ptr<ClusterSource>(
      KubeSource::start(std::shared_ptr<TransportFactory>(std::move(*transports)), std::move(token), std::move(options)));
}

}  // namespace meshlock::config::kube
