// The CA client against Debian's python3-grpcio standing in for istiod
// (fake_istiod.py): an independent gRPC and TLS implementation on loopback.
// What the client must send is istiod's and ztunnel's behaviour: istio/istio
// security/pkg/server/ca/server.go (ImpersonatedIdentity, "request
// authenticate failure"), istio/ztunnel src/identity/caclient.rs and
// src/identity/auth.rs (Bearer token, clusterid, the SAN check).
#include "identity/ca_client.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <thread>

#include "fake_istiod.h"
#include "identity/csr.h"
#include "identity/peer_verifier.h"
#include "test_support.h"

namespace meshlock::identity {
namespace {

using testing::FakeIstiod;
using testing::ScratchDir;
using testing::writeText;

TrustDomain domain() { return *TrustDomain::parse("cluster.local"); }
SpiffeId web() { return *SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/web"); }

class CaClientTest : public ::testing::Test {
 protected:
  void SetUp() override { writeText(dir_ / "token", "token-one\n"); }

  std::unique_ptr<FakeIstiod> start(FakeIstiod::Options options) {
    auto server = std::make_unique<FakeIstiod>(dir_ / "istiod", options);
    EXPECT_TRUE(server->waitForRoot());
    return server;
  }

  std::unique_ptr<CaClient> client(int port, std::chrono::milliseconds timeout = std::chrono::seconds(10),
                                   std::string serverName = "") {
    CaClientConfig config;
    config.address = "127.0.0.1:" + std::to_string(port);
    config.serverName = std::move(serverName);
    config.rootFile = dir_ / "istiod" / "root-cert.pem";
    config.tokenFile = dir_ / "token";
    config.clusterId = "cluster-a";
    config.timeout = timeout;
    auto made = CaClient::create(config, domain());
    EXPECT_TRUE(made) << (made ? "" : made.error().describe());
    return made ? std::move(*made) : nullptr;
  }

  ScratchDir dir_;
};

TEST_F(CaClientTest, IssuesWithOurKeyAndSendsWhatIstiodChecks) {
  auto istiod = start({});
  int port = istiod->waitForPort();
  ASSERT_GT(port, 0);
  auto ca = client(port);
  ASSERT_TRUE(ca);
  auto cert = ca->fetch(web(), std::chrono::hours(1), systemNow());
  ASSERT_TRUE(cert) << cert.error().describe();
  EXPECT_EQ(cert->id, web());
  EXPECT_TRUE(cert->chain.empty()) << "the root is left out of the chain sent to peers";
  EXPECT_GT(cert->notAfter, systemNow() + std::chrono::minutes(50));
  bssl::UniquePtr<EVP_PKEY> leafKey(X509_get_pubkey(cert->leaf.get()));
  EXPECT_EQ(EVP_PKEY_cmp(leafKey.get(), cert->key.get()), 1);

  auto requests = istiod->requests();
  ASSERT_EQ(requests.size(), 1u);
  auto seen = nlohmann::json::parse(requests[0]);
  EXPECT_EQ(seen["authorization"], "Bearer token-one");
  EXPECT_EQ(seen["clusterid"], "cluster-a");
  EXPECT_EQ(seen["impersonated"], web().uri());
  EXPECT_EQ(seen["csr_sans"], nlohmann::json::array({web().uri()}));
  EXPECT_EQ(seen["csr_signature_valid"], true);
  EXPECT_EQ(seen["csr_subject"], "");
  EXPECT_EQ(seen["validity"], 3600);
  // grpc-timeout arrived: python3-grpcio turned it into the call's deadline.
  ASSERT_TRUE(seen["deadline_seconds"].is_number()) << seen.dump();
  EXPECT_GT(seen["deadline_seconds"].get<double>(), 5.0);
  EXPECT_LE(seen["deadline_seconds"].get<double>(), 10.0);

  // The token rotates: read again for the next call, on the same connection.
  writeText(dir_ / "token", "token-two");
  auto again = ca->fetch(web(), std::chrono::hours(1), systemNow());
  ASSERT_TRUE(again) << again.error().describe();
  EXPECT_NE(again->serial, cert->serial);
  EXPECT_EQ(nlohmann::json::parse(istiod->requests().at(1))["authorization"], "Bearer token-two");
}

TEST_F(CaClientTest, ChecksTheServersNameWhenGivenOne) {
  auto istiod = start({});
  int port = istiod->waitForPort();
  ASSERT_GT(port, 0);
  auto named = client(port, std::chrono::seconds(10), "istiod.istio-system.svc");
  auto ok = named->fetch(web(), std::chrono::hours(1), systemNow());
  EXPECT_TRUE(ok) << ok.error().describe();
  auto wrong = client(port, std::chrono::seconds(10), "istiod.other.svc");
  auto refused = wrong->fetch(web(), std::chrono::hours(1), systemNow());
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().reason, "unavailable");
  EXPECT_NE(refused.error().message.find("not trusted"), std::string::npos) << refused.error().message;
}

TEST_F(CaClientTest, KeepsTheIntermediateOfTheChain) {
  auto istiod = start({.mode = "intermediate"});
  int port = istiod->waitForPort();
  ASSERT_GT(port, 0);
  auto cert = client(port)->fetch(web(), std::chrono::hours(1), systemNow());
  ASSERT_TRUE(cert) << cert.error().describe();
  ASSERT_EQ(cert->chain.size(), 1u);
  EXPECT_NE(subjectText(cert->chain[0].get()).find("intermediate"), std::string::npos);
}

TEST_F(CaClientTest, UnauthenticatedIsRefusedAndNamed) {
  auto istiod = start({.tokenFile = dir_ / "expected-token"});
  writeText(dir_ / "expected-token", "another-token");
  int port = istiod->waitForPort();
  ASSERT_GT(port, 0);
  auto cert = client(port)->fetch(web(), std::chrono::hours(1), systemNow());
  ASSERT_FALSE(cert);
  EXPECT_EQ(cert.error().reason, "unauthenticated");
  EXPECT_NE(cert.error().message.find("UNAUTHENTICATED: request authenticate failure"), std::string::npos)
      << cert.error().message;
}

TEST_F(CaClientTest, PermissionDeniedCarriesTheDecodedMessage) {
  auto istiod = start({.mode = "permission_denied"});
  int port = istiod->waitForPort();
  ASSERT_GT(port, 0);
  auto cert = client(port)->fetch(web(), std::chrono::hours(1), systemNow());
  ASSERT_FALSE(cert);
  EXPECT_EQ(cert.error().reason, "permission_denied");
  EXPECT_NE(cert.error().message.find("pod not on the caller's node: é%"), std::string::npos) << cert.error().message;
}

TEST_F(CaClientTest, ASlowCaMeetsTheDeadline) {
  auto istiod = start({.mode = "slow", .slow = 5});
  int port = istiod->waitForPort();
  ASSERT_GT(port, 0);
  auto ca = client(port, std::chrono::milliseconds(700));
  const auto began = std::chrono::steady_clock::now();
  auto cert = ca->fetch(web(), std::chrono::hours(1), systemNow());
  const auto took = std::chrono::steady_clock::now() - began;
  ASSERT_FALSE(cert);
  EXPECT_EQ(cert.error().reason, "deadline_exceeded") << cert.error().message;
  EXPECT_LT(took, std::chrono::milliseconds(2500));
  EXPECT_GE(took, std::chrono::milliseconds(650));
}

TEST_F(CaClientTest, ACaThatIsDownThenUp) {
  const int port = testing::freeLoopbackPort();
  auto istiod = start({.port = port, .listenDelay = 2});
  auto ca = client(port, std::chrono::seconds(2));
  auto down = ca->fetch(web(), std::chrono::hours(1), systemNow());
  ASSERT_FALSE(down);
  EXPECT_EQ(down.error().reason, "unavailable") << down.error().message;
  ASSERT_EQ(istiod->waitForPort(), port);
  auto up = ca->fetch(web(), std::chrono::hours(1), systemNow());
  EXPECT_TRUE(up) << up.error().describe();
}

TEST_F(CaClientTest, AWrongSanIsRefused) {
  auto istiod = start({.mode = "wrong_san"});
  int port = istiod->waitForPort();
  ASSERT_GT(port, 0);
  auto cert = client(port)->fetch(web(), std::chrono::hours(1), systemNow());
  ASSERT_FALSE(cert);
  EXPECT_EQ(cert.error().reason, "invalid_response");
  EXPECT_NE(cert.error().message.find("intruder"), std::string::npos) << cert.error().message;
}

TEST_F(CaClientTest, ALeafWithAnotherKeyIsRefused) {
  auto istiod = start({.mode = "wrong_key"});
  int port = istiod->waitForPort();
  ASSERT_GT(port, 0);
  auto cert = client(port)->fetch(web(), std::chrono::hours(1), systemNow());
  ASSERT_FALSE(cert);
  EXPECT_EQ(cert.error().reason, "invalid_response");
  EXPECT_NE(cert.error().message.find("public key"), std::string::npos) << cert.error().message;
}

TEST_F(CaClientTest, AServerOfAnotherRootIsNotTrusted) {
  auto istiod = start({});
  int port = istiod->waitForPort();
  ASSERT_GT(port, 0);
  // Our mesh root is not the one that signed this server.
  auto other = generateP256Key();
  ASSERT_TRUE(other);
  CertificateSpec spec{.commonName = "other root", .isCa = true, .keyCertSign = true,
                       .notBefore = systemNow() - std::chrono::hours(1), .notAfter = systemNow() + std::chrono::hours(1)};
  auto root = buildCertificate(spec, other->get(), nullptr, other->get());
  ASSERT_TRUE(root);
  writeText(dir_ / "other-root.pem", certificatePem(root->get()));
  CaClientConfig config{.address = "127.0.0.1:" + std::to_string(port), .serverName = "",
                        .rootFile = dir_ / "other-root.pem", .tokenFile = dir_ / "token"};
  auto ca = CaClient::create(config, domain());
  ASSERT_TRUE(ca);
  auto cert = (*ca)->fetch(web(), std::chrono::hours(1), systemNow());
  ASSERT_FALSE(cert);
  EXPECT_EQ(cert.error().reason, "unavailable");
  EXPECT_NE(cert.error().message.find("not trusted"), std::string::npos) << cert.error().message;
}

TEST_F(CaClientTest, AMissingTokenIsALocalError) {
  auto istiod = start({});
  int port = istiod->waitForPort();
  ASSERT_GT(port, 0);
  std::filesystem::remove(dir_ / "token");
  auto cert = client(port)->fetch(web(), std::chrono::hours(1), systemNow());
  ASSERT_FALSE(cert);
  EXPECT_EQ(cert.error().reason, "local");
  EXPECT_NE(cert.error().message.find("caTokenFile"), std::string::npos) << cert.error().message;
  EXPECT_TRUE(istiod->requests().empty());
}

// The CSR, read back by the openssl command line (an independent parser).
TEST(CsrTest, OpensslReadsTheSpiffeSanAndAValidSignature) {
  ScratchDir dir;
  auto key = generateP256Key();
  ASSERT_TRUE(key);
  auto csr = buildCsrPem(key->get(), web());
  ASSERT_TRUE(csr) << csr.error().describe();
  writeText(dir / "req.pem", *csr);
  auto text = testing::run("openssl req -in " + (dir / "req.pem").string() + " -noout -verify -text");
  ASSERT_EQ(text.status, 0) << text.output;
  EXPECT_NE(text.output.find("verify OK"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("X509v3 Subject Alternative Name: critical"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("URI:" + web().uri()), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("prime256v1"), std::string::npos) << text.output;
}

}  // namespace
}  // namespace meshlock::identity
