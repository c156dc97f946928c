// neon against a real TLS peer on loopback (the openssl CLI's s_server, as an
// independent implementation): only the given CA is trusted, the server is
// verified by its IP address SAN, client certificates reach the server.
#include <gtest/gtest.h>

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "config/kube/neon_transport.h"

namespace meshlock::config::kube {
namespace {

namespace fs = std::filesystem;

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

uint16_t freePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

bool accepting(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

class NeonTransportTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir = fs::temp_directory_path() / ("meshlock-neon-" + std::to_string(::getpid()));
    fs::create_directories(dir);
    const std::string d = dir.string();
    const std::string script =
        "set -e; cd '" + d + "'; exec >openssl.log 2>&1\n"
        "for ca in ca other; do openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $ca.key "
        "-out $ca.crt -subj /CN=$ca -days 1; done\n"
        "mk() { openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $1.key -out $1.csr -subj /CN=$1;"
        " printf \"subjectAltName=$2\\n\" > $1.ext;"
        " openssl x509 -req -in $1.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -extfile $1.ext -out $1.crt; }\n"
        "mk ip IP:127.0.0.1; mk dns DNS:api.example.invalid; mk client DNS:client\n"
        "mkdir -p www; printf '{\"kind\":\"List\"}' > www/list.json\n";
    std::ofstream(dir / "make-certs.sh") << script;
    ASSERT_EQ(std::system(("sh " + (dir / "make-certs.sh").string()).c_str()), 0)
        << slurp(dir / "openssl.log");
  }
  static void TearDownTestSuite() { fs::remove_all(dir); }

  void TearDown() override {
    if (server > 0) {
      ::kill(server, SIGTERM);
      ::waitpid(server, nullptr, 0);
    }
  }

  // s_server -WWW serves files below www/; -Verify 1 requires a client certificate.
  uint16_t startServer(const std::string& cert, bool require_client) {
    port = freePort();
    server = ::fork();
    if (server == 0) {
      fs::current_path(dir / "www");
      const std::string c = (dir / (cert + ".crt")).string(), k = (dir / (cert + ".key")).string();
      const std::string ca = (dir / "ca.crt").string(), accept = "127.0.0.1:" + std::to_string(port);
      std::freopen("/dev/null", "w", stdout);
      if (require_client) {
        ::execlp("openssl", "openssl", "s_server", "-quiet", "-accept", accept.c_str(), "-cert", c.c_str(), "-key",
                 k.c_str(), "-WWW", "-Verify", "1", "-CAfile", ca.c_str(), nullptr);
      } else {
        ::execlp("openssl", "openssl", "s_server", "-quiet", "-accept", accept.c_str(), "-cert", c.c_str(), "-key",
                 k.c_str(), "-WWW", nullptr);
      }
      ::_exit(127);
    }
    for (int i = 0; i < 100 && !accepting(port); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    return port;
  }

  ApiEndpoint endpoint(const std::string& ca = "ca") const {
    ApiEndpoint ep;
    ep.server = "https://127.0.0.1:" + std::to_string(port);
    ep.ca_pem = slurp(dir / (ca + ".crt"));
    ep.origin = "test";
    return ep;
  }

  Result<HttpResponse> get(const ApiEndpoint& ep) {
    auto factory = makeNeonTransportFactory(ep);
    if (!factory) return std::unexpected(factory.error());
    auto transport = (*factory)->open();
    if (!transport) return std::unexpected(transport.error());
    return (*transport)->get("/list.json", "token");
  }

  static inline fs::path dir;
  pid_t server = -1;
  uint16_t port = 0;
};

TEST_F(NeonTransportTest, VerifiesTheServerByItsIpAddressSan) {
  startServer("ip", false);
  auto r = get(endpoint());
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, R"({"kind":"List"})");
}

TEST_F(NeonTransportTest, RefusesACertificateForAnotherName) {
  startServer("dns", false);
  auto r = get(endpoint());
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().describe().find("erver certificate verification failed"), std::string::npos) << r.error().describe();
}

TEST_F(NeonTransportTest, TrustsOnlyTheGivenCa) {
  startServer("ip", false);
  auto r = get(endpoint("other"));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().describe().find("erver certificate verification failed"), std::string::npos) << r.error().describe();
}

TEST_F(NeonTransportTest, PresentsAClientCertificateBuiltFromPem) {
  startServer("ip", true);
  ApiEndpoint without = endpoint();
  EXPECT_FALSE(get(without));  // the server wants a certificate
  ApiEndpoint with = endpoint();
  with.client_cert_pem = slurp(dir / "client.crt");
  with.client_key_pem = slurp(dir / "client.key");
  auto r = get(with);
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->status, 200);
}

TEST_F(NeonTransportTest, BadEndpointsAreRefusedUpFront) {
  ApiEndpoint ep = endpoint();
  ep.server = "http://127.0.0.1:1";
  EXPECT_FALSE(makeNeonTransportFactory(ep));
  ep = endpoint();
  ep.ca_pem = "not a certificate";
  EXPECT_FALSE(makeNeonTransportFactory(ep));
  ep = endpoint();
  ep.client_cert_pem = slurp(dir / "client.crt");
  ep.client_key_pem = slurp(dir / "ca.key");  // not its key
  auto f = makeNeonTransportFactory(ep);
  ASSERT_FALSE(f);
  EXPECT_NE(f.error().describe().find("does not match"), std::string::npos);
}

}  // namespace
}  // namespace meshlock::config::kube
