// The live parts' figures copied into their metric families at each scrape.
#include <string>

#include "app/agent_parts.h"
#include "app/source_status.h"
#include "capture/bpf_abi.h"

namespace meshlock::app {

namespace {

// Every engine counter, copied into its meshlock_engine_* family at scrape.
void exportEngineCounters(const engine::EngineCounters& c, admin::MeshlockMetrics& m) {
#define MESHLOCK_COUNT_ONE(name) +1
  constexpr int kEngineCounters = 0 MESHLOCK_ENGINE_COUNTERS(MESHLOCK_COUNT_ONE);
#undef MESHLOCK_COUNT_ONE
  static_assert(kEngineCounters == 30,
                "engine::EngineCounters changed: export the new counter here and in MeshlockMetrics");
  m.engine_connections_accepted.labels({}).mirror(c.accepted);
  m.engine_connections_closed.labels({}).mirror(c.closed);
  m.engine_connections_handed.labels({"handed_over"}).mirror(c.handed_over);
  m.engine_connections_handed.labels({"adopted"}).mirror(c.adopted);
  m.engine_connections_refused.labels({"limit"}).mirror(c.refused_limit);
  m.engine_connections_refused.labels({"decider"}).mirror(c.refused_decider);
  m.engine_connections_refused.labels({"plaintext_strict"}).mirror(c.refused_plaintext);
  m.engine_connections_refused.labels({"authorization"}).mirror(c.refused_authz);
  m.engine_plaintext_relayed.labels({}).mirror(c.plaintext_relayed);
  m.engine_tunnel_streams.labels({"accepted"}).mirror(c.tunnel_streams);
  m.engine_tunnel_streams.labels({"refused"}).mirror(c.tunnel_refused);
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

// What each admin endpoint's accept gate refused and holds open. The Unix
// socket is "unix"; a TCP endpoint is named by its server: "admin" or "metrics".
void exportAdminGates(const admin::HttpServer& server, const std::string& tcp_name, admin::MeshlockMetrics& m) {
  for (const admin::EndpointStats& stats : server.stats()) {
    const std::string name = stats.endpoint.kind == admin::Endpoint::Kind::kUnix ? "unix" : tcp_name;
    m.admin_connections_refused.labels({name, "total_cap"}).mirror(stats.refused.total_cap);
    m.admin_connections_refused.labels({name, "source_cap"}).mirror(stats.refused.source_cap);
    m.admin_connections_refused.labels({name, "peer_uid"}).mirror(stats.refused.peer_uid);
    m.admin_connections_refused.labels({name, "stopping"}).mirror(stats.refused.stopping);
    m.admin_connections_open.labels({name}).set(static_cast<double>(stats.open));
  }
}

}  // namespace

void Agent::Parts::collectMetrics() {
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
  if (admin_server) exportAdminGates(*admin_server, "unix", *metrics);
  if (admin_tcp_server) exportAdminGates(*admin_tcp_server, "admin", *metrics);
  if (metrics_server) exportAdminGates(*metrics_server, "metrics", *metrics);
}

}  // namespace meshlock::app
