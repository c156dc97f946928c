// The agent's admin API and metrics, answered from the live parts. Handlers
// only read: each takes the state's own lock or a snapshot (docs/admin.md has
// the JSON contract meshlockctl reads).
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdlib>
#include <ctime>
#include <string>

#include "admin/standard_handlers.h"
#include "app/agent_parts.h"
#include "app/source_status.h"
#include "app/config_dump.h"
#include "capture/bpf_abi.h"
#include "identity/trust_bundle.h"
#include "identity/x509_util.h"
#include "kmod-free/probe.h"
#include "policy/report_json.h"

namespace meshlock::app {
namespace {

using nlohmann::json;

std::string rfc3339(std::chrono::system_clock::time_point t) {
  const std::time_t seconds = std::chrono::system_clock::to_time_t(t);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

// Invalid UTF-8 (a label in a manifest, a peer's certificate) is replaced,
// never thrown: an admin request must not take the agent down.
admin::Response jsonResponse(int status, const json& body) {
  return admin::Response::json(status, body.dump(-1, ' ', false, json::error_handler_t::replace));
}

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

std::string lowerHex(std::string hex) {
  for (char& ch : hex) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return hex;
}

// One certificate as /certs lists chain entries and roots.
json certificateJson(X509* cert, std::chrono::system_clock::time_point now) {
  char issuer[512] = "";
  X509_NAME_oneline(X509_get_issuer_name(cert), issuer, sizeof issuer);
  const auto not_after = identity::notAfter(cert);
  return {{"subject", identity::subjectText(cert)}, {"issuer", issuer},
          {"serial", lowerHex(identity::serialHex(cert))}, {"not_after", rfc3339(not_after)},
          {"expires_in_seconds", std::chrono::duration<double>(not_after - now).count()}};
}

std::string modeName(policy::ServerMode mode) { return std::string(policy::toString(mode)); }

// Every engine counter, copied into its meshlock_engine_* family at scrape.
void exportEngineCounters(const engine::EngineCounters& c, admin::MeshlockMetrics& m) {
#define MESHLOCK_COUNT_ONE(name) +1
  constexpr int kEngineCounters = 0 MESHLOCK_ENGINE_COUNTERS(MESHLOCK_COUNT_ONE);
#undef MESHLOCK_COUNT_ONE
  static_assert(kEngineCounters == 25,
                "engine::EngineCounters changed: export the new counter here and in MeshlockMetrics");
  m.engine_connections_accepted.labels({}).mirror(c.accepted);
  m.engine_connections_closed.labels({}).mirror(c.closed);
  m.engine_connections_refused.labels({"limit"}).mirror(c.refused_limit);
  m.engine_connections_refused.labels({"decider"}).mirror(c.refused_decider);
  m.engine_connections_refused.labels({"plaintext_strict"}).mirror(c.refused_plaintext);
  m.engine_plaintext_relayed.labels({}).mirror(c.plaintext_relayed);
  m.connections_shed.labels({"source_cap"}).mirror(c.refused_pending_source);
  m.connections_shed.labels({"oldest_shed"}).mirror(c.shed_pending);
  m.connections_shed.labels({"node_cap"}).mirror(c.refused_pending_node);
  m.engine_pending_connections.labels({}).set(static_cast<double>(c.pending));
  m.engine_accept_errors.labels({}).mirror(c.accept_errors);
  m.engine_handshakes.labels({"success"}).mirror(c.handshakes);
  m.engine_handshakes.labels({"failure"}).mirror(c.handshake_failures);
  m.engine_handshakes.labels({"timeout"}).mirror(c.handshake_timeouts);
  m.engine_handshakes_resumed.labels({}).mirror(c.handshakes_resumed);
  m.engine_connect_failures.labels({}).mirror(c.connect_failures);
  m.engine_timeouts.labels({"handshake"}).mirror(c.handshake_timeouts);
  m.engine_timeouts.labels({"connect"}).mirror(c.connect_timeouts);
  m.engine_timeouts.labels({"idle"}).mirror(c.idle_timeouts);
  m.engine_connection_errors.labels({"reset"}).mirror(c.resets);
  m.engine_connection_errors.labels({"tls_truncation"}).mirror(c.tls_truncations);
  m.engine_connection_errors.labels({"tls_error"}).mirror(c.tls_errors);
  m.engine_bytes.labels({"to_upstream"}).mirror(c.bytes_to_upstream);
  m.engine_bytes.labels({"to_downstream"}).mirror(c.bytes_to_downstream);
  m.engine_active_connections.labels({}).set(static_cast<double>(c.active));
  m.engine_buffered_bytes.labels({}).set(static_cast<double>(c.buffered_bytes));
}

// The BPF counters (each by name, plus the redirect and error summaries) and
// the programs' attachments and maps' fill.
void exportCapture(const capture::Datapath& datapath, admin::MeshlockMetrics& m) {
  if (auto counters = datapath.counters()) {
    for (int i = 0; i < ML_CTR_MAX; ++i)
      m.capture_events.labels({capture::kCounterNames[i]}).mirror((*counters)[i]);
    auto at = [&](std::string_view name) {
      for (int i = 0; i < ML_CTR_MAX; ++i)
        if (capture::kCounterNames[i] == name) return (*counters)[i];
      MESHLOCK_CHECK(false && "unknown capture counter");
      return std::uint64_t{0};
    };
    m.capture_redirects.labels({"connect"}).mirror(at("connect_captured"));
    m.capture_redirects.labels({"sk_lookup"}).mirror(at("lookup_steered"));
    for (std::string_view reason : {"connect_error", "orig_dst_error", "lookup_error", "lookup_no_listener_dropped"})
      m.capture_errors.labels({reason}).mirror(at(reason));
  }
  if (auto info = datapath.describe()) {
    m.capture_programs_attached.clear();
    for (const capture::ProgramInfo& prog : info->programs)
      m.capture_programs_attached.labels({prog.attach_type}).set(static_cast<double>(prog.links.size()));
    m.capture_map_entries.clear();
    for (const capture::MapInfo& map : info->maps) {
      m.capture_map_capacity.labels({map.name}).set(map.max_entries);
      if (map.entries) m.capture_map_entries.labels({map.name}).set(*map.entries);
    }
  }
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
    {
      std::lock_guard lock(served_mutex);
      metrics->pods_served.labels({}).set(static_cast<double>(served.size()));
    }
    const auto now = std::chrono::system_clock::now();
    metrics->certificate_expiry_seconds.clear();  // identities no longer served drop out
    for (const identity::CertificateStatus& cert : identities->certificates()) {
      metrics->certificate_expiry_seconds.labels({cert.id.uri()})
          .set(std::chrono::duration<double>(cert.notAfter - now).count());
    }
    exportEngineCounters(engine->counters(), *metrics);
    for (const engine::WorkerFigures& w : engine->workerFigures()) {
      const std::string worker = std::to_string(w.worker);
      metrics->engine_loop_iterations.labels({worker}).mirror(w.loop_iterations);
      metrics->engine_completions.labels({worker}).mirror(w.completions);
      metrics->engine_buffer_full.labels({worker}).mirror(w.buffer_full);
      metrics->engine_buffer_bytes.labels({worker}).set(static_cast<double>(w.buffered_bytes));
    }
    exportCapture(*datapath, *metrics);
    exportSourceStatus(source->status(), *metrics);
    if (reports && reports->access_log) metrics->access_log_dropped.labels({}).mirror(reports->access_log->droppedLines());
    if (reports) metrics->access_log_suppressed.labels({}).mirror(reports->refusal_lines->suppressedTotal());
  });

  auto ready_handler = [this](const admin::Request&) {
    const bool is_ready = ready.load() && all_pods_served.load();
    const config::SourceStatus source_status = source->status();
    json body = {{"ready", is_ready},
                 {"checks", json::array({{{"name", "config"}, {"ready", source_status.synced},
                                          {"detail", source_status.summary()}},
                                         {{"name", "capture"}, {"ready", datapath.has_value()},
                                          {"detail", "pinned in " + settings.bpf_pin_dir.string()}},
                                         {{"name", "pods"}, {"ready", all_pods_served.load()},
                                          {"detail", all_pods_served.load() ? "every enrolled pod of the node served"
                                                                            : "a pod could not be served yet (retried)"}},
                                         {{"name", "serving"}, {"ready", ready.load()},
                                          {"detail", ready.load() ? "accepting connections" : "starting or draining"}}})}};
    return jsonResponse(is_ready ? 200 : 503, body);
  };

  admin::Router router;
  router.handle("/healthz", [](const admin::Request&) { return admin::Response::json(200, R"({"status":"ok"})"); });
  router.handle("/ready", ready_handler);

  router.handle("/status", [this](const admin::Request&) {
    const engine::EngineCounters c = engine->counters();
    const auto now = std::chrono::system_clock::now();
    std::size_t pods = 0;
    {
      std::lock_guard lock(served_mutex);
      pods = served.size();
    }
    std::size_t active_mtls = 0;
    const auto connections = engine->connections();
    for (const engine::ConnectionSnapshot& snapshot : connections) active_mtls += snapshot.tls ? 1 : 0;
    json certs_json = {{"identities", 0}, {"soonest_expiry_seconds", nullptr}};
    const auto certs = identities->certificates();
    certs_json["identities"] = certs.size();
    certs_json["pending"] = identities->pending().size();
    for (const identity::CertificateStatus& cert : certs) {
      const double left = std::chrono::duration<double>(cert.notAfter - now).count();
      if (certs_json["soonest_expiry_seconds"].is_null() || left < certs_json["soonest_expiry_seconds"].get<double>())
        certs_json["soonest_expiry_seconds"] = left;
    }
    const kmodfree::ProbeReport& probe = kernel;  // the start-up probe: what the agent decided on
    json features = json::array();
    for (const kmodfree::Feature& f : probe.features)
      features.push_back({{"name", f.name}, {"available", f.state == kmodfree::FeatureState::Present}, {"detail", f.detail},
                          {"state", std::string(kmodfree::stateName(f.state))}, {"required", f.required}});
    json body = {
        {"version", MESHLOCK_VERSION},
        {"node", settings.node_name},
        {"uptime_seconds", std::chrono::duration<double>(now - started_at).count()},
        {"started_at", rfc3339(started_at)},
        {"ready", ready.load()},
        {"pods_served", pods},
        {"io_backend", engine::toString(engine->backend())},
        {"connections", {{"active", c.active}, {"active_mtls", active_mtls},
                         {"active_plaintext", connections.size() - active_mtls}, {"total", c.accepted}}},
        {"handshakes", {{"success", c.handshakes}, {"failure", c.handshake_failures + c.handshake_timeouts}}},
        {"plaintext_refused", c.refused_plaintext},
        {"certificates", certs_json},
        {"source", sourceStatusJson(source->status())},
        {"kernel", {{"release", probe.kernel_release}, {"hard_requirements_met", probe.hardRequirementsMet()},
                    {"summary", kmodfree::summaryLine(probe)}, {"features", features}}},
    };
    return jsonResponse(200, body);
  });

  router.handle("/workloads", [this](const admin::Request&) {
    const PolicyRef policy = currentPolicy();
    json list = json::array();
    for (const config::Pod* pod : policy->podsOnNode(settings.node_name)) {
      const bool enrolled = policy->served(*pod);
      json inbound = json::array();
      for (const config::ContainerPort& port : pod->ports) {
        const policy::InboundDecision d = policy->inbound(*pod, port.port);
        inbound.push_back({{"port", port.port}, {"mode", modeName(d.mode)}, {"decided_by", d.decided_by.text()}});
      }
      list.push_back({
          {"namespace", pod->ns()}, {"pod", pod->name()}, {"uid", pod->uid.str()},
          {"ip", pod->ip ? json(pod->ip->toString()) : json(nullptr)},
          {"service_account", pod->service_account}, {"workload", pod->name()},
          {"enrolled", enrolled}, {"enrollment_reason", policy->servedReason(*pod).describe()},
          {"identity", enrolled ? json(policy->identityOf(*pod).str()) : json(nullptr)},
          {"default_inbound_mode", modeName(policy->inbound(*pod, 0).mode)},
          {"inbound", inbound},
      });
    }
    return jsonResponse(200, json{{"workloads", list}});
  });

  router.handle("/connections", [this](const admin::Request& request) {
    const PolicyRef policy = currentPolicy();
    const std::string ns_filter = request.param("namespace").value_or("");
    json list = json::array();
    std::uint64_t n = 0;
    for (const engine::ConnectionSnapshot& c : engine->connections()) {
      const config::Pod* local = policy->podByUid(config::PodUid(c.pod_key));
      json local_ns = local ? json(local->ns()) : json(nullptr);
      json local_pod = local ? json(local->name()) : json(nullptr);
      if (!ns_filter.empty() && (!local || local->ns() != ns_filter)) continue;
      const std::string mode = c.tls ? "mutual_tls" : "plaintext";
      // What the current policy says of this connection (as it would decide a new one).
      ConnectionDecision decision;
      if (local != nullptr) {
        decision = decideConnection(*policy, *local, c.outbound, c.upstream.ip(), c.upstream.port());
      }
      auto optional = [](const std::optional<std::string>& v) { return v ? json(*v) : json(nullptr); };
      json entry = {
          {"id", "c-" + std::to_string(++n)},
          {"direction", c.outbound ? "outbound" : "inbound"},
          {"source_namespace", c.outbound ? local_ns : json(nullptr)},
          {"source_pod", c.outbound ? local_pod : json(nullptr)},
          {"source_address", c.peer.toString()},
          {"source_identity", !c.outbound && c.tls ? json(c.tls->peer_identity) : json(nullptr)},
          {"destination_namespace", c.outbound ? json(nullptr) : local_ns},
          {"destination_pod", c.outbound ? json(nullptr) : local_pod},
          {"destination_address", c.upstream.toString()},
          {"destination_service", optional(decision.destination_service)},
          {"destination_identity", c.outbound && c.tls ? json(c.tls->peer_identity) : json(nullptr)},
          {"mode", mode},
          {"decided_by", optional(decision.decided_by)},
          {"tls_version", c.tls ? json(c.tls->version) : json(nullptr)},
          {"cipher", c.tls ? json(c.tls->cipher) : json(nullptr)},
          {"resumed", c.tls ? c.tls->resumed : false},
          {"bytes_sent", c.outbound ? c.bytes_to_upstream : c.bytes_to_downstream},
          {"bytes_received", c.outbound ? c.bytes_to_downstream : c.bytes_to_upstream},
          {"age_seconds", std::chrono::duration<double>(c.age).count()},
          {"state", c.state == "relaying" ? std::string("established") : c.state},
      };
      list.push_back(std::move(entry));
    }
    return jsonResponse(200, json{{"connections", list}});
  });

  // The last refusals, newest first: what was refused, the policy and the reason.
  router.handle("/refused", [this](const admin::Request& request) {
    const std::string ns_filter = request.param("namespace").value_or("");
    const std::string pod_filter = request.param("pod").value_or("");
    json list = json::array();
    for (const RefusalLog::Entry& entry : reports->refusals->recent()) {
      const AccessRecord& r = entry.record;
      if (!pod_filter.empty() && r.pod != pod_filter) continue;
      if (!ns_filter.empty() && !r.pod.starts_with(ns_filter + "/")) continue;
      list.push_back(AccessLog::toJson(r, rfc3339(entry.at)));
    }
    json body = {{"total", reports->refusals->total()},
                 {"kept", reports->refusals->capacity()},
                 {"refused", std::move(list)}};
    return jsonResponse(200, body);
  });

  router.handle("/certs", [this](const admin::Request&) {
    const auto now = std::chrono::system_clock::now();
    json list = json::array();
    std::map<std::string, std::vector<std::string>> pods_by_identity;
    {
      std::lock_guard lock(served_mutex);
      for (const auto& [uid, pod] : served) pods_by_identity[pod.id.uri()].push_back(pod.name);
    }
    for (const identity::CertificateStatus& cert : identities->certificates()) {
      const std::string serial = lowerHex(cert.serial);
      json chain = json::array();
      if (auto certs = identity::parseCertificatesPem(cert.chainPem, cert.id.uri())) {
        for (std::size_t i = 1; i < certs->size(); ++i) chain.push_back(certificateJson((*certs)[i].get(), now));
      }
      list.push_back({
          {"identity", cert.id.uri()}, {"serial", serial},
          {"not_before", rfc3339(cert.notBefore)}, {"not_after", rfc3339(cert.notAfter)},
          {"expires_in_seconds", std::chrono::duration<double>(cert.notAfter - now).count()},
          {"lifetime_seconds", std::chrono::duration<double>(cert.notAfter - cert.notBefore).count()},
          {"pods", pods_by_identity[cert.id.uri()]},
          {"chain", chain},
          {"state", cert.state},
          {"last_error", cert.lastError.empty() ? json(nullptr) : json(cert.lastError)},
      });
    }
    // Not issued yet (remote CA): their pods are not served.
    for (const identity::PendingCertificate& wait : identities->pending()) {
      list.push_back({{"identity", wait.id.uri()}, {"state", wait.state}, {"pods", json::array()},
                      {"last_error", wait.lastError.empty() ? json(nullptr) : json(wait.lastError)},
                      {"failures", wait.failures},
                      {"retry_in_seconds", wait.retryIn ? json(std::chrono::duration<double>(*wait.retryIn).count())
                                                        : json(nullptr)}});
    }
    json ca = {{"mode", identities->remote() ? "istiod" : "local"}};
    if (const auto& remote = identities->remoteCa()) {
      ca["address"] = remote->client.address;
      ca["root_file"] = remote->client.rootFile.string();
      ca["requests"] = identities->caRequests();
    }
    json roots = json::array();
    for (const auto& root : identities->trustBundle()->roots()) roots.push_back(certificateJson(root.get(), now));
    json body = {{"trust_domain", identities->trustDomain().name()}, {"certificates", list}, {"roots", roots}, {"ca", ca}};
    return jsonResponse(200, body);
  });

  router.handle("/capture", [this](const admin::Request&) {
    json counters = json::object();
    if (auto c = datapath->counters()) {
      for (int i = 0; i < ML_CTR_MAX; ++i) counters[std::string(capture::kCounterNames[i])] = (*c)[i];
    }
    json pods = json::array();
    for (const capture::PinnedPod& pod : datapath->pinnedPods())
      pods.push_back({{"uid", pod.uid.value}, {"cgroup_id", pod.pod_cgroup_id}});
    json programs = json::array();
    json maps = json::array();
    auto info = datapath->describe();
    if (info) {
      for (const capture::ProgramInfo& prog : info->programs) {
        json links = json::array();
        for (const auto& link : prog.links) links.push_back({{"id", link.id}, {"target", link.target}});
        programs.push_back({{"name", prog.name}, {"type", prog.type}, {"attach_type", prog.attach_type},
                            {"id", prog.id}, {"attachments", prog.links.size()}, {"links", links}});
      }
      for (const capture::MapInfo& map : info->maps) {
        maps.push_back({{"name", map.name}, {"type", map.type}, {"id", map.id}, {"max_entries", map.max_entries},
                        {"entries", map.entries ? json(*map.entries) : json(nullptr)}});
      }
    }
    json body = {{"pin_dir", settings.bpf_pin_dir.string()},
                 {"reused_pinned_links", datapath->reusedPinnedLinks()},
                 {"programs", programs}, {"maps", maps},
                 {"counters", counters}, {"pods", pods},
                 {"error", info ? json(nullptr) : json(info.error().describe())}};
    return jsonResponse(200, body);
  });

  router.handle("/config_dump", [this](const admin::Request&) {
    const PolicyRef policy = currentPolicy();
    const auto now = std::chrono::system_clock::now();
    std::map<std::string, json> by_identity;
    {
      std::lock_guard lock(served_mutex);
      for (const auto& [uid, pod] : served) {
        json& entry = by_identity[pod.id.uri()];
        if (entry.is_null()) {
          entry = {{"identity", pod.id.uri()}, {"pods", json::array()}, {"serial", nullptr},
                   {"not_after", nullptr}, {"expires_in_seconds", nullptr}};
        }
        entry["pods"].push_back(pod.name);
      }
    }
    for (const identity::CertificateStatus& cert : identities->certificates()) {
      auto it = by_identity.find(cert.id.uri());
      if (it == by_identity.end()) continue;
      it->second["serial"] = lowerHex(cert.serial);
      it->second["not_after"] = rfc3339(cert.notAfter);
      it->second["expires_in_seconds"] = std::chrono::duration<double>(cert.notAfter - now).count();
    }
    json list = json::array();
    for (auto& [id, entry] : by_identity) list.push_back(std::move(entry));
    json body = configDumpJson(*policy, settings.node_name, std::move(list));
    body["trust_domain"] = identities->trustDomain().name();
    return jsonResponse(200, body);
  });

  router.handle("/policy", [this](const admin::Request& request) {
    const std::string text = request.param("pod").value_or("");
    auto ref = policy::parsePodRef(text);
    if (!ref) return admin::Response::error(400, "pod=NAMESPACE/POD: " + ref.error().message);
    const PolicyRef policy = currentPolicy();
    const config::Pod* pod = policy->podByName(ref->ns, ref->name);
    if (pod == nullptr) return admin::Response::error(404, "unknown pod " + text + " (not in the agent's cluster state)");
    return jsonResponse(200, policy::explainPod(*policy, *pod));
  });

  router.handle("/check", [this](const admin::Request& request) {
    auto from = policy::parsePodRef(request.param("from").value_or(""));
    if (!from) return admin::Response::error(400, "from=NAMESPACE/POD: " + from.error().message);
    auto to = policy::parseTarget(request.param("to").value_or(""));
    if (!to) return admin::Response::error(400, "to=HOST:PORT: " + to.error().message);
    const PolicyRef policy = currentPolicy();
    auto report = policy::checkConnection(*policy, *from, *to);
    if (!report) return admin::Response::error(404, report.error().message);
    return jsonResponse(200, policy::toJson(*report));
  });

  router.handle("/metrics", admin::metricsHandler(registry));
  router.handle("/logging", admin::loggingHandler(), {admin::Method::kGet, admin::Method::kPost, admin::Method::kPut},
                admin::ChangeAccess::kUnixSocket);

  admin::ServerOptions admin_options;
  admin_options.listen.push_back(admin::Endpoint::unixSocket(settings.admin_socket.string()));
  admin_options.unix_replace_live = settings.admin_socket_take_over;
  if (!settings.admin_address.empty()) {
    auto endpoint = tcpEndpoint(settings.admin_address);
    if (!endpoint) return std::unexpected(endpoint.error().context("adminAddress"));
    admin_options.listen.push_back(*endpoint);
  }
  std::error_code ec;
  std::filesystem::create_directories(settings.admin_socket.parent_path(), ec);
  auto admin = admin::HttpServer::start(admin_options, router);
  if (!admin) return std::unexpected(admin.error().context("admin API"));
  admin_server = std::move(*admin);

  if (!settings.metrics_address.empty()) {
    auto endpoint = tcpEndpoint(settings.metrics_address);
    if (!endpoint) return std::unexpected(endpoint.error().context("metricsAddress"));
    admin::Router metrics_router;
    metrics_router.handle("/metrics", admin::metricsHandler(registry));
    metrics_router.handle("/healthz/ready", ready_handler);
    // Liveness, unlike readiness, stays 200 while starting or draining: only a
    // main loop that stopped turning (10 s) makes the kubelet restart us.
    metrics_router.handle("/healthz/live", [this](const admin::Request&) {
      const std::int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch()).count();
      const std::int64_t age = now - loop_beat_ms.load();
      return jsonResponse(age < 10'000 ? 200 : 503, json{{"live", age < 10'000}, {"loop_ms_ago", age}});
    });
    admin::ServerOptions metrics_options;
    metrics_options.listen.push_back(*endpoint);
    auto server = admin::HttpServer::start(metrics_options, std::move(metrics_router));
    if (!server) return std::unexpected(server.error().context("metrics"));
    metrics_server = std::move(*server);
  }
  spdlog::info("admin API on {} and {}; metrics on {}", settings.admin_socket.string(), settings.admin_address,
               settings.metrics_address);
  return {};
}

}  // namespace meshlock::app
