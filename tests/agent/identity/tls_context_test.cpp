// Mesh TLS contexts end to end over memory BIOs: mutual identities, secure
// naming, refusals recorded on the SSL, versions, ALPN, rotation across two
// renewals with an open connection, resumption and trust bundle changes.
#include "identity/tls_context.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "identity/identity_manager.h"
#include "test_support.h"

namespace meshlock::identity {
namespace {

using namespace std::chrono_literals;
using testing::FakeClock;
using testing::handshake;
using testing::peerSerial;
using testing::ScratchDir;
using testing::transfer;

SpiffeId id(const std::string& sa) { return *SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/" + sa); }

class MeshTls : public ::testing::Test {
 protected:
  std::unique_ptr<IdentityManager> makeManager(const std::string& caDir, std::chrono::seconds lifetime = 24h,
                                               MeshTlsSettings tls = {}) {
    IdentityConfig config{
        .caDirectory = dir_ / caDir,
        .trustDomain = *TrustDomain::parse("cluster.local"),
        .certificateLifetime = lifetime,
        .tls = tls,
    };
    clock_.catchUp();  // CA files may have been made by the openssl CLI just now
    auto manager = IdentityManager::create(config, clock_.clock());
    MESHLOCK_CHECK(manager.has_value());
    return std::move(*manager);
  }

  ScratchDir dir_;
  FakeClock clock_;
};

std::string alpn(SSL* ssl) {
  const uint8_t* data = nullptr;
  unsigned len = 0;
  SSL_get0_alpn_selected(ssl, &data, &len);
  return std::string(reinterpret_cast<const char*>(data), len);
}

TEST_F(MeshTls, MutualHandshakeGivesEachSideThePeersIdentity) {
  auto node = makeManager("ca");
  ASSERT_TRUE(node->acquire(id("web")));
  ASSERT_TRUE(node->acquire(id("db")));
  auto client = node->newClientSession(id("web"), ExpectedPeers::oneOf({id("db")}));
  auto server = node->newServerSession(id("db"));
  ASSERT_TRUE(client && server);
  ASSERT_TRUE(handshake(client->get(), server->get()));
  EXPECT_EQ(peerIdentity(server->get()), id("web"));
  EXPECT_EQ(peerIdentity(client->get()), id("db"));
  EXPECT_FALSE(verifyFailure(server->get()));
  EXPECT_EQ(SSL_version(client->get()), TLS1_3_VERSION);  // preferred
  EXPECT_EQ(alpn(client->get()), "istio");
  EXPECT_EQ(transfer(client->get(), server->get(), "GET / HTTP/1.1\r\n"), "GET / HTTP/1.1\r\n");
  EXPECT_EQ(transfer(server->get(), client->get(), "HTTP/1.1 200 OK\r\n"), "HTTP/1.1 200 OK\r\n");
}

TEST_F(MeshTls, ClientRefusesAServerWithAnotherIdentity) {
  auto node = makeManager("ca");
  ASSERT_TRUE(node->acquire(id("web")));
  ASSERT_TRUE(node->acquire(id("db")));
  auto client = node->newClientSession(id("web"), ExpectedPeers::oneOf({id("payments")}));
  auto server = node->newServerSession(id("db"));
  EXPECT_FALSE(handshake(client->get(), server->get()));
  auto failure = verifyFailure(client->get());
  ASSERT_TRUE(failure);
  EXPECT_EQ(failure->reason, VerifyError::kSanMismatch) << failure->describe();
  EXPECT_NE(failure->detail.find("spiffe://cluster.local/ns/shop/sa/db"), std::string::npos);
  EXPECT_FALSE(peerIdentity(client->get()));
}

TEST_F(MeshTls, ClientWithoutExpectedPeersFailsClosed) {
  auto node = makeManager("ca");
  ASSERT_TRUE(node->acquire(id("web")));
  auto ctx = node->clientContext(id("web"));
  ASSERT_TRUE(ctx);
  bssl::UniquePtr<SSL> client(SSL_new(ctx->get()));
  auto server = node->newServerSession(id("web"));
  EXPECT_FALSE(handshake(client.get(), server->get()));
  ASSERT_TRUE(verifyFailure(client.get()));
  EXPECT_EQ(verifyFailure(client.get())->reason, VerifyError::kNoExpectedIdentity);
}

TEST_F(MeshTls, ServerCanRestrictClients) {
  auto node = makeManager("ca");
  ASSERT_TRUE(node->acquire(id("web")));
  ASSERT_TRUE(node->acquire(id("db")));
  auto client = node->newClientSession(id("web"), ExpectedPeers::oneOf({id("db")}));
  auto server = node->newServerSession(id("db"), ExpectedPeers::oneOf({id("admin")}));
  EXPECT_FALSE(handshake(client->get(), server->get()));
  ASSERT_TRUE(verifyFailure(server->get()));
  EXPECT_EQ(verifyFailure(server->get())->reason, VerifyError::kSanMismatch);
}

TEST_F(MeshTls, PeersOfAnotherMeshCaAreRefusedWithTheReason) {
  auto nodeA = makeManager("ca-a");
  auto nodeB = makeManager("ca-b");  // generated its own root: a node that does not share the CA
  ASSERT_TRUE(nodeA->acquire(id("web")));
  ASSERT_TRUE(nodeB->acquire(id("db")));
  auto client = nodeA->newClientSession(id("web"), ExpectedPeers::oneOf({id("db")}));
  auto server = nodeB->newServerSession(id("db"));
  EXPECT_FALSE(handshake(client->get(), server->get()));
  ASSERT_TRUE(verifyFailure(client->get()));
  EXPECT_EQ(verifyFailure(client->get())->reason, VerifyError::kUnknownCa);
}

TEST_F(MeshTls, ServerRequiresAClientCertificate) {
  auto node = makeManager("ca");
  ASSERT_TRUE(node->acquire(id("db")));
  bssl::UniquePtr<SSL_CTX> bare(SSL_CTX_new(TLS_method()));
  SSL_CTX_set_custom_verify(bare.get(), SSL_VERIFY_NONE,
                            [](SSL*, uint8_t*) { return ssl_verify_ok; });
  bssl::UniquePtr<SSL> client(SSL_new(bare.get()));
  auto server = node->newServerSession(id("db"));
  EXPECT_FALSE(handshake(client.get(), server->get()));
  EXPECT_FALSE(peerIdentity(server->get()));
}

TEST_F(MeshTls, MinimumVersionTls13RefusesTls12Peers) {
  MeshTlsSettings tls;
  tls.minVersion = TlsMinVersion::kTls13;
  auto strict = makeManager("ca", 24h, tls);
  ASSERT_TRUE(strict->acquire(id("db")));
  ASSERT_TRUE(strict->acquire(id("web")));
  auto ctx = strict->clientContext(id("web"));
  ASSERT_TRUE(SSL_CTX_set_max_proto_version(ctx->get(), TLS1_2_VERSION));  // an old peer
  bssl::UniquePtr<SSL> client(SSL_new(ctx->get()));
  ASSERT_TRUE(setExpectedPeers(client.get(), ExpectedPeers::any()));
  auto server = strict->newServerSession(id("db"));
  EXPECT_FALSE(handshake(client.get(), server->get()));
}

TEST_F(MeshTls, ARepeatedPeerChainIsVerifiedOnceAndSecureNamingStillApplies) {
  auto node = makeManager("ca");
  ASSERT_TRUE(node->acquire(id("db")));
  ASSERT_TRUE(node->acquire(id("web")));
  auto connect = [&](const SpiffeId& expected) {
    auto client = node->newClientSession(id("web"), ExpectedPeers::oneOf({expected}));
    auto server = node->newServerSession(id("db"));
    return handshake(client->get(), server->get());
  };
  ASSERT_TRUE(connect(id("db")));
  ASSERT_TRUE(connect(id("db")));
  auto server_ctx = node->serverContext(id("db"));
  auto client_ctx = node->clientContext(id("web"));
  EXPECT_EQ(verifiedChainStats(server_ctx->get()).misses, 1u);  // web's chain, verified once
  EXPECT_EQ(verifiedChainStats(server_ctx->get()).hits, 1u);
  EXPECT_EQ(verifiedChainStats(client_ctx->get()).hits, 1u);
  // A cached chain still has to be the peer this connection expects.
  auto client = node->newClientSession(id("web"), ExpectedPeers::oneOf({id("payments")}));
  auto server = node->newServerSession(id("db"));
  EXPECT_FALSE(handshake(client->get(), server->get()));
  auto refused = handshakeIdentity(client->get());
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().reason, VerifyError::kSanMismatch);
  EXPECT_EQ(verifiedChainStats(client_ctx->get()).hits, 2u);
}

TEST_F(MeshTls, ACachedChainIsVerifiedAgainOnceItExpires) {
  auto node = makeManager("ca", 1h);
  ASSERT_TRUE(node->acquire(id("db")));
  ASSERT_TRUE(node->acquire(id("web")));
  auto connect = [&] {
    auto client = node->newClientSession(id("web"), ExpectedPeers::oneOf({id("db")}));
    auto server = node->newServerSession(id("db"));
    bool ok = handshake(client->get(), server->get());
    return std::pair{ok, handshakeIdentity(client->get())};
  };
  ASSERT_TRUE(connect().first);
  ASSERT_TRUE(connect().first);  // the server's chain now cached on the client's side
  clock_.advance(2h);  // past notAfter + skew, and no tick renewed anything
  auto [ok, seen_by_client] = connect();
  EXPECT_FALSE(ok);
  ASSERT_FALSE(seen_by_client);
  EXPECT_EQ(seen_by_client.error().reason, VerifyError::kExpired);
}

TEST_F(MeshTls, MinimumVersionChangesLiveForNewHandshakes) {
  auto node = makeManager("ca");
  ASSERT_TRUE(node->acquire(id("db")));
  ASSERT_TRUE(node->acquire(id("web")));
  auto tls12Handshake = [&] {
    auto client = node->newClientSession(id("web"), ExpectedPeers::any());
    EXPECT_TRUE(SSL_set_max_proto_version(client->get(), TLS1_2_VERSION));  // an old peer
    auto server = node->newServerSession(id("db"));
    return handshake(client->get(), server->get());
  };
  EXPECT_TRUE(tls12Handshake());
  node->setMinimumVersion(TlsMinVersion::kTls13);
  EXPECT_EQ(node->minimumVersion(), TlsMinVersion::kTls13);
  EXPECT_FALSE(tls12Handshake());
  node->setMinimumVersion(TlsMinVersion::kTls12);
  EXPECT_TRUE(tls12Handshake());
}

TEST_F(MeshTls, Tls12UsesIstioCipherSuites) {
  auto node = makeManager("ca");
  ASSERT_TRUE(node->acquire(id("db")));
  ASSERT_TRUE(node->acquire(id("web")));
  auto ctx = node->clientContext(id("web"));
  bssl::UniquePtr<SSL> client(SSL_new(ctx->get()));
  ASSERT_TRUE(SSL_set_max_proto_version(client.get(), TLS1_2_VERSION));
  ASSERT_TRUE(setExpectedPeers(client.get(), ExpectedPeers::any()));
  auto server = node->newServerSession(id("db"));
  ASSERT_TRUE(handshake(client.get(), server->get()));
  EXPECT_EQ(SSL_version(client.get()), TLS1_2_VERSION);
  EXPECT_STREQ(SSL_CIPHER_get_name(SSL_get_current_cipher(client.get())),
               "ECDHE-ECDSA-AES256-GCM-SHA384");
  EXPECT_EQ(peerIdentity(server->get()), id("web"));

  // A TLS 1.2 client that offers no AES-GCM ECDHE suite is refused.
  bssl::UniquePtr<SSL> weak(SSL_new(ctx->get()));
  ASSERT_TRUE(SSL_set_max_proto_version(weak.get(), TLS1_2_VERSION));
  ASSERT_TRUE(SSL_set_strict_cipher_list(weak.get(), "ECDHE-ECDSA-CHACHA20-POLY1305"));
  ASSERT_TRUE(setExpectedPeers(weak.get(), ExpectedPeers::any()));
  auto server2 = node->newServerSession(id("db"));
  EXPECT_FALSE(handshake(weak.get(), server2->get()));
}

TEST_F(MeshTls, AlpnIsIstioAndPeerExchangeIsNotSelectedByDefault) {
  auto node = makeManager("ca");
  ASSERT_TRUE(node->acquire(id("db")));
  ASSERT_TRUE(node->acquire(id("web")));
  // An Istio sidecar offers istio-peer-exchange first.
  auto ctx = node->clientContext(id("web"));
  bssl::UniquePtr<SSL> client(SSL_new(ctx->get()));
  static const uint8_t kSidecar[] = "\x13istio-peer-exchange\x05istio";
  ASSERT_EQ(SSL_set_alpn_protos(client.get(), kSidecar, sizeof(kSidecar) - 1), 0);
  ASSERT_TRUE(setExpectedPeers(client.get(), ExpectedPeers::any()));
  auto server = node->newServerSession(id("db"));
  ASSERT_TRUE(handshake(client.get(), server->get()));
  EXPECT_EQ(alpn(server->get()), "istio");
}

TEST_F(MeshTls, RefcountedIdentitiesAndContextsThatOutliveThem) {
  auto node = makeManager("ca");
  ASSERT_TRUE(node->acquire(id("db")));
  ASSERT_TRUE(node->acquire(id("db")));
  ASSERT_TRUE(node->acquire(id("web")));
  EXPECT_EQ(node->certificates().size(), 2u);
  auto server = node->newServerSession(id("db"));
  auto client = node->newClientSession(id("web"), ExpectedPeers::oneOf({id("db")}));
  node->release(id("db"));
  EXPECT_TRUE(node->serverContext(id("db")));
  node->release(id("db"));
  auto gone = node->serverContext(id("db"));
  ASSERT_FALSE(gone);
  EXPECT_NE(gone.error().message.find("sa/db"), std::string::npos);
  // Sessions created before the release still work: they hold their context.
  ASSERT_TRUE(handshake(client->get(), server->get()));
  EXPECT_EQ(peerIdentity(client->get()), id("db"));
  EXPECT_FALSE(node->acquire(*SpiffeId::parse("spiffe://other.domain/ns/a/sa/b")));
}

// The connection stays usable across two renewals; new handshakes carry the new serial.
TEST_F(MeshTls, ConnectionSurvivesTwoRotationsAndNewHandshakesUseNewCertificates) {
  auto node = makeManager("ca", 10s);
  ASSERT_TRUE(node->acquire(id("web")));
  ASSERT_TRUE(node->acquire(id("db")));
  auto client = node->newClientSession(id("web"), ExpectedPeers::oneOf({id("db")}));
  auto server = node->newServerSession(id("db"));
  ASSERT_TRUE(handshake(client->get(), server->get()));
  std::string firstServerSerial = peerSerial(client->get());
  std::string firstClientSerial = peerSerial(server->get());

  std::vector<std::string> serials{firstServerSerial};
  for (int rotation = 1; rotation <= 2; ++rotation) {
    clock_.advance(6s);  // past half of the 10 s life (+/- jitter)
    TickReport report = node->tick(clock_.now());
    ASSERT_EQ(report.renewed.size(), 2u) << "rotation " << rotation;
    EXPECT_TRUE(report.errors.empty());

    // The open connection keeps working, both ways.
    std::string message = "still here after rotation " + std::to_string(rotation);
    EXPECT_EQ(transfer(client->get(), server->get(), message), message);
    EXPECT_EQ(transfer(server->get(), client->get(), message), message);

    // A new handshake sees the new certificate.
    auto client2 = node->newClientSession(id("web"), ExpectedPeers::oneOf({id("db")}));
    auto server2 = node->newServerSession(id("db"));
    ASSERT_TRUE(handshake(client2->get(), server2->get())) << verifyFailure(client2->get())->describe();
    std::string serial = peerSerial(client2->get());
    EXPECT_EQ(std::ranges::find(serials, serial), serials.end()) << "serial reused: " << serial;
    serials.push_back(serial);
    EXPECT_NE(peerSerial(server2->get()), firstClientSerial);
    auto status = node->certificates();
    EXPECT_EQ(status[0].notAfter - status[0].notBefore, 11s);  // 10 s plus 1 s backdate
  }
  // The first connection still shows the certificates it was made with.
  EXPECT_EQ(peerSerial(client->get()), firstServerSerial);
  EXPECT_EQ(serials.size(), 3u);
}

// The same with the real clock (kept short: a 2 s certificate, two renewals).
TEST_F(MeshTls, RealClockRotationKeepsTheConnection) {
  IdentityConfig config{
      .caDirectory = dir_ / "ca",
      .trustDomain = *TrustDomain::parse("cluster.local"),
      .certificateLifetime = 2s,
  };
  auto node = std::move(*IdentityManager::create(config));  // system clock
  ASSERT_TRUE(node->acquire(id("web")));
  auto client = node->newClientSession(id("web"), ExpectedPeers::oneOf({id("web")}));
  auto server = node->newServerSession(id("web"));
  ASSERT_TRUE(handshake(client->get(), server->get()));
  std::vector<std::string> serials{peerSerial(client->get())};
  auto start = std::chrono::steady_clock::now();
  while (serials.size() < 3 && std::chrono::steady_clock::now() - start < 10s) {
    std::this_thread::sleep_for(100ms);
    if (node->tick(systemNow()).renewed.empty()) continue;
    EXPECT_EQ(transfer(client->get(), server->get(), "ping"), "ping");
    auto c = node->newClientSession(id("web"), ExpectedPeers::oneOf({id("web")}));
    auto s = node->newServerSession(id("web"));
    ASSERT_TRUE(handshake(c->get(), s->get()));
    serials.push_back(peerSerial(c->get()));
    EXPECT_NE(serials.back(), serials[serials.size() - 2]);
  }
  EXPECT_EQ(serials.size(), 3u);
  EXPECT_EQ(transfer(server->get(), client->get(), "pong"), "pong");
}

TEST_F(MeshTls, NoRenewalBeforeHalfLife) {
  auto node = makeManager("ca", 100s);
  ASSERT_TRUE(node->acquire(id("web")));
  clock_.advance(40s);
  EXPECT_TRUE(node->tick(clock_.now()).renewed.empty());
  clock_.advance(20s);  // 60 s: past 50 s +/- 5 s
  EXPECT_EQ(node->tick(clock_.now()).renewed.size(), 1u);
}

// Returns a resumable client session after a full handshake and one exchange.
bssl::UniquePtr<SSL_SESSION> sessionFrom(SSL* client, SSL* server) {
  transfer(server, client, "ticket please");  // the client reads the NewSessionTicket too
  return takeResumableSession(client);
}

TEST_F(MeshTls, ResumptionWorksUntilTheIdentityOrTheBundleChanges) {
  auto node = makeManager("ca");
  ASSERT_TRUE(node->acquire(id("web")));
  ASSERT_TRUE(node->acquire(id("db")));
  auto connect = [&](SSL_SESSION* session) {
    auto client = node->newClientSession(id("web"), ExpectedPeers::oneOf({id("db")}));
    auto server = node->newServerSession(id("db"));
    if (session != nullptr) SSL_set_session(client->get(), session);
    EXPECT_TRUE(handshake(client->get(), server->get()));
    return std::pair{std::move(*client), std::move(*server)};
  };
  auto [c1, s1] = connect(nullptr);
  EXPECT_FALSE(SSL_session_reused(c1.get()));
  auto session = sessionFrom(c1.get(), s1.get());
  ASSERT_TRUE(session && SSL_SESSION_is_resumable(session.get()));

  auto [c2, s2] = connect(session.get());
  EXPECT_TRUE(SSL_session_reused(s2.get()));
  EXPECT_EQ(peerIdentity(s2.get()), id("web"));  // re-verified from the stored chain
  EXPECT_EQ(peerIdentity(c2.get()), id("db"));

  // Renewal: the old session is not resumed, the handshake is full and works.
  clock_.advance(14h);  // past 12 h +/- 1.2 h of jitter
  ASSERT_EQ(node->tick(clock_.now()).renewed.size(), 2u);
  auto [c3, s3] = connect(session.get());
  EXPECT_FALSE(SSL_session_reused(s3.get()));
  EXPECT_EQ(peerIdentity(s3.get()), id("web"));

  // A bundle change (a new extra root) also ends resumption.
  auto fresh = sessionFrom(c3.get(), s3.get());
  auto [c4, s4] = connect(fresh.get());
  EXPECT_TRUE(SSL_session_reused(s4.get()));
  auto other = makeManager("other-ca");
  std::filesystem::create_directories(dir_ / "ca" / "extra-roots");
  std::filesystem::copy_file(dir_ / "other-ca" / "root-cert.pem", dir_ / "ca" / "extra-roots" / "other.pem");
  auto report = node->tick(clock_.now());
  EXPECT_TRUE(report.trustBundleChanged);
  EXPECT_TRUE(report.renewed.empty());
  auto [c5, s5] = connect(fresh.get());
  EXPECT_FALSE(SSL_session_reused(s5.get()));
}

TEST_F(MeshTls, TrustBundleChangesApplyToNewHandshakesWithoutRestart) {
  auto nodeA = makeManager("ca-a");
  auto nodeB = makeManager("ca-b");
  ASSERT_TRUE(nodeA->acquire(id("web")));
  ASSERT_TRUE(nodeB->acquire(id("db")));
  auto attempt = [&] {
    auto client = nodeA->newClientSession(id("web"), ExpectedPeers::oneOf({id("db")}));
    auto server = nodeB->newServerSession(id("db"));
    bool ok = handshake(client->get(), server->get());
    return std::pair{ok, ok ? peerIdentity(server->get()) : std::nullopt};
  };
  EXPECT_FALSE(attempt().first);
  // Root rotation style: each side adds the other's root as an extra root.
  for (auto [from, to] : {std::pair{"ca-a", "ca-b"}, std::pair{"ca-b", "ca-a"}}) {
    std::filesystem::create_directories(dir_ / to / "extra-roots");
    std::filesystem::copy_file(dir_ / from / "root-cert.pem", dir_ / to / "extra-roots" / "peer.pem");
  }
  EXPECT_TRUE(nodeA->tick(clock_.now()).trustBundleChanged);
  EXPECT_TRUE(nodeB->tick(clock_.now()).trustBundleChanged);
  EXPECT_EQ(nodeA->trustBundle()->generation(), 2u);
  auto [ok, peer] = attempt();
  EXPECT_TRUE(ok);
  EXPECT_EQ(peer, id("web"));
}

TEST_F(MeshTls, ABrokenCaDirectoryChangeKeepsThePreviousState) {
  auto node = makeManager("ca");
  ASSERT_TRUE(node->acquire(id("web")));
  testing::writeText(dir_ / "ca" / "root-cert.pem", "garbage");
  auto report = node->tick(clock_.now());
  ASSERT_EQ(report.errors.size(), 1u);
  EXPECT_NE(report.errors[0].find("root-cert.pem"), std::string::npos) << report.errors[0];
  EXPECT_FALSE(report.trustBundleChanged);
  EXPECT_TRUE(node->tick(clock_.now()).errors.empty());  // logged once per change
  auto client = node->newClientSession(id("web"), ExpectedPeers::oneOf({id("web")}));
  auto server = node->newServerSession(id("web"));
  EXPECT_TRUE(handshake(client->get(), server->get()));
}

TEST_F(MeshTls, ANewPluginIntermediateReissuesEveryCertificate) {
  testing::makeOpensslPluginCa(dir_ / "cacerts");
  auto node = makeManager("cacerts");
  ASSERT_TRUE(node->acquire(id("web")));
  ASSERT_TRUE(node->acquire(id("db")));
  std::string before = node->certificates()[0].serial;

  // The operator rotates the intermediate under the same root (new key, new cert).
  std::string d = (dir_ / "cacerts").string();
  auto csr = testing::run("openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -config " + d +
                          "/openssl.cnf -subj '/O=Test/CN=Test Intermediate 2' -keyout " + d + "/new-key.pem -out " +
                          d + "/new.csr");
  ASSERT_EQ(csr.status, 0) << csr.output;
  auto sign = testing::run("openssl x509 -req -in " + d + "/new.csr -CA " + d + "/root-cert.pem -CAkey " + d +
                           "/root-key.pem -set_serial 4343 -days 30 -extfile " + d + "/openssl.cnf -extensions v3_ca -out " +
                           d + "/new-cert.pem");
  ASSERT_EQ(sign.status, 0) << sign.output;
  auto swap = testing::run("sh -c 'cd " + d + " && cat new-cert.pem root-cert.pem > cert-chain.pem && mv new-key.pem ca-key.pem && mv new-cert.pem ca-cert.pem'");
  ASSERT_EQ(swap.status, 0) << swap.output;

  clock_.catchUp();  // the new intermediate starts at the wall clock's second
  auto report = node->tick(clock_.now());
  EXPECT_TRUE(report.caReloaded);
  EXPECT_FALSE(report.trustBundleChanged);  // same root
  EXPECT_EQ(report.renewed.size(), 2u);
  EXPECT_NE(node->certificates()[0].serial, before);
  auto client = node->newClientSession(id("web"), ExpectedPeers::oneOf({id("db")}));
  auto server = node->newServerSession(id("db"));
  ASSERT_TRUE(handshake(client->get(), server->get()));
  const STACK_OF(CRYPTO_BUFFER)* chain = SSL_get0_peer_certificates(client->get());  // kept as bytes
  ASSERT_EQ(sk_CRYPTO_BUFFER_num(chain), 2u);
  bssl::UniquePtr<X509> intermediate(X509_parse_from_buffer(sk_CRYPTO_BUFFER_value(chain, 1)));
  EXPECT_EQ(serialHex(intermediate.get()), "10F7");  // 4343: the new intermediate
}

// Handshakes (with resumption) on several threads while the main thread renews
// certificates and rotates ticket keys: the shared state holds up.
TEST_F(MeshTls, ConcurrentHandshakesDuringRenewals) {
  MeshTlsSettings tls;
  auto node = makeManager("ca", 10s, tls);
  ASSERT_TRUE(node->acquire(id("web")));
  ASSERT_TRUE(node->acquire(id("db")));
  std::atomic<int> completed{0};
  std::atomic<int> failed{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> workers;
  for (int t = 0; t < 4; ++t) {
    workers.emplace_back([&] {
      bssl::UniquePtr<SSL_SESSION> session;
      bssl::UniquePtr<SSL_CTX> sessionContext;  // the client context the session came from
      while (!stop) {
        auto client = node->newClientSession(id("web"), ExpectedPeers::oneOf({id("db")}));
        auto server = node->newServerSession(id("db"));
        if (!client || !server) {
          ++failed;
          continue;
        }
        // As the agent's session cache does: a session of a context replaced by
        // a renewal is not offered (BoringSSL refuses it in another context).
        if (session && SSL_get_SSL_CTX(client->get()) == sessionContext.get()) SSL_set_session(client->get(), session.get());
        if (!handshake(client->get(), server->get()) || peerIdentity(server->get()) != id("web") ||
            peerIdentity(client->get()) != id("db") ||
            transfer(server->get(), client->get(), "x") != "x") {
          ++failed;
          continue;
        }
        if (auto fresh = takeResumableSession(client->get())) {
          session = std::move(fresh);
          SSL_CTX_up_ref(SSL_get_SSL_CTX(client->get()));
          sessionContext.reset(SSL_get_SSL_CTX(client->get()));
        }
        ++completed;
      }
    });
  }
  for (int i = 0; i < 6; ++i) {
    std::this_thread::sleep_for(50ms);
    clock_.advance(6s);
    EXPECT_FALSE(node->tick(clock_.now()).renewed.empty());
  }
  stop = true;
  for (auto& worker : workers) worker.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_GT(completed.load(), 4);
}

TEST(TlsMinVersion, ParsesMeshConfigValues) {
  EXPECT_EQ(parseTlsMinVersion("TLSV1_2"), TlsMinVersion::kTls12);
  EXPECT_EQ(parseTlsMinVersion("TLSV1_3"), TlsMinVersion::kTls13);
  EXPECT_EQ(parseTlsMinVersion(""), TlsMinVersion::kTls12);
  auto bad = parseTlsMinVersion("TLSV1_1");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("TLSV1_1"), std::string::npos);
}

TEST(SessionTicketKeys, RotatedKeysStillDecryptThenRetire) {
  Seconds t0 = systemNow();
  SessionTicketKeys keys(1h, t0);
  auto first = keys.current();
  EXPECT_FALSE(keys.rotateIfDue(t0 + 30min));
  EXPECT_TRUE(keys.rotateIfDue(t0 + 1h));
  auto found = keys.find(first.name.data());
  ASSERT_TRUE(found);
  EXPECT_FALSE(found->second);  // decrypts, not current: the ticket gets renewed
  keys.rotateNow(t0 + 2h);
  keys.rotateNow(t0 + 3h);
  EXPECT_FALSE(keys.find(first.name.data()));
}

}  // namespace
}  // namespace meshlock::identity
