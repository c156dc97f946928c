// meshlockctl's live commands, run as the real binary against an admin server
// in this process that answers with canned documents (the schemas of
// docs/admin.md) and canned Istio metrics: tables, lock marks, filters, JSON
// and YAML, the graph in text, dot and SVG, exit codes.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "admin/istio_metrics.h"
#include "admin/metrics.h"
#include "admin/server.h"
#include "admin/standard_handlers.h"

namespace meshlock::admin {
namespace {

using nlohmann::json;

const json kStatus = {
    {"version", "0.1.0"},
    {"node", "node-a"},
    {"uptime_seconds", 3725.0},
    {"started_at", "2026-11-22T20:00:00Z"},
    {"ready", true},
    {"pods_served", 4},
    {"connections", {{"active", 3}, {"active_mtls", 2}, {"active_plaintext", 1}, {"total", 41}}},
    {"handshakes", {{"success", 40}, {"failure", 2}}},
    {"plaintext_refused", 5},
    {"certificates", {{"identities", 2}, {"soonest_expiry_seconds", 1800.0}}},
    {"kernel",
     {{"release", "6.1.0-test"},
      {"features",
       {{{"name", "bpf_sk_lookup"}, {"available", true}, {"detail", "steers inbound TCP"}},
        {{"name", "ktls"}, {"available", false}, {"detail", "not loaded: userspace TLS records"}}}}}},
};

json connection(std::string direction, std::string src_ns, std::string src_pod, std::string dst_ns,
                std::string dst_pod, bool mtls) {
  return {
      {"id", src_pod + "->" + dst_pod},
      {"direction", direction},
      {"source_namespace", src_ns},
      {"source_pod", src_pod},
      {"source_address", "10.20.1.7:43210"},
      {"source_identity", mtls ? json("spiffe://cluster.local/ns/" + src_ns + "/sa/" + src_pod) : json(nullptr)},
      {"destination_namespace", dst_ns},
      {"destination_pod", dst_pod},
      {"destination_address", "10.20.1.9:8080"},
      {"destination_service", dst_pod + "." + dst_ns + ".svc.cluster.local"},
      {"destination_identity", mtls ? json("spiffe://cluster.local/ns/" + dst_ns + "/sa/" + dst_pod) : json(nullptr)},
      {"mode", mtls ? "mutual_tls" : "plaintext"},
      {"decided_by", mtls ? "PeerAuthentication shop/default (STRICT)" : "no policy: PERMISSIVE"},
      {"tls_version", mtls ? json("TLSv1.3") : json(nullptr)},
      {"cipher", mtls ? json("TLS_AES_128_GCM_SHA256") : json(nullptr)},
      {"resumed", false},
      {"bytes_sent", 1536},
      {"bytes_received", 512},
      {"age_seconds", 65.0},
      {"state", "established"},
  };
}

const json kConnections = {{"connections",
                            {connection("outbound", "shop", "frontend-1", "shop", "cart-0", true),
                             connection("inbound", "legacy", "client-7", "shop", "cart-0", false),
                             connection("outbound", "billing", "invoicer-2", "billing", "ledger-0", true)}}};

const json kWorkloads = {
    {"workloads",
     {{{"namespace", "shop"},
       {"pod", "cart-0"},
       {"uid", "1111"},
       {"ip", "10.20.1.9"},
       {"service_account", "cart"},
       {"workload", "cart"},
       {"enrolled", true},
       {"enrollment_reason", "namespace label meshlock.io/mtls=enabled"},
       {"identity", "spiffe://cluster.local/ns/shop/sa/cart"},
       {"default_inbound_mode", "STRICT"},
       {"inbound", {{{"port", 8080}, {"mode", "STRICT"}, {"decided_by", "PeerAuthentication shop/default"}},
                    {{"port", 9090}, {"mode", "PERMISSIVE"}, {"decided_by", "PeerAuthentication shop/cart"}}}}},
      {{"namespace", "legacy"},
       {"pod", "client-7"},
       {"enrolled", false},
       {"enrollment_reason", "namespace not labelled"},
       {"identity", nullptr},
       {"inbound", json::array()}}}}};

const json kCerts = {
    {"trust_domain", "cluster.local"},
    {"certificates",
     {{{"identity", "spiffe://cluster.local/ns/shop/sa/cart"},
       {"serial", "0a1b2c"},
       {"not_before", "2026-11-22T20:00:00Z"},
       {"not_after", "2026-11-23T20:00:00Z"},
       {"expires_in_seconds", 80000.0},
       {"lifetime_seconds", 86400.0},
       {"pods", {"shop/cart-0"}},
       {"chain", {{{"subject", "O=cluster.local"}, {"issuer", "O=cluster.local"}, {"serial", "01"}}}}},
      {{"identity", "spiffe://cluster.local/ns/shop/sa/frontend"},
       {"serial", "0d0e0f"},
       {"not_before", "2026-11-21T22:00:00Z"},
       {"not_after", "2026-11-22T22:00:00Z"},
       {"expires_in_seconds", 1800.0},
       {"lifetime_seconds", 86400.0},
       {"pods", {"shop/frontend-1"}},
       {"chain", json::array()}},
      // caMode istiod: not issued, its pods not served.
      {{"identity", "spiffe://cluster.local/ns/shop/sa/db"},
       {"state", "failed"},
       {"pods", json::array()},
       {"last_error", "PERMISSION_DENIED: pod not on the caller's node"},
       {"failures", 3},
       {"retry_in_seconds", 4.0}}}},
    {"roots", {{{"subject", "O=cluster.local"}, {"serial", "01"}, {"not_after", "2036-11-20T00:00:00Z"},
                {"expires_in_seconds", 315000000.0}}}},
};

IstioTcpLabels labels(std::string reporter, std::string src_ns, std::string src, std::string dst_ns,
                      std::string dst, bool mtls) {
  IstioTcpLabels l;
  l.reporter = std::move(reporter);
  if (!src.empty()) {
    l.source_workload = src;
    l.source_workload_namespace = src_ns;
    l.source_app = src;
  }
  l.destination_workload = dst;
  l.destination_workload_namespace = dst_ns;
  l.destination_service = dst + "." + dst_ns + ".svc.cluster.local";
  l.connection_security_policy = mtls ? "mutual_tls" : "none";
  if (mtls) l.source_principal = "spiffe://cluster.local/ns/" + src_ns + "/sa/" + src;
  return l;
}

class LiveCommands : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char pattern[] = "/tmp/meshlockctl-test-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    dir_ = new std::string(pattern);
    registry_ = new MetricsRegistry();
    IstioTcpMetrics istio(*registry_);
    // frontend -> cart: 3 mTLS connections, reported by both sides.
    for (const char* reporter : {"source", "destination"}) {
      auto c = istio.forConnection(labels(reporter, "shop", "frontend", "shop", "cart", true));
      c.opened.inc(3);
      c.closed.inc(2);
      c.received_bytes.inc(3000);
      c.sent_bytes.inc(9000);
    }
    // An unmeshed client -> cart: 2 plaintext connections, seen by cart's side only.
    istio.forConnection(labels("destination", "", "", "shop", "cart", false)).opened.inc(2);
    // frontend -> payments: one mTLS and one plaintext connection: mixed.
    istio.forConnection(labels("source", "shop", "frontend", "shop", "payments", true)).opened.inc();
    istio.forConnection(labels("source", "shop", "frontend", "shop", "payments", false)).opened.inc();

    Router router;
    auto canned = [](json document) {
      return [document](const Request&) { return Response::json(200, document.dump()); };
    };
    router.handle("/status", canned(kStatus));
    router.handle("/workloads", canned(kWorkloads));
    router.handle("/connections", canned(kConnections));
    router.handle("/certs", canned(kCerts));
    router.handle("/metrics", metricsHandler(*registry_));
    // /policy and /check answer from the query, so the tests see what was asked.
    router.handle("/policy", [](const Request& request) {
      const std::string pod = request.param("pod").value_or("");
      if (pod != "shop/web") return Response::error(404, "unknown pod " + pod);
      json answer = {{"pod", pod}, {"uid", "uid-web"}, {"node", "node-a"}, {"ip", "10.244.1.10"},
                     {"service_account", "web"}, {"identity", "spiffe://cluster.local/ns/shop/sa/web"},
                     {"served", true}, {"served_reason", "namespace enrolled"}, {"min_tls_version", "TLSV1_2"},
                     {"auto_mtls", true}, {"root_namespace", "istio-system"},
                     {"inbound", {{{"port", 8080}, {"mode", "STRICT"}, {"decided_by", {"PeerAuthentication/shop/default"}}}}},
                     {"inbound_other_ports", {{"mode", "STRICT"}, {"decided_by", {"PeerAuthentication/shop/default"}}}},
                     {"outbound", json::array()}};
      return Response::json(200, answer.dump());
    });
    router.handle("/check", [](const Request& request) {
      json answer = {{"from", request.param("from").value_or("")}, {"to", request.param("to").value_or("")},
                     {"client_tls", "ISTIO_MUTUAL"}, {"server_mode", "STRICT"}, {"outcome", "mtls"},
                     {"expected_identities", {"spiffe://cluster.local/ns/shop/sa/web"}},
                     {"decided_by", {"auto mTLS", "PeerAuthentication/shop/default"}},
                     {"client_decided_by", {"auto mTLS"}}, {"server_decided_by", {"PeerAuthentication/shop/default"}},
                     {"destination", "service shop/web port 80 → 1 backend(s)"}, {"min_tls_version", "TLSV1_2"},
                     {"backends_disagree", false}, {"backends", json::array()}, {"notes", json::array()}};
      return Response::json(200, answer.dump());
    });
    router.handle("/logging", loggingHandler(), {Method::kGet, Method::kPost, Method::kPut});
    ServerOptions options;
    options.listen = {Endpoint::unixSocket(*dir_ + "/admin.sock")};
    auto server = HttpServer::start(options, std::move(router));
    ASSERT_TRUE(server) << server.error().describe();
    server_ = server->release();
  }

  static void TearDownTestSuite() {
    delete server_;
    delete registry_;
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }

  struct Run {
    int exit_code = -1;
    std::string out;
    std::string err;
  };

  // Runs meshlockctl with `arguments` (shell words) against the canned server.
  static Run ctl(const std::string& arguments, bool with_admin = true) {
    const std::string err_path = *dir_ + "/stderr";
    std::string command = std::string(MESHLOCK_BIN_DIR) + "/meshlockctl " + arguments;
    if (with_admin) command += " --admin unix:" + *dir_ + "/admin.sock";
    command += " 2>" + err_path;
    Run run;
    FILE* pipe = ::popen(command.c_str(), "r");
    if (!pipe) return run;
    char buffer[8192];
    std::size_t got;
    while ((got = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) run.out.append(buffer, got);
    const int status = ::pclose(pipe);
    run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    std::ifstream err(err_path);
    run.err.assign(std::istreambuf_iterator<char>(err), {});
    return run;
  }

  static int shell(const std::string& command, const std::string& input, std::string* output = nullptr) {
    const std::string in_path = *dir_ + "/stdin";
    std::ofstream(in_path) << input;
    FILE* pipe = ::popen((command + " < " + in_path + " 2>&1").c_str(), "r");
    std::string out;
    char buffer[4096];
    std::size_t got;
    while ((got = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) out.append(buffer, got);
    const int status = ::pclose(pipe);
    if (output) *output = out;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  // Lines containing `needle`, with runs of spaces counted as one (column widths vary).
  static std::size_t countLines(const std::string& text, const std::string& needle) {
    auto squash = [](const std::string& in) {
      std::string out;
      for (char c : in) {
        if (c == ' ' && !out.empty() && out.back() == ' ') continue;
        out += c;
      }
      return out;
    };
    const std::string wanted = squash(needle);
    std::size_t n = 0;
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);) n += squash(line).find(wanted) != std::string::npos ? 1 : 0;
    return n;
  }

  static inline std::string* dir_ = nullptr;
  static inline MetricsRegistry* registry_ = nullptr;
  static inline HttpServer* server_ = nullptr;
};

TEST_F(LiveCommands, StatusTable) {
  const Run run = ctl("status");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.out.find("meshlock-agent 0.1.0 on node-a, up 1h2m, ready"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("3 active (2 🔒 mTLS, 1 plaintext), 41 since start"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("40 ok, 2 failed"), std::string::npos);
  EXPECT_NE(run.out.find("5 (STRICT)"), std::string::npos);
  EXPECT_NE(run.out.find("✗  ktls"), std::string::npos) << run.out;
}

TEST_F(LiveCommands, StatusJsonIsTheEndpointDocument) {
  const Run run = ctl("status -o json");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(json::parse(run.out), kStatus);
}

TEST_F(LiveCommands, YamlSaysWhatJsonSays) {
  for (const std::string command : {"status", "connections", "certs", "workloads", "graph"}) {
    const Run as_json = ctl(command + " -o json");
    const Run as_yaml = ctl(command + " -o yaml");
    ASSERT_EQ(as_json.exit_code, 0) << command << as_json.err;
    ASSERT_EQ(as_yaml.exit_code, 0) << command << as_yaml.err;
    std::string converted;
    ASSERT_EQ(shell("python3 -c 'import json,sys,yaml; print(json.dumps(yaml.safe_load(sys.stdin)))'",
                    as_yaml.out, &converted),
              0)
        << converted << as_yaml.out;
    EXPECT_EQ(json::parse(converted), json::parse(as_json.out)) << command << "\n" << as_yaml.out;
  }
}

TEST_F(LiveCommands, UnreachableAgentExits1) {
  const Run run = ctl("status --admin unix:" + *dir_ + "/nobody-here.sock", false);
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_NE(run.err.find("admin API unreachable"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("nobody-here.sock"), std::string::npos) << run.err;
  const Run tcp = ctl("status --timeout 1 --admin http://127.0.0.1:1", false);
  EXPECT_EQ(tcp.exit_code, 1) << tcp.err;
}

TEST_F(LiveCommands, UsageErrorsExit2) {
  EXPECT_EQ(ctl("connections --pod no-slash").exit_code, 2);
  EXPECT_EQ(ctl("status --admin nonsense", false).exit_code, 1);
}

TEST_F(LiveCommands, ConnectionsMarkMtlsWithALock) {
  const Run run = ctl("connections");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(countLines(run.out, "🔒"), 3u) << run.out;  // two rows + the summary line
  EXPECT_EQ(countLines(run.out, "⚠"), 1u) << run.out;
  EXPECT_EQ(countLines(run.out, "🔒 outbound shop/frontend-1 shop/cart-0 mutual_tls TLSv1.3 TLS_AES_128_GCM_SHA256 no 1.5 KiB 512 B 1m5s"), 1u) << run.out;
  EXPECT_EQ(countLines(run.out, "⚠ inbound legacy/client-7 shop/cart-0 plaintext - -"), 1u) << run.out;
  EXPECT_NE(run.out.find("3 connections, 2 🔒 mTLS"), std::string::npos);
  EXPECT_NE(run.out.find("1.5 KiB"), std::string::npos);
  EXPECT_NE(run.out.find("1m5s"), std::string::npos);
}

TEST_F(LiveCommands, ConnectionsFilterByNamespaceAndPod) {
  const Run billing = ctl("connections --namespace billing -o json");
  ASSERT_EQ(billing.exit_code, 0) << billing.err;
  const json filtered = json::parse(billing.out)["connections"];
  ASSERT_EQ(filtered.size(), 1u);
  EXPECT_EQ(filtered[0]["source_pod"], "invoicer-2");

  const Run cart = ctl("connections --pod shop/cart-0");
  ASSERT_EQ(cart.exit_code, 0);
  EXPECT_NE(cart.out.find("2 connections, 1 🔒 mTLS"), std::string::npos) << cart.out;

  const Run wide = ctl("connections -o wide --pod legacy/client-7");
  ASSERT_EQ(wide.exit_code, 0);
  EXPECT_NE(wide.out.find("no policy: PERMISSIVE"), std::string::npos) << wide.out;
}

TEST_F(LiveCommands, ConnectionsWatchRefreshes) {
  const Run run = ctl("connections --watch --interval 0.1 --count 3");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(countLines(run.out, "Every "), 3u) << run.out;
  EXPECT_EQ(countLines(run.out, "3 connections, 2"), 3u);
}

TEST_F(LiveCommands, CertsWarnWhenCloseToExpiry) {
  const Run run = ctl("certs");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(countLines(run.out, "spiffe://cluster.local/ns/shop/sa/cart 0a1b2c 2026-11-22T20:00:00Z 2026-11-23T20:00:00Z 22h13m 1 OK"), 1u) << run.out;
  EXPECT_NE(run.out.find("22h13m"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("WARN"), std::string::npos);
  EXPECT_NE(run.err.find("warning: WARN: spiffe://cluster.local/ns/shop/sa/frontend expires in 30m0s"),
            std::string::npos)
      << run.err;
  EXPECT_EQ(run.err.find("sa/cart"), std::string::npos);
  EXPECT_NE(run.out.find("FAILED"), std::string::npos) << run.out;
  EXPECT_NE(run.err.find("warning: FAILED: spiffe://cluster.local/ns/shop/sa/db no certificate, its pods are not "
                         "served: PERMISSION_DENIED: pod not on the caller's node"),
            std::string::npos)
      << run.err;
  EXPECT_EQ(ctl("certs --fail-on-warning").exit_code, 3);
  EXPECT_EQ(ctl("certs --fail-on-warning --warn-within 60").exit_code, 3);  // still under a quarter of lifetime
}

TEST_F(LiveCommands, WorkloadsShowEnrollmentAndPorts) {
  const Run run = ctl("workloads");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.out.find("8080:STRICT 9090:PERMISSIVE *:STRICT"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("namespace not labelled"), std::string::npos);
  const Run shop = ctl("workloads -n shop -o json");
  EXPECT_EQ(json::parse(shop.out)["workloads"].size(), 1u);
}

TEST_F(LiveCommands, GraphTextHasOneEdgePerWorkloadPairWithLocks) {
  const Run run = ctl("graph");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  // The destination's report is used for frontend -> cart: 3 connections, not 6.
  EXPECT_EQ(countLines(run.out, "shop/frontend -> shop/cart 🔒 mTLS 3 3 0"), 1u) << run.out;
  EXPECT_EQ(countLines(run.out, "unknown -> shop/cart ⚠ open 2 0 2"), 1u) << run.out;
  EXPECT_EQ(countLines(run.out, "shop/frontend -> shop/payments ⚠ mixed 2 1 1"), 1u) << run.out;
  EXPECT_NE(run.out.find("3 edges, 1 locked"), std::string::npos);
}

TEST_F(LiveCommands, GraphJsonCountsAndLocksMatchTheMetrics) {
  const Run run = ctl("graph -o json");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const json graph = json::parse(run.out);
  ASSERT_EQ(graph["edges"].size(), 3u);
  std::map<std::string, json> by_pair;
  for (const auto& edge : graph["edges"]) {
    by_pair[edge["source"].get<std::string>() + ">" + edge["destination"].get<std::string>()] = edge;
  }
  const json& locked = by_pair.at("shop/frontend>shop/cart");
  EXPECT_EQ(locked["locked"], true);
  EXPECT_EQ(locked["connections_opened"], 3);
  EXPECT_EQ(locked["connections_closed"], 2);
  EXPECT_EQ(locked["reporter"], "destination");
  EXPECT_EQ(locked["bytes_source_to_destination"], 3000);
  EXPECT_EQ(locked["bytes_destination_to_source"], 9000);
  EXPECT_EQ(by_pair.at("unknown>shop/cart")["security"], "none");
  EXPECT_EQ(by_pair.at("shop/frontend>shop/payments")["security"], "mixed");
  EXPECT_EQ(by_pair.at("shop/frontend>shop/payments")["locked"], false);
  EXPECT_EQ(graph["nodes"].size(), 4u);
}

TEST_F(LiveCommands, GraphDotIsValidGraphviz) {
  const Run run = ctl("graph -o dot");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.out.find("\"shop/frontend\" -> \"shop/cart\" [label=\"🔒 mTLS\\n3 connections\", color=\"#2e7d32\""),
            std::string::npos)
      << run.out;
  std::string out;
  EXPECT_EQ(shell("dot -Tcanon", run.out, &out), 0) << out;
}

TEST_F(LiveCommands, GraphSvgIsWellFormedAndHasTheEdges) {
  const Run run = ctl("graph -o svg");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  std::string out;
  EXPECT_EQ(shell("xmllint --noout -", run.out, &out), 0) << out;
  // Graphviz titles each edge "source->destination" (escaped) inside <g class="edge">.
  EXPECT_EQ(countLines(run.out, "<g id=\"edge"), 3u) << run.out;
  EXPECT_NE(run.out.find("<title>shop/frontend&#45;&gt;shop/cart</title>"), std::string::npos);
  EXPECT_NE(run.out.find("<title>unknown&#45;&gt;shop/cart</title>"), std::string::npos);
  EXPECT_EQ(countLines(run.out, "🔒 mTLS"), 1u);
  EXPECT_EQ(countLines(run.out, "stroke=\"#2e7d32\""), 2u);  // the locked edge's line and arrowhead
}

TEST_F(LiveCommands, PolicyShowsInboundModesWithTheDecidingResource) {
  Run run = ctl("policy shop/web");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.out.find("pod shop/web (uid uid-web, node node-a, ip 10.244.1.10)"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("port 8080  STRICT      PeerAuthentication/shop/default"), std::string::npos) << run.out;
  run = ctl("policy shop/web -o json");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(json::parse(run.out)["inbound"][0]["mode"], "STRICT");
  run = ctl("policy shop/web -o yaml");
  EXPECT_NE(run.out.find("pod: shop/web\n"), std::string::npos) << run.out;
  EXPECT_EQ(ctl("policy shop").exit_code, 2);
  EXPECT_EQ(ctl("policy").exit_code, 2);
  run = ctl("policy shop/nope");
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_NE(run.err.find("unknown pod shop/nope"), std::string::npos) << run.err;
}

TEST_F(LiveCommands, CheckAsksTheLiveAgentWhenGivenAdmin) {
  Run run = ctl("check --from shop/client --to web.shop.svc.cluster.local:80 -o json");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const json report = json::parse(run.out);
  EXPECT_EQ(report["from"], "shop/client");
  EXPECT_EQ(report["to"], "web.shop.svc.cluster.local:80");
  run = ctl("check --from shop/client --to web.shop.svc.cluster.local:80");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.out.find("  client TLS:   ISTIO_MUTUAL  (auto mTLS)"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("  outcome:      mtls"), std::string::npos) << run.out;
  // Bad targets are usage errors before the agent is asked; both sources at once too.
  EXPECT_EQ(ctl("check --from shop/client --to web").exit_code, 2);
  EXPECT_EQ(ctl("check --manifests /tmp --from shop/client --to web:80").exit_code, 2);
  // No agent there: exit 1, naming the endpoint.
  run = ctl("check --from shop/client --to web:80 --admin unix:/nonexistent/admin.sock", false);
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_NE(run.err.find("/nonexistent/admin.sock"), std::string::npos) << run.err;
}

TEST_F(LiveCommands, LogsChangesTheLevel) {
  Run run = ctl("logs --level debug");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.out.find("-> debug"), std::string::npos) << run.out;
  run = ctl("logs");
  EXPECT_EQ(run.out, "log level: debug\n");
  run = ctl("logs --level info -o json");
  EXPECT_EQ(json::parse(run.out)["level"], "info");
  EXPECT_NE(ctl("logs --level loud").exit_code, 0);
}

TEST_F(LiveCommands, BashCompletionCompletesCommandsAndOptions) {
  const Run run = ctl("completion bash", false);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const std::string script_path = *dir_ + "/completion.bash";
  std::ofstream(script_path) << run.out;
  std::string out;
  ASSERT_EQ(shell("bash -n " + script_path, "", &out), 0) << out;
  const std::string complete = "bash -c 'source " + script_path +
                               "; COMP_WORDS=(meshlockctl $0); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); "
                               "[[ \"$1\" == trailing ]] && COMP_WORDS+=(\"\") && COMP_CWORD=${#COMP_WORDS[@]}-1; "
                               "_meshlockctl; echo \"${COMPREPLY[*]}\"'";
  ASSERT_EQ(shell(complete + " co", "", &out), 0) << out;
  EXPECT_EQ(out, "completion connections\n");
  ASSERT_EQ(shell(complete + " 'graph -o' trailing", "", &out), 0) << out;
  EXPECT_EQ(out, "text dot svg json yaml\n");
  ASSERT_EQ(shell(complete + " 'connections --w'", "", &out), 0) << out;
  EXPECT_EQ(out, "--watch\n");
}

}  // namespace
}  // namespace meshlock::admin
