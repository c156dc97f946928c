// Shared by the identity tests: a scratch directory, a movable clock, running
// the openssl command line, and a TLS handshake between two SSL objects over
// a memory BIO pair.
#pragma once

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "identity/tls_context.h"
#include "identity/x509_util.h"

namespace meshlock::identity::testing {

// A fresh directory under $TMPDIR, removed at the end of the test.
class ScratchDir {
 public:
  ScratchDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "meshlock-identity-XXXXXX").string();
    MESHLOCK_CHECK(::mkdtemp(pattern.data()) != nullptr);
    path_ = pattern;
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }
  [[nodiscard]] std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// Time the tests move by hand; starts at the real time.
class FakeClock {
 public:
  FakeClock() : now_(systemNow().time_since_epoch().count()) {}
  [[nodiscard]] Seconds now() const { return Seconds(std::chrono::seconds(now_.load())); }
  void advance(std::chrono::seconds by) { now_ += by.count(); }
  // Never behind the wall clock: certificates the openssl CLI made after
  // this clock was created start at the wall clock's second, and would be
  // "not yet valid" to a clock left a second behind.
  void catchUp() {
    const int64_t wall = systemNow().time_since_epoch().count();
    int64_t seen = now_.load();
    while (seen < wall && !now_.compare_exchange_weak(seen, wall)) {
    }
  }
  [[nodiscard]] Clock clock() {
    return [this] { return now(); };
  }

 private:
  std::atomic<int64_t> now_;
};

struct CommandResult {
  int status = -1;
  std::string output;  // stdout and stderr
};

// Runs a shell command (the openssl CLI), bounded by `timeout` seconds.
inline CommandResult run(const std::string& command, int timeoutSeconds = 20) {
  std::string full = "timeout " + std::to_string(timeoutSeconds) + " " + command + " 2>&1";
  CommandResult result;
  FILE* pipe = ::popen(full.c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> buffer;
  size_t n = 0;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) result.output.append(buffer.data(), n);
  int status = ::pclose(pipe);
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

inline void writeText(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  ASSERT_TRUE(out.good()) << path;
}

// Connects two SSL objects through a BIO pair and drives both handshakes.
// Returns true when both finished; false when either failed.
inline bool handshake(SSL* client, SSL* server) {
  BIO* clientBio = nullptr;
  BIO* serverBio = nullptr;
  MESHLOCK_CHECK(BIO_new_bio_pair(&clientBio, 0, &serverBio, 0));
  SSL_set_bio(client, clientBio, clientBio);
  SSL_set_bio(server, serverBio, serverBio);
  SSL_set_connect_state(client);
  SSL_set_accept_state(server);
  bool clientDone = false;
  bool serverDone = false;
  for (int round = 0; round < 64 && !(clientDone && serverDone); ++round) {
    if (!clientDone) {
      int rc = SSL_do_handshake(client);
      if (rc == 1) {
        clientDone = true;
      } else if (SSL_get_error(client, rc) != SSL_ERROR_WANT_READ) {
        ERR_clear_error();
        return false;
      }
    }
    if (!serverDone) {
      int rc = SSL_do_handshake(server);
      if (rc == 1) {
        serverDone = true;
      } else if (SSL_get_error(server, rc) != SSL_ERROR_WANT_READ) {
        ERR_clear_error();
        return false;
      }
    }
  }
  return clientDone && serverDone;
}

// Sends `message` from `from` and reads it on `to` (both already connected).
inline std::string transfer(SSL* from, SSL* to, const std::string& message) {
  if (SSL_write(from, message.data(), static_cast<int>(message.size())) != static_cast<int>(message.size())) {
    ERR_clear_error();
    return "<write failed>";
  }
  std::string received;
  char buffer[4096];
  for (int round = 0; round < 16 && received.size() < message.size(); ++round) {
    int n = SSL_read(to, buffer, sizeof(buffer));
    if (n > 0) {
      received.append(buffer, static_cast<size_t>(n));
      continue;
    }
    int error = SSL_get_error(to, n);
    if (error != SSL_ERROR_WANT_READ) {
      ERR_clear_error();
      return "<read failed>";
    }
    // TLS 1.3 tickets travel server to client: let the writer read them.
    SSL_read(from, buffer, 0);
  }
  return received;
}

// Istio's plug-in layout made with the openssl command line only:
// root (self-signed) -> intermediate = ca-cert.pem, cert-chain.pem = intermediate + root.
// Also leaves root-key.pem beside it, for tests that sign more with the root.
inline void makeOpensslPluginCa(const std::filesystem::path& dir, const std::string& name = "Test") {
  std::filesystem::create_directories(dir);
  writeText(dir / "openssl.cnf",
            "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = unused\n"
            "[v3_ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n"
            "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid:always\n");
  std::string d = dir.string();
  std::string cnf = " -config " + d + "/openssl.cnf ";
  auto root = run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes" + cnf +
                  "-extensions v3_ca -days 3650 -subj '/O=" + name + "/CN=" + name + " Root' -keyout " +
                  d + "/root-key.pem -out " + d + "/root-cert.pem");
  ASSERT_EQ(root.status, 0) << root.output;
  auto csr = run("openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes" + cnf +
                 "-subj '/O=" + name + "/CN=" + name + " Intermediate' -keyout " + d +
                 "/ca-key.pem -out " + d + "/ca.csr");
  ASSERT_EQ(csr.status, 0) << csr.output;
  auto intermediate = run("openssl x509 -req -in " + d + "/ca.csr -CA " + d + "/root-cert.pem -CAkey " +
                          d + "/root-key.pem -set_serial 4242 -days 365 -extfile " + d +
                          "/openssl.cnf -extensions v3_ca -out " + d + "/ca-cert.pem");
  ASSERT_EQ(intermediate.status, 0) << intermediate.output;
  auto chain = run("sh -c 'cat " + d + "/ca-cert.pem " + d + "/root-cert.pem > " + d + "/cert-chain.pem'");
  ASSERT_EQ(chain.status, 0) << chain.output;
}

// From the chain the SSL keeps as bytes (identity contexts keep no X509 objects).
inline std::string peerSerial(SSL* ssl) {
  const STACK_OF(CRYPTO_BUFFER)* chain = SSL_get0_peer_certificates(ssl);
  if (chain == nullptr || sk_CRYPTO_BUFFER_num(chain) == 0) return {};
  bssl::UniquePtr<X509> cert(X509_parse_from_buffer(sk_CRYPTO_BUFFER_value(chain, 0)));
  return cert ? serialHex(cert.get()) : std::string();
}

}  // namespace meshlock::identity::testing
