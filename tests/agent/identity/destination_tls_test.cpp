// DestinationRule SIMPLE and MUTUAL: contexts from files, server checks by
// caCertificates / sni / subjectAltNames, reload when files change, and
// errors that name the rule and the file.
#include "identity/destination_tls.h"

#include <gtest/gtest.h>

#include "test_support.h"

namespace meshlock::identity {
namespace {

using testing::handshake;
using testing::makeOpensslPluginCa;
using testing::run;
using testing::ScratchDir;
using testing::writeText;

class DestinationTls : public ::testing::Test {
 protected:
  void SetUp() override {
    makeOpensslPluginCa(dir_ / "pki", "Web");
    issueLeaf("server", "subjectAltName = DNS:api.example.com\nextendedKeyUsage = serverAuth\n");
    issueLeaf("client", "extendedKeyUsage = clientAuth\n");
  }

  // An openssl-made leaf under the intermediate; <name>.pem holds leaf + intermediate.
  void issueLeaf(const std::string& name, const std::string& extensions, int serial = 100) {
    std::string d = dir_.path().string();
    writeText(dir_ / (name + ".cnf"), "[leaf]\nbasicConstraints = CA:FALSE\nkeyUsage = digitalSignature\n" + extensions);
    auto csr = run("openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=" + name +
                   " -config " + d + "/pki/openssl.cnf -keyout " + d + "/" + name + "-key.new -out " + d + "/" + name + ".csr");
    ASSERT_EQ(csr.status, 0) << csr.output;
    auto sign = run("openssl x509 -req -in " + d + "/" + name + ".csr -CA " + d + "/pki/ca-cert.pem -CAkey " + d +
                    "/pki/ca-key.pem -set_serial " + std::to_string(serial) + " -days 1 -extfile " + d + "/" + name +
                    ".cnf -extensions leaf -out " + d + "/" + name + "-leaf.pem");
    ASSERT_EQ(sign.status, 0) << sign.output;
    // Replace by rename, as a Secret volume update does.
    auto cat = run("sh -c 'cat " + d + "/" + name + "-leaf.pem " + d + "/pki/ca-cert.pem > " + d + "/" + name +
                   ".new && mv " + d + "/" + name + ".new " + d + "/" + name + ".pem && mv " + d + "/" + name +
                   "-key.new " + d + "/" + name + "-key.pem'");
    ASSERT_EQ(cat.status, 0) << cat.output;
  }

  // A plain BoringSSL server with the openssl-made certificate.
  bssl::UniquePtr<SSL> server(bool requireClientCert) {
    bssl::UniquePtr<SSL_CTX> ctx(SSL_CTX_new(TLS_method()));
    MESHLOCK_CHECK(SSL_CTX_use_certificate_chain_file(ctx.get(), (dir_ / "server.pem").c_str()));
    MESHLOCK_CHECK(SSL_CTX_use_PrivateKey_file(ctx.get(), (dir_ / "server-key.pem").c_str(), SSL_FILETYPE_PEM));
    if (requireClientCert) {
      SSL_CTX_set_custom_verify(ctx.get(), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                                [](SSL*, uint8_t*) { return ssl_verify_ok; });
    }
    return bssl::UniquePtr<SSL>(SSL_new(ctx.get()));
  }

  // The subject of the client certificate a server that requires one saw (empty: the handshake failed).
  std::string presentedSubject(SSL* client) {
    auto srv = server(true);
    if (!handshake(client, srv.get())) return {};
    bssl::UniquePtr<X509> seen(SSL_get_peer_certificate(srv.get()));
    return seen ? subjectText(seen.get()) : std::string("(none)");
  }

  DestinationTlsConfig simple() const {
    return DestinationTlsConfig{
        .ruleName = "shop/api",
        .mode = DestinationTlsMode::kSimple,
        .caCertificates = (dir_ / "pki" / "root-cert.pem").string(),
        .sni = "api.example.com",
    };
  }
  DestinationTlsConfig mutual() const {
    DestinationTlsConfig config = simple();
    config.mode = DestinationTlsMode::kMutual;
    config.clientCertificate = (dir_ / "client.pem").string();
    config.privateKey = (dir_ / "client-key.pem").string();
    return config;
  }

  ScratchDir dir_;
  DestinationTlsContexts contexts_{MeshTlsSettings{}};
};

TEST_F(DestinationTls, SimpleVerifiesTheServerBySni) {
  auto client = contexts_.newSession(simple());
  ASSERT_TRUE(client) << client.error().describe();
  auto srv = server(false);
  ASSERT_TRUE(handshake(client->get(), srv.get()));
  EXPECT_STREQ(SSL_get_servername(srv.get(), TLSEXT_NAMETYPE_host_name), "api.example.com");
  EXPECT_FALSE(verifyFailure(client->get()));
}

TEST_F(DestinationTls, SimpleRefusesAnotherHostName) {
  auto config = simple();
  config.sni = "db.example.com";
  auto client = contexts_.newSession(config);
  ASSERT_TRUE(client);
  auto srv = server(false);
  EXPECT_FALSE(handshake(client->get(), srv.get()));
  auto failure = verifyFailure(client->get());
  ASSERT_TRUE(failure);
  EXPECT_EQ(failure->reason, VerifyError::kSanMismatch);
  EXPECT_NE(failure->detail.find("DestinationRule shop/api"), std::string::npos) << failure->detail;
}

TEST_F(DestinationTls, SubjectAltNamesTakePrecedenceOverSni) {
  auto config = simple();
  config.sni = "anything.internal";
  config.subjectAltNames = {"other.example.com", "api.example.com"};
  auto client = contexts_.newSession(config);
  auto srv = server(false);
  EXPECT_TRUE(handshake(client->get(), srv.get()));

  config.subjectAltNames = {"other.example.com"};
  auto refused = contexts_.newSession(config);
  auto srv2 = server(false);
  EXPECT_FALSE(handshake(refused->get(), srv2.get()));
  ASSERT_TRUE(verifyFailure(refused->get()));
  EXPECT_EQ(verifyFailure(refused->get())->reason, VerifyError::kSanMismatch);
}

TEST_F(DestinationTls, SimpleRefusesAServerFromAnotherCa) {
  makeOpensslPluginCa(dir_ / "other", "Other");
  auto config = simple();
  config.caCertificates = (dir_ / "other" / "root-cert.pem").string();
  auto client = contexts_.newSession(config);
  auto srv = server(false);
  EXPECT_FALSE(handshake(client->get(), srv.get()));
  ASSERT_TRUE(verifyFailure(client->get()));
  EXPECT_EQ(verifyFailure(client->get())->reason, VerifyError::kUnknownCa);
}

TEST_F(DestinationTls, MutualPresentsTheClientCertificate) {
  auto client = contexts_.newSession(mutual());
  ASSERT_TRUE(client) << client.error().describe();
  EXPECT_EQ(presentedSubject(client->get()), "CN=client");
}

TEST_F(DestinationTls, ReloadsWhenTheFilesChange) {
  auto first = contexts_.context(mutual());
  auto same = contexts_.context(mutual());
  ASSERT_TRUE(first && same);
  EXPECT_EQ(first->get(), same->get());  // cached while the files are unchanged

  issueLeaf("client", "extendedKeyUsage = clientAuth\n", 200);
  auto reloaded = contexts_.context(mutual());
  ASSERT_TRUE(reloaded) << reloaded.error().describe();
  EXPECT_NE(reloaded->get(), first->get());
  auto client = newDestinationSession(reloaded->get());
  auto srv = server(true);
  ASSERT_TRUE(handshake(client->get(), srv.get()));
  bssl::UniquePtr<X509> seen(SSL_get_peer_certificate(srv.get()));
  EXPECT_EQ(serialHex(seen.get()), "C8");  // 200

  // A broken update keeps the last good context.
  writeText(dir_ / "client.pem.tmp", "not a certificate");
  std::filesystem::rename(dir_ / "client.pem.tmp", dir_ / "client.pem");
  auto kept = contexts_.context(mutual());
  ASSERT_TRUE(kept);
  EXPECT_EQ(kept->get(), reloaded->get());
}

// credentialName: the same checks with PEM text from a Secret in place of
// the files; a rotated Secret (other content) builds a new context.
TEST_F(DestinationTls, MutualFromASecretsPemText) {
  auto read = [&](const char* file) { return *readFile(dir_ / file); };
  DestinationTlsConfig config{.ruleName = "shop/api", .mode = DestinationTlsMode::kMutual, .sni = "api.example.com"};
  config.credentialSource = "Secret shop/api-client";
  config.caPem = *readFile(dir_ / "pki" / "root-cert.pem");
  config.certificatePem = read("client.pem");
  config.keyPem = read("client-key.pem");
  auto client = contexts_.newSession(config);
  ASSERT_TRUE(client) << client.error().describe();
  EXPECT_EQ(presentedSubject(client->get()), "CN=client");

  auto first = contexts_.context(config);
  EXPECT_EQ(first->get(), contexts_.context(config)->get());  // same content: cached
  issueLeaf("client", "extendedKeyUsage = clientAuth\n", 300);
  config.certificatePem = read("client.pem");
  config.keyPem = read("client-key.pem");
  auto rotated = contexts_.context(config);
  ASSERT_TRUE(rotated) << rotated.error().describe();
  EXPECT_NE(rotated->get(), first->get());

  // A Secret whose CA is not the server's: refused like caCertificates would be.
  config.caPem = read("client.pem");  // a leaf, not the server's root
  auto other = contexts_.newSession(config);
  ASSERT_TRUE(other);
  EXPECT_EQ(presentedSubject(other->get()), "");

  config.keyPem = "not a key";
  auto broken = buildDestinationContext(config, MeshTlsSettings{});
  ASSERT_FALSE(broken);
  EXPECT_NE(broken.error().describe().find("credentialName"), std::string::npos) << broken.error().describe();
  EXPECT_NE(broken.error().describe().find("Secret shop/api-client"), std::string::npos) << broken.error().describe();
}

TEST_F(DestinationTls, ErrorsNameTheRuleAndTheFile) {
  auto config = mutual();
  config.privateKey = (dir_ / "missing-key.pem").string();
  auto missing = contexts_.context(config);
  ASSERT_FALSE(missing);
  std::string message = missing.error().describe();
  EXPECT_NE(message.find("DestinationRule shop/api"), std::string::npos) << message;
  EXPECT_NE(message.find("privateKey"), std::string::npos) << message;
  EXPECT_NE(message.find("missing-key.pem"), std::string::npos) << message;

  config = mutual();
  config.privateKey = (dir_ / "server-key.pem").string();  // not the client certificate's key
  auto mismatch = contexts_.context(config);
  ASSERT_FALSE(mismatch);
  EXPECT_NE(mismatch.error().message.find("client.pem"), std::string::npos) << mismatch.error().message;

  config = simple();
  config.caCertificates = (dir_ / "server-key.pem").string();  // not a certificate
  auto badCa = contexts_.context(config);
  ASSERT_FALSE(badCa);
  EXPECT_NE(badCa.error().message.find("caCertificates"), std::string::npos) << badCa.error().message;
  EXPECT_NE(badCa.error().message.find("server-key.pem"), std::string::npos) << badCa.error().message;

  config = simple();
  config.mode = DestinationTlsMode::kMutual;
  auto incomplete = contexts_.context(config);
  ASSERT_FALSE(incomplete);
  EXPECT_NE(incomplete.error().message.find("clientCertificate"), std::string::npos);
}

}  // namespace
}  // namespace meshlock::identity
