// Outbound resumption through ClientSessionCache, over memory BIOs between two
// nodes (two IdentityManagers, one CA): a second connection resumes; keys keep
// destinations and expected peers apart; a client renewal or trust bundle
// change makes cached sessions stale; secure naming still holds on resumption.
#include "identity/session_cache.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "identity/identity_manager.h"
#include "test_support.h"

namespace meshlock::identity {
namespace {

using namespace std::chrono_literals;
using testing::FakeClock;
using testing::handshake;
using testing::ScratchDir;
using testing::transfer;

SpiffeId id(const std::string& sa) { return *SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/" + sa); }

class SessionCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Node "db" generates the CA; node "web" gets a copy of its files.
    server_ = makeNode("db-node", 24h);
    std::filesystem::copy(dir_ / "db-node", dir_ / "web-node", std::filesystem::copy_options::recursive);
    client_ = makeNode("web-node", clientLifetime_);
    ASSERT_TRUE(client_->acquire(id("web")));
    ASSERT_TRUE(server_->acquire(id("db")));
    ASSERT_TRUE(server_->acquire(id("other")));
  }

  std::unique_ptr<IdentityManager> makeNode(const std::string& caDir, std::chrono::seconds lifetime) {
    auto manager = IdentityManager::create({.caDirectory = dir_ / caDir,
                                            .trustDomain = *TrustDomain::parse("cluster.local"),
                                            .certificateLifetime = lifetime,
                                            .clientSessionCapacity = 2},
                                           clock_.clock());
    MESHLOCK_CHECK(manager.has_value());
    return std::move(*manager);
  }

  struct Pair {
    bssl::UniquePtr<SSL> client;
    bssl::UniquePtr<SSL> server;
    bool ok = false;
  };

  // web → `server_id` at `destination`, through the cache; one exchange so
  // that the client reads its tickets.
  Pair connect(const SpiffeId& server_id, const std::string& destination = "10.0.0.7:5432",
               std::vector<SpiffeId> expected = {}) {
    if (expected.empty()) expected = {server_id};
    Pair pair;
    auto client = client_->newClientSession(id("web"), ExpectedPeers::oneOf(expected));
    auto server = server_->newServerSession(server_id);
    MESHLOCK_CHECK(client && server);
    pair.client = std::move(*client);
    pair.server = std::move(*server);
    SessionKey key{.local = id("web"), .destination = destination, .expected = expected};
    EXPECT_TRUE(cache().prepare(pair.client.get(), key));
    pair.ok = handshake(pair.client.get(), pair.server.get()) &&
              transfer(pair.server.get(), pair.client.get(), "hello") == "hello";
    return pair;
  }

  ClientSessionCache& cache() { return client_->clientSessions(); }

  ScratchDir dir_;
  FakeClock clock_;
  std::chrono::seconds clientLifetime_ = 24h;
  std::unique_ptr<IdentityManager> server_;
  std::unique_ptr<IdentityManager> client_;
};

TEST_F(SessionCacheTest, SecondConnectionResumesAndBothSidesKnowTheirPeer) {
  Pair first = connect(id("db"));
  ASSERT_TRUE(first.ok);
  EXPECT_FALSE(SSL_session_reused(first.client.get()));
  EXPECT_GE(cache().counters().stored, 1u);

  Pair second = connect(id("db"));
  ASSERT_TRUE(second.ok);
  EXPECT_TRUE(SSL_session_reused(second.client.get()));
  EXPECT_TRUE(SSL_session_reused(second.server.get()));
  // handshakeIdentity on a resumed session: verified again from the stored chain.
  EXPECT_EQ(peerIdentity(second.client.get()), id("db"));
  EXPECT_EQ(peerIdentity(second.server.get()), id("web"));
  EXPECT_EQ(cache().counters().offered, 1u);
  EXPECT_EQ(cache().counters().missed, 1u);
  // The connections hold no session of their own.
  EXPECT_FALSE(takeResumableSession(second.client.get()));
}

TEST_F(SessionCacheTest, DestinationsAndExpectedPeersAreSeparateKeys) {
  ASSERT_TRUE(connect(id("db")).ok);
  Pair elsewhere = connect(id("db"), "10.0.0.8:5432");
  ASSERT_TRUE(elsewhere.ok);
  EXPECT_FALSE(SSL_session_reused(elsewhere.client.get()));
  Pair wider = connect(id("db"), "10.0.0.7:5432", {id("other"), id("db")});
  ASSERT_TRUE(wider.ok);
  EXPECT_FALSE(SSL_session_reused(wider.client.get()));
  // The order of the expected peers does not make a new key.
  Pair same = connect(id("db"), "10.0.0.7:5432", {id("db"), id("other")});
  ASSERT_TRUE(same.ok);
  EXPECT_TRUE(SSL_session_reused(same.client.get()));
}

TEST_F(SessionCacheTest, ResumptionStillEnforcesSecureNaming) {
  // A session from a connection to db, offered by hand to a connection that
  // expects only "other": the client re-verifies on resumption and refuses.
  Pair first = connect(id("db"));
  ASSERT_TRUE(first.ok);
  bssl::UniquePtr<SSL_SESSION> session(SSL_get1_session(first.client.get()));
  ASSERT_TRUE(session);
  auto client = client_->newClientSession(id("web"), ExpectedPeers::oneOf({id("other")}));
  auto server = server_->newServerSession(id("db"));
  ASSERT_TRUE(client && server);
  ASSERT_TRUE(SSL_set_session(client->get(), session.get()));
  EXPECT_FALSE(handshake(client->get(), server->get()));
  auto refusal = verifyFailure(client->get());
  ASSERT_TRUE(refusal);
  EXPECT_EQ(refusal->reason, VerifyError::kSanMismatch) << refusal->describe();
  EXPECT_FALSE(peerIdentity(client->get()));
}

TEST_F(SessionCacheTest, ClientRenewalMakesCachedSessionsStale) {
  client_.reset();
  clientLifetime_ = 100s;
  client_ = makeNode("web-node", clientLifetime_);
  ASSERT_TRUE(client_->acquire(id("web")));
  ASSERT_TRUE(connect(id("db")).ok);
  Pair resumed = connect(id("db"));
  ASSERT_TRUE(SSL_session_reused(resumed.client.get()));
  bssl::UniquePtr<SSL_SESSION> old(SSL_get1_session(resumed.client.get()));

  // Only the client renews. Offered by hand, the old session is not resumed
  // (BoringSSL binds it to the old context) and the handshake is a full one;
  // the cache does not offer it at all, and counts it stale.
  clock_.advance(60s);
  ASSERT_EQ(client_->tick(clock_.now()).renewed.size(), 1u);
  ASSERT_TRUE(server_->tick(clock_.now()).renewed.empty());
  {
    auto client = client_->newClientSession(id("web"), ExpectedPeers::oneOf({id("db")}));
    auto server = server_->newServerSession(id("db"));
    ASSERT_TRUE(client && server && SSL_set_session(client->get(), old.get()));
    ASSERT_TRUE(handshake(client->get(), server->get()));
    EXPECT_FALSE(SSL_session_reused(server->get()));
  }
  Pair after = connect(id("db"));
  ASSERT_TRUE(after.ok);
  EXPECT_FALSE(SSL_session_reused(after.client.get()));
  EXPECT_EQ(cache().counters().stale, 1u);
  // Its new ticket resumes again.
  Pair again = connect(id("db"));
  ASSERT_TRUE(again.ok);
  EXPECT_TRUE(SSL_session_reused(again.client.get()));
  EXPECT_EQ(peerIdentity(again.client.get()), id("db"));
}

TEST_F(SessionCacheTest, ClientTrustBundleChangeMakesCachedSessionsStale) {
  ASSERT_TRUE(connect(id("db")).ok);
  ASSERT_TRUE(SSL_session_reused(connect(id("db")).client.get()));
  auto other = makeNode("other-ca", 24h);
  std::filesystem::create_directories(dir_ / "web-node" / "extra-roots");
  std::filesystem::copy_file(dir_ / "other-ca" / "root-cert.pem", dir_ / "web-node" / "extra-roots" / "other.pem");
  clock_.advance(2s);
  ASSERT_TRUE(client_->tick(clock_.now()).trustBundleChanged);
  Pair after = connect(id("db"));
  ASSERT_TRUE(after.ok);
  EXPECT_FALSE(SSL_session_reused(after.client.get()));
  EXPECT_EQ(cache().counters().stale, 1u);
}

TEST_F(SessionCacheTest, BoundedLeastRecentlyUsedAndForgottenWithTheIdentity) {
  ASSERT_TRUE(connect(id("db"), "10.0.0.1:1").ok);
  ASSERT_TRUE(connect(id("db"), "10.0.0.2:1").ok);
  ASSERT_TRUE(SSL_session_reused(connect(id("db"), "10.0.0.1:1").client.get()));  // 10.0.0.1 is now the newest
  ASSERT_TRUE(connect(id("db"), "10.0.0.3:1").ok);                                // evicts 10.0.0.2
  EXPECT_EQ(cache().size(), 2u);
  EXPECT_EQ(cache().counters().evicted, 1u);
  EXPECT_FALSE(SSL_session_reused(connect(id("db"), "10.0.0.2:1").client.get()));
  EXPECT_TRUE(SSL_session_reused(connect(id("db"), "10.0.0.2:1").client.get()));

  client_->release(id("web"));
  EXPECT_EQ(cache().size(), 0u);
}

TEST_F(SessionCacheTest, ConnectionsMayOutliveTheCache) {
  auto cache = std::make_unique<ClientSessionCache>();
  auto client = client_->newClientSession(id("web"), ExpectedPeers::oneOf({id("db")}));
  auto server = server_->newServerSession(id("db"));
  ASSERT_TRUE(client && server);
  ASSERT_TRUE(cache->prepare(client->get(), {.local = id("web"), .destination = "x", .expected = {id("db")}}));
  cache.reset();
  ASSERT_TRUE(handshake(client->get(), server->get()));
  EXPECT_EQ(transfer(server->get(), client->get(), "late ticket"), "late ticket");  // stored into nothing
}

}  // namespace
}  // namespace meshlock::identity
