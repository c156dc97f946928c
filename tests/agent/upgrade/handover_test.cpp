// The handover between an old and a new engine over the real protocol: a
// SOCK_SEQPACKET socket with the sockets passed by SCM_RIGHTS. Both engines
// live in this process (a process sending sockets to itself gets new fds, as
// another would), each relaying an originate -> terminate mTLS pair.
#include "upgrade/handover.h"

#include <gtest/gtest.h>

#include <mutex>
#include <set>
#include <poll.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "engine/tls_context.h"
#include "test_support.h"
#include "upgrade/handover_channel.h"
#include "upgrade/handover_codec.h"

namespace meshlock::upgrade {
namespace {

using namespace std::chrono_literals;
using engine::testing::EchoStream;
using engine::testing::testPki;

engine::SslContextRef context(bool server, const std::string& leaf) {
  auto ctx = engine::makeMutualTlsContext(server, testPki().files(leaf, "ca"));
  MESHLOCK_CHECK(ctx.has_value());
  return *ctx;
}

std::unique_ptr<engine::Engine> startEngine() {
  engine::EngineConfig config;
  config.threads = 2;
  auto engine = engine::Engine::start(config);
  MESHLOCK_CHECK(engine.has_value());
  return std::move(*engine);
}

bool waitFor(const std::function<bool()>& condition, std::chrono::milliseconds limit = 10s) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (condition()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return condition();
}

// A stand-in for a new agent on `listen_fd`: accepts the old agent, reads
// its Hello and welcomes it in handover format `format`.
HandoverChannel welcomeOldAgent(int listen_fd, uint32_t format = kHandoverFormat) {
  pollfd p{listen_fd, POLLIN, 0};
  ::poll(&p, 1, 5000);
  HandoverChannel channel(UniqueFd(::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC)));
  (void)channel.receive(5s);  // Hello
  const std::string welcome = encodeWelcome(true, "", format);
  EXPECT_TRUE(channel.send(std::as_bytes(std::span(welcome)), {}, 1s));
  return channel;
}

// An observer whose report travels with the connection (handoverState).
class NamedObserver final : public engine::ConnectionObserver {
 public:
  explicit NamedObserver(std::string name) : name_(std::move(name)) {}
  void transferred(uint64_t, uint64_t) override {}
  void closed(const engine::ConnectionSnapshot&, engine::ConnectionEnd, std::string_view) override {}
  std::string handoverState() const override { return "report of " + name_; }

 private:
  std::string name_;
};

class HandoverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("meshlock-handover-" + std::to_string(::getpid()) + "-" +
                                                     ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
    path_ = dir_ / "handover.sock";
    old_ = startEngine();
    next_ = startEngine();
    // Outbound (plaintext in, mTLS out) into inbound (mTLS in, to the echo app).
    const uint16_t inbound = listen(engine::ListenerSpec{
        .name = "in", .pod_key = "shop/server", .decider = engine::InboundDecider([this](const engine::AcceptedSocket&) -> Result<engine::InboundPlan> {
          engine::InboundPlan plan;
          plan.app = *engine::SocketAddress::parse("127.0.0.1:" + std::to_string(app_.port()));
          plan.tls.context = server_ctx_;
          plan.observer = std::make_unique<NamedObserver>("in");
          return plan;
        })});
    port_ = listen(engine::ListenerSpec{
        .name = "out", .pod_key = "shop/client", .decider = engine::OutboundDecider([this, inbound](const engine::AcceptedSocket&) -> Result<engine::OutboundPlan> {
          engine::OutboundPlan plan;
          plan.destination = *engine::SocketAddress::parse("127.0.0.1:" + std::to_string(inbound));
          plan.tls = engine::TlsClientSetup{client_ctx_, "server.shop", {}, {}, {}, {}};
          plan.observer = std::make_unique<NamedObserver>("out");
          return plan;
        })});
  }
  void TearDown() override {
    next_.reset();
    old_.reset();
    std::filesystem::remove_all(dir_);
  }

  uint16_t listen(engine::ListenerSpec spec) {
    auto fd = engine::listenTcp(*engine::SocketAddress::parse("127.0.0.1:0"));
    MESHLOCK_CHECK(fd.has_value());
    const uint16_t port = engine::testing::localPort(fd->get());
    MESHLOCK_CHECK(old_->addListener(std::move(*fd), std::move(spec)).has_value());
    return port;
  }

  // Streams through the old engine, each already carrying bytes.
  std::vector<std::unique_ptr<EchoStream>> openStreams(int count) {
    std::vector<std::unique_ptr<EchoStream>> streams;
    for (int i = 0; i < count; ++i) streams.push_back(std::make_unique<EchoStream>(port_, 700 + i));
    EXPECT_TRUE(waitFor([&] {
      for (auto& s : streams)
        if (s->received() < 500'000) return false;
      return true;
    }));
    return streams;
  }
  static bool stillFlowing(std::vector<std::unique_ptr<EchoStream>>& streams) {
    std::vector<uint64_t> before;
    for (auto& s : streams) before.push_back(s->received());
    return waitFor([&] {
      for (size_t i = 0; i < streams.size(); ++i)
        if (streams[i]->received() < before[i] + 500'000) return false;
      return true;
    });
  }

  std::filesystem::path dir_;
  std::filesystem::path path_;
  engine::testing::TestServer app_{engine::testing::echo};
  engine::SslContextRef server_ctx_ = context(true, "server");
  engine::SslContextRef client_ctx_ = context(false, "client");
  std::unique_ptr<engine::Engine> old_;
  std::unique_ptr<engine::Engine> next_;
  uint16_t port_ = 0;
};

TEST_F(HandoverTest, EveryStreamMovesToTheNewEngineWithoutALostByte) {
  auto streams = openStreams(4);
  std::mutex mutex;
  std::multiset<std::string> reports;  // what each connection's old observer handed on
  std::vector<std::chrono::system_clock::time_point> quiesced;  // when the old engine stopped reading each
  auto receiver = HandoverReceiver::start(path_, *next_, [] { return std::nullopt; },
                                          [&](const engine::HandedConnection& handed) -> std::unique_ptr<engine::ConnectionObserver> {
                                            std::lock_guard lock(mutex);
                                            reports.insert(handed.observer_state);
                                            quiesced.push_back(handed.quiesced_at);
                                            return nullptr;
                                          });
  ASSERT_TRUE(receiver) << receiver.error().describe();
  const auto began = std::chrono::system_clock::now();
  Result<HandoverReport> report = handOverTo(path_, *old_, HandOverOptions{.agent_version = "test"}, {});
  ASSERT_TRUE(report) << report.error().describe();
  EXPECT_EQ(report->refused, "");
  EXPECT_EQ(report->handed, 8u);  // both hops of four streams
  EXPECT_EQ(report->stayed, 0u);
  EXPECT_EQ(report->returned, 0u);
  EXPECT_TRUE(waitFor([&] { return (*receiver)->adopted() == 8; }));  // it says Taken first, then adopts
  {
    std::lock_guard lock(mutex);
    EXPECT_EQ(reports.count("report of in"), 4u);
    EXPECT_EQ(reports.count("report of out"), 4u);
    // The time each stopped being read crossed too: the new agent's pause figures start there.
    ASSERT_EQ(quiesced.size(), 8u);
    for (auto at : quiesced) {
      EXPECT_GE(at, began);
      EXPECT_LE(at, std::chrono::system_clock::now());
    }
  }
  // The old engine holds nothing: it could exit now.
  EXPECT_TRUE(waitFor([&] { return old_->counters().active == 0; }));
  old_.reset();
  EXPECT_TRUE(stillFlowing(streams));
  for (auto& s : streams) EXPECT_TRUE(s->finish());
  EXPECT_TRUE(waitFor([&] { return next_->counters().adopted == 8; }));
  EXPECT_EQ(next_->counters().handshakes, 0u);
  EXPECT_EQ(next_->counters().resets, 0u);
}

// More connections than one wave (Engine::kHandoverWave per worker) and
// than the in-flight window (HandOverOptions::in_flight): they go in waves,
// the old side waiting for Taken between them, and every one arrives.
TEST_F(HandoverTest, ManyConnectionsGoInWavesAndEveryOneArrives) {
  constexpr int kIdle = 150;  // 300 connections in the old engine, with both hops
  auto streams = openStreams(2);
  std::vector<UniqueFd> idle;
  auto echoes = [](int fd, char byte) {
    char got = 0;
    return engine::testing::writeAll(fd, &byte, 1) && ::recv(fd, &got, 1, MSG_WAITALL) == 1 && got == byte;
  };
  for (int i = 0; i < kIdle; ++i) {
    idle.push_back(engine::testing::connectTcp(port_));
    engine::testing::setRecvTimeout(idle.back().get(), 5000);
    ASSERT_TRUE(echoes(idle.back().get(), 'a')) << "connection " << i;
  }
  auto receiver = HandoverReceiver::start(path_, *next_, [] { return std::nullopt; }, {});
  ASSERT_TRUE(receiver) << receiver.error().describe();
  Result<HandoverReport> report =
      handOverTo(path_, *old_, HandOverOptions{.agent_version = "test", .in_flight = 16}, {});
  ASSERT_TRUE(report) << report.error().describe();
  const size_t total = 2 * (kIdle + 2);
  EXPECT_EQ(report->handed, total);
  EXPECT_EQ(report->stayed + report->returned, 0u);
  EXPECT_EQ(report->held_ms.size(), total);
  EXPECT_TRUE(waitFor([&] { return (*receiver)->adopted() == total; }));
  EXPECT_TRUE(waitFor([&] { return old_->counters().active == 0; }));
  old_.reset();
  for (int i = 0; i < kIdle; ++i) EXPECT_TRUE(echoes(idle[i].get(), 'b')) << "connection " << i;
  EXPECT_TRUE(stillFlowing(streams));
  for (auto& s : streams) EXPECT_TRUE(s->finish());
  EXPECT_EQ(next_->counters().resets, 0u);
}

TEST_F(HandoverTest, NothingIsOfferedWithoutANewerAgentThatIsReady) {
  auto streams = openStreams(1);
  // No socket at all.
  Result<HandoverReport> none = handOverTo(path_, *old_, HandOverOptions{}, {});
  ASSERT_TRUE(none);
  EXPECT_NE(none->refused.find("no newer agent"), std::string::npos) << none->refused;
  // A new agent that is not ready yet (e.g. still serving its pods).
  {
    auto receiver = HandoverReceiver::start(path_, *next_, [] { return std::optional<std::string>("2 pods not served yet"); }, {});
    ASSERT_TRUE(receiver);
    Result<HandoverReport> busy = handOverTo(path_, *old_, HandOverOptions{}, {});
    ASSERT_TRUE(busy);
    EXPECT_NE(busy->refused.find("2 pods not served yet"), std::string::npos) << busy->refused;
    // The agent's own socket (no newer agent took the path over).
    Result<HandoverReport> own = handOverTo(path_, *old_, HandOverOptions{.instance = (*receiver)->instance()}, {});
    ASSERT_TRUE(own);
    EXPECT_NE(own->refused.find("own handover socket"), std::string::npos) << own->refused;
  }
  EXPECT_EQ(old_->counters().handed_over, 0u);
  EXPECT_TRUE(stillFlowing(streams));
  for (auto& s : streams) EXPECT_TRUE(s->finish());
}

TEST_F(HandoverTest, AnotherFormatIsRefusedBothWays) {
  auto streams = openStreams(1);
  // An old agent of format 2 meets this receiver: refused, told why.
  auto receiver = HandoverReceiver::start(path_, *next_, [] { return std::nullopt; }, {});
  ASSERT_TRUE(receiver);
  {
    Result<HandoverChannel> channel = HandoverChannel::connect(path_);
    ASSERT_TRUE(channel);
    const std::string hello = encodeHello("future", 1, 0, kHandoverFormat + 1);
    ASSERT_TRUE(channel->send(std::as_bytes(std::span(hello)), {}, 1s));
    auto reply = channel->receive(5s);
    ASSERT_TRUE(reply && *reply);
    Result<Packet> welcome = decodePacket((*reply)->bytes, {});
    ASSERT_TRUE(welcome);
    ASSERT_TRUE(std::holds_alternative<WelcomePacket>(*welcome));
    EXPECT_FALSE(std::get<WelcomePacket>(*welcome).accepted);
    EXPECT_NE(std::get<WelcomePacket>(*welcome).reason.find("format"), std::string::npos);
  }
  receiver->reset();
  // This old agent meets a receiver of format 2: it hands nothing over.
  Result<UniqueFd> listening = listenHandover(path_);
  ASSERT_TRUE(listening);
  std::thread future([fd = listening->get()] {
    HandoverChannel channel = welcomeOldAgent(fd, kHandoverFormat + 1);
    (void)channel.receive(2s);  // until the old agent hangs up
  });
  Result<HandoverReport> report = handOverTo(path_, *old_, HandOverOptions{}, {});
  future.join();
  ASSERT_TRUE(report) << report.error().describe();
  EXPECT_NE(report->refused.find("format"), std::string::npos) << report->refused;
  EXPECT_EQ(old_->counters().handed_over, 0u);
  EXPECT_TRUE(stillFlowing(streams));
  for (auto& s : streams) EXPECT_TRUE(s->finish());
}

TEST_F(HandoverTest, ANewAgentThatDiesMidwayLeavesTheRestWithTheOldOne) {
  auto streams = openStreams(4);
  // A new agent that takes the first two connections it is offered, then is gone.
  Result<UniqueFd> listening = listenHandover(path_);
  ASSERT_TRUE(listening);
  std::thread dying([&, fd = listening->get()] {
    HandoverChannel channel = welcomeOldAgent(fd);
    for (int taken = 0; taken < 2;) {
      auto received = channel.receive(5s);
      ASSERT_TRUE(received && *received);
      Result<Packet> packet = decodePacket((*received)->bytes, std::move((*received)->fds));
      ASSERT_TRUE(packet) << packet.error().describe();
      auto* offered = std::get_if<ConnectionPacket>(&*packet);
      if (offered == nullptr) continue;
      const std::string reply = encodeTaken(offered->id);
      ASSERT_TRUE(channel.send(std::as_bytes(std::span(reply)), {}, 1s));
      ASSERT_TRUE(next_->adopt(std::move(offered->connection), nullptr));
      ++taken;
    }
    // Gone without a word: the socket closes with the rest unanswered.
  });
  Result<HandoverReport> report = handOverTo(path_, *old_, HandOverOptions{.reply = 3s}, {});
  dying.join();
  ASSERT_TRUE(report) << report.error().describe();
  EXPECT_EQ(report->handed, 2u);
  EXPECT_EQ(report->returned, 6u);
  EXPECT_TRUE(waitFor([&] { return next_->counters().adopted == 2 && old_->counters().adopted == 6; }))
      << next_->counters().adopted << " adopted by the new engine, " << old_->counters().adopted << " back in the old";
  // Every stream goes on, whichever process has each of its hops.
  EXPECT_TRUE(stillFlowing(streams));
  for (auto& s : streams) EXPECT_TRUE(s->finish());
  EXPECT_EQ(old_->counters().resets + next_->counters().resets, 0u);
}

}  // namespace
}  // namespace meshlock::upgrade
