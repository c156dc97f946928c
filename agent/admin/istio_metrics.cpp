// Registration of Istio's four TCP counter families.
#include "admin/istio_metrics.h"

namespace meshlock::admin {

const std::vector<IstioTcpLabels::Field>& IstioTcpLabels::fields() {
  static const std::vector<Field> kFields = {
      {"reporter", &IstioTcpLabels::reporter},
      {"source_workload", &IstioTcpLabels::source_workload},
      {"source_canonical_service", &IstioTcpLabels::source_canonical_service},
      {"source_canonical_revision", &IstioTcpLabels::source_canonical_revision},
      {"source_workload_namespace", &IstioTcpLabels::source_workload_namespace},
      {"source_principal", &IstioTcpLabels::source_principal},
      {"source_app", &IstioTcpLabels::source_app},
      {"source_version", &IstioTcpLabels::source_version},
      {"source_cluster", &IstioTcpLabels::source_cluster},
      {"destination_service", &IstioTcpLabels::destination_service},
      {"destination_service_namespace", &IstioTcpLabels::destination_service_namespace},
      {"destination_service_name", &IstioTcpLabels::destination_service_name},
      {"destination_workload", &IstioTcpLabels::destination_workload},
      {"destination_canonical_service", &IstioTcpLabels::destination_canonical_service},
      {"destination_canonical_revision", &IstioTcpLabels::destination_canonical_revision},
      {"destination_workload_namespace", &IstioTcpLabels::destination_workload_namespace},
      {"destination_principal", &IstioTcpLabels::destination_principal},
      {"destination_app", &IstioTcpLabels::destination_app},
      {"destination_version", &IstioTcpLabels::destination_version},
      {"destination_cluster", &IstioTcpLabels::destination_cluster},
      {"request_protocol", &IstioTcpLabels::request_protocol},
      {"response_flags", &IstioTcpLabels::response_flags},
      {"connection_security_policy", &IstioTcpLabels::connection_security_policy},
  };
  return kFields;
}

const std::vector<std::string>& IstioTcpLabels::names() {
  static const std::vector<std::string> kNames = [] {
    std::vector<std::string> out;
    for (const Field& f : fields()) out.emplace_back(f.name);
    return out;
  }();
  return kNames;
}

LabelValues IstioTcpLabels::values() const {
  LabelValues out;
  out.reserve(fields().size());
  for (const Field& f : fields()) out.push_back(this->*f.member);
  return out;
}

IstioTcpMetrics::IstioTcpMetrics(MetricsRegistry& registry)
    : opened_(registry.counter("istio_tcp_connections_opened_total",
                               "The total number of TCP connections opened", IstioTcpLabels::names())),
      closed_(registry.counter("istio_tcp_connections_closed_total",
                               "The total number of TCP connections closed", IstioTcpLabels::names())),
      sent_bytes_(registry.counter("istio_tcp_sent_bytes_total",
                                   "The size of total bytes sent during response in case of a TCP connection",
                                   IstioTcpLabels::names())),
      received_bytes_(registry.counter(
          "istio_tcp_received_bytes_total",
          "The size of total bytes received during request in case of a TCP connection",
          IstioTcpLabels::names())) {}

IstioTcpConnectionMetrics IstioTcpMetrics::forConnection(const IstioTcpLabels& labels) {
  const LabelValues values = labels.values();
  return {opened_.labels(values), closed_.labels(values), sent_bytes_.labels(values),
          received_bytes_.labels(values)};
}

}  // namespace meshlock::admin
