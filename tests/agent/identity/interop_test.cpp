// Interoperability with an independent TLS implementation: the openssl
// command line (s_client) as a real peer over loopback TCP against a
// BoringSSL server using our contexts, with a CA directory made by openssl
// (root -> intermediate -> meshlock-issued leaves). Every wait is bounded.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <functional>
#include <thread>

#include "identity/identity_manager.h"
#include "test_support.h"

namespace meshlock::identity {
namespace {

using testing::makeOpensslPluginCa;
using testing::run;
using testing::ScratchDir;
using testing::writeText;

SpiffeId id(const std::string& sa) { return *SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/" + sa); }

// Accepts one TLS connection on 127.0.0.1 with `ctx`, answers one line, and
// records what verification said about the client.
class OneConnectionServer {
 public:
  // `prepare`, if given, runs on the SSL before the handshake (as the engine's hook).
  explicit OneConnectionServer(bssl::UniquePtr<SSL_CTX> ctx, std::function<Status(SSL*)> prepare = {})
      : ctx_(std::move(ctx)), prepare_(std::move(prepare)) {
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    MESHLOCK_CHECK(listener_ >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    MESHLOCK_CHECK(::bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    MESHLOCK_CHECK(::listen(listener_, 4) == 0);
    socklen_t len = sizeof(addr);
    MESHLOCK_CHECK(::getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~OneConnectionServer() {
    if (thread_.joinable()) thread_.join();
    ::close(listener_);
  }
  [[nodiscard]] int port() const { return port_; }
  void wait() {
    if (thread_.joinable()) thread_.join();
  }

  bool handshakeOk = false;
  std::string received;
  std::optional<SpiffeId> peer;
  std::optional<VerifyFailure> failure;
  std::string version;
  std::string alpn;  // the protocol the server selected, empty for none

 private:
  void serve() {
    pollfd pfd{listener_, POLLIN, 0};
    if (::poll(&pfd, 1, 20000) != 1) return;  // bounded: the test fails, it does not hang
    int fd = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return;
    timeval timeout{10, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
    bssl::UniquePtr<SSL> ssl(SSL_new(ctx_.get()));
    SSL_set_fd(ssl.get(), fd);  // a socket BIO here: the engine's memory BIOs are tested elsewhere
    if (prepare_ && !prepare_(ssl.get())) {
      ::close(fd);
      return;
    }
    handshakeOk = SSL_accept(ssl.get()) == 1;
    failure = verifyFailure(ssl.get());
    if (handshakeOk) {
      peer = peerIdentity(ssl.get());
      version = SSL_get_version(ssl.get());
      const uint8_t* selected = nullptr;
      unsigned selected_length = 0;
      SSL_get0_alpn_selected(ssl.get(), &selected, &selected_length);
      alpn.assign(reinterpret_cast<const char*>(selected), selected_length);
      char buffer[256];
      while (received.find('\n') == std::string::npos) {
        int n = SSL_read(ssl.get(), buffer, sizeof(buffer));
        if (n <= 0) break;
        received.append(buffer, static_cast<size_t>(n));
      }
      std::string reply = "pong from " + (peer ? peer->uri() : std::string("?")) + "\n";
      SSL_write(ssl.get(), reply.data(), static_cast<int>(reply.size()));
      SSL_shutdown(ssl.get());
    }
    ERR_clear_error();
    ::close(fd);
  }

  bssl::UniquePtr<SSL_CTX> ctx_;
  std::function<Status(SSL*)> prepare_;
  int listener_ = -1;
  int port_ = 0;
  std::thread thread_;
};

class OpensslInterop : public ::testing::Test {
 protected:
  void SetUp() override {
    makeOpensslPluginCa(dir_ / "cacerts");
    IdentityConfig config{.caDirectory = dir_ / "cacerts", .trustDomain = *TrustDomain::parse("cluster.local")};
    auto manager = IdentityManager::create(config);
    ASSERT_TRUE(manager) << manager.error().describe();
    node_ = std::move(*manager);
    ASSERT_TRUE(node_->acquire(id("db")));
    // The client's leaf from the same chain, issued by meshlock, written for openssl.
    auto web = node_->ca().issue(id("web"), systemNow(), std::chrono::hours(1));
    ASSERT_TRUE(web);
    writeText(dir_ / "web.pem", certificatePem(web->leaf.get()));
    writeText(dir_ / "web-key.pem", privateKeyPem(web->key.get()));
    writeText(dir_ / "web-chain.pem", certificatePem(web->chain.front().get()));
  }

  std::string sClient(int port, const std::string& cert, const std::string& key,
                      const std::string& chain, const std::string& extra = "", const std::string& alpn = "istio") {
    std::string d = dir_.path().string();
    auto result = run("sh -c 'echo ping | openssl s_client -connect 127.0.0.1:" + std::to_string(port) +
                      " -cert " + cert + " -key " + key + (chain.empty() ? "" : " -cert_chain " + chain) +
                      " -CAfile " + d + "/cacerts/root-cert.pem -verify_return_error -alpn " + alpn + " -quiet " +
                      extra + "'");
    return result.output;
  }

  ScratchDir dir_;
  std::unique_ptr<IdentityManager> node_;
};

TEST_F(OpensslInterop, SClientWithAMeshlockLeafFromAnOpensslChainIsAccepted) {
  OneConnectionServer server(std::move(*node_->serverContext(id("db"))));
  std::string d = dir_.path().string();
  std::string output = sClient(server.port(), d + "/web.pem", d + "/web-key.pem", d + "/web-chain.pem");
  server.wait();
  ASSERT_TRUE(server.handshakeOk) << output << (server.failure ? server.failure->describe() : "");
  EXPECT_EQ(server.peer, id("web"));
  EXPECT_EQ(server.received, "ping\n");
  EXPECT_NE(output.find("pong from spiffe://cluster.local/ns/shop/sa/web"), std::string::npos) << output;
  EXPECT_EQ(server.version, "TLSv1.3");
}

// What an Envoy sidecar offers (istio/istio pilot/pkg/networking/util/util.go
// ALPNInMesh, ALPNInMeshWithMxc, ALPNInMeshH2, ALPNInMeshH2WithMxc; the
// istio-http/* and istio-h2 overrides of listener.go mtlsHTTPALPNs), sent by
// an independent TLS stack: meshlock picks "istio" whenever it is offered,
// never istio-peer-exchange (that would oblige it to speak metadata exchange),
// and otherwise goes on without ALPN, as Envoy's inbound does.
TEST_F(OpensslInterop, SidecarAlpnOffersReachAStrictServer) {
  const struct {
    const char* offer;
    const char* selected;
  } rows[] = {
      {"istio", "istio"},
      {"istio-peer-exchange,istio", "istio"},
      {"istio,h2", "istio"},
      {"istio-peer-exchange,istio,h2", "istio"},
      {"istio-http/1.1", ""},
      {"istio-h2", ""},
      {"istio-peer-exchange", ""},
  };
  std::string d = dir_.path().string();
  for (const auto& row : rows) {
    SCOPED_TRACE(row.offer);
    OneConnectionServer server(std::move(*node_->serverContext(id("db"))));
    std::string output = sClient(server.port(), d + "/web.pem", d + "/web-key.pem", d + "/web-chain.pem", "", row.offer);
    server.wait();
    ASSERT_TRUE(server.handshakeOk) << output << (server.failure ? server.failure->describe() : "");
    EXPECT_EQ(server.alpn, row.selected);
    EXPECT_EQ(server.peer, id("web"));
    EXPECT_NE(output.find("pong from spiffe://cluster.local/ns/shop/sa/web"), std::string::npos) << output;
  }
}

// HBONE's port (15008), as ztunnel's inbound listener configures it: "h2"
// whatever else is offered, nothing for an offer without it (the engine then
// refuses the tunnel), and TLS 1.3 only.
TEST_F(OpensslInterop, TheHboneServerSelectsH2AndTls13Only) {
  const struct {
    const char* offer;
    const char* selected;
  } rows[] = {
      {"h2", "h2"},
      {"istio,h2", "h2"},
      {"istio-peer-exchange,istio", ""},
  };
  std::string d = dir_.path().string();
  for (const auto& row : rows) {
    SCOPED_TRACE(row.offer);
    OneConnectionServer server(std::move(*node_->serverContext(id("db"))), prepareTunnelServer);
    std::string output = sClient(server.port(), d + "/web.pem", d + "/web-key.pem", d + "/web-chain.pem", "", row.offer);
    server.wait();
    ASSERT_TRUE(server.handshakeOk) << output;
    EXPECT_EQ(server.alpn, row.selected);
    EXPECT_EQ(server.version, "TLSv1.3");
  }
  OneConnectionServer server(std::move(*node_->serverContext(id("db"))), prepareTunnelServer);
  std::string output = sClient(server.port(), d + "/web.pem", d + "/web-key.pem", d + "/web-chain.pem", "-tls1_2", "h2");
  server.wait();
  EXPECT_FALSE(server.handshakeOk) << output;
}

TEST_F(OpensslInterop, SClientOverTls12WithAnIstioCipher) {
  OneConnectionServer server(std::move(*node_->serverContext(id("db"))));
  std::string d = dir_.path().string();
  std::string output = sClient(server.port(), d + "/web.pem", d + "/web-key.pem", d + "/web-chain.pem",
                               "-tls1_2 -cipher ECDHE-ECDSA-AES128-GCM-SHA256");
  server.wait();
  ASSERT_TRUE(server.handshakeOk) << output;
  EXPECT_EQ(server.version, "TLSv1.2");
  EXPECT_EQ(server.peer, id("web"));
}

TEST_F(OpensslInterop, AnOpensslIssuedSpiffeLeafUnderThePluginCaIsAccepted) {
  // As a certificate from Istio's own CA would be: another implementation, same chain.
  std::string d = dir_.path().string();
  writeText(dir_ / "leaf.cnf",
            "[leaf]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage = serverAuth,clientAuth\n"
            "subjectAltName = critical,URI:spiffe://cluster.local/ns/legacy/sa/sidecar\n");
  auto csr = run("openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj / -config " + d +
                 "/cacerts/openssl.cnf -keyout " + d + "/legacy-key.pem -out " + d + "/legacy.csr");
  ASSERT_EQ(csr.status, 0) << csr.output;
  auto sign = run("openssl x509 -req -in " + d + "/legacy.csr -CA " + d + "/cacerts/ca-cert.pem -CAkey " + d +
                  "/cacerts/ca-key.pem -set_serial 77 -days 1 -extfile " + d + "/leaf.cnf -extensions leaf -out " +
                  d + "/legacy.pem");
  ASSERT_EQ(sign.status, 0) << sign.output;
  OneConnectionServer server(std::move(*node_->serverContext(id("db"))));
  std::string output = sClient(server.port(), d + "/legacy.pem", d + "/legacy-key.pem", d + "/cacerts/ca-cert.pem");
  server.wait();
  ASSERT_TRUE(server.handshakeOk) << output << (server.failure ? server.failure->describe() : "");
  EXPECT_EQ(server.peer, *SpiffeId::parse("spiffe://cluster.local/ns/legacy/sa/sidecar"));
}

TEST_F(OpensslInterop, SClientFromAnotherCaIsRefusedWithTheReason) {
  makeOpensslPluginCa(dir_ / "elsewhere", "Elsewhere");
  IdentityConfig config{.caDirectory = dir_ / "elsewhere", .trustDomain = *TrustDomain::parse("cluster.local")};
  auto other = IdentityManager::create(config);
  ASSERT_TRUE(other);
  auto stranger = (*other)->ca().issue(id("web"), systemNow(), std::chrono::hours(1));
  ASSERT_TRUE(stranger);
  writeText(dir_ / "stranger.pem", certificatePem(stranger->leaf.get()));
  writeText(dir_ / "stranger-key.pem", privateKeyPem(stranger->key.get()));
  writeText(dir_ / "stranger-chain.pem", certificatePem(stranger->chain.front().get()));

  OneConnectionServer server(std::move(*node_->serverContext(id("db"))));
  std::string d = dir_.path().string();
  std::string output = sClient(server.port(), d + "/stranger.pem", d + "/stranger-key.pem", d + "/stranger-chain.pem");
  server.wait();
  EXPECT_FALSE(server.handshakeOk);
  ASSERT_TRUE(server.failure) << output;
  EXPECT_EQ(server.failure->reason, VerifyError::kUnknownCa) << server.failure->describe();
  EXPECT_EQ(output.find("pong"), std::string::npos) << output;
}

TEST_F(OpensslInterop, SClientWithoutACertificateIsRefused) {
  OneConnectionServer server(std::move(*node_->serverContext(id("db"))));
  std::string d = dir_.path().string();
  auto result = run("sh -c 'echo ping | openssl s_client -connect 127.0.0.1:" + std::to_string(server.port()) +
                    " -CAfile " + d + "/cacerts/root-cert.pem -quiet'");
  server.wait();
  EXPECT_FALSE(server.handshakeOk);
  EXPECT_EQ(result.output.find("pong"), std::string::npos) << result.output;
}

// The other direction: our client context against `openssl s_server`, which
// requires and verifies our client certificate.
TEST_F(OpensslInterop, OurClientIsAcceptedByOpensslSServer) {
  auto db = node_->ca().issue(id("db"), systemNow(), std::chrono::hours(1));
  ASSERT_TRUE(db);
  writeText(dir_ / "db.pem", certificatePem(db->leaf.get()));
  writeText(dir_ / "db-key.pem", privateKeyPem(db->key.get()));
  ASSERT_TRUE(node_->acquire(id("web")));

  // A free port (bind to 0, then let s_server have it).
  int probe = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(probe, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(::getsockname(probe, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  ::close(probe);
  int port = ntohs(addr.sin_port);

  std::string d = dir_.path().string();
  std::string command = "timeout 20 openssl s_server -accept 127.0.0.1:" + std::to_string(port) + " -cert " + d +
                        "/db.pem -key " + d + "/db-key.pem -cert_chain " + d + "/web-chain.pem -CAfile " + d +
                        "/cacerts/root-cert.pem -Verify 1 -verify_return_error -alpn istio -naccept 1 -rev 2>&1";
  FILE* serverOutput = ::popen(command.c_str(), "r");
  ASSERT_NE(serverOutput, nullptr);
  std::string banner;
  char line[512];
  while (banner.find("ACCEPT") == std::string::npos && std::fgets(line, sizeof(line), serverOutput)) banner += line;
  ASSERT_NE(banner.find("ACCEPT"), std::string::npos) << banner;

  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval timeout{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  auto client = node_->newClientSession(id("web"), ExpectedPeers::oneOf({id("db")}));
  ASSERT_TRUE(client);
  SSL_set_fd(client->get(), fd);
  bool ok = SSL_connect(client->get()) == 1;
  std::string reply;
  if (ok) {
    SSL_write(client->get(), "hello\n", 6);
    char buffer[64];
    int n = SSL_read(client->get(), buffer, sizeof(buffer));
    if (n > 0) reply.assign(buffer, static_cast<size_t>(n));
    SSL_shutdown(client->get());
  }
  ERR_clear_error();
  ::close(fd);
  std::string rest;
  while (std::fgets(line, sizeof(line), serverOutput)) rest += line;
  ::pclose(serverOutput);
  ASSERT_TRUE(ok) << (verifyFailure(client->get()) ? verifyFailure(client->get())->describe() : "") << rest;
  EXPECT_EQ(peerIdentity(client->get()), id("db"));
  EXPECT_EQ(reply, "olleh\n") << rest;  // s_server -rev echoes reversed
}

}  // namespace
}  // namespace meshlock::identity
