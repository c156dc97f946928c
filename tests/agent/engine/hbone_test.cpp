// Inbound HBONE against an independent client: tests/agent/engine/hbone_client.py,
// on Debian's python3-h2 and Python's ssl (OpenSSL), speaking as ztunnel's
// outbound does. Expected answers follow ztunnel's inbound
// (istio/ztunnel src/proxy/inbound.rs, 62d82653): 400 for a request that is
// not CONNECT or names another address than the one the tunnel reached, 401
// when the authorization policy refuses the peer, 503 when the app cannot be
// reached; 200 and the bytes both ways otherwise. Every test runs with both
// event-loop back ends; every wait is bounded.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <mutex>
#include <algorithm>
#include <atomic>
#include <functional>
#include <thread>

#include "engine/engine.h"
#include "engine/tls_context.h"
#include "test_support.h"

namespace meshlock::engine {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using testing::echo;
using testing::TestServer;
using testing::testPki;

struct Seen {
  std::mutex mutex;
  std::vector<std::string> peers;
  std::vector<std::string> baggage;
  std::vector<std::string> forwarded;
  std::vector<std::string> traceparent;
  std::vector<ConnectionEnd> ends;
  int established = 0;
};

class Observer final : public ConnectionObserver {
 public:
  explicit Observer(std::shared_ptr<Seen> seen) : seen_(std::move(seen)) {}
  void established(const ConnectionSnapshot& snapshot) override {
    std::lock_guard lock(seen_->mutex);
    EXPECT_EQ(snapshot.tunnel, "hbone");
    ++seen_->established;
  }
  void transferred(uint64_t, uint64_t) override {}
  void closed(const ConnectionSnapshot&, ConnectionEnd end, std::string_view) override {
    std::lock_guard lock(seen_->mutex);
    seen_->ends.push_back(end);
  }

 private:
  std::shared_ptr<Seen> seen_;
};

class HboneTest : public ::testing::TestWithParam<IoBackendKind> {
 protected:
  void SetUp() override {
    EngineConfig config;
    config.threads = 1;
    config.io = GetParam();
    auto engine = Engine::start(config);
    ASSERT_TRUE(engine) << engine.error().describe();
    engine_ = std::move(*engine);
    auto ctx = makeMutualTlsContext(true, testPki().files("server"), TlsMinVersion::Tls13);
    ASSERT_TRUE(ctx);
    selectHboneAlpn(ctx->get());  // as agent/identity selects on 15008: h2 or nothing
    server_ctx_ = *ctx;
    port_ = listen("shop/server hbone", "server", InboundDecider([this](const AcceptedSocket& accepted) -> Result<InboundPlan> {
      InboundPlan plan;
      plan.app = accepted.local;
      plan.tls.context = server_ctx_;
      plan.tls.verify_peer = expectSpiffeIds({});
      plan.tunnel = [this](const TunnelRequest& request) -> Result<TunnelPlan> {
        {
          std::lock_guard lock(seen_->mutex);
          seen_->peers.emplace_back(request.peer_identity);
          seen_->baggage.push_back(request.headers.baggage);
          seen_->forwarded.push_back(request.headers.forwarded);
          seen_->traceparent.push_back(request.headers.traceparent);
        }
        if (request.target.port() == failing_port_) return fail("no route to the app's namespace");
        TunnelPlan plan;
        plan.observer = std::make_unique<Observer>(seen_);
        if (request.target.port() == denied_port_)
          plan.refusal = Refusal{.reason = "denied by policy shop/deny-client", .policy = "shop/deny-client"};
        return plan;
      };
      return plan;
    }));
  }

  // A listener on 127.0.0.1 (any port) with `decider`; returns its port.
  uint16_t listen(std::string name, std::string pod_key, std::variant<OutboundDecider, InboundDecider> decider) {
    auto listening = listenTcp(*SocketAddress::parse("127.0.0.1:0"));
    EXPECT_TRUE(listening);
    if (!listening) return 0;
    const uint16_t port = testing::localPort(listening->get());
    auto id = engine_->addListener(std::move(*listening),
                                   ListenerSpec{.name = std::move(name), .pod_key = std::move(pod_key), .decider = std::move(decider)});
    EXPECT_TRUE(id) << id.error().describe();
    return port;
  }

  // The client's JSON report; `extra` are more command-line arguments.
  json client(const std::vector<std::string>& targets, const std::string& extra = "") {
    const auto files = testPki().files("client");
    std::string command = std::string("/usr/bin/python3 ") + MESHLOCK_SOURCE_DIR + "/tests/agent/engine/hbone_client.py" +
                          " --connect 127.0.0.1:" + std::to_string(port_) + " --cert " + files.cert + " --key " +
                          files.key + " --ca " + files.ca + " --timeout 20 " + extra;
    for (const std::string& target : targets) command += " --stream " + target;
    FILE* pipe = ::popen(command.c_str(), "r");
    std::string output;
    char buffer[4096];
    while (pipe != nullptr && std::fgets(buffer, sizeof buffer, pipe) != nullptr) output += buffer;
    if (pipe != nullptr) ::pclose(pipe);
    auto parsed = json::parse(output, nullptr, false);
    EXPECT_FALSE(parsed.is_discarded()) << command << "\n" << output;
    return parsed.is_discarded() ? json::object() : parsed;
  }

  static std::string local(uint16_t port) { return "127.0.0.1:" + std::to_string(port); }

  // Observers hear a stream's end after its last frame left: wait for `n` of them.
  void waitForEnds(size_t n, Seen* seen = nullptr) {
    if (seen == nullptr) seen = seen_.get();
    for (int i = 0; i < 200; ++i) {
      {
        std::lock_guard lock(seen->mutex);
        if (seen->ends.size() >= n) return;
      }
      std::this_thread::sleep_for(10ms);
    }
  }

  std::unique_ptr<Engine> engine_;
  SslContextRef server_ctx_;
  uint16_t port_ = 0;
  uint16_t denied_port_ = 1;
  uint16_t failing_port_ = 2;
  std::shared_ptr<Seen> seen_ = std::make_shared<Seen>();
};

TEST_P(HboneTest, TwoStreamsOfOneTunnelEachReachTheirApp) {
  TestServer app(echo);
  TestServer other_app(echo);
  json out = client({local(app.port()), local(other_app.port())}, "--bytes 200000 --namespace shop");
  ASSERT_TRUE(out["error"].is_null()) << out.dump();
  EXPECT_EQ(out["alpn"], "h2");
  EXPECT_EQ(out["tls_version"], "TLSv1.3");
  EXPECT_EQ(out["server_id"], testing::kServerId);
  ASSERT_EQ(out["streams"].size(), 2u);
  for (const json& stream : out["streams"]) {
    EXPECT_EQ(stream["status"], 200) << stream.dump();
    EXPECT_TRUE(stream["echo_ok"].get<bool>()) << stream.dump();
    EXPECT_TRUE(stream["ended"].get<bool>()) << "the app's FIN arrives as END_STREAM: " << stream.dump();
  }
  EXPECT_EQ(app.accepted(), 1);
  EXPECT_EQ(other_app.accepted(), 1);
  waitForEnds(2);
  std::lock_guard lock(seen_->mutex);
  EXPECT_EQ(seen_->established, 2);
  EXPECT_EQ(seen_->ends, (std::vector<ConnectionEnd>{ConnectionEnd::Completed, ConnectionEnd::Completed}));
  // Each stream decided with the tunnel's verified peer and ztunnel's headers.
  ASSERT_EQ(seen_->peers.size(), 2u);
  EXPECT_EQ(seen_->peers[0], testing::kClientId);
  EXPECT_EQ(seen_->baggage[0], "k8s.namespace.name=shop");
  EXPECT_EQ(seen_->forwarded[0], "for=10.0.0.9");
  EXPECT_EQ(seen_->traceparent[0], "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
  EXPECT_EQ(engine_->counters().tunnel_streams, 2u);
}

TEST_P(HboneTest, AStreamFarBeyondTheWindowsArrivesWhole) {
  TestServer app(echo);
  // 12 MiB each way: three stream windows and more than the engine's buffer bound.
  json out = client({local(app.port())}, "--bytes 12582912 --timeout 60");
  ASSERT_TRUE(out["error"].is_null()) << out.dump();
  EXPECT_EQ(out["streams"][0]["status"], 200);
  EXPECT_EQ(out["streams"][0]["received"], 12582912);
  EXPECT_TRUE(out["streams"][0]["echo_ok"].get<bool>());
}

TEST_P(HboneTest, RefusedStreamsGetZtunnelsStatusesAndTheTunnelGoesOn) {
  TestServer app(echo);
  // A port nothing listens on: bound, then closed.
  uint16_t closed_port = 0;
  {
    auto fd = listenTcp(*SocketAddress::parse("127.0.0.1:0"));
    ASSERT_TRUE(fd);
    closed_port = testing::localPort(fd->get());
  }
  json out = client({"127.0.0.2:" + std::to_string(app.port()), local(denied_port_), local(closed_port),
                     local(failing_port_), "not-an-address", local(app.port())});
  ASSERT_TRUE(out["error"].is_null()) << out.dump();
  const json& s = out["streams"];
  ASSERT_EQ(s.size(), 6u);
  EXPECT_EQ(s[0]["status"], 400) << "another address than the tunnel's";
  EXPECT_EQ(s[1]["status"], 401) << "the authorization policy refused the peer";
  EXPECT_EQ(s[2]["status"], 503) << "the app refused the connection";
  EXPECT_EQ(s[3]["status"], 503) << "the decider could not plan it";
  EXPECT_EQ(s[4]["status"], 400) << "an authority that is not an address";
  EXPECT_EQ(s[5]["status"], 200);
  EXPECT_TRUE(s[5]["echo_ok"].get<bool>());
  for (int i = 0; i < 5; ++i) EXPECT_EQ(s[i]["received"], 0) << s[i].dump();
  const EngineCounters counters = engine_->counters();
  EXPECT_EQ(counters.tunnel_refused, 5u);
  EXPECT_EQ(counters.tunnel_streams, 1u);
  EXPECT_EQ(counters.refused_authz, 1u);
  waitForEnds(3);
  std::lock_guard lock(seen_->mutex);
  EXPECT_NE(std::find(seen_->ends.begin(), seen_->ends.end(), ConnectionEnd::Denied), seen_->ends.end());
  EXPECT_NE(std::find(seen_->ends.begin(), seen_->ends.end(), ConnectionEnd::ConnectFailed), seen_->ends.end());
}

TEST_P(HboneTest, ARequestThatIsNotConnectIsABadRequest) {
  TestServer app(echo);
  json out = client({local(app.port())}, "--method GET");
  ASSERT_TRUE(out["error"].is_null()) << out.dump();
  EXPECT_EQ(out["streams"][0]["status"], 400);
  EXPECT_EQ(app.accepted(), 0);
}

TEST_P(HboneTest, WithoutAlpnH2NoStreamIsServed) {
  TestServer app(echo);
  json out = client({local(app.port())}, "--alpn istio");
  EXPECT_FALSE(out["error"].is_null()) << out.dump();
  EXPECT_TRUE(out["streams"].empty() || out["streams"][0]["status"].is_null()) << out.dump();
  EXPECT_EQ(app.accepted(), 0);
  EXPECT_GE(engine_->counters().handshake_failures, 1u);
}

TEST_P(HboneTest, PlaintextToTheTunnelPortIsRefused) {
  UniqueFd fd = testing::connectTcp(port_);
  ASSERT_TRUE(fd);
  testing::setRecvTimeout(fd.get(), 5000);
  const std::string request = "CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n";
  ASSERT_TRUE(testing::writeAll(fd.get(), request.data(), request.size()));
  std::string reply;
  testing::readToEof(fd.get(), reply);
  EXPECT_TRUE(reply.empty());
  EXPECT_EQ(engine_->counters().refused_plaintext, 1u);
}

// ---- Outbound: connections as streams of a pooled client tunnel ---------------

// An app's connection captured on an outbound listener, sent over HBONE to
// `tunnel` with :authority `target`.
class HboneOutboundTest : public HboneTest {
 protected:
  void startOutbound(uint16_t tunnel_port, std::function<std::string()> target) {
    auto ctx = makeMutualTlsContext(false, testPki().files("client"), TlsMinVersion::Tls13);
    ASSERT_TRUE(ctx);
    client_ctx_ = *ctx;
    outbound_port_ = listen("shop/client outbound", "client", OutboundDecider([this, tunnel_port, target](const AcceptedSocket&) -> Result<OutboundPlan> {
      OutboundPlan plan;
      plan.destination = *SocketAddress::parse(target());
      plan.observer = std::make_unique<Observer>(outbound_seen_);
      TunnelOrigin origin;
      origin.address = *SocketAddress::parse("127.0.0.1:" + std::to_string(tunnel_port));
      origin.pool_key = "client|" + origin.address.toString();
      origin.request.authority = target();
      origin.request.baggage = "k8s.namespace.name=shop";
      origin.request.forwarded = "for=\"127.0.0.1:40000\"";
      origin.tls.context = client_ctx_;
      origin.tls.prepare = offerHboneAlpn;
      origin.tls.verify_peer = expectSpiffeIds({testing::kServerId});
      plan.tunnel = std::move(origin);
      return plan;
    }));
  }

  // One app connection through the outbound listener: sends `n` pattern
  // bytes, half-closes, reads to EOF. True if the echo came back whole.
  bool roundTrip(size_t n, uint64_t seed, int* error = nullptr) {
    UniqueFd fd = testing::connectTcp(outbound_port_);
    if (!fd) return false;
    testing::setRecvTimeout(fd.get(), 10000);
    std::string sent(n, '\0');
    testing::PatternStream(seed).fill(reinterpret_cast<uint8_t*>(sent.data()), n);
    std::thread writer([&] {
      testing::writeAll(fd.get(), sent.data(), sent.size());
      ::shutdown(fd.get(), SHUT_WR);
    });
    std::string received;
    const bool clean = testing::readToEof(fd.get(), received, error);
    writer.join();
    return clean && received == sent;
  }

  SslContextRef client_ctx_;
  uint16_t outbound_port_ = 0;
  std::shared_ptr<Seen> outbound_seen_ = std::make_shared<Seen>();
};

TEST_P(HboneOutboundTest, ConnectionsBetweenTwoAgentsShareOneTunnel) {
  TestServer app(echo);
  startOutbound(port_, [&] { return local(app.port()); });
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(roundTrip(100000, i)) << "connection " << i;
  // Five concurrently, too.
  std::vector<std::thread> clients;
  std::atomic<int> ok{0};
  for (int i = 0; i < 5; ++i) clients.emplace_back([&, i] { ok += roundTrip(300000, 10 + i) ? 1 : 0; });
  for (auto& t : clients) t.join();
  EXPECT_EQ(ok.load(), 5);
  EXPECT_EQ(app.accepted(), 10);
  // One TLS handshake on each end of the one tunnel that carried all ten.
  EXPECT_EQ(engine_->counters().handshakes, 2u);
  EXPECT_EQ(engine_->counters().tunnel_streams, 10u);
  waitForEnds(10, outbound_seen_.get());
  std::lock_guard lock(outbound_seen_->mutex);
  EXPECT_EQ(outbound_seen_->established, 10);
  EXPECT_EQ(std::count(outbound_seen_->ends.begin(), outbound_seen_->ends.end(), ConnectionEnd::Completed), 10);
}

// Short connections that end from both sides at once: a stream must not be
// reset after its END_STREAM was queued. (Found by the conn/s benchmark: the
// resets reached nghttp2's rapid-reset limit, the server sent GOAWAY, and
// the streams in flight on the tunnel were lost.)
TEST_P(HboneOutboundTest, ThousandsOfShortConnectionsKeepOneTunnel) {
  TestServer app(echo);
  startOutbound(port_, [&] { return local(app.port()); });
  std::atomic<int> ok{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 8; ++t) {
    clients.emplace_back([&, t] {
      for (int i = 0; i < 250; ++i) ok += roundTrip(1, static_cast<uint64_t>(t * 1000 + i)) ? 1 : 0;
    });
  }
  for (auto& c : clients) c.join();
  EXPECT_EQ(ok.load(), 2000);
  EXPECT_EQ(engine_->counters().handshakes, 2u) << "one tunnel, never torn down";
  EXPECT_EQ(engine_->counters().resets, 0u);
}

// Draining (an agent that hands over to its successor): inbound tunnels send
// GOAWAY; the client tunnel closes cleanly once idle, and the next connection
// opens a new tunnel (to whoever listens now), losing nothing.
TEST_P(HboneOutboundTest, ADrainedTunnelClosesCleanlyAndTheNextConnectionOpensAnother) {
  TestServer app(echo);
  startOutbound(port_, [&] { return local(app.port()); });
  ASSERT_TRUE(roundTrip(1000, 1));
  EXPECT_EQ(engine_->counters().handshakes, 2u);
  engine_->drainTunnels();
  for (int i = 0; i < 200 && engine_->counters().active > 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(engine_->counters().active, 0u) << "the drained tunnel closed";
  ASSERT_TRUE(roundTrip(1000, 2));
  EXPECT_EQ(engine_->counters().handshakes, 4u) << "a new tunnel for the next connection";
  EXPECT_EQ(engine_->counters().resets, 0u);
}

TEST_P(HboneOutboundTest, AnIndependentHboneServerIsReached) {
  TestServer app(echo);
  const auto files = testPki().files("server");
  std::string command = std::string("/usr/bin/python3 ") + MESHLOCK_SOURCE_DIR +
                        "/tests/agent/engine/hbone_server.py --lifetime 20 --exit-after 3 --cert " + files.cert + " --key " +
                        files.key + " --ca " + files.ca + " --deny 127.0.0.1:1";
  FILE* server = ::popen(command.c_str(), "r");
  ASSERT_NE(server, nullptr);
  char line[4096];
  ASSERT_NE(std::fgets(line, sizeof line, server), nullptr);
  int python_port = 0;
  ASSERT_EQ(std::sscanf(line, "listening %d", &python_port), 1) << line;
  uint16_t target_port = app.port();
  startOutbound(static_cast<uint16_t>(python_port), [&] { return local(target_port); });
  EXPECT_TRUE(roundTrip(2000000, 1));
  EXPECT_TRUE(roundTrip(1000, 2));
  target_port = 1;  // the server's --deny: 401
  int error = 0;
  EXPECT_FALSE(roundTrip(1000, 3, &error));
  // What the server saw of each stream, in order.
  std::vector<json> streams;
  while (streams.size() < 3 && std::fgets(line, sizeof line, server) != nullptr) {
    auto j = json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.contains("status")) streams.push_back(j);
  }
  ::pclose(server);  // the server ends after the third stream
  ASSERT_EQ(streams.size(), 3u);
  EXPECT_EQ(streams[0]["status"], 200);
  EXPECT_EQ(streams[0]["authority"], local(app.port()));
  EXPECT_EQ(streams[0]["peer_id"], testing::kClientId);
  EXPECT_EQ(streams[0]["baggage"], "k8s.namespace.name=shop");
  EXPECT_EQ(streams[0]["forwarded"], "for=\"127.0.0.1:40000\"");
  EXPECT_EQ(streams[2]["status"], 401);
  EXPECT_EQ(streams[0]["connection"], streams[2]["connection"]) << "one tunnel for all three";
  waitForEnds(3, outbound_seen_.get());
  std::lock_guard lock(outbound_seen_->mutex);
  EXPECT_EQ(outbound_seen_->ends.back(), ConnectionEnd::Denied);
}

TEST_P(HboneOutboundTest, AStreamTheServerRefusesEndsTheConnection) {
  startOutbound(port_, [&] { return local(denied_port_); });
  int error = 0;
  EXPECT_FALSE(roundTrip(100, 1, &error));
  waitForEnds(1, outbound_seen_.get());
  std::lock_guard lock(outbound_seen_->mutex);
  ASSERT_FALSE(outbound_seen_->ends.empty());
  EXPECT_EQ(outbound_seen_->ends.front(), ConnectionEnd::Denied);
}

TEST_P(HboneOutboundTest, NoTunnelEndpointMeansConnectFailed) {
  uint16_t closed_port = 0;
  {
    auto fd = listenTcp(*SocketAddress::parse("127.0.0.1:0"));
    ASSERT_TRUE(fd);
    closed_port = testing::localPort(fd->get());
  }
  startOutbound(closed_port, [&] { return std::string("127.0.0.1:80"); });
  EXPECT_FALSE(roundTrip(100, 1));
  waitForEnds(1, outbound_seen_.get());
  std::lock_guard lock(outbound_seen_->mutex);
  ASSERT_FALSE(outbound_seen_->ends.empty());
  EXPECT_EQ(outbound_seen_->ends.front(), ConnectionEnd::ConnectFailed);
}

INSTANTIATE_TEST_SUITE_P(Backends, HboneOutboundTest, ::testing::Values(IoBackendKind::Uring, IoBackendKind::Epoll),
                         [](const auto& info) { return std::string(toString(info.param)); });

INSTANTIATE_TEST_SUITE_P(Backends, HboneTest, ::testing::Values(IoBackendKind::Uring, IoBackendKind::Epoll),
                         [](const auto& info) { return std::string(toString(info.param)); });

}  // namespace
}  // namespace meshlock::engine
