// Shared by the engine tests: a throwaway PKI and small blocking-socket helpers.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "engine/tls_context.h"

namespace meshlock::engine::testing {

// Generated once per test process into a fresh directory, removed at exit.
struct TestPki {
  std::string dir;
  TlsFiles files(const std::string& leaf, const std::string& ca = "ca") const {
    return TlsFiles{dir + "/" + leaf + ".pem", dir + "/" + leaf + ".key", dir + "/" + ca + ".pem"};
  }
};

inline const TestPki& testPki() {
  static TestPki pki = [] {
    char tmpl[] = "/tmp/meshlock-engine-pki-XXXXXX";
    char* dir = mkdtemp(tmpl);
    if (dir == nullptr) std::abort();
    std::string command = std::string("bash ") + MESHLOCK_SOURCE_DIR + "/tests/agent/engine/make_test_pki.sh " + dir;
    if (std::system(command.c_str()) != 0) std::abort();
    static std::string cleanup = dir;
    std::atexit([] { std::filesystem::remove_all(cleanup); });
    return TestPki{dir};
  }();
  return pki;
}

inline const char* kClientId = "spiffe://cluster.local/ns/shop/sa/client";
inline const char* kServerId = "spiffe://cluster.local/ns/shop/sa/server";
inline const char* kOtherId = "spiffe://cluster.local/ns/shop/sa/other";

// Deterministic bytes: both ends can check a stream without storing it.
struct PatternStream {
  uint64_t state;
  explicit PatternStream(uint64_t seed) : state(seed * 0x9E3779B97F4A7C15ull + 1) {}
  void fill(uint8_t* out, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      state ^= state << 13;
      state ^= state >> 7;
      state ^= state << 17;
      out[i] = static_cast<uint8_t>(state);
    }
  }
};

inline UniqueFd connectTcp(uint16_t port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return UniqueFd();
  return fd;
}

inline bool writeAll(int fd, const void* data, size_t n) {
  auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// Reads until EOF; returns false on an error (e.g. a reset), with what arrived in `out`.
inline bool readToEof(int fd, std::string& out, int* err = nullptr) {
  char buf[65536];
  for (;;) {
    ssize_t r = ::recv(fd, buf, sizeof buf, 0);
    if (r == 0) return true;
    if (r < 0) {
      if (errno == EINTR) continue;
      if (err) *err = errno;
      return false;
    }
    out.append(buf, static_cast<size_t>(r));
  }
}

inline void setRecvTimeout(int fd, int ms) {
  timeval tv{ms / 1000, (ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

inline uint16_t localPort(int fd) {
  sockaddr_in addr{};
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  return ntohs(addr.sin_port);
}

}  // namespace meshlock::engine::testing
