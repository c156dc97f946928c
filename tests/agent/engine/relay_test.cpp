// The relay over loopback, end to end through an originate → terminate pair
// in one engine: app client → outbound listener → TLS → inbound listener → app
// server. Every test runs with the io_uring and the epoll back end.
#include <dirent.h>
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/resource.h>

#include <set>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <mutex>
#include <thread>

#include "engine/engine.h"
#include "engine/handover.h"
#include "engine/tls_context.h"
#include "identity/identity_manager.h"
#include "identity/tls_context.h"
#include "test_support.h"

namespace meshlock::engine {
namespace {

using namespace std::chrono_literals;
using testing::connectTcp;
using testing::EchoStream;
using testing::echo;
using testing::TestServer;
using testing::PatternStream;
using testing::readToEof;
using testing::testPki;
using testing::writeAll;

SslContextRef context(bool server, const std::string& leaf, const std::string& ca = "ca") {
  auto ctx = makeMutualTlsContext(server, testPki().files(leaf, ca));
  MESHLOCK_CHECK(ctx.has_value());
  return *ctx;
}

// What the engine's observers reported, per listener ("in"/"out").
struct ObservedEvents {
  struct Closed {
    std::string listener;
    ConnectionEnd end;
    std::string reason;
    ConnectionSnapshot snapshot;
  };
  std::mutex mutex;
  std::vector<ConnectionSnapshot> established;
  std::vector<Closed> closed;
  std::atomic<uint64_t> to_upstream{0};
  std::atomic<uint64_t> to_downstream{0};

  std::vector<Closed> closedOn(const std::string& listener) {
    std::lock_guard lock(mutex);
    std::vector<Closed> out;
    for (const Closed& c : closed) {
      if (c.listener == listener) out.push_back(c);
    }
    return out;
  }
};

class RecordingObserver final : public ConnectionObserver {
 public:
  RecordingObserver(std::shared_ptr<ObservedEvents> events, std::string listener)
      : events_(std::move(events)), listener_(std::move(listener)) {}
  void established(const ConnectionSnapshot& snapshot) override {
    std::lock_guard lock(events_->mutex);
    events_->established.push_back(snapshot);
  }
  void transferred(uint64_t to_upstream, uint64_t to_downstream) override {
    events_->to_upstream += to_upstream;
    events_->to_downstream += to_downstream;
  }
  void closed(const ConnectionSnapshot& snapshot, ConnectionEnd end, std::string_view reason) override {
    std::lock_guard lock(events_->mutex);
    events_->closed.push_back({listener_, end, std::string(reason), snapshot});
  }

 private:
  std::shared_ptr<ObservedEvents> events_;
  std::string listener_;
};

class RelayTest : public ::testing::TestWithParam<IoBackendKind> {
 protected:
  void SetUp() override {
    EngineConfig config;
    config.threads = 2;
    config.io = GetParam();
    config.handshake_timeout = 1500ms;
    config.connect_timeout = 2000ms;
    auto engine = Engine::start(config);
    ASSERT_TRUE(engine.has_value()) << engine.error().describe();
    engine_ = std::move(*engine);
    ASSERT_EQ(engine_->backend(), GetParam());
  }

  uint16_t listen(ListenerSpec spec) {
    auto fd = listenTcp(*SocketAddress::parse("127.0.0.1:0"));
    EXPECT_TRUE(fd.has_value());
    uint16_t port = testing::localPort(fd->get());
    auto id = engine_->addListener(std::move(*fd), std::move(spec));
    EXPECT_TRUE(id.has_value());
    return port;
  }

  // The terminating side in front of an app on app_port.
  uint16_t addInbound(uint16_t app_port, InboundMode mode = InboundMode::Strict, Authorizer authorize = {}) {
    SslContextRef server_ctx = context(true, "server");
    auto events = events_;
    ListenerSpec spec;
    spec.name = "test inbound";
    spec.pod_key = "shop/server";
    spec.decider = InboundDecider([=](const AcceptedSocket&) -> Result<InboundPlan> {
      InboundPlan plan;
      plan.mode = mode;
      plan.app = *SocketAddress::parse("127.0.0.1:" + std::to_string(app_port));
      plan.tls.context = server_ctx;
      plan.tls.verify_peer = expectSpiffeIds({testing::kClientId});
      plan.authorize = authorize;
      plan.observer = std::make_unique<RecordingObserver>(events, "in");
      return plan;
    });
    return listen(std::move(spec));
  }

  // The originating side: plaintext in, mTLS to the inbound port.
  uint16_t addOutbound(uint16_t inbound_port, const std::string& client_leaf = "client",
                       std::string expected_peer = testing::kServerId, SocketFactory make_socket = {}) {
    SslContextRef client_ctx = context(false, client_leaf);
    auto events = events_;
    ListenerSpec spec;
    spec.name = "test outbound";
    spec.pod_key = "shop/client";
    spec.decider = OutboundDecider([=](const AcceptedSocket&) -> Result<OutboundPlan> {
      OutboundPlan plan;
      plan.destination = *SocketAddress::parse("127.0.0.1:" + std::to_string(inbound_port));
      plan.tls = TlsClientSetup{client_ctx, "server.shop", expectSpiffeIds({expected_peer}), {}, {}};
      plan.make_socket = make_socket;
      plan.observer = std::make_unique<RecordingObserver>(events, "out");
      return plan;
    });
    return listen(std::move(spec));
  }

  uint16_t addPair(uint16_t app_port) { return addOutbound(addInbound(app_port)); }

  // Waits until no connection is open in the engine (both hops closed).
  bool waitIdle(std::chrono::milliseconds limit = 5s) {
    auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
      if (engine_->counters().active == 0) return true;
      std::this_thread::sleep_for(10ms);
    }
    return false;
  }

  // Replaces the fixture's engine with one of `config` (the back end kept).
  void restartEngine(EngineConfig config) {
    config.io = GetParam();
    engine_.reset();
    auto engine = Engine::start(config);
    ASSERT_TRUE(engine.has_value()) << engine.error().describe();
    engine_ = std::move(*engine);
  }

  bool waitFor(const std::function<bool()>& condition, std::chrono::milliseconds limit = 5s) {
    auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
      if (condition()) return true;
      std::this_thread::sleep_for(5ms);
    }
    return condition();
  }

  std::unique_ptr<Engine> engine_;
  std::shared_ptr<ObservedEvents> events_ = std::make_shared<ObservedEvents>();
};

// A TCP connection to 127.0.0.1:port from `source` (any 127/8 address is
// local), so one test can play several sources.
UniqueFd connectFrom(const char* source, uint16_t port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in from{};
  from.sin_family = AF_INET;
  inet_pton(AF_INET, source, &from.sin_addr);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&from), sizeof from) != 0) return UniqueFd();
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) return UniqueFd();
  return fd;
}

// The upstream sockets of an outbound plan, from `source`.
SocketFactory socketsFrom(const char* source) {
  return [source](const SocketAddress& to) -> Result<UniqueFd> {
    UniqueFd fd(::socket(to.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    sockaddr_in from{};
    from.sin_family = AF_INET;
    inet_pton(AF_INET, source, &from.sin_addr);
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&from), sizeof from) != 0) return failErrno("bind");
    return fd;
  };
}

// The start of a TLS handshake record and no more: the flood's connections.
constexpr char kPartialHello[] = "\x16\x03\x01\x02\x00\x01\x00\x01";

// Whether the engine closed or reset `fd` within `wait`.
bool closedByPeer(int fd, std::chrono::milliseconds wait = 0ms) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(wait.count())) <= 0) return false;
  char c;
  return ::recv(fd, &c, 1, MSG_DONTWAIT) <= 0;
}

// Sends `total` pattern bytes and checks the echo byte for byte.
void checkedEcho(uint16_t port, uint64_t seed, size_t total, std::atomic<bool>& ok) {
  UniqueFd fd = connectTcp(port);
  if (!fd) {
    ok = false;
    return;
  }
  std::thread writer([&] {
    PatternStream pattern(seed);
    std::vector<uint8_t> buf(128 * 1024);
    for (size_t sent = 0; sent < total;) {
      size_t n = std::min(buf.size(), total - sent);
      pattern.fill(buf.data(), n);
      if (!writeAll(fd.get(), buf.data(), n)) {
        ok = false;
        return;
      }
      sent += n;
    }
    ::shutdown(fd.get(), SHUT_WR);
  });
  PatternStream expected(seed);
  std::vector<uint8_t> buf(256 * 1024);
  std::vector<uint8_t> want(256 * 1024);
  size_t received = 0;
  for (;;) {
    ssize_t n = ::recv(fd.get(), buf.data(), buf.size(), 0);
    if (n <= 0) break;
    expected.fill(want.data(), static_cast<size_t>(n));
    if (std::memcmp(buf.data(), want.data(), static_cast<size_t>(n)) != 0 && ok.exchange(false)) {
      ADD_FAILURE() << "stream " << seed << ": corrupt bytes within [" << received << ", " << received + n << ")";
    }
    received += static_cast<size_t>(n);
  }
  writer.join();
  if (received != total) {
    ok = false;
    ADD_FAILURE() << "stream " << seed << ": " << received << " of " << total << " bytes came back";
  }
}

TEST_P(RelayTest, BulkTransfersBothWaysArriveExact) {
  TestServer app(echo);
  uint16_t port = addPair(app.port());
  // 4 streams × 128 MiB each way: 1 GiB through the pair in total.
  constexpr size_t kPerStream = 128u << 20;
  std::atomic<bool> ok{true};
  std::vector<std::thread> clients;
  for (int i = 0; i < 4; ++i) clients.emplace_back([&, i] { checkedEcho(port, 100 + i, kPerStream, ok); });
  for (auto& c : clients) c.join();
  EXPECT_TRUE(ok.load());
  EngineCounters counters = engine_->counters();
  EXPECT_EQ(counters.resets + counters.tls_errors + counters.tls_truncations, 0u);
  EXPECT_EQ(counters.handshakes, 8u);  // both ends of 4 connections
  EXPECT_GE(counters.bytes_to_upstream, 2 * 4 * kPerStream);
  EXPECT_TRUE(waitIdle());
  EXPECT_EQ(engine_->counters().buffered_bytes, 0u);
}

TEST_P(RelayTest, HandoverCarriesEveryStreamOnThroughThreeEnginesWithoutALostByte) {
  TestServer app(echo);
  uint16_t port = addPair(app.port());
  std::vector<std::unique_ptr<EchoStream>> streams;
  for (int i = 0; i < 4; ++i) streams.push_back(std::make_unique<EchoStream>(port, 300 + i));
  auto flowing = [&] {
    for (auto& s : streams)
      if (s->received() < 1'000'000) return false;
    return true;
  };
  ASSERT_TRUE(waitFor(flowing));
  EngineConfig config;
  config.threads = 2;
  config.io = GetParam();
  // Three upgrades in a row, each while all four streams carry bytes both
  // ways: outbound (plaintext app -> TLS) and inbound (TLS -> app) hops alike.
  std::unique_ptr<Engine> current = std::move(engine_);
  for (int upgrade = 1; upgrade <= 3; ++upgrade) {
    auto next = Engine::start(config);
    ASSERT_TRUE(next) << next.error().describe();
    HandoverOutcome outcome = current->handOver(5s);
    EXPECT_EQ(outcome.connections.size(), 8u) << "upgrade " << upgrade;
    EXPECT_EQ(outcome.stayed, 0u);
    for (HandedConnection& handed : outcome.connections) {
      const bool inbound = !handed.outbound;
      EXPECT_EQ(handed.down.tls.has_value(), inbound);
      EXPECT_EQ(handed.up.tls.has_value(), !inbound);
      ASSERT_TRUE((*next)->adopt(std::move(handed), std::make_unique<RecordingObserver>(events_, inbound ? "in2" : "out2")));
    }
    EXPECT_EQ(current->counters().handed_over, 8u);
    current.reset();  // the old process exits: nothing of the streams goes with it
    current = std::move(*next);
    const uint64_t before = streams[0]->received();
    ASSERT_TRUE(waitFor([&] { return streams[0]->received() > before + 1'000'000; })) << "upgrade " << upgrade;
    EXPECT_EQ(current->counters().adopted, 8u);
    EXPECT_EQ(current->counters().active, 8u);
  }
  for (auto& s : streams) EXPECT_TRUE(s->finish());
  engine_ = std::move(current);
  EXPECT_TRUE(waitIdle());
  const EngineCounters counters = engine_->counters();
  EXPECT_EQ(counters.resets + counters.tls_errors + counters.tls_truncations, 0u);
  EXPECT_EQ(counters.handshakes, 0u);  // no handshake after the first engine's
  // The first engine reported each connection as handed over, not closed.
  for (const char* listener : {"in", "out"}) {
    for (const auto& closed : events_->closedOn(listener)) EXPECT_EQ(closed.end, ConnectionEnd::HandedOver);
  }
  // Adopted connections carry their history on: the last engine's snapshots end them completed.
  for (const auto& closed : events_->closedOn("in2")) {
    if (closed.end == ConnectionEnd::HandedOver) continue;
    EXPECT_EQ(closed.end, ConnectionEnd::Completed);
    ASSERT_TRUE(closed.snapshot.tls.has_value());
    EXPECT_EQ(closed.snapshot.tls->peer_identity, testing::kClientId);
    EXPECT_GT(closed.snapshot.bytes_to_upstream, 1'000'000u);
  }
}

TEST_P(RelayTest, HandoverLeavesHalfClosedConnectionsToDrain) {
  TestServer app([](UniqueFd fd) {
    // Reads the request to its end, then answers after a pause.
    std::string request;
    (void)readToEof(fd.get(), request);
    std::this_thread::sleep_for(300ms);
    writeAll(fd.get(), "late answer", 11);
  });
  uint16_t port = addPair(app.port());
  UniqueFd client = connectTcp(port);
  ASSERT_TRUE(writeAll(client.get(), "request", 7));
  ::shutdown(client.get(), SHUT_WR);
  ASSERT_TRUE(waitFor([&] { return engine_->counters().bytes_to_upstream >= 14; }));
  std::this_thread::sleep_for(50ms);  // the FIN travels both hops
  HandoverOutcome outcome = engine_->handOver(2s);
  EXPECT_EQ(outcome.connections.size(), 0u);
  EXPECT_EQ(outcome.stayed, 2u);
  // They carry on here: the answer arrives through the old engine.
  std::string answer;
  EXPECT_TRUE(readToEof(client.get(), answer));
  EXPECT_EQ(answer, "late answer");
}

TEST_P(RelayTest, SmallMessagesAndManyConnections) {
  TestServer app(echo);
  uint16_t port = addPair(app.port());
  std::atomic<bool> ok{true};
  std::vector<std::thread> clients;
  for (int i = 0; i < 16; ++i) {
    clients.emplace_back([&, i] {
      for (int j = 0; j < 10; ++j) checkedEcho(port, 1000 + i * 10 + j, 1 + (j * 7919) % 5000, ok);
    });
  }
  for (auto& c : clients) c.join();
  EXPECT_TRUE(ok.load());
  EXPECT_TRUE(waitIdle());
}

TEST_P(RelayTest, SnapshotShowsBothHopsWithPeerIdentities) {
  TestServer app(echo);
  UniqueFd fd = connectTcp(addPair(app.port()));
  ASSERT_TRUE(fd);
  writeAll(fd.get(), "hello", 5);
  char buf[5];
  ASSERT_EQ(::recv(fd.get(), buf, 5, MSG_WAITALL), 5);
  std::vector<ConnectionSnapshot> open = engine_->connections();
  ASSERT_EQ(open.size(), 2u);
  for (const ConnectionSnapshot& c : open) {
    EXPECT_EQ(c.state, "relaying");
    ASSERT_TRUE(c.tls.has_value());
    EXPECT_EQ(c.tls->version, "TLSv1.3");
    EXPECT_EQ(c.tls->peer_identity, c.outbound ? testing::kServerId : testing::kClientId);
    EXPECT_EQ(c.pod_key, c.outbound ? "shop/client" : "shop/server");
    EXPECT_EQ(c.bytes_to_upstream, 5u);
    EXPECT_EQ(c.bytes_to_downstream, 5u);
  }
}

// The agent's outbound resumption (agent/identity's ClientSessionCache in the
// prepare hook, identity contexts on both ends): the second connection to the
// same destination resumes on both hops, and both still know their peer.
TEST_P(RelayTest, SecondConnectionResumesThroughTheAgentsSessionCache) {
  char ca_dir[] = "/tmp/meshlock-relay-ca-XXXXXX";
  ASSERT_NE(::mkdtemp(ca_dir), nullptr);
  struct Cleanup {
    std::string dir;
    ~Cleanup() { std::filesystem::remove_all(dir); }
  } cleanup{ca_dir};
  auto manager = identity::IdentityManager::create(
      {.caDirectory = ca_dir, .trustDomain = *identity::TrustDomain::parse("cluster.local")});
  ASSERT_TRUE(manager.has_value());
  identity::IdentityManager& identities = **manager;
  auto client_id = *identity::SpiffeId::parse(testing::kClientId);
  auto server_id = *identity::SpiffeId::parse(testing::kServerId);
  ASSERT_TRUE(identities.acquire(client_id));
  ASSERT_TRUE(identities.acquire(server_id));
  auto verify = [](SSL* ssl) -> Result<std::string> {
    auto peer = identity::handshakeIdentity(ssl);
    if (!peer) return fail(peer.error().describe());
    return peer->uri();
  };

  TestServer app(echo);
  SocketAddress app_address = *SocketAddress::parse("127.0.0.1:" + std::to_string(app.port()));
  SslContextRef server_ctx(std::move(*identities.serverContext(server_id)));
  ListenerSpec inbound;
  inbound.name = "mesh inbound";
  inbound.decider = InboundDecider([=](const AcceptedSocket&) -> Result<InboundPlan> {
    InboundPlan plan;
    plan.app = app_address;
    plan.tls.context = server_ctx;
    plan.tls.verify_peer = verify;
    return plan;
  });
  uint16_t inbound_port = listen(std::move(inbound));
  SocketAddress destination = *SocketAddress::parse("127.0.0.1:" + std::to_string(inbound_port));
  ListenerSpec outbound;
  outbound.name = "mesh outbound";
  outbound.decider = OutboundDecider([&identities, destination, client_id, server_id,
                                      verify](const AcceptedSocket&) -> Result<OutboundPlan> {
    OutboundPlan plan;
    plan.destination = destination;
    TlsClientSetup tls;
    tls.context = SslContextRef(std::move(*identities.clientContext(client_id)));
    tls.verify_peer = verify;
    identity::SessionKey key{.local = client_id, .destination = destination.toString(), .expected = {server_id}};
    tls.prepare = [key, sessions = &identities.clientSessions()](SSL* ssl) -> Status {
      if (Status set = identity::setExpectedPeers(ssl, identity::ExpectedPeers::oneOf(key.expected)); !set) return set;
      return sessions->prepare(ssl, key);
    };
    plan.tls = std::move(tls);
    return plan;
  });
  uint16_t port = listen(std::move(outbound));

  auto exchange = [&](UniqueFd& fd) {
    fd = connectTcp(port);
    ASSERT_TRUE(fd);
    ASSERT_TRUE(writeAll(fd.get(), "ping", 4));
    char buf[4];
    ASSERT_EQ(::recv(fd.get(), buf, 4, MSG_WAITALL), 4);  // by now the client has read its tickets
  };
  UniqueFd first;
  exchange(first);
  EXPECT_EQ(engine_->counters().handshakes_resumed, 0u);
  EXPECT_GE(identities.clientSessions().counters().stored, 1u);

  UniqueFd second;  // while the first is still open
  exchange(second);
  EngineCounters counters = engine_->counters();
  EXPECT_EQ(counters.handshakes, 4u);
  EXPECT_EQ(counters.handshakes_resumed, 2u);  // the second connection, on both hops
  size_t resumed = 0;
  for (const ConnectionSnapshot& c : engine_->connections()) {
    ASSERT_TRUE(c.tls.has_value());
    if (c.tls->resumed) {
      ++resumed;
      EXPECT_EQ(c.tls->peer_identity, c.outbound ? testing::kServerId : testing::kClientId);
    }
  }
  EXPECT_EQ(resumed, 2u);
}

TEST_P(RelayTest, ClientHalfCloseReachesServerAndReplyComesBack) {
  TestServer app([](UniqueFd fd) {
    std::string request;
    if (!readToEof(fd.get(), request)) return;
    std::string reply = "got " + request;
    writeAll(fd.get(), reply.data(), reply.size());
  });
  UniqueFd fd = connectTcp(addPair(app.port()));
  ASSERT_TRUE(fd);
  writeAll(fd.get(), "request", 7);
  ::shutdown(fd.get(), SHUT_WR);
  std::string reply;
  EXPECT_TRUE(readToEof(fd.get(), reply));
  EXPECT_EQ(reply, "got request");
}

TEST_P(RelayTest, ServerHalfCloseReachesClientAndClientCanStillSend) {
  std::string server_got;
  std::atomic<bool> server_done{false};
  TestServer app([&](UniqueFd fd) {
    writeAll(fd.get(), "hello", 5);
    ::shutdown(fd.get(), SHUT_WR);
    readToEof(fd.get(), server_got);
    server_done = true;
  });
  UniqueFd fd = connectTcp(addPair(app.port()));
  ASSERT_TRUE(fd);
  std::string greeting;
  EXPECT_TRUE(readToEof(fd.get(), greeting));
  EXPECT_EQ(greeting, "hello");
  writeAll(fd.get(), "bye after your FIN", 18);
  ::shutdown(fd.get(), SHUT_WR);
  char c;
  EXPECT_EQ(::recv(fd.get(), &c, 1, 0), 0);  // the server closed after reading
  fd.reset();
  EXPECT_TRUE(waitIdle());
  // The relay is done once the bytes are in the app's socket; the app reads them on its own time.
  for (int i = 0; i < 500 && !server_done; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_TRUE(server_done);
  EXPECT_EQ(server_got, "bye after your FIN");
}

TEST_P(RelayTest, ServerResetReachesClientAsReset) {
  TestServer app([](UniqueFd fd) {
    char buf[16];
    ::recv(fd.get(), buf, sizeof buf, 0);
    linger lg{1, 0};
    setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  });
  UniqueFd fd = connectTcp(addPair(app.port()));
  ASSERT_TRUE(fd);
  writeAll(fd.get(), "x", 1);
  std::string data;
  int err = 0;
  EXPECT_FALSE(readToEof(fd.get(), data, &err));
  EXPECT_EQ(err, ECONNRESET);
  EXPECT_TRUE(waitIdle());
  EXPECT_GE(engine_->counters().resets, 1u);
}

TEST_P(RelayTest, ClientResetReachesServerAsReset) {
  std::atomic<int> server_err{0};
  std::atomic<bool> done{false};
  TestServer app([&](UniqueFd fd) {
    std::string data;
    int err = 0;
    readToEof(fd.get(), data, &err);
    server_err = err;
    done = true;
  });
  UniqueFd fd = connectTcp(addPair(app.port()));
  ASSERT_TRUE(fd);
  writeAll(fd.get(), "some data", 9);
  std::this_thread::sleep_for(200ms);
  linger lg{1, 0};
  setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  fd.reset();
  for (int i = 0; i < 300 && !done; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_TRUE(done.load());
  EXPECT_EQ(server_err.load(), ECONNRESET);
}

TEST_P(RelayTest, SlowReaderKeepsEngineMemoryBounded) {
  std::atomic<bool> start_reading{false};
  std::atomic<size_t> server_received{0};
  TestServer app([&](UniqueFd fd) {
    int small = 64 * 1024;
    setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    while (!start_reading) std::this_thread::sleep_for(10ms);
    std::string data;
    readToEof(fd.get(), data);
    server_received = data.size();
  });
  UniqueFd fd = connectTcp(addPair(app.port()));
  ASSERT_TRUE(fd);
  // Write until the whole chain pushes back for half a second.
  fcntl(fd.get(), F_SETFL, fcntl(fd.get(), F_GETFL) | O_NONBLOCK);
  std::vector<char> buf(64 * 1024, 'z');
  size_t written = 0;
  auto last_progress = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - last_progress < 500ms) {
    ssize_t n = ::send(fd.get(), buf.data(), buf.size(), MSG_NOSIGNAL);
    if (n > 0) {
      written += static_cast<size_t>(n);
      last_progress = std::chrono::steady_clock::now();
    } else {
      pollfd p{fd.get(), POLLOUT, 0};
      ::poll(&p, 1, 50);
    }
    ASSERT_LT(written, size_t{512} << 20) << "the writer was never pushed back";
  }
  // Two connections (originate, terminate); each may hold the bound plus one receive and TLS framing.
  EngineCounters counters = engine_->counters();
  EXPECT_LE(counters.buffered_bytes, 2 * (256u * 1024 + 64 * 1024 + 32 * 1024)) << "written " << written;
  EXPECT_GT(counters.buffered_bytes, 0u);
  // Once the reader reads, everything arrives.
  start_reading = true;
  fcntl(fd.get(), F_SETFL, fcntl(fd.get(), F_GETFL) & ~O_NONBLOCK);
  ::shutdown(fd.get(), SHUT_WR);
  std::string rest;
  readToEof(fd.get(), rest);
  EXPECT_TRUE(waitIdle());
  EXPECT_EQ(server_received.load(), written);
}

TEST_P(RelayTest, StrictRefusesPlaintextAndCountsIt) {
  TestServer app(echo);
  uint16_t inbound = addInbound(app.port(), InboundMode::Strict);
  UniqueFd fd = connectTcp(inbound);
  ASSERT_TRUE(fd);
  writeAll(fd.get(), "GET / HTTP/1.1\r\n\r\n", 18);
  std::string data;
  readToEof(fd.get(), data);  // reset or EOF, never an answer
  EXPECT_EQ(data, "");
  EXPECT_EQ(engine_->counters().refused_plaintext, 1u);
  EXPECT_EQ(app.accepted(), 0);
}

TEST_P(RelayTest, ObserversHearEstablishedBytesAndAnEndPerHop) {
  TestServer app(echo);
  std::atomic<bool> ok{true};
  checkedEcho(addPair(app.port()), 7, 300000, ok);
  ASSERT_TRUE(ok.load());
  ASSERT_TRUE(waitIdle());
  std::lock_guard lock(events_->mutex);
  ASSERT_EQ(events_->established.size(), 2u);
  for (const ConnectionSnapshot& hop : events_->established) {
    ASSERT_TRUE(hop.tls.has_value());
    EXPECT_EQ(hop.tls->version, "TLSv1.3");
    EXPECT_EQ(hop.tls->peer_identity, hop.outbound ? testing::kServerId : testing::kClientId);
  }
  ASSERT_EQ(events_->closed.size(), 2u);
  for (const auto& hop : events_->closed) {
    EXPECT_EQ(hop.end, ConnectionEnd::Completed) << hop.listener << ": " << hop.reason;
    EXPECT_TRUE(hop.snapshot.tls.has_value());  // still there at the end, for the access log
    EXPECT_EQ(hop.snapshot.bytes_to_upstream, 300000u);
    EXPECT_EQ(hop.snapshot.bytes_to_downstream, 300000u);
  }
  // Two hops, each carrying the stream both ways, reported as it moved.
  EXPECT_EQ(events_->to_upstream.load(), 600000u);
  EXPECT_EQ(events_->to_downstream.load(), 600000u);
}

TEST_P(RelayTest, ObserverHearsWhyAConnectionWasRefused) {
  TestServer app(echo);
  uint16_t inbound = addInbound(app.port(), InboundMode::Strict);
  {
    UniqueFd fd = connectTcp(inbound);
    ASSERT_TRUE(fd);
    writeAll(fd.get(), "GET / HTTP/1.1\r\n\r\n", 18);
    std::string data;
    readToEof(fd.get(), data);
  }
  {
    UniqueFd fd = connectTcp(addOutbound(inbound, "foreign"));
    ASSERT_TRUE(fd);
    writeAll(fd.get(), "secret", 6);
    std::string data;
    readToEof(fd.get(), data);
  }
  ASSERT_TRUE(waitIdle());
  std::vector<ObservedEvents::Closed> in = events_->closedOn("in");
  ASSERT_EQ(in.size(), 2u);
  EXPECT_EQ(in[0].end, ConnectionEnd::RefusedPlaintext);
  EXPECT_FALSE(in[0].snapshot.peer.empty());
  EXPECT_EQ(in[1].end, ConnectionEnd::HandshakeFailed);
  EXPECT_FALSE(in[1].reason.empty());
  std::vector<ObservedEvents::Closed> out = events_->closedOn("out");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].end, ConnectionEnd::HandshakeFailed);
  EXPECT_FALSE(out[0].reason.empty());
  // The client's TLS 1.3 handshake completes before the server refuses its
  // certificate, so only the outbound hop may have been established.
  std::lock_guard lock(events_->mutex);
  for (const ConnectionSnapshot& hop : events_->established) EXPECT_TRUE(hop.outbound);
}

// The authorizer is asked once the peer is known, with its verified identity
// (or none for plaintext), and a refusal ends the connection before the app
// is connected: the app never sees it.
TEST_P(RelayTest, AuthorizerDecidesBeforeTheAppIsReached) {
  TestServer app(echo);
  auto asked = std::make_shared<std::vector<std::string>>();
  auto mutex = std::make_shared<std::mutex>();
  Authorizer only_mtls = [asked, mutex](std::string_view identity, std::string_view) -> std::optional<Refusal> {
    std::lock_guard lock(*mutex);
    asked->emplace_back(identity);
    if (identity.empty()) return Refusal{.reason = "plaintext has no principal", .policy = "shop/mtls-only"};
    return std::nullopt;
  };
  uint16_t inbound = addInbound(app.port(), InboundMode::Permissive, only_mtls);
  std::atomic<bool> ok{true};
  checkedEcho(addOutbound(inbound), 1, 100000, ok);  // mTLS: allowed
  EXPECT_TRUE(ok.load());
  {
    UniqueFd fd = connectTcp(inbound);  // plaintext: denied
    ASSERT_TRUE(fd);
    writeAll(fd.get(), "hello", 5);
    std::string data;
    readToEof(fd.get(), data);
    EXPECT_EQ(data, "");
  }
  ASSERT_TRUE(waitIdle());
  EXPECT_EQ(app.accepted(), 1) << "only the allowed connection reached the app";
  EXPECT_EQ(engine_->counters().refused_authz, 1u);
  {
    std::lock_guard lock(*mutex);
    EXPECT_THAT(*asked, ::testing::ElementsAre(std::string(testing::kClientId), std::string()));
  }
  std::vector<ObservedEvents::Closed> in = events_->closedOn("in");
  ASSERT_EQ(in.size(), 2u);
  EXPECT_EQ(in[1].end, ConnectionEnd::Denied);
  EXPECT_NE(in[1].reason.find("plaintext has no principal"), std::string::npos) << in[1].reason;
  EXPECT_EQ(in[1].snapshot.denied_by, "shop/mtls-only");
}

// After a policy change, established inbound connections are asked again; the
// ones refused now are closed, the others carry on.
TEST_P(RelayTest, ReauthorizeClosesOnlyWhatIsNowRefused) {
  TestServer app(echo);
  uint16_t inbound = addInbound(app.port(), InboundMode::Permissive);
  UniqueFd plain = connectTcp(inbound);
  UniqueFd mtls = connectTcp(addOutbound(inbound));
  ASSERT_TRUE(plain && mtls);
  for (int fd : {plain.get(), mtls.get()}) {  // both relaying
    writeAll(fd, "ping", 4);
    std::string got(4, '\0');
    ASSERT_EQ(::recv(fd, got.data(), 4, MSG_WAITALL), 4);
  }
  std::size_t closed = engine_->reauthorize([](const EstablishedPeer& c) -> std::optional<Refusal> {
    if (c.peer_identity.empty()) return Refusal{.reason = "plaintext now denied", .policy = "shop/strict-authz"};
    return std::nullopt;
  });
  EXPECT_EQ(closed, 1u);
  std::string rest;
  readToEof(plain.get(), rest);  // closed by the engine
  writeAll(mtls.get(), "pong", 4);
  std::string got(4, '\0');
  ASSERT_EQ(::recv(mtls.get(), got.data(), 4, MSG_WAITALL), 4);
  EXPECT_EQ(got, "pong");
}

TEST_P(RelayTest, PermissiveRelaysPlaintextAndMutualTls) {
  TestServer app(echo);
  uint16_t inbound = addInbound(app.port(), InboundMode::Permissive);
  std::atomic<bool> ok{true};
  checkedEcho(inbound, 1, 100000, ok);           // plaintext straight to the inbound port
  checkedEcho(addOutbound(inbound), 2, 100000, ok);  // and mTLS through the pair
  EXPECT_TRUE(ok.load());
  EngineCounters counters = engine_->counters();
  EXPECT_EQ(counters.plaintext_relayed, 1u);
  EXPECT_EQ(counters.handshakes, 2u);
}

TEST_P(RelayTest, DisablePassesTlsBytesUntouched) {
  TestServer app(echo);
  uint16_t inbound = addInbound(app.port(), InboundMode::Disable);
  UniqueFd fd = connectTcp(inbound);
  ASSERT_TRUE(fd);
  std::string hello("\x16\x03\x01\x00\x02\x01\x00", 7);
  writeAll(fd.get(), hello.data(), hello.size());
  ::shutdown(fd.get(), SHUT_WR);
  std::string back;
  EXPECT_TRUE(readToEof(fd.get(), back));
  EXPECT_EQ(back, hello);
}

TEST_P(RelayTest, GarbageClientHelloIsRefusedAndOthersAreServed) {
  TestServer app(echo);
  uint16_t inbound = addInbound(app.port());
  UniqueFd fd = connectTcp(inbound);
  ASSERT_TRUE(fd);
  std::string garbage("\x16\x03\x01\x00\x08\x01\x00\x00\x04" "abcd", 13);
  writeAll(fd.get(), garbage.data(), garbage.size());
  std::string data;
  readToEof(fd.get(), data);
  EXPECT_EQ(data.find("abcd"), std::string::npos);
  EXPECT_GE(engine_->counters().handshake_failures, 1u);
  EXPECT_EQ(app.accepted(), 0);
  std::atomic<bool> ok{true};
  checkedEcho(addOutbound(inbound), 3, 10000, ok);
  EXPECT_TRUE(ok.load());
}

TEST_P(RelayTest, OversizedRecordIsRefusedAtOnce) {
  TestServer app(echo);
  uint16_t inbound = addInbound(app.port());
  UniqueFd fd = connectTcp(inbound);
  ASSERT_TRUE(fd);
  // A handshake record announcing 18,433 bytes: over TLS's 16 KiB + 2 KiB limit.
  std::string record("\x16\x03\x01\x48\x01", 5);
  record.append(18433, 'A');
  auto start = std::chrono::steady_clock::now();
  writeAll(fd.get(), record.data(), record.size());
  std::string data;
  readToEof(fd.get(), data);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);  // refused, not timed out
  EXPECT_EQ(engine_->counters().handshake_failures, 1u);
  EXPECT_EQ(engine_->counters().handshake_timeouts, 0u);
  EXPECT_EQ(app.accepted(), 0);
}

TEST_P(RelayTest, ConnectionLimitPerPodRefusesNewOnesAndKeepsOpenOnes) {
  EngineConfig config;
  config.threads = 2;
  config.io = GetParam();
  config.max_connections_per_pod = 2;
  auto engine = Engine::start(config);
  ASSERT_TRUE(engine);
  TestServer app(echo);
  auto fd = listenTcp(*SocketAddress::parse("127.0.0.1:0"));
  ASSERT_TRUE(fd);
  uint16_t port = testing::localPort(fd->get());
  ListenerSpec spec;
  spec.name = "limited";
  spec.pod_key = "shop/limited";
  uint16_t app_port = app.port();
  spec.decider = OutboundDecider([app_port](const AcceptedSocket&) -> Result<OutboundPlan> {
    OutboundPlan plan;
    plan.destination = *SocketAddress::parse("127.0.0.1:" + std::to_string(app_port));
    return plan;
  });
  ASSERT_TRUE((*engine)->addListener(std::move(*fd), std::move(spec)));
  UniqueFd first = connectTcp(port);
  UniqueFd second = connectTcp(port);
  char buf[4];
  for (int s : {first.get(), second.get()}) {
    writeAll(s, "ping", 4);
    ASSERT_EQ(::recv(s, buf, 4, MSG_WAITALL), 4);
  }
  UniqueFd third = connectTcp(port);
  ASSERT_TRUE(third);
  std::string data;
  readToEof(third.get(), data);  // closed at once
  EXPECT_EQ(data, "");
  EXPECT_EQ((*engine)->counters().refused_limit, 1u);
  writeAll(first.get(), "more", 4);
  ASSERT_EQ(::recv(first.get(), buf, 4, MSG_WAITALL), 4);
  EXPECT_EQ(std::string(buf, 4), "more");
  // A closed connection frees its place.
  second.reset();
  for (int i = 0; i < 100 && (*engine)->counters().active > 1; ++i) std::this_thread::sleep_for(10ms);
  UniqueFd fourth = connectTcp(port);
  writeAll(fourth.get(), "late", 4);
  ASSERT_EQ(::recv(fourth.get(), buf, 4, MSG_WAITALL), 4);
}

std::string realClientHello() {
  auto client = TlsSession::create(TlsSession::Role::Client, context(false, "client"), "server.shop", TlsHooks{});
  MESHLOCK_CHECK(client.has_value());
  (*client)->handshake();
  std::string hello((*client)->output().size(), '\0');
  (*client)->output().read({reinterpret_cast<std::byte*>(hello.data()), hello.size()});
  return hello;
}

TEST_P(RelayTest, TruncatedClientHelloTimesOut) {
  TestServer app(echo);
  uint16_t inbound = addInbound(app.port());
  UniqueFd fd = connectTcp(inbound);
  ASSERT_TRUE(fd);
  std::string hello = realClientHello();
  writeAll(fd.get(), hello.data(), hello.size() / 2);
  auto start = std::chrono::steady_clock::now();
  std::string data;
  readToEof(fd.get(), data);
  auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_GE(waited, 1200ms);
  EXPECT_LT(waited, 4s);
  EXPECT_EQ(engine_->counters().handshake_timeouts, 1u);
}

TEST_P(RelayTest, BytePerTickHandshakeHitsTheDeadline) {
  TestServer app(echo);
  uint16_t inbound = addInbound(app.port());
  UniqueFd fd = connectTcp(inbound);
  ASSERT_TRUE(fd);
  std::string hello = realClientHello();
  auto start = std::chrono::steady_clock::now();
  bool closed = false;
  for (char c : hello) {  // ~300 bytes at 10/s: 30 s if the deadline slid with activity
    if (::send(fd.get(), &c, 1, MSG_NOSIGNAL) != 1) {
      closed = true;
      break;
    }
    pollfd p{fd.get(), POLLIN, 0};
    if (::poll(&p, 1, 100) > 0) {
      closed = true;
      break;
    }
  }
  EXPECT_TRUE(closed);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 4s);
  EXPECT_EQ(engine_->counters().handshake_timeouts, 1u);
}

TEST_P(RelayTest, ClientCertificateFromForeignCaIsRefused) {
  TestServer app(echo);
  uint16_t port = addOutbound(addInbound(app.port()), "foreign");
  UniqueFd fd = connectTcp(port);
  ASSERT_TRUE(fd);
  writeAll(fd.get(), "secret", 6);
  std::string data;
  readToEof(fd.get(), data);
  EXPECT_EQ(data, "");
  EXPECT_TRUE(waitIdle());
  EXPECT_GE(engine_->counters().handshake_failures, 1u);
  EXPECT_EQ(app.accepted(), 0);
}

TEST_P(RelayTest, UnexpectedServerIdentityIsRefused) {
  TestServer app(echo);
  uint16_t port = addOutbound(addInbound(app.port()), "client", testing::kOtherId);
  UniqueFd fd = connectTcp(port);
  ASSERT_TRUE(fd);
  writeAll(fd.get(), "secret", 6);
  std::string data;
  readToEof(fd.get(), data);
  EXPECT_EQ(data, "");
  EXPECT_TRUE(waitIdle());
  EXPECT_GE(engine_->counters().handshake_failures, 1u);
  EXPECT_EQ(app.accepted(), 0);
}

TEST_P(RelayTest, UnreachableDestinationResetsTheClient) {
  uint16_t port = addOutbound(1);
  UniqueFd fd = connectTcp(port);
  ASSERT_TRUE(fd);
  std::string data;
  int err = 0;
  EXPECT_FALSE(readToEof(fd.get(), data, &err));
  EXPECT_EQ(err, ECONNRESET);
  EXPECT_EQ(engine_->counters().connect_failures, 1u);
}

TEST_P(RelayTest, RemovedListenerStopsAcceptingAndOpenConnectionsContinue) {
  TestServer app(echo);
  auto fd = listenTcp(*SocketAddress::parse("127.0.0.1:0"));
  ASSERT_TRUE(fd);
  uint16_t inbound = addInbound(app.port(), InboundMode::Permissive);
  uint16_t port = testing::localPort(fd->get());
  ListenerSpec spec;
  spec.name = "removable";
  spec.decider = OutboundDecider([inbound](const AcceptedSocket&) -> Result<OutboundPlan> {
    OutboundPlan plan;
    plan.destination = *SocketAddress::parse("127.0.0.1:" + std::to_string(inbound));
    return plan;
  });
  auto id = engine_->addListener(std::move(*fd), std::move(spec));
  ASSERT_TRUE(id);
  UniqueFd open = connectTcp(port);
  ASSERT_TRUE(open);
  writeAll(open.get(), "before", 6);
  char buf[6];
  ASSERT_EQ(::recv(open.get(), buf, 6, MSG_WAITALL), 6);
  ASSERT_TRUE(engine_->removeListener(*id));
  std::this_thread::sleep_for(100ms);
  EXPECT_FALSE(connectTcp(port));  // the listening socket is closed
  writeAll(open.get(), "after!", 6);
  ASSERT_EQ(::recv(open.get(), buf, 6, MSG_WAITALL), 6);
  EXPECT_EQ(std::string(buf, 6), "after!");
}

TEST_P(RelayTest, PendingCapPerSourceRefusesTheFloodAndServesOtherSources) {
  EngineConfig config;
  config.threads = 2;
  config.handshake_timeout = 5s;
  config.max_pending_handshakes_per_source = 4;
  restartEngine(config);
  TestServer app(echo);
  uint16_t inbound = addInbound(app.port());
  std::vector<UniqueFd> flood;
  for (int i = 0; i < 4; ++i) {
    flood.push_back(connectFrom("127.0.0.1", inbound));
    ASSERT_TRUE(flood.back());
    writeAll(flood.back().get(), kPartialHello, sizeof kPartialHello - 1);
  }
  ASSERT_TRUE(waitFor([&] { return engine_->counters().pending == 4; }));
  UniqueFd fifth = connectFrom("127.0.0.1", inbound);
  ASSERT_TRUE(fifth);
  EXPECT_TRUE(closedByPeer(fifth.get(), 2000ms));  // refused at once, not after the handshake timeout
  EXPECT_EQ(engine_->counters().refused_pending_source, 1u);
  for (const UniqueFd& fd : flood) EXPECT_FALSE(closedByPeer(fd.get())) << "a held connection was ended";
  // Another source (the outbound hop's client and its upstream) is served meanwhile.
  uint16_t outbound = addOutbound(inbound, "client", testing::kServerId, socketsFrom("127.0.0.2"));
  UniqueFd legit = connectFrom("127.0.0.3", outbound);
  ASSERT_TRUE(legit);
  ASSERT_TRUE(writeAll(legit.get(), "hello", 5));
  char buf[5];
  testing::setRecvTimeout(legit.get(), 3000);
  ASSERT_EQ(::recv(legit.get(), buf, 5, MSG_WAITALL), 5);
  EXPECT_EQ(std::string(buf, 5), "hello");
  EXPECT_EQ(engine_->counters().handshakes, 2u);
  // A flood connection that ends frees its source's place.
  flood.pop_back();
  ASSERT_TRUE(waitFor([&] { return engine_->counters().pending == 3 + 0u; }));
  UniqueFd again = connectFrom("127.0.0.1", inbound);
  writeAll(again.get(), kPartialHello, sizeof kPartialHello - 1);
  EXPECT_TRUE(waitFor([&] { return engine_->counters().pending == 4; }));
  EXPECT_FALSE(closedByPeer(again.get(), 100ms));
  EXPECT_EQ(engine_->counters().refused_pending_source, 1u);
  // Outbound, the source is the served pod's own app (a pool may open many
  // at once): six handshakes in flight to a server that never answers, none refused.
  TestServer silent([](UniqueFd fd) {
    char c;
    while (::recv(fd.get(), &c, 1, 0) > 0) {
    }
  });
  uint16_t to_silent = addOutbound(silent.port());
  std::vector<UniqueFd> burst;
  for (int i = 0; i < 6; ++i) burst.push_back(connectFrom("127.0.0.1", to_silent));
  EXPECT_TRUE(waitFor([&] { return engine_->counters().pending == 4 + 6u; }));
  EXPECT_EQ(engine_->counters().refused_pending_source, 1u);
  engine_.reset();  // ends them, so the silent server's threads end too
}

TEST_P(RelayTest, PendingCapPerEngineShedsTheOldestForANewConnection) {
  EngineConfig config;
  config.threads = 1;  // one worker: "oldest" is exact
  config.handshake_timeout = 5s;
  config.max_pending_handshakes = 3;
  restartEngine(config);
  TestServer app(echo);
  uint16_t inbound = addInbound(app.port());
  std::vector<UniqueFd> junk;
  const char* sources[] = {"127.0.0.11", "127.0.0.12", "127.0.0.13"};
  for (int i = 0; i < 3; ++i) {
    junk.push_back(connectFrom(sources[i], inbound));
    ASSERT_TRUE(junk.back());
    writeAll(junk.back().get(), kPartialHello, sizeof kPartialHello - 1);
    ASSERT_TRUE(waitFor([&] { return engine_->counters().pending == static_cast<uint64_t>(i + 1); }));
  }
  UniqueFd fourth = connectFrom("127.0.0.14", inbound);
  ASSERT_TRUE(fourth);
  EXPECT_TRUE(closedByPeer(junk[0].get(), 2000ms)) << "the oldest was not shed";
  EXPECT_FALSE(closedByPeer(junk[1].get(), 100ms));
  EXPECT_FALSE(closedByPeer(junk[2].get()));
  EXPECT_FALSE(closedByPeer(fourth.get()));
  EXPECT_EQ(engine_->counters().shed_pending, 1u);
  EXPECT_EQ(engine_->counters().pending, 3u);
  // A legitimate client gets through the full cap: its two hops shed the two oldest.
  uint16_t outbound = addOutbound(inbound, "client", testing::kServerId, socketsFrom("127.0.0.2"));
  std::atomic<bool> ok{true};
  checkedEcho(outbound, 5, 20000, ok);
  EXPECT_TRUE(ok.load());
  EXPECT_TRUE(closedByPeer(junk[1].get(), 1000ms));
  EXPECT_TRUE(closedByPeer(junk[2].get(), 1000ms));
  EXPECT_EQ(engine_->counters().shed_pending, 3u);
  std::vector<ObservedEvents::Closed> in = events_->closedOn("in");
  ASSERT_GE(in.size(), 1u);
  EXPECT_EQ(in[0].end, ConnectionEnd::Shed);
}

// The fds free below RLIMIT_NOFILE's soft limit `limit`, given what is open now.
int freeFdsBelow(rlim_t limit) {
  std::set<int> open;
  DIR* dir = opendir("/proc/self/fd");
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] != '.' && std::atoi(e->d_name) != dirfd(dir)) open.insert(std::atoi(e->d_name));
  }
  closedir(dir);
  int free = 0;
  for (rlim_t fd = 0; fd < limit; ++fd) free += open.count(static_cast<int>(fd)) ? 0 : 1;
  return free;
}

TEST_P(RelayTest, AcceptBacksOffOnEmfileWithoutSpinningAndRecovers) {
  EngineConfig config;
  config.threads = 1;
  config.handshake_timeout = 10s;
  restartEngine(config);
  auto listening = listenTcp(*SocketAddress::parse("127.0.0.1:0"));
  ASSERT_TRUE(listening);
  uint16_t inbound = testing::localPort(listening->get());
  ListenerSpec spec;
  spec.name = "test inbound";
  spec.pod_key = "shop/server";
  SslContextRef server_ctx = context(true, "server");
  spec.decider = InboundDecider([server_ctx](const AcceptedSocket&) -> Result<InboundPlan> {
    InboundPlan plan;
    plan.app = *SocketAddress::parse("127.0.0.1:1");
    plan.tls.context = server_ctx;
    return plan;
  });
  constexpr int kClients = 6;
  std::vector<UniqueFd> clients;
  for (int i = 0; i < kClients; ++i) clients.emplace_back(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  // Room for three accepted sockets: the rest wait in the backlog with EMFILE.
  // The listener is added after the limit is lowered: io_uring reads the
  // limit when the accept is submitted.
  rlimit saved{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &saved), 0);
  rlim_t limit = 0;
  while (freeFdsBelow(limit) < 3) ++limit;
  rlimit lowered = saved;
  lowered.rlim_cur = limit;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &lowered), 0);
  if (!engine_->addListener(std::move(*listening), std::move(spec))) {
    setrlimit(RLIMIT_NOFILE, &saved);
    FAIL() << "addListener";
  }
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(inbound);
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (UniqueFd& c : clients) {
    ASSERT_EQ(::connect(c.get(), reinterpret_cast<sockaddr*>(&to), sizeof to), 0);
    writeAll(c.get(), kPartialHello, sizeof kPartialHello - 1);
  }
  bool errors_seen = waitFor([&] { return engine_->counters().accept_errors >= 2; }, 3s);
  uint64_t accepted_low = engine_->counters().accepted;
  uint64_t loops_before = engine_->workerFigures()[0].loop_iterations;
  std::this_thread::sleep_for(500ms);
  uint64_t loops = engine_->workerFigures()[0].loop_iterations - loops_before;
  uint64_t errors = engine_->counters().accept_errors;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &saved), 0);  // before any assertion can fail
  EXPECT_TRUE(errors_seen);
  EXPECT_EQ(accepted_low, 3u);
  // Back-off of 10 ms doubling: a handful of retries in half a second, not a spin.
  EXPECT_LT(loops, 100u) << "the event loop spun while accept failed";
  EXPECT_LT(errors, 20u);
  // With fds again, the waiting connections are accepted (the pause is at most 1 s).
  EXPECT_TRUE(waitFor([&] { return engine_->counters().accepted == kClients; }, 3s))
      << engine_->counters().accepted << " accepted";
  EXPECT_EQ(engine_->counters().pending, static_cast<uint64_t>(kClients));
}

INSTANTIATE_TEST_SUITE_P(Backends, RelayTest, ::testing::Values(IoBackendKind::Uring, IoBackendKind::Epoll),
                         [](const auto& info) { return std::string(info.param == IoBackendKind::Uring ? "io_uring" : "epoll"); });

}  // namespace
}  // namespace meshlock::engine
