// Istio's standard TCP metrics, named and labelled exactly as Istio's proxies
// (Envoy's stats plugin, ztunnel) export them, so Kiali's graph and lock icons
// and the Istio dashboards work on meshlock's /metrics unchanged.
// Reference: istio.io/latest/docs/reference/config/metrics/ ("Istio Standard Metrics").
#pragma once

#include <string>

#include "admin/metrics.h"

namespace meshlock::admin {

// Istio's value for a label that is not known.
inline constexpr std::string_view kUnknown = "unknown";

// One connection's labels. Every field is a label of the four istio_tcp_*
// families; unset fields export as "unknown" (response_flags as "-").
struct IstioTcpLabels {
  // "source" when meshlock reports as the client's proxy (outbound),
  // "destination" as the server's proxy (inbound).
  std::string reporter = "source";

  std::string source_workload{kUnknown};            // Deployment (or owner) name
  std::string source_canonical_service{kUnknown};   // service.istio.io/canonical-name, else app label, else workload
  std::string source_canonical_revision{kUnknown};  // service.istio.io/canonical-revision, else version label, else "latest"
  std::string source_workload_namespace{kUnknown};
  std::string source_principal{kUnknown};           // spiffe://<td>/ns/<ns>/sa/<sa>, only when mTLS proved it
  std::string source_app{kUnknown};
  std::string source_version{kUnknown};
  std::string source_cluster{kUnknown};

  std::string destination_service{kUnknown};            // FQDN: reviews.shop.svc.cluster.local
  std::string destination_service_namespace{kUnknown};
  std::string destination_service_name{kUnknown};       // reviews
  std::string destination_workload{kUnknown};
  std::string destination_canonical_service{kUnknown};
  std::string destination_canonical_revision{kUnknown};
  std::string destination_workload_namespace{kUnknown};
  std::string destination_principal{kUnknown};
  std::string destination_app{kUnknown};
  std::string destination_version{kUnknown};
  std::string destination_cluster{kUnknown};

  std::string request_protocol = "tcp";
  // Envoy's flags: "-" for none, "UF" upstream connection failure, "URX",
  // "DENY"/"UAEX" refused by policy... meshlock uses "-", "UF" and "DENY".
  std::string response_flags = "-";
  // "mutual_tls" when the connection was mTLS, "none" when it was plaintext.
  std::string connection_security_policy = "none";

  [[nodiscard]] LabelValues values() const;
  [[nodiscard]] static const std::vector<std::string>& names();
  // Each label's name and member, in the families' order (names(), values()).
  struct Field {
    const char* name;
    std::string IstioTcpLabels::*member;
  };
  [[nodiscard]] static const std::vector<Field>& fields();
};

// The four handles one connection updates: opened once, closed once, bytes as
// they move. Obtain them when the connection opens (one locked lookup per
// family) and keep them with the connection; updates are lock-free.
struct IstioTcpConnectionMetrics {
  Counter opened;
  Counter closed;
  Counter sent_bytes;      // bytes sent back to the client (the "response" direction)
  Counter received_bytes;  // bytes received from the client (the "request" direction)
};

class IstioTcpMetrics {
 public:
  explicit IstioTcpMetrics(MetricsRegistry& registry);

  [[nodiscard]] IstioTcpConnectionMetrics forConnection(const IstioTcpLabels& labels);

 private:
  CounterFamily& opened_;
  CounterFamily& closed_;
  CounterFamily& sent_bytes_;
  CounterFamily& received_bytes_;
};

}  // namespace meshlock::admin
