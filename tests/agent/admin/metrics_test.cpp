// The metrics registry renders what Prometheus' own parser accepts (promtool),
// escapes hostile label values, exports Istio's TCP metrics under Istio's exact
// names and labels, and counts correctly from many threads.
#include "admin/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <set>
#include <thread>

#include "admin/istio_metrics.h"
#include "admin/meshlock_metrics.h"
#include "admin/prometheus_text.h"
#include "admin/standard_handlers.h"

namespace meshlock::admin {
namespace {

struct CommandResult {
  int exit_code = -1;
  std::string output;
};

CommandResult run(const std::string& command) {
  CommandResult result;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return result;
  char buffer[4096];
  std::size_t got;
  while ((got = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) result.output.append(buffer, got);
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

IstioTcpLabels shopLabels(bool mtls) {
  IstioTcpLabels labels;
  labels.reporter = "destination";
  labels.source_workload = "frontend";
  labels.source_canonical_service = "frontend";
  labels.source_canonical_revision = "v1";
  labels.source_workload_namespace = "shop";
  labels.source_principal = mtls ? "spiffe://cluster.local/ns/shop/sa/frontend" : "unknown";
  labels.source_app = "frontend";
  labels.source_version = "v1";
  labels.source_cluster = "Kubernetes";
  labels.destination_service = "cart.shop.svc.cluster.local";
  labels.destination_service_namespace = "shop";
  labels.destination_service_name = "cart";
  labels.destination_workload = "cart";
  labels.destination_canonical_service = "cart";
  labels.destination_canonical_revision = "latest";
  labels.destination_workload_namespace = "shop";
  labels.destination_principal = "spiffe://cluster.local/ns/shop/sa/cart";
  labels.destination_app = "cart";
  labels.destination_version = "unknown";
  labels.destination_cluster = "Kubernetes";
  labels.connection_security_policy = mtls ? "mutual_tls" : "none";
  return labels;
}

// A registry with every family meshlock registers, and values in each.
void populate(MetricsRegistry& registry, IstioTcpMetrics& istio, MeshlockMetrics& own) {
  auto locked = istio.forConnection(shopLabels(true));
  locked.opened.inc(3);
  locked.closed.inc(2);
  locked.sent_bytes.inc(123456);
  locked.received_bytes.inc(789);
  auto open = istio.forConnection(shopLabels(false));
  open.opened.inc();
  own.handshakes.labels({"inbound", "success", "ok"}).inc(3);
  own.handshakes.labels({"inbound", "failure", "identity_mismatch"}).inc();
  own.plaintext_refused.labels({"shop", "cart", "8080"}).inc(4);
  own.certificate_expiry_seconds.labels({"spiffe://cluster.local/ns/shop/sa/cart"}).set(86399.5);
  own.capture_map_entries.labels({"original_destinations"}).set(12);
  own.engine_buffer_bytes.labels({"0"}).set(65536);
  own.pods_served.labels({}).set(7);
  own.build_info.labels({"0.1.0"}).set(1);
  // Label values a pod name or a reason string could smuggle in.
  auto& hostile = registry.gauge("meshlock_test_hostile", "help with \\ backslash\nand newline", {"value"});
  hostile.labels({"quote \" backslash \\ newline \n end"}).set(-1.25);
  hostile.labels({"unicode ✓ and {braces}, commas=\"x\""}).set(std::nan(""));
  hostile.labels({"inf"}).set(HUGE_VAL);
}

TEST(Metrics, PromtoolAcceptsTheRendering) {
  MetricsRegistry registry;
  IstioTcpMetrics istio(registry);
  MeshlockMetrics own(registry);
  populate(registry, istio, own);
  const std::string text = registry.render();
  char path[] = "/tmp/meshlock-metrics-XXXXXX";
  const int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  ::close(fd);
  std::ofstream(path) << text;
  const CommandResult result = run(std::string("promtool check metrics < ") + path);
  std::remove(path);
  EXPECT_EQ(result.exit_code, 0) << result.output << "\n---\n" << text;
}

TEST(Metrics, EscapesLabelValues) {
  MetricsRegistry registry;
  auto& family = registry.counter("x_total", "x", {"v"});
  family.labels({"a\"b\\c\nd"}).inc();
  EXPECT_EQ(registry.render(),
            "# HELP x_total x\n"
            "# TYPE x_total counter\n"
            "x_total{v=\"a\\\"b\\\\c\\nd\"} 1\n");
  auto samples = parsePrometheusText(registry.render());
  ASSERT_TRUE(samples) << samples.error().describe();
  ASSERT_EQ(samples->size(), 1u);
  EXPECT_EQ((*samples)[0].label("v"), "a\"b\\c\nd");
}

TEST(Metrics, ParserReadsBackEverySample) {
  MetricsRegistry registry;
  IstioTcpMetrics istio(registry);
  MeshlockMetrics own(registry);
  populate(registry, istio, own);
  auto samples = parsePrometheusText(registry.render());
  ASSERT_TRUE(samples) << samples.error().describe();
  bool found = false;
  for (const Sample& sample : *samples) {
    if (sample.name == "istio_tcp_sent_bytes_total" && sample.label("connection_security_policy") == "mutual_tls") {
      EXPECT_EQ(sample.value, 123456);
      EXPECT_EQ(sample.label("source_principal"), "spiffe://cluster.local/ns/shop/sa/frontend");
      found = true;
    }
    if (sample.name == "meshlock_test_hostile" && sample.labels.at("value").starts_with("quote")) {
      EXPECT_EQ(sample.label("value"), "quote \" backslash \\ newline \n end");
      EXPECT_EQ(sample.value, -1.25);
    }
  }
  EXPECT_TRUE(found);
  EXPECT_FALSE(parsePrometheusText("x{a=\"unterminated} 1\n"));
  EXPECT_FALSE(parsePrometheusText("x{a=\"b\"} notanumber\n"));
}

TEST(Metrics, IstioFamiliesUseIstiosNamesAndLabels) {
  MetricsRegistry registry;
  IstioTcpMetrics istio(registry);
  istio.forConnection(shopLabels(true)).opened.inc();
  const std::string text = registry.render();
  for (const char* name : {"istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total",
                           "istio_tcp_sent_bytes_total", "istio_tcp_received_bytes_total"}) {
    EXPECT_NE(text.find(std::string("# TYPE ") + name + " counter\n"), std::string::npos) << name;
  }
  // Istio's standard TCP label set (istio.io "Istio Standard Metrics").
  const std::set<std::string> expected = {
      "reporter", "source_workload", "source_canonical_service", "source_canonical_revision",
      "source_workload_namespace", "source_principal", "source_app", "source_version", "source_cluster",
      "destination_service", "destination_service_namespace", "destination_service_name",
      "destination_workload", "destination_canonical_service", "destination_canonical_revision",
      "destination_workload_namespace", "destination_principal", "destination_app", "destination_version",
      "destination_cluster", "request_protocol", "response_flags", "connection_security_policy"};
  auto samples = parsePrometheusText(text);
  ASSERT_TRUE(samples);
  ASSERT_EQ(samples->size(), 4u);  // one series per family, created together
  for (const Sample& sample : *samples) {
    std::set<std::string> actual;
    for (const auto& [key, value] : sample.labels) actual.insert(key);
    EXPECT_EQ(actual, expected) << sample.name;
    EXPECT_EQ(sample.label("request_protocol"), "tcp");
    EXPECT_EQ(sample.label("response_flags"), "-");
    EXPECT_EQ(sample.label("connection_security_policy"), "mutual_tls");
    EXPECT_EQ(sample.value, sample.name == "istio_tcp_connections_opened_total" ? 1 : 0);
  }
  EXPECT_EQ(IstioTcpLabels{}.source_workload, "unknown");
}

TEST(Metrics, HandlesCountFromManyThreads) {
  MetricsRegistry registry;
  auto& family = registry.counter("hits_total", "hits", {"worker"});
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&family, t] {
      const Counter mine = family.labels({std::to_string(t % 2)});
      for (int i = 0; i < 100000; ++i) mine.inc();
    });
  }
  // Scrapes while counting must be safe too.
  for (int i = 0; i < 20; ++i) (void)registry.render();
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(family.labels({"0"}).value() + family.labels({"1"}).value(), 800000u);
}

TEST(Metrics, CollectHookRefreshesGaugesAtScrape) {
  MetricsRegistry registry;
  auto& expiry = registry.gauge("cert_expiry_seconds", "s", {"identity"});
  int scrapes = 0;
  registry.onCollect([&] { expiry.labels({"a"}).set(100 - ++scrapes); });
  EXPECT_NE(registry.render().find("cert_expiry_seconds{identity=\"a\"} 99\n"), std::string::npos);
  EXPECT_NE(registry.render().find("cert_expiry_seconds{identity=\"a\"} 98\n"), std::string::npos);
}

TEST(Metrics, RemovedSeriesStopsExportingHandleStaysSafe) {
  MetricsRegistry registry;
  auto& family = registry.gauge("g", "g", {"pod"});
  Gauge gauge = family.labels({"web-1"});
  gauge.set(3);
  family.remove({"web-1"});
  gauge.set(4);  // harmless
  EXPECT_EQ(registry.render().find("web-1"), std::string::npos);
}

TEST(Metrics, MetricsHandlerServesTheExpositionContentType) {
  MetricsRegistry registry;
  registry.counter("a_total", "a").labels({}).inc();
  Response response = metricsHandler(registry)(Request{});
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(response.content_type, "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_NE(response.body.find("a_total 1\n"), std::string::npos);
}

TEST(Metrics, LoggingHandlerSetsTheLevel) {
  Handler handler = loggingHandler();
  Request set;
  set.method = Method::kPost;
  set.query.emplace("level", "debug");
  Response response = handler(set);
  EXPECT_EQ(response.status, 200) << response.body;
  EXPECT_NE(response.body.find("\"level\":\"debug\""), std::string::npos);
  Request get;
  EXPECT_NE(handler(get).body.find("\"level\":\"debug\""), std::string::npos);
  set.query = {{"level", "loud"}};
  EXPECT_EQ(handler(set).status, 400);
  set.query = {{"level", "info"}};
  EXPECT_EQ(handler(set).status, 200);
}

}  // namespace
}  // namespace meshlock::admin
