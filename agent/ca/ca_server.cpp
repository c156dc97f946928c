// The CA service's parts, wired (ca_server.h).
#include "ca/ca_server.h"

#include "ca/root_publisher.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <mutex>
#include <stop_token>
#include <thread>

#include "admin/metrics.h"
#include "admin/router.h"
#include "admin/server.h"
#include "config/kube/endpoint.h"
#include "config/kube/kube_source.h"
#include "config/kube/neon_transport.h"
#include "config/kube/resources.h"
#include "grpc/server.h"
#include "identity/ca_client.h"
#include "identity/x509_util.h"

namespace meshlock::ca {
namespace {

identity::Seconds now() {
  return std::chrono::time_point_cast<std::chrono::seconds>(std::chrono::system_clock::now());
}

}  // namespace

struct CaServer::Impl {
  CaServerOptions options;
  std::shared_ptr<identity::MeshCa> mesh_ca;
  std::unique_ptr<config::kube::KubeSource> source;
  mutable std::mutex pods_mutex;
  std::shared_ptr<const PodDirectory> pods;  // null until every node's pods were listed
  std::shared_ptr<CaService> service;
  std::unique_ptr<grpc::UnaryServer> grpc_server;
  std::unique_ptr<admin::HttpServer> admin_server;
  admin::MetricsRegistry metrics;
  identity::Seconds serving_renew_at{};
  std::shared_ptr<config::kube::TransportFactory> transports;
  std::shared_ptr<config::kube::BearerToken> token;
  std::string ns;  // the CA's own namespace
  bool root_published = false;
  std::chrono::steady_clock::time_point next_publish{};
  std::jthread refresher;

  std::shared_ptr<const PodDirectory> currentPods() const {
    std::lock_guard lock(pods_mutex);
    return pods;
  }

  // The certificate istiod-style callers check against caServerName.
  Result<std::pair<std::string, std::string>> servingCredentials() {
    auto self = identity::SpiffeId::forServiceAccount(options.service.trust_domain, "meshlock-system", "meshlock-ca");
    if (!self) return std::unexpected(self.error());
    auto key = identity::generateP256Key();
    if (!key) return std::unexpected(key.error());
    auto leaf = mesh_ca->sign(key->get(), *self, now(), options.serving_lifetime, options.serving_names);
    if (!leaf) return std::unexpected(leaf.error().context("the CA's serving certificate"));
    std::string chain = identity::certificatePem(leaf->leaf.get());
    for (const auto& cert : mesh_ca->chain()) chain += identity::certificatePem(cert.get());
    serving_renew_at = leaf->notBefore + (leaf->notAfter - leaf->notBefore) / 2;
    return std::pair{std::move(chain), identity::privateKeyPem(key->get())};
  }

  void publishRoot() {
    std::string roots;
    for (const auto& root : mesh_ca->roots()) roots += identity::certificatePem(root.get());
    auto api = transports->open();
    Status published = api ? publishRootConfigMap(**api, token->current(), ns, options.root_configmap, roots)
                           : Status(std::unexpected(api.error()));
    if (published) {
      root_published = true;
      spdlog::info("ca: the mesh root is in ConfigMap {}/{} (key {})", ns, options.root_configmap, kRootConfigMapKey);
    } else {
      next_publish = std::chrono::steady_clock::now() + std::chrono::seconds(5);
      spdlog::warn("ca: publishing the mesh root in ConfigMap {}/{}: {} (again in 5 s)", ns, options.root_configmap,
                   published.error().describe());
    }
  }

  void refresh(std::stop_token stop) {
    while (!stop.stop_requested()) {
      if (auto update = source->poll(std::chrono::milliseconds(500))) {
        auto directory = std::make_shared<const PodDirectory>(update->state);
        spdlog::log(currentPods() ? spdlog::level::debug : spdlog::level::info, "ca: {} pods known (update {}){}",
                    directory->size(), update->generation, currentPods() ? "" : ": ready");
        std::lock_guard lock(pods_mutex);
        pods = std::move(directory);
      }
      if (!root_published && !options.root_configmap.empty() && std::chrono::steady_clock::now() >= next_publish)
        publishRoot();
      if (now() >= serving_renew_at) {
        auto credentials = servingCredentials();
        Status set = credentials ? grpc_server->setCredentials(credentials->first, credentials->second)
                                 : Status(std::unexpected(credentials.error()));
        if (set) spdlog::info("ca: serving certificate renewed");
        else spdlog::error("ca: renewing the serving certificate: {}", set.error().describe());
      }
    }
  }
};

CaServer::CaServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

CaServer::~CaServer() {
  impl_->refresher = {};  // joined first: it uses the servers
  impl_->admin_server.reset();
  impl_->grpc_server.reset();
}

bool CaServer::ready() const { return impl_->currentPods() != nullptr; }
uint16_t CaServer::port() const { return impl_->grpc_server->port(); }

Result<std::unique_ptr<CaServer>> CaServer::start(CaServerOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  CaServerOptions& o = impl->options;

  std::error_code ec;
  Result<std::unique_ptr<identity::MeshCa>> ca =
      std::filesystem::exists(o.ca_dir / identity::kCaCertFile, ec)
          ? identity::MeshCa::loadPlugin(o.ca_dir, now())
          : identity::MeshCa::open(o.ca_dir, o.service.trust_domain, now());
  if (!ca) return std::unexpected(ca.error().context("the signing CA in " + o.ca_dir.string()));
  impl->mesh_ca = std::move(*ca);

  Result<config::kube::ApiEndpoint> endpoint =
      !o.kubeconfig.empty()     ? config::kube::loadKubeconfig(o.kubeconfig)
      : !o.service_host.empty() ? config::kube::inClusterEndpoint(o.service_host, o.service_port, o.service_account_dir)
                                : fail("no Kubernetes API: give --kubeconfig FILE or run in a pod");
  if (!endpoint) return std::unexpected(endpoint.error());
  auto transports = config::kube::makeNeonTransportFactory(*endpoint);
  if (!transports) return std::unexpected(transports.error());
  std::shared_ptr<config::kube::TransportFactory> shared_transports = std::move(*transports);
  auto token = std::make_shared<config::kube::BearerToken>(*endpoint);
  impl->transports = shared_transports;
  impl->token = token;
  impl->ns = endpoint->ns.empty() ? "meshlock-system" : endpoint->ns;
  config::kube::KubeSourceOptions source_options;
  source_options.kinds = config::kube::caResourceKinds();
  source_options.origin = endpoint->origin;
  impl->source = config::kube::KubeSource::start(shared_transports, token, std::move(source_options));
  spdlog::info("ca: pods of every node from the Kubernetes API at {} ({})", endpoint->server, endpoint->origin);

  auto reviewer = std::make_shared<KubeTokenReviewer>(shared_transports, token,
                                                      KubeTokenReviewerOptions{.audiences = o.audiences});
  Impl* self = impl.get();
  impl->service = std::make_shared<CaService>(
      o.service, impl->mesh_ca, reviewer, [self] { return self->currentPods(); }, now);

  auto credentials = impl->servingCredentials();
  if (!credentials) return std::unexpected(credentials.error());
  grpc::ServerConfig grpc_config;
  grpc_config.listenAddress = o.listen;
  grpc_config.certChainPem = credentials->first;
  grpc_config.keyPem = credentials->second;
  // A CSR and its metadata are a few KiB; node agents keep one connection each.
  grpc_config.maxMessageBytes = 32 * 1024;
  grpc_config.maxConcurrentStreams = 4;
  grpc_config.maxConnections = 4096;
  grpc_config.maxConnectionsPerSource = 16;
  std::shared_ptr<CaService> service = impl->service;
  grpc::HandlerMap handlers;
  handlers[identity::kCreateCertificatePath] = [service](const grpc::ServerCall& call) {
    return service->createCertificate(CertificateCall{
        .request = call.request, .authorization = std::string(call.header("authorization")), .peer = call.peer});
  };
  auto grpc_server = grpc::UnaryServer::start(std::move(grpc_config), std::move(handlers));
  if (!grpc_server) return std::unexpected(grpc_server.error().context("serving Istio's CA API on " + o.listen));
  impl->grpc_server = std::move(*grpc_server);

  auto& requests = impl->metrics.counter("meshlock_ca_requests_total",
                                         "CreateCertificate calls by outcome: issued, or the refusal's reason",
                                         {"outcome"});
  auto& pods_known = impl->metrics.gauge("meshlock_ca_pods", "Pods the node authorizer knows");
  impl->metrics.onCollect([self, &requests, &pods_known] {
    for (const auto& [outcome, count] : self->service->outcomes()) requests.labels({outcome}).mirror(count);
    auto pods = self->currentPods();
    pods_known.labels({}).set(pods ? static_cast<double>(pods->size()) : 0);
  });
  admin::Router router;
  auto readiness = [self](const admin::Request&) {
    return self->currentPods() ? admin::Response::text(200, "ready\n")
                               : admin::Response::text(503, "the pods of the cluster are not listed yet\n");
  };
  router.handle("/ready", readiness);
  router.handle("/healthz/ready", readiness);
  router.handle("/metrics", [self](const admin::Request&) {
    admin::Response response = admin::Response::text(200, self->metrics.render());
    response.content_type = std::string(admin::kPrometheusContentType);
    return response;
  });
  auto admin_endpoint = admin::Endpoint::parse(o.admin_address);
  if (!admin_endpoint) return std::unexpected(admin_endpoint.error().context("--admin-address"));
  admin::ServerOptions admin_options;
  admin_options.listen = {*admin_endpoint};
  auto admin_server = admin::HttpServer::start(std::move(admin_options), std::move(router));
  if (!admin_server) return std::unexpected(admin_server.error().context("admin on " + o.admin_address));
  impl->admin_server = std::move(*admin_server);

  impl->refresher = std::jthread([self](std::stop_token stop) { self->refresh(stop); });
  spdlog::info("ca: Istio's CA API on {} (port {}), signing for trust domain {} as {}; node agents: {}", o.listen,
               impl->grpc_server->port(), o.service.trust_domain.name(),
               identity::subjectText(impl->mesh_ca->signingCertificate()),
               fmt::join(o.service.trusted_node_accounts, ", "));
  return std::unique_ptr<CaServer>(new CaServer(std::move(impl)));
}

}  // namespace meshlock::ca
