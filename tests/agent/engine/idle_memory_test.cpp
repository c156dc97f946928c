// Heap per idle mTLS connection (issue 5: at most 10 KiB), measured with
// mallinfo2 (every arena) around N idle connections through an in-process
// originate → terminate pair: app client → outbound → mTLS → inbound → app.
// Each connection has carried one byte each way, so both TLS ends are past
// the handshake and the client has taken its session tickets. The figure
// counts both engine connections of a pair and is divided by two: one idle
// connection of one proxy, as the issue counts it.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <malloc.h>
#include <poll.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "engine/engine.h"
#include "engine/tls_context.h"
#include "identity/identity_manager.h"
#include "identity/tls_context.h"
#include "test_support.h"

namespace meshlock::engine {
namespace {

using namespace std::chrono_literals;
using testing::connectTcp;
using testing::testPki;

size_t heapInUse() {
  struct mallinfo2 info = mallinfo2();
  return info.uordblks + info.hblkhd;
}

// An app that accepts and holds connections and greets each with one byte;
// it never reads and allocates nothing per connection.
class HoldingApp {
 public:
  explicit HoldingApp(size_t capacity) {
    auto fd = listenTcp(*SocketAddress::parse("127.0.0.1:0"), 4096);
    MESHLOCK_CHECK(fd.has_value());
    listen_ = std::move(*fd);
    fcntl(listen_.get(), F_SETFL, fcntl(listen_.get(), F_GETFL) & ~O_NONBLOCK);
    port_ = testing::localPort(listen_.get());
    held_.reserve(capacity);
    acceptor_ = std::thread([this, capacity] {
      while (held_.size() < capacity) {
        int c = ::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) return;
        char greeting = 'g';
        [[maybe_unused]] ssize_t n = ::send(c, &greeting, 1, MSG_NOSIGNAL);
        held_.emplace_back(c);
        accepted_.fetch_add(1);
      }
    });
  }
  ~HoldingApp() {
    ::shutdown(listen_.get(), SHUT_RDWR);
    acceptor_.join();
  }
  [[nodiscard]] uint16_t port() const { return port_; }
  [[nodiscard]] size_t accepted() const { return accepted_.load(); }

 private:
  UniqueFd listen_;
  uint16_t port_ = 0;
  std::vector<UniqueFd> held_;
  std::atomic<size_t> accepted_{0};
  std::thread acceptor_;
};

struct PairTls {
  TlsServerSetup server;
  TlsClientSetup client;
};

// The proxy's contexts: PEM files and a SPIFFE-ID check (meshlock-agent proxy).
PairTls proxyTls() {
  PairTls tls;
  tls.server.context = *makeMutualTlsContext(true, testPki().files("server"));
  tls.server.verify_peer = expectSpiffeIds({testing::kClientId});
  tls.client.context = *makeMutualTlsContext(false, testPki().files("client"));
  tls.client.server_name = "server.shop";
  tls.client.verify_peer = expectSpiffeIds({testing::kServerId});
  return tls;
}

// The agent's contexts and hooks (agent/app planOutbound/planInbound): one
// identity per side from a throwaway mesh CA, secure naming on the client.
struct MeshIdentities {
  std::string dir;
  std::unique_ptr<identity::IdentityManager> manager;
  identity::SpiffeId client = *identity::SpiffeId::parse(testing::kClientId);
  identity::SpiffeId server = *identity::SpiffeId::parse(testing::kServerId);

  MeshIdentities() {
    char tmpl[] = "/tmp/meshlock-idle-ca-XXXXXX";
    MESHLOCK_CHECK(::mkdtemp(tmpl) != nullptr);
    dir = tmpl;
    auto created = identity::IdentityManager::create(
        {.caDirectory = dir, .trustDomain = *identity::TrustDomain::parse("cluster.local")});
    MESHLOCK_CHECK(created.has_value());
    manager = std::move(*created);
    MESHLOCK_CHECK(manager->acquire(client).has_value());
    MESHLOCK_CHECK(manager->acquire(server).has_value());
  }
  ~MeshIdentities() { std::filesystem::remove_all(dir); }

  PairTls tls() const {
    auto verify = [](SSL* ssl) -> Result<std::string> {
      auto peer = identity::handshakeIdentity(ssl);
      if (!peer) return fail(peer.error().describe());
      return peer->uri();
    };
    PairTls tls;
    tls.server.context = SslContextRef(std::move(*manager->serverContext(server)));
    tls.server.verify_peer = verify;
    tls.client.context = SslContextRef(std::move(*manager->clientContext(client)));
    tls.client.verify_peer = verify;
    identity::SessionKey key{.local = client, .destination = "server", .expected = {server}};
    tls.client.prepare = [key, sessions = &manager->clientSessions()](SSL* ssl) -> Status {
      if (Status set = identity::setExpectedPeers(ssl, identity::ExpectedPeers::oneOf(key.expected)); !set) return set;
      return sessions->prepare(ssl, key);  // as the agent does: most connections resume
    };
    return tls;
  }
};

// Measured 4.0-4.3 KB (proxy contexts) and 4.6-5.1 KB (agent contexts) on
// glibc 2.36 when this bound was set; keeping parsed X509 objects again, or
// a 16 KiB chunk per idle queue, would cross it. The target is 10 KiB.
constexpr double kBound = 8 * 1024;

class IdleMemory : public ::testing::TestWithParam<IoBackendKind> {
 protected:
  void SetUp() override {
    EngineConfig config;
    config.threads = 2;
    config.io = GetParam();
    // 500 connections opened at once, all from 127.0.0.1: more handshakes in
    // flight from one source than an inbound listener admits by default.
    config.max_pending_handshakes_per_source = 100'000;
    auto engine = Engine::start(config);
    ASSERT_TRUE(engine.has_value()) << engine.error().describe();
    engine_ = std::move(*engine);
  }

  // Opens `count` connections through the pair and waits until each has
  // carried its byte both ways and the engine holds no buffered byte.
  void openIdle(uint16_t port, size_t count) {
    for (size_t i = 0; i < count; ++i) {
      UniqueFd fd = connectTcp(port);
      ASSERT_TRUE(fd);
      clients_.push_back(std::move(fd));
    }
    for (size_t i = clients_.size() - count; i < clients_.size(); ++i) {
      int fd = clients_[i].get();
      testing::setRecvTimeout(fd, 20'000);
      char byte = 0;
      ASSERT_EQ(::recv(fd, &byte, 1, 0), 1) << "connection " << i << ": no greeting";
      ASSERT_EQ(::send(fd, "c", 1, MSG_NOSIGNAL), 1);
    }
    const uint64_t bytes = 2 * clients_.size();  // one byte per hop each way
    auto deadline = std::chrono::steady_clock::now() + 20s;
    for (;;) {
      EngineCounters c = engine_->counters();
      if (c.bytes_to_upstream == bytes && c.bytes_to_downstream == bytes && c.buffered_bytes == 0) break;
      ASSERT_LT(std::chrono::steady_clock::now(), deadline)
          << "up " << c.bytes_to_upstream << " down " << c.bytes_to_downstream << " of " << bytes;
      std::this_thread::sleep_for(5ms);
    }
    std::this_thread::sleep_for(50ms);  // the workers go back to waiting
  }

  // Heap bytes per idle connection of one proxy, over `count` pairs.
  double measure(const PairTls& tls, size_t count) {
    constexpr size_t kWarmUp = 64;
    HoldingApp app(kWarmUp + count);
    uint16_t port = addPair(app.port(), tls);
    clients_.reserve(kWarmUp + count);
    openIdle(port, kWarmUp);  // first-use allocations (arenas, error queues, caches) happen here
    if (::testing::Test::HasFatalFailure()) return 0;
    size_t before = heapInUse();
    openIdle(port, count);
    if (::testing::Test::HasFatalFailure()) return 0;
    size_t after = heapInUse();
    EXPECT_EQ(engine_->counters().active, 2 * (kWarmUp + count));
    EXPECT_EQ(engine_->counters().handshakes, 2 * (kWarmUp + count));
    double per_connection = static_cast<double>(after - before) / static_cast<double>(2 * count);
    std::printf("heap per idle connection: %.0f bytes (%zu pairs, %s)\n", per_connection, count,
                toString(GetParam()));
    // For a breakdown: `heaptrack` with this set reports what the idle
    // connections hold as memory leaked at exit.
    if (std::getenv("MESHLOCK_IDLE_MEMORY_EXIT") != nullptr) {
      std::fflush(stdout);
      std::_Exit(0);
    }
    return per_connection;
  }

  uint16_t addPair(uint16_t app_port, const PairTls& tls) {
    auto listen = [&](ListenerSpec spec) {
      auto fd = listenTcp(*SocketAddress::parse("127.0.0.1:0"), 4096);
      MESHLOCK_CHECK(fd.has_value());
      uint16_t port = testing::localPort(fd->get());
      MESHLOCK_CHECK(engine_->addListener(std::move(*fd), std::move(spec)).has_value());
      return port;
    };
    TlsServerSetup server = tls.server;
    SocketAddress app = *SocketAddress::parse("127.0.0.1:" + std::to_string(app_port));
    uint16_t inbound = listen({.name = "in", .pod_key = "server", .decider = InboundDecider([=](const AcceptedSocket&) {
                                 InboundPlan plan;
                                 plan.app = app;
                                 plan.tls = server;
                                 return Result<InboundPlan>(std::move(plan));
                               })});
    TlsClientSetup client = tls.client;
    SocketAddress to = *SocketAddress::parse("127.0.0.1:" + std::to_string(inbound));
    return listen({.name = "out", .pod_key = "client", .decider = OutboundDecider([=](const AcceptedSocket&) {
                     OutboundPlan plan;
                     plan.destination = to;
                     plan.tls = client;
                     return Result<OutboundPlan>(std::move(plan));
                   })});
  }

  std::unique_ptr<Engine> engine_;
  std::vector<UniqueFd> clients_;
};

TEST_P(IdleMemory, ProxyContextsStayUnderTheBound) {
  double bytes = measure(proxyTls(), 500);
  EXPECT_LT(bytes, kBound);
}

TEST_P(IdleMemory, AgentContextsStayUnderTheBound) {
  MeshIdentities mesh;
  double bytes = measure(mesh.tls(), 500);
  EXPECT_LT(bytes, kBound);
}

INSTANTIATE_TEST_SUITE_P(Backends, IdleMemory, ::testing::Values(IoBackendKind::Uring, IoBackendKind::Epoll),
                         [](const ::testing::TestParamInfo<IoBackendKind>& info) {
                           return std::string(toString(info.param));
                         });

}  // namespace
}  // namespace meshlock::engine
