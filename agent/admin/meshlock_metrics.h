// meshlock's own metric families, registered in one place so their names and
// label sets are stable. Each part gets its handles from here (engine:
// handshakes and loop figures; capture: counters and map sizes; identity:
// certificate expiry) and never registers names of its own ad hoc.
#pragma once

#include "admin/metrics.h"

namespace meshlock::admin {

struct MeshlockMetrics {
  explicit MeshlockMetrics(MetricsRegistry& registry);

  // TLS handshakes. direction: inbound|outbound; result: success|failure;
  // reason: "ok" on success, else a short snake_case cause
  // ("peer_certificate_invalid", "identity_mismatch", "protocol_version",
  // "no_client_certificate", "timeout", "peer_closed", ...).
  CounterFamily& handshakes;  // meshlock_tls_handshakes_total{direction,result,reason}

  // Plaintext connections refused because the destination port is STRICT.
  CounterFamily& plaintext_refused;  // meshlock_plaintext_refused_total{namespace,workload,port}

  // Inbound connections an AuthorizationPolicy denied. policy: "NS/NAME",
  // or "none" when ALLOW policies applied and none matched.
  CounterFamily& authorization_denied;  // meshlock_authorization_denied_total{namespace,workload,policy}

  // Connections meshlock handled, by how they ended up. mode: mutual_tls|
  // plaintext|passthrough; direction: inbound|outbound.
  CounterFamily& connections;  // meshlock_connections_total{direction,mode}
  GaugeFamily& active_connections;  // meshlock_active_connections{direction,mode}

  // Seconds until each served identity's certificate expires (negative once
  // expired). Refresh it from an onCollect() hook so it is current at scrape.
  GaugeFamily& certificate_expiry_seconds;  // meshlock_certificate_expiry_seconds{identity}
  CounterFamily& certificate_rotations;     // meshlock_certificate_rotations_total{result}

  // Capture (BPF): connections steered by each hook, errors by reason, map fill.
  CounterFamily& capture_redirects;     // meshlock_capture_redirects_total{hook}
  CounterFamily& capture_errors;        // meshlock_capture_errors_total{reason}
  GaugeFamily& capture_map_entries;     // meshlock_capture_map_entries{map}
  GaugeFamily& capture_map_capacity;    // meshlock_capture_map_capacity{map}
  GaugeFamily& capture_programs_attached;  // meshlock_capture_programs_attached{program}

  // Capture (BPF): every counter of the ml_counters map by its name
  // (capture::kCounterNames), mirrored at scrape.
  CounterFamily& capture_events;  // meshlock_capture_events_total{event}

  // Engine totals over all workers (engine::EngineCounters), mirrored at scrape.
  CounterFamily& engine_connections_accepted;  // meshlock_engine_connections_accepted_total
  CounterFamily& engine_connections_closed;    // meshlock_engine_connections_closed_total
  // direction: handed_over (to the next agent process), adopted (from the previous one)
  CounterFamily& engine_connections_handed;    // meshlock_engine_connections_handed_total{direction}
  // reason: limit (max connections), decider (no plan: policy or setup error), plaintext_strict
  CounterFamily& engine_connections_refused;   // meshlock_engine_connections_refused_total{reason}
  CounterFamily& engine_plaintext_relayed;     // meshlock_engine_plaintext_relayed_total
  CounterFamily& engine_tunnel_streams;        // meshlock_engine_tunnel_streams_total{result}
  // Connections ended or refused before their handshake to bound the
  // pre-handshake ones (engine::EngineConfig::max_pending_handshakes*).
  // reason: source_cap (a new one from a source at its cap, refused),
  // oldest_shed (the oldest pending one, ended at the engine-wide cap),
  // node_cap (the cap reached and the accepting worker had none to shed).
  CounterFamily& connections_shed;             // meshlock_connections_shed_total{reason}
  GaugeFamily& engine_pending_connections;     // meshlock_engine_pending_connections: not yet relaying
  // accept() failures (EMFILE, ENFILE, ENOMEM): each pauses that listener, 10 ms doubling to 1 s.
  CounterFamily& engine_accept_errors;         // meshlock_engine_accept_errors_total
  // result: success (completed and verified), failure (including peer verification), timeout
  CounterFamily& engine_handshakes;            // meshlock_engine_handshakes_total{result}
  CounterFamily& engine_handshakes_resumed;    // meshlock_engine_handshakes_resumed_total
  CounterFamily& engine_connect_failures;      // meshlock_engine_connect_failures_total
  // kind: reset (reset or I/O error), tls_truncation (FIN without close_notify), tls_error
  CounterFamily& engine_connection_errors;     // meshlock_engine_connection_errors_total{kind}
  // direction: to_upstream (from the accepted side), to_downstream; plaintext bytes
  CounterFamily& engine_bytes;                 // meshlock_engine_bytes_total{direction}
  GaugeFamily& engine_active_connections;      // meshlock_engine_active_connections
  GaugeFamily& engine_buffered_bytes;          // meshlock_engine_buffered_bytes

  // Engine: one io_uring loop per worker.
  CounterFamily& engine_loop_iterations;  // meshlock_engine_loop_iterations_total{worker}
  CounterFamily& engine_completions;      // meshlock_engine_completions_total{worker}
  GaugeFamily& engine_buffer_bytes;       // meshlock_engine_buffer_bytes{worker}: bytes held in buffers
  CounterFamily& engine_buffer_full;      // meshlock_engine_buffer_full_total{worker}: back-pressure events
  CounterFamily& engine_timeouts;         // meshlock_engine_timeouts_total{kind}: handshake|idle|connect

  // Policy/config: the last reload's outcome, warnings.
  CounterFamily& config_reloads;       // meshlock_config_reloads_total{result}
  GaugeFamily& pods_served;            // meshlock_pods_served

  // The cluster source (manifests or the Kubernetes API), mirrored at scrape.
  GaugeFamily& config_source_connected;        // meshlock_config_source_connected: 1 while every watch is open
  GaugeFamily& config_source_synced;           // meshlock_config_source_synced: 1 once every kind was listed
  GaugeFamily& config_source_last_sync_age;    // meshlock_config_source_last_sync_age_seconds: data staleness
  CounterFamily& config_source_watch_events;   // meshlock_config_source_watch_events_total{kind,type}
  CounterFamily& config_source_relists;        // meshlock_config_source_relists_total{kind}
  CounterFamily& config_source_reconnects;     // meshlock_config_source_reconnects_total{kind}
  CounterFamily& config_source_errors;         // meshlock_config_source_errors_total{kind}
  CounterFamily& access_log_dropped;   // meshlock_access_log_dropped_total: lines the writer fell behind on
  // Access-log lines of connections refused before their handshake, left
  // out by the per pod and reason rate limit (a "suppressed" line says how many).
  CounterFamily& access_log_suppressed;  // meshlock_access_log_suppressed_total
  // Admin endpoints (docs/admin.md): connections the accept gate closed
  // without serving. endpoint: unix, admin (127.0.0.1:15000), metrics (15020);
  // reason: total_cap, source_cap, peer_uid (Unix peer neither root nor us), stopping.
  CounterFamily& admin_connections_refused;  // meshlock_admin_connections_refused_total{endpoint,reason}
  GaugeFamily& admin_connections_open;       // meshlock_admin_connections_open{endpoint}: admitted, not yet closed
  GaugeFamily& build_info;             // meshlock_build_info{version} 1
};

}  // namespace meshlock::admin
