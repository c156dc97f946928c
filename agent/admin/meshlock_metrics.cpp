// Names, help and label sets of meshlock's own metric families.
#include "admin/meshlock_metrics.h"

namespace meshlock::admin {

MeshlockMetrics::MeshlockMetrics(MetricsRegistry& registry)
    : handshakes(registry.counter("meshlock_tls_handshakes_total",
                                  "TLS handshakes by direction, result and reason",
                                  {"direction", "result", "reason"})),
      plaintext_refused(registry.counter("meshlock_plaintext_refused_total",
                                         "Plaintext connections refused because the port is STRICT",
                                         {"namespace", "workload", "port"})),
      connections(registry.counter("meshlock_connections_total",
                                   "Connections handled, by direction and mode",
                                   {"direction", "mode"})),
      active_connections(registry.gauge("meshlock_active_connections",
                                        "Connections open now, by direction and mode",
                                        {"direction", "mode"})),
      certificate_expiry_seconds(registry.gauge("meshlock_certificate_expiry_seconds",
                                                "Seconds until the identity's certificate expires",
                                                {"identity"})),
      certificate_rotations(registry.counter("meshlock_certificate_rotations_total",
                                             "Certificate issuances and rotations by result", {"result"})),
      capture_redirects(registry.counter("meshlock_capture_redirects_total",
                                         "Connections steered to the agent, by BPF hook", {"hook"})),
      capture_errors(registry.counter("meshlock_capture_errors_total",
                                      "Capture failures by reason", {"reason"})),
      capture_map_entries(registry.gauge("meshlock_capture_map_entries",
                                         "Entries in each BPF map", {"map"})),
      capture_map_capacity(registry.gauge("meshlock_capture_map_capacity",
                                          "Maximum entries of each BPF map", {"map"})),
      capture_programs_attached(registry.gauge("meshlock_capture_programs_attached",
                                               "Attachments of each BPF program", {"program"})),
      engine_loop_iterations(registry.counter("meshlock_engine_loop_iterations_total",
                                              "io_uring loop iterations per worker", {"worker"})),
      engine_completions(registry.counter("meshlock_engine_completions_total",
                                          "io_uring completions handled per worker", {"worker"})),
      engine_buffer_bytes(registry.gauge("meshlock_engine_buffer_bytes",
                                         "Bytes held in connection buffers per worker", {"worker"})),
      engine_buffer_full(registry.counter("meshlock_engine_buffer_full_total",
                                          "Times a connection buffer was full (back-pressure)", {"worker"})),
      engine_timeouts(registry.counter("meshlock_engine_timeouts_total",
                                       "Connections closed by a timeout, by kind", {"kind"})),
      config_reloads(registry.counter("meshlock_config_reloads_total",
                                      "Cluster state reloads by result", {"result"})),
      pods_served(registry.gauge("meshlock_pods_served", "Enrolled pods this agent serves")),
      build_info(registry.gauge("meshlock_build_info", "meshlock build, always 1", {"version"})) {}

}  // namespace meshlock::admin
