// meshlock-testpeer: a small TCP peer for end-to-end tests, run inside pods.
//   serve --port P [--bind IP] [--once]    echo server; echoes until the peer's
//                                          FIN, then half-closes its side too
//   send --to HOST:PORT --bytes N          sends N pseudo-random bytes, reads
//        [--half-close] [--timeout S]      the echo back, verifies it
// Every wait is bounded. Exit codes of send: 0 intact, 1 corrupted or short,
// 2 usage, 3 connect failed (refused, unreachable, name unknown), 4 timed out,
// 5 connection reset or closed early.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

#include <sys/resource.h>
#include <vector>

#include "common/unique_fd.h"

namespace {

using meshlock::UniqueFd;
using Clock = std::chrono::steady_clock;

constexpr int kExitOk = 0, kExitCorrupt = 1, kExitUsage = 2, kExitConnect = 3, kExitTimeout = 4, kExitReset = 5;

// Deterministic bytes from a seed (xorshift64*), so both sides could agree.
class ByteStream {
 public:
  explicit ByteStream(uint64_t seed) : state_(seed ? seed : 0x9e3779b97f4a7c15ull) {}
  void fill(char* out, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      if (left_ == 0) {
        state_ ^= state_ >> 12;
        state_ ^= state_ << 25;
        state_ ^= state_ >> 27;
        word_ = state_ * 0x2545f4914f6cdd1dull;
        left_ = 8;
      }
      out[i] = static_cast<char>(word_ & 0xff);
      word_ >>= 8;
      --left_;
    }
  }

 private:
  uint64_t state_;
  uint64_t word_ = 0;
  int left_ = 0;
};

// FNV-1a 64 over a byte stream.
struct Checksum {
  uint64_t value = 0xcbf29ce484222325ull;
  void add(const char* data, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      value ^= static_cast<unsigned char>(data[i]);
      value *= 0x100000001b3ull;
    }
  }
};

std::string peerName(const sockaddr_storage& addr) {
  char host[INET6_ADDRSTRLEN] = "?";
  int port = 0;
  if (addr.ss_family == AF_INET) {
    auto* in = reinterpret_cast<const sockaddr_in*>(&addr);
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    port = ntohs(in->sin_port);
  } else if (addr.ss_family == AF_INET6) {
    auto* in6 = reinterpret_cast<const sockaddr_in6*>(&addr);
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    port = ntohs(in6->sin6_port);
  }
  return std::string(host) + ":" + std::to_string(port);
}

int waitFor(int fd, short events, Clock::time_point deadline) {
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return 0;
    pollfd p{fd, events, 0};
    int r = poll(&p, 1, static_cast<int>(std::min<long>(left, 1000)));
    if (r < 0 && errno == EINTR) continue;
    if (r != 0) return r;
  }
}

// Echoes one connection until the peer half-closes, then half-closes back.
void echo(UniqueFd conn, std::string peer, int idleSeconds, bool verbose) {
  std::vector<char> buf(64 * 1024);
  uint64_t total = 0;
  const char* end = "closed";
  while (true) {
    auto deadline = Clock::now() + std::chrono::seconds(idleSeconds);
    if (waitFor(conn.get(), POLLIN, deadline) == 0) {
      end = "idle timeout";
      break;
    }
    ssize_t n = recv(conn.get(), buf.data(), buf.size(), 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) {
      end = "reset";
      break;
    }
    if (n == 0) {
      shutdown(conn.get(), SHUT_WR);  // propagate the half-close
      end = "half-closed by peer, echoed and closed";
      break;
    }
    size_t off = 0;
    while (off < static_cast<size_t>(n)) {
      if (waitFor(conn.get(), POLLOUT, Clock::now() + std::chrono::seconds(idleSeconds)) == 0) {
        end = "write timeout";
        break;
      }
      ssize_t w = send(conn.get(), buf.data() + off, static_cast<size_t>(n) - off, MSG_NOSIGNAL);
      if (w < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (w < 0) break;
      off += static_cast<size_t>(w);
    }
    if (off < static_cast<size_t>(n)) {
      end = "write failed";
      break;
    }
    total += static_cast<uint64_t>(n);
  }
  if (verbose) std::fprintf(stderr, "testpeer: %s: %llu bytes echoed, %s\n", peer.c_str(), (unsigned long long)total, end);
}

int serve(int port, const std::string& bindIp, bool once, int idleSeconds, size_t maxConnections, bool verbose) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, bindIp.c_str(), &addr.sin_addr) != 1) {
    std::fprintf(stderr, "testpeer: --bind: %s is not an IPv4 address\n", bindIp.c_str());
    return kExitUsage;
  }
  // One fd per connection: as many as the hard limit allows.
  rlimit files{};
  if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
  }
  UniqueFd listener(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int one = 1;
  setsockopt(listener.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(listener.get(), 512) != 0) {
    std::fprintf(stderr, "testpeer: listen on %s:%d: %s\n", bindIp.c_str(), port, std::strerror(errno));
    return kExitConnect;
  }
  std::printf("listening on %s:%d\n", bindIp.c_str(), port);
  std::fflush(stdout);
  std::atomic<size_t> active{0};
  while (true) {
    sockaddr_storage peer{};
    socklen_t len = sizeof peer;
    UniqueFd conn(accept4(listener.get(), reinterpret_cast<sockaddr*>(&peer), &len, SOCK_CLOEXEC));
    if (!conn) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      std::fprintf(stderr, "testpeer: accept: %s\n", std::strerror(errno));
      return kExitConnect;
    }
    if (once) {
      echo(std::move(conn), peerName(peer), idleSeconds, verbose);
      return kExitOk;
    }
    if (active.load() >= maxConnections) continue;  // closes the connection: bounded load
    ++active;
    std::thread([&active, c = std::move(conn), p = peerName(peer), idleSeconds, verbose]() mutable {
      echo(std::move(c), p, idleSeconds, verbose);
      --active;
    }).detach();
  }
}

int sendBytes(const std::string& to, uint64_t bytes, int timeoutSeconds, bool halfClose, uint64_t seed) {
  size_t colon = to.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    std::fprintf(stderr, "testpeer: --to: expected HOST:PORT, got %s\n", to.c_str());
    return kExitUsage;
  }
  std::string host = to.substr(0, colon), port = to.substr(colon + 1);
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res); rc != 0) {
    std::fprintf(stderr, "testpeer: resolve %s: %s\n", to.c_str(), gai_strerror(rc));
    return kExitConnect;
  }
  sockaddr_storage target{};
  std::memcpy(&target, res->ai_addr, res->ai_addrlen);
  socklen_t targetLen = res->ai_addrlen;
  freeaddrinfo(res);

  auto deadline = Clock::now() + std::chrono::seconds(timeoutSeconds);
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&target), targetLen) != 0 && errno != EINPROGRESS) {
    std::fprintf(stderr, "testpeer: connect %s: %s\n", to.c_str(), std::strerror(errno));
    return kExitConnect;
  }
  if (waitFor(fd.get(), POLLOUT, deadline) == 0) {
    std::fprintf(stderr, "testpeer: connect %s: timed out after %ds\n", to.c_str(), timeoutSeconds);
    return kExitTimeout;
  }
  int err = 0;
  socklen_t errLen = sizeof err;
  getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &errLen);
  if (err != 0) {
    std::fprintf(stderr, "testpeer: connect %s: %s\n", to.c_str(), std::strerror(err));
    return kExitConnect;
  }

  ByteStream stream(seed);
  Checksum sentSum, receivedSum;
  uint64_t sent = 0, received = 0;
  std::vector<char> out(64 * 1024), in(64 * 1024);
  size_t outLen = 0, outOff = 0;
  bool shutDown = false, eof = false;
  // Send and receive together, so a large transfer never deadlocks on full buffers.
  while (received < bytes || (halfClose && !eof)) {
    if (sent == bytes && halfClose && !shutDown) {
      shutdown(fd.get(), SHUT_WR);
      shutDown = true;
    }
    if (outOff == outLen && sent < bytes) {
      outLen = static_cast<size_t>(std::min<uint64_t>(out.size(), bytes - sent));
      stream.fill(out.data(), outLen);
      outOff = 0;
    }
    short events = POLLIN;
    if (outOff < outLen) events |= POLLOUT;
    if (waitFor(fd.get(), events, deadline) == 0) {
      std::fprintf(stderr, "testpeer: %s: timed out after %ds (sent %llu, received %llu of %llu)\n", to.c_str(),
                   timeoutSeconds, (unsigned long long)sent, (unsigned long long)received, (unsigned long long)bytes);
      return kExitTimeout;
    }
    if (outOff < outLen) {
      ssize_t w = send(fd.get(), out.data() + outOff, outLen - outOff, MSG_NOSIGNAL);
      if (w > 0) {
        sentSum.add(out.data() + outOff, static_cast<size_t>(w));
        outOff += static_cast<size_t>(w);
        sent += static_cast<uint64_t>(w);
      } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
        std::fprintf(stderr, "testpeer: send to %s: %s\n", to.c_str(), std::strerror(errno));
        return kExitReset;
      }
    }
    ssize_t n = recv(fd.get(), in.data(), in.size(), 0);
    if (n > 0) {
      receivedSum.add(in.data(), static_cast<size_t>(n));
      received += static_cast<uint64_t>(n);
    } else if (n == 0) {
      eof = true;
      if (received < bytes || !halfClose) {
        if (received >= bytes) break;
        std::fprintf(stderr, "testpeer: %s closed after %llu of %llu bytes\n", to.c_str(), (unsigned long long)received,
                     (unsigned long long)bytes);
        return kExitReset;
      }
    } else if (errno != EAGAIN && errno != EINTR) {
      std::fprintf(stderr, "testpeer: recv from %s: %s\n", to.c_str(), std::strerror(errno));
      return kExitReset;
    }
  }
  bool intact = received == bytes && receivedSum.value == sentSum.value;
  std::printf("to=%s sent=%llu received=%llu checksum=%016llx echo=%016llx%s %s\n", to.c_str(),
              (unsigned long long)sent, (unsigned long long)received, (unsigned long long)sentSum.value,
              (unsigned long long)receivedSum.value, halfClose ? " half-close=propagated" : "",
              intact ? "ok" : "CORRUPT");
  return intact ? kExitOk : kExitCorrupt;
}

}  // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  CLI::App app{"meshlock-testpeer: TCP echo server and verifying client for end-to-end tests"};
  app.require_subcommand(1);

  CLI::App* serveCmd = app.add_subcommand("serve", "echo every connection back, until the peer half-closes");
  int port = 0;
  std::string bindIp = "0.0.0.0";
  bool once = false, verbose = false;
  int idle = 30;
  serveCmd->add_option("--port", port, "TCP port")->required()->check(CLI::Range(1, 65535));
  serveCmd->add_option("--bind", bindIp, "IPv4 address to listen on (default 0.0.0.0)");
  serveCmd->add_flag("--once", once, "exit after the first connection");
  serveCmd->add_option("--idle-timeout", idle, "close a connection idle this long (seconds, default 30)")
      ->check(CLI::Range(1, 3600));
  size_t maxConnections = 512;
  serveCmd->add_option("--max-connections", maxConnections, "connections served at once; more are closed (default 512)")
      ->check(CLI::Range(size_t{1}, size_t{100000}));
  serveCmd->add_flag("-v,--verbose", verbose, "log each connection to stderr");

  CLI::App* sendCmd = app.add_subcommand("send", "send bytes, read the echo, verify");
  std::string to;
  uint64_t bytes = 1024, seed = 1;
  int timeout = 10;
  bool halfClose = false;
  sendCmd->add_option("--to", to, "HOST:PORT (names resolve through the pod's hosts file)")->required();
  sendCmd->add_option("--bytes", bytes, "how many bytes (default 1024)");
  sendCmd->add_option("--timeout", timeout, "overall deadline in seconds (default 10)")->check(CLI::Range(1, 3600));
  sendCmd->add_flag("--half-close", halfClose,
                    "shutdown(SHUT_WR) after sending and require the server's FIN after the echo");
  sendCmd->add_option("--seed", seed, "pseudo-random stream seed (default 1)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : kExitUsage;
  }
  if (serveCmd->parsed()) return serve(port, bindIp, once, idle, maxConnections, verbose);
  return sendBytes(to, bytes, timeout, halfClose, seed);
}
