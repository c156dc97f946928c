// Shared by the engine tests: a throwaway PKI and small blocking-socket helpers.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <atomic>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <cstring>

#include "common/unique_fd.h"
#include "engine/engine.h"
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

// A loopback TCP server running `handler` on its own thread per connection.
class TestServer {
 public:
  explicit TestServer(std::function<void(UniqueFd)> handler) : handler_(std::move(handler)) {
    auto address = SocketAddress::parse("127.0.0.1:0");
    auto fd = listenTcp(*address, 1024);
    MESHLOCK_CHECK(fd.has_value());
    listen_ = std::move(*fd);
    int flags = fcntl(listen_.get(), F_GETFL);
    fcntl(listen_.get(), F_SETFL, flags & ~O_NONBLOCK);
    port_ = localPort(listen_.get());
    acceptor_ = std::thread([this] {
      for (;;) {
        int c = ::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) return;
        accepted_.fetch_add(1);
        std::lock_guard lock(mutex_);
        threads_.emplace_back([this, c] { handler_(UniqueFd(c)); });
      }
    });
  }
  ~TestServer() {
    ::shutdown(listen_.get(), SHUT_RDWR);
    acceptor_.join();
    std::lock_guard lock(mutex_);
    for (auto& t : threads_) t.join();
  }
  uint16_t port() const { return port_; }
  int accepted() const { return accepted_.load(); }

 private:
  std::function<void(UniqueFd)> handler_;
  UniqueFd listen_;
  uint16_t port_ = 0;
  std::thread acceptor_;
  std::mutex mutex_;
  std::vector<std::thread> threads_;
  std::atomic<int> accepted_{0};
};

inline void echo(UniqueFd fd) {
  std::vector<char> buf(256 * 1024);
  for (;;) {
    ssize_t n = ::recv(fd.get(), buf.data(), buf.size(), 0);
    if (n <= 0) break;
    if (!writeAll(fd.get(), buf.data(), static_cast<size_t>(n))) return;
  }
  ::shutdown(fd.get(), SHUT_WR);
}

// An echo stream that sends until told to stop, then checks that every byte
// came back, in order: what an upgrade must not disturb.
class EchoStream {
 public:
  EchoStream(uint16_t port, uint64_t seed) : fd_(connectTcp(port)), seed_(seed) {
    writer_ = std::thread([this] {
      PatternStream pattern(seed_);
      std::vector<uint8_t> buf(16 * 1024);
      while (!stop_.load() && fd_) {
        pattern.fill(buf.data(), buf.size());
        if (!writeAll(fd_.get(), buf.data(), buf.size())) return;
        sent_ += buf.size();
      }
      ::shutdown(fd_.get(), SHUT_WR);
    });
    reader_ = std::thread([this] {
      PatternStream expected(seed_);
      std::vector<uint8_t> buf(64 * 1024), want(64 * 1024);
      for (;;) {
        ssize_t n = ::recv(fd_.get(), buf.data(), buf.size(), 0);
        if (n <= 0) {
          reset_ = n < 0;
          return;
        }
        expected.fill(want.data(), static_cast<size_t>(n));
        if (std::memcmp(buf.data(), want.data(), static_cast<size_t>(n)) != 0) corrupt_ = true;
        received_ += static_cast<uint64_t>(n);
      }
    });
  }
  uint64_t received() const { return received_.load(); }
  // Stops sending; true if everything sent came back intact and the stream ended cleanly.
  ::testing::AssertionResult finish() {
    stop_ = true;
    writer_.join();
    reader_.join();
    if (corrupt_) return ::testing::AssertionFailure() << "stream " << seed_ << ": corrupt bytes";
    if (reset_) return ::testing::AssertionFailure() << "stream " << seed_ << ": reset";
    if (received_ != sent_)
      return ::testing::AssertionFailure() << "stream " << seed_ << ": " << received_ << " of " << sent_ << " bytes came back";
    return ::testing::AssertionSuccess() << sent_;
  }

 private:
  UniqueFd fd_;
  uint64_t seed_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> sent_{0};
  std::atomic<uint64_t> received_{0};
  bool corrupt_ = false;
  bool reset_ = false;
  std::thread writer_, reader_;
};

}  // namespace meshlock::engine::testing
