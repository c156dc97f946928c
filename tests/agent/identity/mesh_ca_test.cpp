// The mesh CA: generated root (kept, 0600, reused), Istio plug-in directories
// made with the openssl CLI, and issued certificates checked by `openssl
// verify` and `openssl x509 -text` as an independent implementation.
#include "identity/mesh_ca.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "identity/trust_bundle.h"
#include "test_support.h"

namespace meshlock::identity {
namespace {

using testing::makeOpensslPluginCa;
using testing::run;
using testing::ScratchDir;
using testing::writeText;

TrustDomain clusterLocal() { return *TrustDomain::parse("cluster.local"); }
SpiffeId webId() { return *SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/web"); }

void writeLeafFiles(const WorkloadCertificate& cert, const ScratchDir& dir) {
  writeText(dir / "leaf.pem", certificatePem(cert.leaf.get()));
  std::string chain;
  for (const auto& c : cert.chain) chain += certificatePem(c.get());
  writeText(dir / "chain.pem", chain);
  writeText(dir / "key.pem", privateKeyPem(cert.key.get()));
}

TEST(MeshCa, GeneratesRootOnFirstStartWithPrivateKeyAndReusesIt) {
  ScratchDir dir;
  auto now = systemNow();
  auto ca = MeshCa::open(dir / "ca", clusterLocal(), now);
  ASSERT_TRUE(ca) << ca.error().describe();
  EXPECT_TRUE((*ca)->selfSigned());
  for (const char* file : {kCaCertFile, kCaKeyFile, kRootCertFile, kCertChainFile}) {
    EXPECT_TRUE(std::filesystem::exists(dir / "ca" / file)) << file;
  }
  struct stat st {};
  ASSERT_EQ(::stat((dir / "ca" / kCaKeyFile).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  auto again = MeshCa::open(dir / "ca", clusterLocal(), now);
  ASSERT_TRUE(again) << again.error().describe();
  EXPECT_EQ(sha256Fingerprint((*again)->signingCertificate()),
            sha256Fingerprint((*ca)->signingCertificate()));

  auto text = run("openssl x509 -noout -text -in " + (dir / "ca" / kCaCertFile).string());
  ASSERT_EQ(text.status, 0) << text.output;
  EXPECT_NE(text.output.find("CA:TRUE"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("prime256v1"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("Certificate Sign"), std::string::npos) << text.output;
}

TEST(MeshCa, RefusesToOverwriteALonelyKey) {
  ScratchDir dir;
  std::filesystem::create_directories(dir / "ca");
  writeText(dir / "ca" / kCaKeyFile, "not a key");
  auto ca = MeshCa::open(dir / "ca", clusterLocal(), systemNow());
  ASSERT_FALSE(ca);
  EXPECT_NE(ca.error().message.find("ca-key.pem"), std::string::npos) << ca.error().message;
}

TEST(MeshCa, IssuedCertificateIsAcceptedByOpensslAndShowsExactlyWhatWeClaim) {
  ScratchDir dir;
  auto ca = MeshCa::open(dir / "ca", clusterLocal(), systemNow());
  ASSERT_TRUE(ca) << ca.error().describe();
  auto cert = (*ca)->issue(webId(), systemNow(), std::chrono::hours(24));
  ASSERT_TRUE(cert) << cert.error().describe();
  writeLeafFiles(*cert, dir);
  std::string root = (dir / "ca" / kRootCertFile).string();
  for (const char* purpose : {"sslclient", "sslserver"}) {
    auto verify = run("openssl verify -purpose " + std::string(purpose) + " -CAfile " + root + " " +
                      (dir / "leaf.pem").string());
    EXPECT_EQ(verify.status, 0) << verify.output;
    EXPECT_NE(verify.output.find(": OK"), std::string::npos) << verify.output;
  }

  auto text = run("openssl x509 -noout -text -in " + (dir / "leaf.pem").string());
  ASSERT_EQ(text.status, 0) << text.output;
  const std::string& out = text.output;
  EXPECT_NE(out.find("X509v3 Subject Alternative Name: critical\n                URI:spiffe://cluster.local/ns/shop/sa/web\n"),
            std::string::npos) << out;
  EXPECT_EQ(out.find("DNS:"), std::string::npos) << out;
  EXPECT_EQ(out.find("email:"), std::string::npos) << out;
  EXPECT_NE(out.find("X509v3 Key Usage: critical\n                Digital Signature\n"), std::string::npos) << out;
  EXPECT_NE(out.find("TLS Web Server Authentication, TLS Web Client Authentication"), std::string::npos) << out;
  EXPECT_NE(out.find("CA:FALSE"), std::string::npos) << out;
  EXPECT_NE(out.find("ASN1 OID: prime256v1"), std::string::npos) << out;
  EXPECT_NE(out.find("ecdsa-with-SHA256"), std::string::npos) << out;

  // Lifetime: exactly what was asked, counted from issuance.
  EXPECT_EQ(cert->notAfter - cert->issuedAt, std::chrono::hours(24));
  EXPECT_EQ(notAfter(cert->leaf.get()), cert->notAfter);
  auto serial = run("openssl x509 -noout -serial -in " + (dir / "leaf.pem").string());
  EXPECT_EQ(serial.output, "serial=" + cert->serial + "\n");
}

TEST(MeshCa, EveryIssuanceHasAFreshKeyAndSerial) {
  ScratchDir dir;
  auto ca = MeshCa::open(dir / "ca", clusterLocal(), systemNow());
  ASSERT_TRUE(ca);
  auto a = (*ca)->issue(webId(), systemNow(), std::chrono::seconds(10));
  auto b = (*ca)->issue(webId(), systemNow(), std::chrono::seconds(10));
  ASSERT_TRUE(a && b);
  EXPECT_NE(a->serial, b->serial);
  EXPECT_NE(privateKeyPem(a->key.get()), privateKeyPem(b->key.get()));
}

TEST(MeshCa, PluginDirectoryFromOpensslRootIntermediateMeshlock) {
  ScratchDir dir;
  makeOpensslPluginCa(dir / "cacerts");
  auto ca = MeshCa::open(dir / "cacerts", clusterLocal(), systemNow());
  ASSERT_TRUE(ca) << ca.error().describe();
  EXPECT_FALSE((*ca)->selfSigned());
  ASSERT_EQ((*ca)->chain().size(), 1u);  // the intermediate; the root is left out
  auto cert = (*ca)->issue(webId(), systemNow(), std::chrono::hours(1));
  ASSERT_TRUE(cert) << cert.error().describe();
  writeLeafFiles(*cert, dir);
  auto verify = run("openssl verify -purpose sslclient -CAfile " + (dir / "cacerts" / kRootCertFile).string() +
                    " -untrusted " + (dir / "chain.pem").string() + " " + (dir / "leaf.pem").string());
  EXPECT_EQ(verify.status, 0) << verify.output;
  EXPECT_NE(verify.output.find(": OK"), std::string::npos) << verify.output;
  // Without the intermediate the leaf is refused: the chain is really needed.
  auto alone = run("openssl verify -CAfile " + (dir / "cacerts" / kRootCertFile).string() + " " +
                   (dir / "leaf.pem").string());
  EXPECT_NE(alone.status, 0) << alone.output;

  auto issuer = run("openssl x509 -noout -issuer -in " + (dir / "leaf.pem").string());
  EXPECT_NE(issuer.output.find("Test Intermediate"), std::string::npos) << issuer.output;
}

TEST(MeshCa, LeafNeverOutlivesTheSigningCa) {
  ScratchDir dir;
  makeOpensslPluginCa(dir / "cacerts");  // the intermediate lives 365 days
  auto ca = MeshCa::open(dir / "cacerts", clusterLocal(), systemNow());
  ASSERT_TRUE(ca);
  auto cert = (*ca)->issue(webId(), systemNow(), std::chrono::hours(24 * 400));
  ASSERT_TRUE(cert);
  EXPECT_EQ(cert->notAfter, notAfter((*ca)->signingCertificate()));
}

TEST(MeshCa, PluginErrorsNameTheFile) {
  ScratchDir dir;
  makeOpensslPluginCa(dir / "a", "A");
  makeOpensslPluginCa(dir / "b", "B");
  // A key that does not belong to ca-cert.pem.
  std::filesystem::copy_file(dir / "b" / kCaKeyFile, dir / "a" / kCaKeyFile,
                             std::filesystem::copy_options::overwrite_existing);
  auto mismatch = MeshCa::loadPlugin(dir / "a", systemNow());
  ASSERT_FALSE(mismatch);
  EXPECT_NE(mismatch.error().message.find("ca-key.pem: key does not match"), std::string::npos)
      << mismatch.error().message;

  // ca-cert.pem that does not chain to root-cert.pem.
  std::filesystem::copy_file(dir / "a" / kRootCertFile, dir / "b" / kRootCertFile,
                             std::filesystem::copy_options::overwrite_existing);
  std::filesystem::remove(dir / "b" / kCertChainFile);
  auto unchained = MeshCa::loadPlugin(dir / "b", systemNow());
  ASSERT_FALSE(unchained);
  EXPECT_NE(unchained.error().message.find("does not chain to"), std::string::npos)
      << unchained.error().message;

  // Garbage PEM.
  writeText(dir / "b" / kCaCertFile, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
  auto garbage = MeshCa::loadPlugin(dir / "b", systemNow());
  ASSERT_FALSE(garbage);
  EXPECT_NE(garbage.error().message.find("ca-cert.pem"), std::string::npos) << garbage.error().message;

  std::filesystem::remove(dir / "b" / kCaKeyFile);
  auto missing = MeshCa::loadPlugin(dir / "b", systemNow());
  ASSERT_FALSE(missing);
}

TEST(TrustBundle, RootCertAndExtraRootsAreTrusted) {
  ScratchDir dir;
  makeOpensslPluginCa(dir / "a", "A");
  makeOpensslPluginCa(dir / "b", "B");
  std::filesystem::create_directories(dir / "a" / "extra-roots");
  std::filesystem::copy_file(dir / "b" / kRootCertFile, dir / "a" / "extra-roots" / "b.pem");
  auto roots = loadTrustRoots(dir / "a");
  ASSERT_TRUE(roots) << roots.error().describe();
  EXPECT_EQ(roots->size(), 2u);
  auto bundle = TrustBundle::create(std::move(*roots), 7);
  ASSERT_TRUE(bundle);
  EXPECT_EQ((*bundle)->generation(), 7u);
  EXPECT_EQ((*bundle)->fingerprint().size(), 64u);
  // Leaves are not roots.
  auto leaf = readCertificatesPem(dir / "a" / kCaCertFile);
  ASSERT_TRUE(leaf);
  EXPECT_TRUE(TrustBundle::create(std::move(*leaf), 1));  // the intermediate is a CA: allowed
}

}  // namespace
}  // namespace meshlock::identity
