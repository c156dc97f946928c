// The agent's admin endpoints: which route answers where, and each endpoint's
// budget. The handlers live one family per file (admin_<family>.cpp); this
// file only composes them (docs/admin.md has the JSON contract and budgets).
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <filesystem>
#include <initializer_list>
#include <string>

#include "admin/standard_handlers.h"
#include "app/agent_parts.h"

namespace meshlock::app {
namespace {

// Splits "host:port" (the settings' form) into an endpoint.
Result<admin::Endpoint> tcpEndpoint(const std::string& address) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos) return fail("address \"" + address + "\": expected HOST:PORT");
  const std::string port_text = address.substr(colon + 1);
  char* end = nullptr;
  const long port = std::strtol(port_text.c_str(), &end, 10);
  if (port_text.empty() || *end != '\0' || port < 0 || port > 65535)
    return fail("address \"" + address + "\": bad port");
  return admin::Endpoint::tcp(address.substr(0, colon), static_cast<std::uint16_t>(port));
}

struct Route {
  const char* path;
  admin::Handler handler;
  std::initializer_list<admin::Method> methods = {admin::Method::kGet};
  admin::ChangeAccess changes = admin::ChangeAccess::kAnyEndpoint;
};

admin::Router routerOf(std::initializer_list<Route> routes) {
  admin::Router router;
  for (const Route& route : routes) router.handle(route.path, route.handler, route.methods, route.changes);
  return router;
}

// Budgets (docs/admin.md, "Budgets"). The Unix socket is for root and the
// agent's user only (meshlockctl): few workers, a small cap. 127.0.0.1:15000
// is reachable by every local user, all from one source address, so its
// per-source cap is its cap: a local flood fills only this port. 15020 takes
// the kubelet's probes and Prometheus from other sources, one request per
// connection sent at once: short head deadline, more workers than a single
// source may hold, so one flooding pod leaves it answering.
admin::ServerOptions unixBudget() {
  admin::ServerOptions o;
  o.workers = 2;
  o.max_connections = 16;
  o.request_timeout = std::chrono::seconds(5);
  return o;
}

admin::ServerOptions localTcpBudget() {
  admin::ServerOptions o;
  o.workers = 4;
  o.max_connections = 16;
  o.per_source_connections = 16;
  o.request_timeout = std::chrono::seconds(5);
  return o;
}

admin::ServerOptions metricsBudget() {
  admin::ServerOptions o;
  o.workers = 16;
  o.max_connections = 128;
  o.per_source_connections = 4;
  o.request_timeout = std::chrono::seconds(2);
  o.limits.max_body_bytes = 0;  // nothing on 15020 takes a body
  return o;
}

}  // namespace

Status Agent::Parts::startAdmin() {
  metrics->build_info.labels({MESHLOCK_VERSION}).set(1);
  // The remote CA (caMode istiod). Registered here until admin/meshlock_metrics.h
  // (being moved on another branch) takes them in.
  admin::CounterFamily& ca_requests = registry.counter(
      "meshlock_ca_requests_total", "CreateCertificate requests to the remote CA by result (success, a gRPC code, "
      "invalid_response, local)", {"result"});
  admin::GaugeFamily& certificates_pending = registry.gauge(
      "meshlock_certificates_pending", "Identities a pod of this node needs whose certificate has not come from the CA "
      "(their pods are not served)");
  registry.onCollect([this, &ca_requests, &certificates_pending] {
    if (identities->remote()) {
      for (const auto& [result, count] : identities->caRequests()) ca_requests.labels({result}).mirror(count);
      certificates_pending.labels({}).set(static_cast<double>(identities->pending().size()));
    }
    collectMetrics();
  });

  const admin::Handler ready_handler = readyHandler();
  const admin::Router router = routerOf({
      {"/healthz", [](const admin::Request&) { return admin::Response::json(200, R"({"status":"ok"})"); }},
      {"/ready", ready_handler},
      {"/status", statusHandler()},
      {"/workloads", workloadsHandler()},
      {"/connections", connectionsHandler()},
      {"/refused", refusedHandler()},
      {"/certs", certsHandler()},
      {"/capture", captureHandler()},
      {"/config_dump", configDumpHandler()},
      {"/policy", policyHandler()},
      {"/check", checkHandler()},
      {"/metrics", admin::metricsHandler(registry)},
      {"/logging", admin::loggingHandler(), {admin::Method::kGet, admin::Method::kPost, admin::Method::kPut},
       admin::ChangeAccess::kUnixSocket},
  });

  // The Unix socket and 127.0.0.1:15000 serve the same routes, each endpoint
  // on its own civetweb context and gate; their budgets differ, so they are
  // two servers.
  std::error_code ec;
  std::filesystem::create_directories(settings.admin_socket.parent_path(), ec);
  admin::ServerOptions unix_options = unixBudget();
  unix_options.listen.push_back(admin::Endpoint::unixSocket(settings.admin_socket.string()));
  unix_options.unix_replace_live = settings.admin_socket_take_over;
  auto admin = admin::HttpServer::start(unix_options, router);
  if (!admin) return std::unexpected(admin.error().context("admin API"));
  admin_server = std::move(*admin);

  if (!settings.admin_address.empty()) {
    auto endpoint = tcpEndpoint(settings.admin_address);
    if (!endpoint) return std::unexpected(endpoint.error().context("adminAddress"));
    admin::ServerOptions tcp_options = localTcpBudget();
    tcp_options.listen.push_back(*endpoint);
    auto server = admin::HttpServer::start(tcp_options, router);
    if (!server) return std::unexpected(server.error().context("admin API"));
    admin_tcp_server = std::move(*server);
  }

  if (!settings.metrics_address.empty()) {
    auto endpoint = tcpEndpoint(settings.metrics_address);
    if (!endpoint) return std::unexpected(endpoint.error().context("metricsAddress"));
    admin::ServerOptions metrics_options = metricsBudget();
    metrics_options.listen.push_back(*endpoint);
    auto server = admin::HttpServer::start(metrics_options, routerOf({
                                                                  {"/metrics", admin::metricsHandler(registry)},
                                                                  {"/healthz/ready", ready_handler},
                                                                  {"/healthz/live", liveHandler()},
                                                              }));
    if (!server) return std::unexpected(server.error().context("metrics"));
    metrics_server = std::move(*server);
  }
  spdlog::info("admin API on {} and {}; metrics on {}", settings.admin_socket.string(), settings.admin_address,
               settings.metrics_address);
  return {};
}

}  // namespace meshlock::app
