// What the agent records per connection: istio_tcp_* with both ends' workloads
// and principals, meshlock's handshake and refusal counters, and the access
// log line (text and JSON), from the engine's observer calls.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "app/connection_report.h"

namespace meshlock::app {
namespace {

using testing::HasSubstr;
using testing::Not;

constexpr const char* kWeb = "spiffe://cluster.local/ns/shop/sa/web";
constexpr const char* kClient = "spiffe://cluster.local/ns/shop/sa/client";

class ConnectionReportTest : public ::testing::Test {
 protected:
  std::shared_ptr<ReportSinks> sinks(LogFormat format) {
    auto logger = std::make_shared<spdlog::logger>("access-test",
                                                   std::make_shared<spdlog::sinks::ostream_sink_mt>(log_));
    logger->set_pattern("%v");
    return std::make_shared<ReportSinks>(ReportSinks{.istio = admin::IstioTcpMetrics(registry_),
                                                     .meshlock = meshlock_,
                                                     .access_log = std::make_unique<AccessLog>(format, logger)});
  }

  static PlannedConnection outboundToWeb() {
    PlannedConnection p;
    p.outbound = true;
    p.pod = "shop/client-7d9f-abcde";
    p.local_principal = kClient;
    p.labels.reporter = "source";
    p.labels.source_workload = "client";
    p.labels.source_workload_namespace = "shop";
    p.labels.destination_workload = "web";
    p.labels.destination_workload_namespace = "shop";
    p.labels.destination_service = "web.shop.svc.cluster.local";
    p.policy = "ISTIO_MUTUAL";
    p.decided_by = "auto mTLS";
    p.port = 8080;
    p.mesh_mtls = true;
    return p;
  }

  static engine::ConnectionSnapshot snapshot(bool with_tls, uint64_t up, uint64_t down) {
    engine::ConnectionSnapshot s;
    s.outbound = true;
    s.peer = *engine::SocketAddress::parse("127.0.0.1:40000");
    s.upstream = *engine::SocketAddress::parse("10.96.10.10:8080");
    if (with_tls) s.tls = engine::TlsInfo{"TLSv1.3", "TLS_AES_128_GCM_SHA256", false, kWeb};
    s.bytes_to_upstream = up;
    s.bytes_to_downstream = down;
    s.age = std::chrono::milliseconds(1500);
    return s;
  }

  std::string metrics() const { return registry_.render(); }

  admin::MetricsRegistry registry_;
  admin::MeshlockMetrics meshlock_{registry_};
  std::ostringstream log_;
};

TEST_F(ConnectionReportTest, MutualTlsConnectionCountsBothPrincipalsAndBytes) {
  ConnectionReport report(sinks(LogFormat::Text), outboundToWeb());
  report.established(snapshot(true, 0, 0));
  report.transferred(100, 0);
  report.transferred(0, 250);
  report.closed(snapshot(true, 100, 250), engine::ConnectionEnd::Completed, "");

  const std::string text = metrics();
  const std::string labels =
      "reporter=\"source\",source_workload=\"client\"";
  EXPECT_THAT(text, HasSubstr("istio_tcp_connections_opened_total{" + labels));
  EXPECT_THAT(text, HasSubstr("source_principal=\"" + std::string(kClient) + "\""));
  EXPECT_THAT(text, HasSubstr("destination_principal=\"" + std::string(kWeb) + "\""));
  EXPECT_THAT(text, HasSubstr("connection_security_policy=\"mutual_tls\""));
  EXPECT_THAT(text, HasSubstr("destination_service=\"web.shop.svc.cluster.local\""));
  EXPECT_THAT(text, testing::ContainsRegex("istio_tcp_received_bytes_total\\{[^}]*\\} 100\n"));
  EXPECT_THAT(text, testing::ContainsRegex("istio_tcp_sent_bytes_total\\{[^}]*\\} 250\n"));
  EXPECT_THAT(text, testing::ContainsRegex("istio_tcp_connections_closed_total\\{[^}]*\\} 1\n"));
  EXPECT_THAT(text, HasSubstr("meshlock_tls_handshakes_total{direction=\"outbound\",result=\"success\",reason=\"ok\"} 1"));
  EXPECT_THAT(text, HasSubstr("meshlock_connections_total{direction=\"outbound\",mode=\"mutual_tls\"} 1"));

  const std::string line = log_.str();
  EXPECT_THAT(line, HasSubstr(" direction=outbound pod=shop/client-7d9f-abcde src=127.0.0.1:40000"));
  EXPECT_THAT(line, HasSubstr(" dst=10.96.10.10:8080 dst_service=web.shop.svc.cluster.local dst_workload=shop/web"));
  EXPECT_THAT(line, HasSubstr(" dst_principal=" + std::string(kWeb)));
  EXPECT_THAT(line, HasSubstr(" policy=ISTIO_MUTUAL decided_by=\"auto mTLS\" security=mutual_tls tls=TLSv1.3"));
  EXPECT_THAT(line, HasSubstr(" bytes_up=100 bytes_down=250 duration_ms=1500 end=completed"));
  EXPECT_THAT(line, Not(HasSubstr("reason=")));
}

// An upgrade hands a connection to the next agent process with its report:
// the new process's report has the same decision and labels (the destination
// service included), and counts no second handshake.
TEST_F(ConnectionReportTest, AHandedOverConnectionKeepsItsDecisionAndLabels) {
  ConnectionReport old_report(sinks(LogFormat::Text), outboundToWeb());
  old_report.established(snapshot(true, 0, 0));
  const std::string state = old_report.handoverState();
  old_report.closed(snapshot(true, 0, 0), engine::ConnectionEnd::HandedOver, "");

  std::optional<PlannedConnection> carried = plannedFromHandover(state);
  ASSERT_TRUE(carried);
  EXPECT_TRUE(carried->adopted);
  EXPECT_EQ(carried->policy, "ISTIO_MUTUAL");
  EXPECT_EQ(carried->decided_by, "auto mTLS");
  EXPECT_EQ(carried->pod, "shop/client-7d9f-abcde");
  EXPECT_EQ(carried->port, 8080);
  EXPECT_TRUE(carried->mesh_mtls);
  EXPECT_EQ(carried->labels.values(), [] {
    PlannedConnection p = outboundToWeb();
    p.labels.source_principal = kClient;  // set when it was established
    p.labels.destination_principal = kWeb;
    p.labels.connection_security_policy = "mutual_tls";
    return p.labels.values();
  }());

  admin::MetricsRegistry registry;
  admin::MeshlockMetrics meshlock{registry};
  auto adopted_sinks = std::make_shared<ReportSinks>(ReportSinks{.istio = admin::IstioTcpMetrics(registry), .meshlock = meshlock});
  ConnectionReport adopted(adopted_sinks, std::move(*carried));
  adopted.established(snapshot(true, 0, 0));
  adopted.transferred(10, 20);
  const std::string text = registry.render();
  EXPECT_THAT(text, HasSubstr("destination_service=\"web.shop.svc.cluster.local\""));
  EXPECT_THAT(text, Not(HasSubstr("meshlock_tls_handshakes_total{")));  // counted by the old process

  EXPECT_FALSE(plannedFromHandover(""));  // an older agent sent nothing
  EXPECT_FALSE(plannedFromHandover("{\"labels\": {}}"));
  EXPECT_FALSE(plannedFromHandover("not json"));
}

TEST_F(ConnectionReportTest, BytesBeforeEstablishedAreNotLost) {
  PlannedConnection planned = outboundToWeb();
  planned.outbound = false;
  planned.policy = "PERMISSIVE";
  planned.mesh_mtls = true;
  ConnectionReport report(sinks(LogFormat::Text), planned);
  report.transferred(7, 0);  // the plaintext's first bytes, read to detect TLS
  report.established(snapshot(false, 7, 0));
  report.transferred(3, 5);
  report.closed(snapshot(false, 10, 5), engine::ConnectionEnd::Completed, "");
  const std::string text = metrics();
  EXPECT_THAT(text, testing::ContainsRegex("istio_tcp_received_bytes_total\\{[^}]*connection_security_policy=\"none\"[^}]*\\} 10\n"));
  EXPECT_THAT(text, HasSubstr("meshlock_connections_total{direction=\"inbound\",mode=\"plaintext\"} 1"));
  EXPECT_THAT(log_.str(), HasSubstr(" security=none "));
}

TEST_F(ConnectionReportTest, ServerRefusingTheClientCertificateCountsAFailureNotASuccess) {
  ConnectionReport report(sinks(LogFormat::Text), outboundToWeb());
  report.established(snapshot(true, 0, 0));  // TLS 1.3: the client's side of the handshake is done
  report.closed(snapshot(true, 6, 0), engine::ConnectionEnd::HandshakeFailed,
                "read: error:10000418:SSL routines:OPENSSL_internal:TLSV1_ALERT_UNKNOWN_CA");
  const std::string text = metrics();
  EXPECT_THAT(text, Not(HasSubstr("result=\"success\"")));
  EXPECT_THAT(text, HasSubstr("meshlock_tls_handshakes_total{direction=\"outbound\",result=\"failure\","
                              "reason=\"peer_refused_certificate\"} 1"));
  EXPECT_THAT(log_.str(), HasSubstr(" end=handshake_failed reason="));
}

TEST_F(ConnectionReportTest, PlaintextRefusedUnderStrictIsCountedPerWorkloadAndPort) {
  PlannedConnection planned = outboundToWeb();
  planned.outbound = false;
  planned.policy = "STRICT";
  planned.decided_by = "PeerAuthentication/shop/default";
  ConnectionReport report(sinks(LogFormat::Json), planned);
  report.transferred(18, 0);
  report.closed(snapshot(false, 18, 0), engine::ConnectionEnd::RefusedPlaintext, "plaintext under STRICT mTLS");
  const std::string text = metrics();
  EXPECT_THAT(text, HasSubstr("meshlock_plaintext_refused_total{namespace=\"shop\",workload=\"web\",port=\"8080\"} 1"));
  // Never established: no Istio connection, as a sidecar's listener would not report one.
  EXPECT_THAT(text, Not(testing::ContainsRegex("istio_tcp_connections_opened_total\\{[^}]*\\} [1-9]")));

  // One JSON object per line, with the refusal and its cause.
  auto j = nlohmann::json::parse(log_.str());
  EXPECT_EQ(j["type"], "access");
  EXPECT_EQ(j["direction"], "inbound");
  EXPECT_EQ(j["policy"], "STRICT");
  EXPECT_EQ(j["decided_by"], "PeerAuthentication/shop/default");
  EXPECT_EQ(j["security"], "none");
  EXPECT_EQ(j["end"], "plaintext_refused");
  EXPECT_EQ(j["reason"], "plaintext under STRICT mTLS");
  EXPECT_EQ(j["bytes_to_upstream"], 18);
  EXPECT_TRUE(j["tls_version"].is_null());
  EXPECT_THAT(j["time"].get<std::string>(), testing::MatchesRegex("[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z"));
}

TEST_F(ConnectionReportTest, RefusalsAreKeptNewestFirstAndCompletedOnesAreNot) {
  auto shared = sinks(LogFormat::Text);
  PlannedConnection planned = outboundToWeb();
  ConnectionReport ok(shared, planned);
  ok.established(snapshot(true, 0, 0));
  ok.closed(snapshot(true, 1, 1), engine::ConnectionEnd::Completed, "");
  ConnectionReport unreachable(shared, planned);
  unreachable.closed(snapshot(false, 0, 0), engine::ConnectionEnd::ConnectFailed, "Connection refused");
  shared->setupFailed(AccessRecord{.direction = "inbound", .pod = "shop/web", .reason = "no identity"});
  std::vector<RefusalLog::Entry> kept = shared->refusals->recent();
  ASSERT_EQ(kept.size(), 2u);
  EXPECT_EQ(kept[0].record.end, "setup_failed");
  EXPECT_EQ(kept[0].record.reason, "no identity");
  EXPECT_EQ(kept[1].record.end, "connect_failed");
  EXPECT_EQ(kept[1].record.policy, "ISTIO_MUTUAL");
  EXPECT_EQ(shared->refusals->total(), 2u);
  // Envoy's way: an unreachable upstream is a connection opened and closed with flag UF.
  EXPECT_THAT(metrics(), testing::ContainsRegex("istio_tcp_connections_opened_total\\{[^}]*response_flags=\"UF\"[^}]*\\} 1"));
}

TEST_F(ConnectionReportTest, AFloodOfRefusalsWritesAFewLinesAndOneSuppressedLineButCountsEveryOne) {
  auto shared = sinks(LogFormat::Text);
  PlannedConnection planned = outboundToWeb();
  planned.outbound = false;
  planned.policy = "STRICT";
  for (int i = 0; i < 50; ++i) {
    ConnectionReport junk(shared, planned);
    junk.closed(snapshot(false, 4, 0), engine::ConnectionEnd::HandshakeTimeout, "handshake not finished");
  }
  for (int i = 0; i < 3; ++i) {  // another reason has its own budget
    ConnectionReport shed(shared, planned);
    shed.closed(snapshot(false, 4, 0), engine::ConnectionEnd::Shed, "pending handshake cap reached");
  }
  ConnectionReport ok(shared, planned);  // an established connection is never limited
  ok.established(snapshot(true, 0, 0));
  ok.closed(snapshot(true, 1, 1), engine::ConnectionEnd::Completed, "");
  auto count = [&](const std::string& needle) {
    const std::string text = log_.str();
    size_t n = 0;
    for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
    return n;
  };
  EXPECT_EQ(count("end=handshake_timeout"), 10u);  // 10 a second per pod and reason
  EXPECT_EQ(count("end=shed"), 3u);
  EXPECT_EQ(count("end=completed"), 1u);
  EXPECT_EQ(shared->refusal_lines->suppressedTotal(), 40u);
  EXPECT_EQ(shared->refusals->total(), 53u);  // meshlockctl refused sees them all
  EXPECT_THAT(metrics(), HasSubstr("meshlock_tls_handshakes_total{direction=\"inbound\",result=\"failure\",reason=\"timeout\"} 50"));
  // Once the second is over, one line sums up what was left out.
  std::vector<AccessLogLimiter::Suppressed> summaries =
      shared->refusal_lines->flush(AccessLogLimiter::Clock::now() + std::chrono::seconds(2));
  ASSERT_EQ(summaries.size(), 1u);
  EXPECT_EQ(summaries[0].pod, "shop/client-7d9f-abcde");
  EXPECT_EQ(summaries[0].end, "handshake_timeout");
  EXPECT_EQ(summaries[0].lines, 40u);
  shared->access_log->writeSuppressed(summaries[0].pod, summaries[0].end, summaries[0].lines, summaries[0].over);
  EXPECT_THAT(log_.str(), HasSubstr(" type=suppressed pod=shop/client-7d9f-abcde end=handshake_timeout lines=40 window_ms=1000"));
}

TEST(AccessLogLimiter, EachSecondHasItsBudgetAndTheSummaryComesBeforeTheNextLine) {
  AccessLogLimiter limiter(2);
  const auto t0 = AccessLogLimiter::Clock::now();
  std::vector<AccessLogLimiter::Suppressed> before;
  EXPECT_TRUE(limiter.admit("shop/web", "shed", t0, before));
  EXPECT_TRUE(limiter.admit("shop/web", "shed", t0, before));
  EXPECT_FALSE(limiter.admit("shop/web", "shed", t0 + std::chrono::milliseconds(500), before));
  EXPECT_TRUE(limiter.admit("shop/db", "shed", t0, before));  // another pod
  EXPECT_TRUE(before.empty());
  EXPECT_TRUE(limiter.flush(t0 + std::chrono::milliseconds(900)).empty());  // the second is not over
  EXPECT_TRUE(limiter.admit("shop/web", "shed", t0 + std::chrono::milliseconds(1100), before));
  ASSERT_EQ(before.size(), 1u);
  EXPECT_EQ(before[0].lines, 1u);
  EXPECT_EQ(limiter.suppressedTotal(), 1u);
  // Keys quiet for ten seconds are forgotten: memory follows the pods.
  EXPECT_TRUE(limiter.flush(t0 + std::chrono::seconds(30)).empty());
  EXPECT_TRUE(limiter.admit("shop/web", "shed", t0 + std::chrono::seconds(31), before));
}

TEST(RefusalLog, KeepsTheLastOnesAndCountsThemAll) {
  RefusalLog log(3);
  for (int i = 0; i < 5; ++i) log.record(AccessRecord{.pod = "p" + std::to_string(i)});
  std::vector<RefusalLog::Entry> kept = log.recent();
  ASSERT_EQ(kept.size(), 3u);
  EXPECT_EQ(kept[0].record.pod, "p4");
  EXPECT_EQ(kept[2].record.pod, "p2");
  EXPECT_EQ(log.total(), 5u);
}

// A Deployment's pod: <deployment>-<pod-template-hash>-<suffix>.
config::Pod podOf(std::string ns, std::string deployment, config::Labels labels) {
  config::Pod pod;
  pod.meta.ref = {.kind = "Pod", .ns = std::move(ns), .name = deployment + "-7d9f6b-x1y2z"};
  labels["pod-template-hash"] = "7d9f6b";
  pod.meta.labels = std::move(labels);
  pod.meta.owner = config::OwnerRef{.kind = "ReplicaSet", .name = deployment + "-7d9f6b"};
  return pod;
}

// Both ends of a connection between pods of the state carry our cluster id:
// Kiali keeps only series whose clusters are known (kiali/kiali
// graph/telemetry/istio/util/util.go, IsBadSourceTelemetry and
// IsBadDestTelemetry, case 2).
TEST(IstioLabels, PodsOfTheStateAreInOurCluster) {
  admin::IstioTcpLabels labels;
  labelWorkload(podOf("shop", "client", {{"app", "client"}}), true, "Kubernetes", labels);
  labelWorkload(podOf("shop", "web", {{"app", "web"}, {"version", "v2"}}), false, "Kubernetes", labels);
  EXPECT_EQ(labels.source_cluster, "Kubernetes");
  EXPECT_EQ(labels.source_workload_namespace, "shop");
  EXPECT_EQ(labels.source_app, "client");
  EXPECT_EQ(labels.destination_cluster, "Kubernetes");
  EXPECT_EQ(labels.destination_workload, "web");
  EXPECT_EQ(labels.destination_canonical_service, "web");
  EXPECT_EQ(labels.destination_canonical_revision, "v2");
}

// A peer that is not a pod of the state (outside the mesh's registry) keeps
// Istio's "unknown" on every one of its labels, its cluster too.
TEST(IstioLabels, AnEndOutsideTheStateStaysUnknown) {
  admin::IstioTcpLabels labels;
  labelWorkload(podOf("shop", "web", {{"app", "web"}}), false, "east", labels);
  EXPECT_EQ(labels.destination_cluster, "east");
  EXPECT_EQ(labels.source_cluster, admin::kUnknown);
  EXPECT_EQ(labels.source_workload, admin::kUnknown);
  EXPECT_EQ(labels.source_workload_namespace, admin::kUnknown);
}

// A service of the state is in our cluster whichever of its backends answers.
TEST(IstioLabels, AServiceOfTheStateIsInOurCluster) {
  config::Service svc;
  svc.meta.ref = {.kind = "Service", .ns = "shop", .name = "web"};
  admin::IstioTcpLabels labels;
  labelService("web.shop.svc.cluster.local", svc, "Kubernetes", labels);
  EXPECT_EQ(labels.destination_service, "web.shop.svc.cluster.local");
  EXPECT_EQ(labels.destination_service_name, "web");
  EXPECT_EQ(labels.destination_service_namespace, "shop");
  EXPECT_EQ(labels.destination_cluster, "Kubernetes");
  EXPECT_EQ(labels.destination_workload, admin::kUnknown);
}

TEST(HandshakeFailureLabel, IsOneOfAFewStableNames) {
  using engine::ConnectionEnd;
  EXPECT_EQ(handshakeFailureLabel(ConnectionEnd::HandshakeTimeout, ""), "timeout");
  EXPECT_EQ(handshakeFailureLabel(ConnectionEnd::HandshakeFailed,
                                  "peer verification: san_mismatch: spiffe://cluster.local/ns/x/sa/y"),
            "san_mismatch");
  EXPECT_EQ(handshakeFailureLabel(ConnectionEnd::HandshakeFailed,
                                  "handshake: error:...:CERTIFICATE_VERIFY_FAILED (unknown_ca: certificate at depth 0)"),
            "unknown_ca");
  EXPECT_EQ(handshakeFailureLabel(ConnectionEnd::HandshakeFailed, "handshake: error:...:UNSUPPORTED_PROTOCOL"),
            "protocol_version");
  EXPECT_EQ(handshakeFailureLabel(ConnectionEnd::HandshakeFailed, "peer closed during the handshake"), "peer_closed");
  EXPECT_EQ(handshakeFailureLabel(ConnectionEnd::HandshakeFailed, "something new"), "other");
}

}  // namespace
}  // namespace meshlock::app
