// IdentityManager with certificates from a remote CA (python3-grpcio's
// fake_istiod.py): asked for in the background, pods wait for them (fail
// closed), failures visible with their reason, retries with backoff, and a
// valid certificate kept while the CA is down.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "fake_istiod.h"
#include "identity/identity_manager.h"
#include "identity/peer_verifier.h"
#include "test_support.h"

namespace meshlock::identity {
namespace {

using namespace std::chrono_literals;
using testing::FakeClock;
using testing::FakeIstiod;
using testing::ScratchDir;
using testing::writeText;

TrustDomain domain() { return *TrustDomain::parse("cluster.local"); }
SpiffeId sa(const std::string& name) { return *SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/" + name); }

class RemoteIdentityTest : public ::testing::Test {
 protected:
  void SetUp() override { writeText(dir_ / "token", "node-agent-token"); }

  std::unique_ptr<FakeIstiod> startIstiod(FakeIstiod::Options options) {
    auto server = std::make_unique<FakeIstiod>(dir_ / ("istiod-" + std::to_string(++servers_)), options);
    EXPECT_TRUE(server->waitForRoot());
    return server;
  }

  std::unique_ptr<IdentityManager> manager(const FakeIstiod& istiod, int port,
                                           std::chrono::seconds lifetime = std::chrono::hours(1)) {
    IdentityConfig config{.caDirectory = {}, .trustDomain = domain()};
    config.remoteCa = RemoteCaConfig{.client = {.address = "127.0.0.1:" + std::to_string(port),
                                                .serverName = "istiod.istio-system.svc",
                                                .rootFile = istiod.rootFile(),
                                                .tokenFile = dir_ / "token",
                                                .timeout = 3s},
                                     .workers = 2,
                                     .retryInitial = 200ms,
                                     .retryMax = 800ms};
    config.certificateLifetime = lifetime;
    auto made = IdentityManager::create(config, clock_.clock());
    EXPECT_TRUE(made) << (made ? "" : made.error().describe());
    return made ? std::move(*made) : nullptr;
  }

  // Ticks until `done` holds (bounded); collects what the ticks reported.
  template <typename Done>
  bool tickUntil(IdentityManager& ids, Done done, std::chrono::seconds limit = 20s) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < until) {
      TickReport report = ids.tick(clock_.now());
      for (auto& id : report.issued) issued_.push_back(id);
      for (auto& id : report.renewed) renewed_.push_back(id);
      for (auto& e : report.errors) errors_.push_back(e);
      if (done()) return true;
      std::this_thread::sleep_for(20ms);
    }
    return false;
  }

  static const PendingCertificate* find(const std::vector<PendingCertificate>& list, const SpiffeId& id) {
    for (const auto& p : list)
      if (p.id == id) return &p;
    return nullptr;
  }

  ScratchDir dir_;
  FakeClock clock_;
  int servers_ = 0;
  std::vector<SpiffeId> issued_;
  std::vector<SpiffeId> renewed_;
  std::vector<std::string> errors_;
};

TEST_F(RemoteIdentityTest, CertificatesArriveAndTwoWorkloadsHandshake) {
  auto istiod = startIstiod({.mode = "intermediate"});
  int port = istiod->waitForPort();
  ASSERT_GT(port, 0);
  auto ids = manager(*istiod, port);
  ASSERT_TRUE(ids);
  // Nothing is there yet: the pods wait, fail closed.
  auto waiting = ids->want({sa("web"), sa("db")});
  EXPECT_EQ(waiting.size(), 2u);
  auto early = ids->acquire(sa("web"));
  if (!early) EXPECT_NE(early.error().message.find("pending"), std::string::npos) << early.error().message;
  else ids->release(sa("web"));  // the CA was quicker than this line

  ASSERT_TRUE(tickUntil(*ids, [&] { return issued_.size() == 2; })) << ::testing::PrintToString(errors_);
  EXPECT_TRUE(ids->want({sa("web"), sa("db")}).empty());
  ASSERT_TRUE(ids->acquire(sa("web")));
  ASSERT_TRUE(ids->acquire(sa("db")));
  EXPECT_EQ(ids->caRequests().at("success"), 2u);
  EXPECT_TRUE(ids->pending().empty());
  for (const auto& cert : ids->certificates()) {
    EXPECT_EQ(cert.state, "ready");
    auto chain = parseCertificatesPem(cert.chainPem, "chain");
    ASSERT_TRUE(chain);
    EXPECT_EQ(chain->size(), 2u) << "leaf and the intermediate; the root stays out";
  }

  auto client = ids->newClientSession(sa("web"), ExpectedPeers::oneOf({sa("db")}));
  auto server = ids->newServerSession(sa("db"));
  ASSERT_TRUE(client && server);
  ASSERT_TRUE(testing::handshake(client->get(), server->get()));
  auto serverSeen = peerIdentity(server->get());
  ASSERT_TRUE(serverSeen);
  EXPECT_EQ(*serverSeen, sa("web"));
  EXPECT_EQ(testing::transfer(client->get(), server->get(), "hello db"), "hello db");

  // The pods go: the identities are forgotten.
  ids->release(sa("web"));
  ids->release(sa("db"));
  EXPECT_TRUE(ids->want({}).empty());
  EXPECT_TRUE(ids->certificates().empty());
}

TEST_F(RemoteIdentityTest, PermissionDeniedIsRefusedAndVisible) {
  auto istiod = startIstiod({.mode = "permission_denied"});
  int port = istiod->waitForPort();
  ASSERT_GT(port, 0);
  auto ids = manager(*istiod, port);
  ASSERT_TRUE(ids);
  (void)ids->want({sa("web")});
  ASSERT_TRUE(tickUntil(*ids, [&] { return ids->caRequests().contains("permission_denied"); }));
  ASSERT_TRUE(tickUntil(*ids, [&] {
    auto p = ids->pending();
    return find(p, sa("web")) && find(p, sa("web"))->state == "failed";
  }));
  auto pending = ids->pending();
  const PendingCertificate* web = find(pending, sa("web"));
  ASSERT_NE(web, nullptr);
  EXPECT_NE(web->lastError.find("PERMISSION_DENIED"), std::string::npos) << web->lastError;
  EXPECT_GE(web->failures, 1);
  auto refused = ids->acquire(sa("web"));
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("PERMISSION_DENIED"), std::string::npos) << refused.error().message;
  EXPECT_FALSE(ids->serverContext(sa("web")));
  EXPECT_TRUE(issued_.empty());
  EXPECT_FALSE(errors_.empty());
}

TEST_F(RemoteIdentityTest, ACaThatIsDownIsRetriedWithBackoffThenIssues) {
  const int port = testing::freeLoopbackPort();
  auto istiod = startIstiod({.port = port, .listenDelay = 2.5});
  auto ids = manager(*istiod, port);
  ASSERT_TRUE(ids);
  const auto began = std::chrono::steady_clock::now();
  (void)ids->want({sa("web")});
  ASSERT_TRUE(tickUntil(*ids, [&] { return issued_.size() == 1; }, 30s)) << ::testing::PrintToString(errors_);
  const auto took = std::chrono::steady_clock::now() - began;
  auto requests = ids->caRequests();
  ASSERT_TRUE(requests.contains("unavailable"));
  // Backoff: 200 ms doubling up to 800 ms (each in [d/2, d]) over ~2.5 s is a
  // handful of attempts, not one per tick (a tick is 20 ms here).
  EXPECT_GE(requests.at("unavailable"), 2u);
  EXPECT_LE(requests.at("unavailable"), 12u);
  EXPECT_EQ(requests.at("success"), 1u);
  EXPECT_GE(took, 2s);
  EXPECT_TRUE(ids->acquire(sa("web")));
}

TEST_F(RemoteIdentityTest, RenewalKeepsTheCertificateWhileTheCaIsDown) {
  auto istiod = startIstiod({});
  int port = istiod->waitForPort();
  ASSERT_GT(port, 0);
  auto ids = manager(*istiod, port);
  ASSERT_TRUE(ids);
  (void)ids->want({sa("web")});
  ASSERT_TRUE(tickUntil(*ids, [&] { return issued_.size() == 1; }));
  ASSERT_TRUE(ids->acquire(sa("web")));
  const std::string serial = ids->certificates().at(0).serial;

  istiod->stop();
  clock_.advance(std::chrono::minutes(40));  // past half of the hour: renewal due
  ASSERT_TRUE(tickUntil(*ids, [&] { return ids->caRequests().contains("unavailable"); }));
  ASSERT_TRUE(tickUntil(*ids, [&] { return !ids->certificates().at(0).lastError.empty(); }));
  auto cert = ids->certificates().at(0);
  EXPECT_EQ(cert.serial, serial) << "the valid certificate stays in use";
  EXPECT_EQ(cert.state, "renewing");
  EXPECT_NE(cert.lastError.find("UNAVAILABLE"), std::string::npos) << cert.lastError;
  EXPECT_TRUE(ids->serverContext(sa("web")));
  EXPECT_TRUE(renewed_.empty());
  bool said = false;
  for (const auto& e : errors_) said = said || e.find("keeping the certificate valid until") != std::string::npos;
  EXPECT_TRUE(said) << ::testing::PrintToString(errors_);
}

TEST_F(RemoteIdentityTest, RenewalReplacesTheCertificate) {
  auto istiod = startIstiod({});
  int port = istiod->waitForPort();
  ASSERT_GT(port, 0);
  auto ids = manager(*istiod, port);
  ASSERT_TRUE(ids);
  (void)ids->want({sa("web")});
  ASSERT_TRUE(tickUntil(*ids, [&] { return issued_.size() == 1; }));
  ASSERT_TRUE(ids->acquire(sa("web")));
  const std::string serial = ids->certificates().at(0).serial;
  clock_.advance(std::chrono::minutes(40));
  ASSERT_TRUE(tickUntil(*ids, [&] { return renewed_.size() == 1; }));
  EXPECT_NE(ids->certificates().at(0).serial, serial);
  EXPECT_EQ(ids->caRequests().at("success"), 2u);
}

TEST_F(RemoteIdentityTest, AWrongSanIsNeverInstalled) {
  auto istiod = startIstiod({.mode = "wrong_san"});
  int port = istiod->waitForPort();
  ASSERT_GT(port, 0);
  auto ids = manager(*istiod, port);
  ASSERT_TRUE(ids);
  (void)ids->want({sa("web")});
  ASSERT_TRUE(tickUntil(*ids, [&] { return ids->caRequests().contains("invalid_response"); }));
  ASSERT_TRUE(tickUntil(*ids, [&] { return !ids->pending().empty() && !ids->pending()[0].lastError.empty(); }));
  EXPECT_NE(ids->pending()[0].lastError.find("intruder"), std::string::npos) << ids->pending()[0].lastError;
  EXPECT_FALSE(ids->acquire(sa("web")));
  EXPECT_TRUE(ids->certificates().empty());
}

// A node with 100 new pods of 50 service accounts: 50 requests on the
// agent's two connections. The figure printed is against python3-grpcio with
// python3-cryptography signing (the slower side here), not against istiod.
TEST_F(RemoteIdentityTest, FiftyServiceAccountsAtOnce) {
  auto istiod = startIstiod({});
  int port = istiod->waitForPort();
  ASSERT_GT(port, 0);
  auto ids = manager(*istiod, port);
  ASSERT_TRUE(ids);
  std::set<SpiffeId> wanted;
  for (int i = 0; i < 50; ++i) wanted.insert(sa("app-" + std::to_string(i)));
  const auto began = std::chrono::steady_clock::now();
  EXPECT_EQ(ids->want(wanted).size(), 50u);
  ASSERT_TRUE(tickUntil(*ids, [&] { return issued_.size() == 50; }, 30s)) << issued_.size();
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
  std::printf("50 identities from the CA in %.3f s (2 workers, python3-grpcio CA)\n", took);
  RecordProperty("seconds_for_50_identities", std::to_string(took));
  EXPECT_EQ(ids->caRequests().at("success"), 50u);
  for (const SpiffeId& id : wanted) {
    ASSERT_TRUE(ids->acquire(id));  // two pods each
    ASSERT_TRUE(ids->acquire(id));
  }
  EXPECT_LT(took, 20.0);
}

TEST_F(RemoteIdentityTest, AMissingRootFileStopsStartUp) {
  IdentityConfig config{.caDirectory = {}, .trustDomain = domain()};
  config.remoteCa = RemoteCaConfig{.client = {.address = "127.0.0.1:15012", .rootFile = dir_ / "absent.pem",
                                              .tokenFile = dir_ / "token"}};
  auto made = IdentityManager::create(config);
  ASSERT_FALSE(made);
  EXPECT_NE(made.error().describe().find("caRootFile"), std::string::npos) << made.error().describe();
}

}  // namespace
}  // namespace meshlock::identity
