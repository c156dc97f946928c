// Every refusal reason of peer verification, each with a certificate crafted
// with BoringSSL, and the acceptances right next to them.
#include "identity/peer_verifier.h"

#include <gtest/gtest.h>

#include "identity/mesh_ca.h"
#include "test_support.h"

namespace meshlock::identity {
namespace {

using namespace std::chrono_literals;

struct Authority {
  bssl::UniquePtr<EVP_PKEY> key;
  bssl::UniquePtr<X509> cert;
};

Authority makeRoot(Seconds now, const std::string& name) {
  Authority root{*generateP256Key(), nullptr};
  CertificateSpec spec;
  spec.commonName = name;
  spec.isCa = true;
  spec.keyCertSign = true;
  spec.digitalSignature = false;
  spec.addExtendedKeyUsage = false;
  spec.notBefore = now - 24h;
  spec.notAfter = now + 24h * 365;
  root.cert = std::move(*buildCertificate(spec, root.key.get(), nullptr, root.key.get()));
  return root;
}

class PeerVerifier : public ::testing::Test {
 protected:
  void SetUp() override {
    now_ = systemNow();
    root_ = makeRoot(now_, "Mesh Root");
    CertificateList roots;
    roots.push_back(copyCertificate(root_.cert.get()));
    bundle_ = *TrustBundle::create(std::move(roots), 1);
  }

  // A correct mesh leaf; tests change one thing.
  CertificateSpec goodLeaf(const std::string& uri = "spiffe://cluster.local/ns/shop/sa/web") const {
    CertificateSpec spec;
    spec.uriSans = {uri};
    spec.notBefore = now_ - 1h;
    spec.notAfter = now_ + 1h;
    return spec;
  }

  bssl::UniquePtr<X509> sign(const CertificateSpec& spec, const Authority& issuer) {
    auto key = generateP256Key();
    auto cert = buildCertificate(spec, key->get(), issuer.cert.get(), issuer.key.get());
    MESHLOCK_CHECK(cert.has_value());
    return std::move(*cert);
  }

  VerifyResult verify(std::vector<X509*> chain, PeerRole role,
                      ExpectedPeers expected = ExpectedPeers::any()) {
    return verifyPeerChain(chain, *bundle_, domain_, expected,
                           VerifyOptions{.peerRole = role, .now = now_, .skew = 60s});
  }

  void expectRefused(X509* leaf, VerifyError reason, PeerRole role = PeerRole::kClient,
                     ExpectedPeers expected = ExpectedPeers::any()) {
    auto result = verify({leaf}, role, std::move(expected));
    ASSERT_FALSE(result) << "accepted " << result->uri();
    EXPECT_EQ(result.error().reason, reason)
        << "got " << result.error().describe() << ", wanted " << toString(reason);
    EXPECT_FALSE(result.error().detail.empty());
  }

  Seconds now_;
  TrustDomain domain_ = *TrustDomain::parse("cluster.local");
  Authority root_;
  std::shared_ptr<const TrustBundle> bundle_;
};

TEST_F(PeerVerifier, AcceptsAMeshLeafInBothDirections) {
  auto leaf = sign(goodLeaf(), root_);
  for (PeerRole role : {PeerRole::kClient, PeerRole::kServer}) {
    auto result = verify({leaf.get()}, role);
    ASSERT_TRUE(result) << result.error().describe();
    EXPECT_EQ(result->uri(), "spiffe://cluster.local/ns/shop/sa/web");
  }
}

TEST_F(PeerVerifier, AcceptsTheExpectedIdentityAndRefusesAnother) {
  auto leaf = sign(goodLeaf(), root_);
  auto web = *SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/web");
  auto db = *SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/db");
  EXPECT_TRUE(verify({leaf.get()}, PeerRole::kServer, ExpectedPeers::oneOf({db, web})));
  expectRefused(leaf.get(), VerifyError::kSanMismatch, PeerRole::kServer, ExpectedPeers::oneOf({db}));
}

TEST_F(PeerVerifier, RefusesWhenNoIdentityWasExpected) {
  auto leaf = sign(goodLeaf(), root_);
  expectRefused(leaf.get(), VerifyError::kNoExpectedIdentity, PeerRole::kServer, ExpectedPeers{});
}

TEST_F(PeerVerifier, Expired) {
  auto spec = goodLeaf();
  spec.notBefore = now_ - 2h;
  spec.notAfter = now_ - 2min;
  auto leaf = sign(spec, root_);
  expectRefused(leaf.get(), VerifyError::kExpired);
}

TEST_F(PeerVerifier, ExpiredWithinSkewIsAccepted) {
  auto spec = goodLeaf();
  spec.notAfter = now_ - 30s;
  auto leaf = sign(spec, root_);
  EXPECT_TRUE(verify({leaf.get()}, PeerRole::kClient));
}

TEST_F(PeerVerifier, NotYetValid) {
  auto spec = goodLeaf();
  spec.notBefore = now_ + 5min;
  auto leaf = sign(spec, root_);
  expectRefused(leaf.get(), VerifyError::kNotYetValid);
}

TEST_F(PeerVerifier, NotYetValidWithinSkewIsAccepted) {
  auto spec = goodLeaf();
  spec.notBefore = now_ + 30s;
  auto leaf = sign(spec, root_);
  EXPECT_TRUE(verify({leaf.get()}, PeerRole::kClient));
}

TEST_F(PeerVerifier, WrongCa) {
  Authority other = makeRoot(now_, "Other Root");
  auto leaf = sign(goodLeaf(), other);
  expectRefused(leaf.get(), VerifyError::kUnknownCa);
}

TEST_F(PeerVerifier, WrongCaWithTheSameName) {
  Authority impostor = makeRoot(now_, "Mesh Root");  // same subject, other key
  auto leaf = sign(goodLeaf(), impostor);
  expectRefused(leaf.get(), VerifyError::kUnknownCa);
}

TEST_F(PeerVerifier, WrongTrustDomain) {
  auto leaf = sign(goodLeaf("spiffe://evil.example/ns/shop/sa/web"), root_);
  expectRefused(leaf.get(), VerifyError::kWrongTrustDomain);
}

TEST_F(PeerVerifier, TwoUriSans) {
  auto spec = goodLeaf();
  spec.uriSans.push_back("spiffe://cluster.local/ns/shop/sa/admin");
  auto leaf = sign(spec, root_);
  expectRefused(leaf.get(), VerifyError::kMultipleUriSans);
}

TEST_F(PeerVerifier, NulInSan) {
  auto spec = goodLeaf(std::string("spiffe://cluster.local/ns/shop/sa/web\0.evil", 43));
  auto leaf = sign(spec, root_);
  expectRefused(leaf.get(), VerifyError::kMalformedSan);
}

TEST_F(PeerVerifier, NotASpiffeIdInSan) {
  for (std::string uri : {"https://cluster.local/ns/shop/sa/web", "spiffe://cluster.local/ns/shop/sa/Web",
                          "spiffe://cluster.local/ns/shop/sa/web/x", "spiffe://cluster.local/ns/sh%6fp/sa/web"}) {
    auto leaf = sign(goodLeaf(uri), root_);
    expectRefused(leaf.get(), VerifyError::kMalformedSan);
  }
}

TEST_F(PeerVerifier, NoUriSan) {
  auto spec = goodLeaf();
  spec.uriSans.clear();
  spec.dnsSans = {"web.shop.svc.cluster.local"};
  auto leaf = sign(spec, root_);
  expectRefused(leaf.get(), VerifyError::kNoUriSan);
  spec.dnsSans.clear();
  spec.commonName = "web";
  auto bare = sign(spec, root_);
  expectRefused(bare.get(), VerifyError::kNoUriSan);
}

TEST_F(PeerVerifier, MissingClientAuthEku) {
  auto spec = goodLeaf();
  spec.clientAuth = false;
  auto leaf = sign(spec, root_);
  expectRefused(leaf.get(), VerifyError::kMissingClientAuth, PeerRole::kClient);
  EXPECT_TRUE(verify({leaf.get()}, PeerRole::kServer));  // fine for a server
}

TEST_F(PeerVerifier, MissingServerAuthEku) {
  auto spec = goodLeaf();
  spec.serverAuth = false;
  auto leaf = sign(spec, root_);
  expectRefused(leaf.get(), VerifyError::kMissingServerAuth, PeerRole::kServer);
  EXPECT_TRUE(verify({leaf.get()}, PeerRole::kClient));
}

TEST_F(PeerVerifier, NoEkuAtAll) {
  auto spec = goodLeaf();
  spec.addExtendedKeyUsage = false;
  auto leaf = sign(spec, root_);
  expectRefused(leaf.get(), VerifyError::kMissingClientAuth, PeerRole::kClient);
}

TEST_F(PeerVerifier, MissingDigitalSignature) {
  auto spec = goodLeaf();
  spec.addKeyUsage = false;
  auto leaf = sign(spec, root_);
  expectRefused(leaf.get(), VerifyError::kMissingKeyUsage);
}

TEST_F(PeerVerifier, SelfSignedLeaf) {
  auto key = generateP256Key();
  auto spec = goodLeaf();
  spec.commonName = "me";
  auto leaf = buildCertificate(spec, key->get(), nullptr, key->get());
  ASSERT_TRUE(leaf);
  expectRefused(leaf->get(), VerifyError::kSelfSignedLeaf);
}

TEST_F(PeerVerifier, LeafThatIsACa) {
  auto spec = goodLeaf();
  spec.isCa = true;
  auto leaf = sign(spec, root_);
  expectRefused(leaf.get(), VerifyError::kLeafIsCa);
}

TEST_F(PeerVerifier, ChainThroughAnIntermediate) {
  auto intermediateKey = generateP256Key();
  CertificateSpec caSpec;
  caSpec.commonName = "Intermediate";
  caSpec.isCa = true;
  caSpec.keyCertSign = true;
  caSpec.addExtendedKeyUsage = false;
  caSpec.notBefore = now_ - 1h;
  caSpec.notAfter = now_ + 24h;
  Authority intermediate{std::move(*intermediateKey), nullptr};
  intermediate.cert = std::move(*buildCertificate(caSpec, intermediate.key.get(), root_.cert.get(), root_.key.get()));
  auto leaf = sign(goodLeaf(), intermediate);
  EXPECT_TRUE(verify({leaf.get(), intermediate.cert.get()}, PeerRole::kClient));
  // Without the intermediate the root is unreachable.
  expectRefused(leaf.get(), VerifyError::kUnknownCa);

  // An expired intermediate fails the chain even with a fresh leaf.
  caSpec.notAfter = now_ - 10min;
  Authority stale{*generateP256Key(), nullptr};
  stale.cert = std::move(*buildCertificate(caSpec, stale.key.get(), root_.cert.get(), root_.key.get()));
  auto leaf2 = sign(goodLeaf(), stale);
  auto result = verify({leaf2.get(), stale.cert.get()}, PeerRole::kClient);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().reason, VerifyError::kExpired) << result.error().describe();
  EXPECT_NE(result.error().detail.find("depth 1"), std::string::npos) << result.error().detail;

  // A leaf cannot act as an intermediate.
  auto notCa = sign(goodLeaf(), root_);
  Authority fake{*generateP256Key(), copyCertificate(notCa.get())};
  // (the key does not match, but the CA flag check comes first in path building)
  auto leaf3 = sign(goodLeaf(), fake);
  auto forged = verify({leaf3.get(), notCa.get()}, PeerRole::kClient);
  ASSERT_FALSE(forged);
  EXPECT_TRUE(forged.error().reason == VerifyError::kInvalidChain ||
              forged.error().reason == VerifyError::kUnknownCa)
      << forged.error().describe();
}

TEST_F(PeerVerifier, NoCertificate) {
  auto result = verify({}, PeerRole::kClient);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().reason, VerifyError::kNoCertificate);
}

TEST_F(PeerVerifier, ReasonNamesAreStable) {
  EXPECT_EQ(toString(VerifyError::kExpired), "expired");
  EXPECT_EQ(toString(VerifyError::kUnknownCa), "unknown_ca");
  EXPECT_EQ(toString(VerifyError::kSanMismatch), "san_mismatch");
  EXPECT_EQ(toString(VerifyError::kMultipleUriSans), "multiple_uri_sans");
}

}  // namespace
}  // namespace meshlock::identity
