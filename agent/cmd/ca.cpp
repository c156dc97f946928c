// `meshlock-agent ca`: the mesh's certificate authority for clusters without
// istiod, serving Istio's CA API (istio.v1.auth.IstioCertificateService) so
// node agents (and sidecars) need no CA key. Callers are authenticated with
// TokenReview; node agents get certificates only for service accounts with a
// pod on their own node. SIGTERM or SIGINT stops it.
#include <signal.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "ca/ca_server.h"
#include "common/command.h"

namespace meshlock {
namespace {

struct CaFlags {
  ca::CaServerOptions options;
  std::string trust_domain = "cluster.local";
  unsigned default_ttl_s = 24 * 3600;
  unsigned max_ttl_s = 90 * 24 * 3600;
};

int runCa(CaFlags& flags) {
  auto domain = identity::TrustDomain::parse(flags.trust_domain);
  if (!domain) {
    spdlog::error("--trust-domain: {}", domain.error().describe());
    return 2;
  }
  ca::CaServerOptions& o = flags.options;
  o.service.trust_domain = *domain;
  o.service.default_ttl = std::chrono::seconds(flags.default_ttl_s);
  o.service.max_ttl = std::chrono::seconds(flags.max_ttl_s);
  if (const char* host = std::getenv("KUBERNETES_SERVICE_HOST")) o.service_host = host;
  if (const char* port = std::getenv("KUBERNETES_SERVICE_PORT")) o.service_port = port;

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);  // before any thread starts: they inherit it
  signal(SIGPIPE, SIG_IGN);
  auto server = ca::CaServer::start(o);
  if (!server) {
    spdlog::error("ca: {}", server.error().describe());
    return 1;
  }
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  spdlog::info("ca: signal {}, stopping", signal_number);
  server->reset();
  return 0;
}

const CommandRegistrar kCa{Command{
    "ca",
    "serve Istio's CA API as the mesh's only CA key holder (node agents authorized node-wise)",
    [](CLI::App& sub) -> CommandAction {
      auto flags = std::make_shared<CaFlags>();
      ca::CaServerOptions& o = flags->options;
      sub.add_option("--kubeconfig", o.kubeconfig, "kubeconfig file (default: in-cluster service account)");
      o.service_account_dir = "/var/run/secrets/kubernetes.io/serviceaccount";
      sub.add_option("--service-account-dir", o.service_account_dir, "in-cluster token, ca.crt and namespace")
          ->capture_default_str();
      sub.add_option("--ca-dir", o.ca_dir, "the signing CA in Istio's plug-in layout (ca-cert.pem, ca-key.pem, "
                                           "root-cert.pem, cert-chain.pem)")
          ->required();
      sub.add_option("--listen", o.listen, "Istio's CA API (gRPC over TLS)")->capture_default_str();
      sub.add_option("--admin-address", o.admin_address, "/ready and /metrics (plain HTTP)")->capture_default_str();
      sub.add_option("--serving-name", o.serving_names, "DNS name of the serving certificate (repeat)")
          ->capture_default_str();
      sub.add_option("--trust-domain", flags->trust_domain, "the mesh's trust domain")->capture_default_str();
      sub.add_option("--trusted-node-account", o.service.trusted_node_accounts,
                     "namespace/serviceaccount of node agents allowed to ask for their pods' identities (repeat)")
          ->capture_default_str();
      sub.add_option("--audience", o.audiences, "token audiences accepted (TokenReview)")->capture_default_str();
      sub.add_option("--root-configmap", o.root_configmap,
                     "ConfigMap of the CA's namespace to keep the mesh root in (key root-cert.pem; \"\": none)")
          ->capture_default_str();
      sub.add_option("--default-ttl", flags->default_ttl_s, "seconds, when a request asks for none")->capture_default_str();
      sub.add_option("--max-ttl", flags->max_ttl_s, "seconds; longer requests are refused")->capture_default_str();
      sub.add_option("--rate", o.service.rate_per_second, "requests per second per caller address")->capture_default_str();
      sub.add_option("--burst", o.service.burst, "burst per caller address")->capture_default_str();
      return [flags] { return runCa(*flags); };
    }}};

}  // namespace
}  // namespace meshlock
