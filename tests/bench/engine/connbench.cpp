// meshlock-connbench: the new-connection and idle-connection load for the
// benchmarks (tests/bench/engine, tests/bench/fullpath). One thread, epoll,
// non-blocking sockets; every wait is bounded.
//   serve --port P [--bind IP]                 echo server for any number of connections;
//                                              closes a connection when its peer does
//   rate --to IP:PORT --seconds S               keeps C connections in flight, each:
//        [--concurrency C]                      connect, write 1 byte, read it back, close.
//                                              Prints "connections=N seconds=T rate=R
//                                              errors=E p50_ms=… p99_ms=…"
//   hold --to IP:PORT --count N                 opens N connections (C at a time), each
//        [--concurrency C] [--seconds S]        echoes 1 byte, then keeps them open; prints
//        [--open-timeout T]                     "held=N errors=E" once all are open (or after
//                                              T s, or 2N attempts), then waits for
//                                              SIGINT/SIGTERM or S seconds
//   flood --to IP:PORT --count N --seconds S    keeps up to N connections open for S s, each
//        [--concurrency C] [--reopen-ms D]      sending the first bytes of a TLS ClientHello
//        [--max-rate R]                         (R new connections a second at most)
//                                              and nothing more (a handshake never finished);
//                                              one the peer closes is reopened after D ms.
//                                              Prints "flood opened=… peer_closed=…
//                                              connect_errors=… max_open=… open_at_end=…"
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/unique_fd.h"

namespace {

using meshlock::UniqueFd;
using Clock = std::chrono::steady_clock;

volatile sig_atomic_t g_stop = 0;
void onSignal(int) { g_stop = 1; }

void raiseFileLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);
}

std::optional<sockaddr_in> parseAddress(const std::string& text) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos) return std::nullopt;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  if (inet_pton(AF_INET, text.substr(0, colon).c_str(), &address.sin_addr) != 1) return std::nullopt;
  address.sin_port = htons(static_cast<uint16_t>(std::stoi(text.substr(colon + 1))));
  return address;
}

int serve(const std::string& bind_ip, int port) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, bind_ip.c_str(), &address.sin_addr) != 1) return 2;
  UniqueFd listener(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  int one = 1;
  setsockopt(listener.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(listener.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      listen(listener.get(), 4096) != 0) {
    std::perror("connbench serve: bind/listen");
    return 1;
  }
  UniqueFd epoll(epoll_create1(EPOLL_CLOEXEC));
  epoll_event event{EPOLLIN, {.fd = listener.get()}};
  epoll_ctl(epoll.get(), EPOLL_CTL_ADD, listener.get(), &event);
  std::vector<epoll_event> events(512);
  char buffer[16384];
  while (!g_stop) {
    int n = epoll_wait(epoll.get(), events.data(), static_cast<int>(events.size()), 500);
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd == listener.get()) {
        for (;;) {
          int client = accept4(listener.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (client < 0) break;
          setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          epoll_event e{EPOLLIN | EPOLLRDHUP, {.fd = client}};
          epoll_ctl(epoll.get(), EPOLL_CTL_ADD, client, &e);
        }
        continue;
      }
      // Echo what is there (small requests: a short write is not retried); close on EOF or error.
      for (;;) {
        ssize_t got = read(fd, buffer, sizeof buffer);
        if (got > 0) {
          if (write(fd, buffer, static_cast<size_t>(got)) >= 0 || errno == EAGAIN) continue;
        } else if (got < 0 && (errno == EAGAIN || errno == EINTR)) {
          break;
        }
        close(fd);  // also removes it from the epoll set
        break;
      }
    }
  }
  return 0;
}

// One client connection through its steps; the rate and hold loops drive many.
struct Probe {
  UniqueFd fd;
  enum class Step { Connecting, Reading, Open } step = Step::Connecting;
  Clock::time_point started;
};

struct Driver {
  sockaddr_in to{};
  int epoll = -1;
  std::unordered_map<int, Probe> probes;
  uint64_t errors = 0;

  bool open() {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      ++errors;
      return false;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0 && errno != EINPROGRESS) {
      close(fd);
      ++errors;
      return false;
    }
    epoll_event e{EPOLLOUT, {.fd = fd}};
    epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &e);
    probes.emplace(fd, Probe{UniqueFd(fd), Probe::Step::Connecting, Clock::now()});
    return true;
  }

  // Advances a probe on readiness; returns true when its byte came back.
  bool advance(Probe& probe, uint32_t ready) {
    int fd = probe.fd.get();
    if (probe.step == Probe::Step::Connecting) {
      int error = 0;
      socklen_t length = sizeof error;
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length);
      if (error != 0 || (ready & (EPOLLERR | EPOLLHUP))) return fail(probe);
      char byte = 'x';
      if (write(fd, &byte, 1) != 1) return fail(probe);
      probe.step = Probe::Step::Reading;
      epoll_event e{EPOLLIN | EPOLLRDHUP, {.fd = fd}};
      epoll_ctl(epoll, EPOLL_CTL_MOD, fd, &e);
      return false;
    }
    if (probe.step == Probe::Step::Reading) {
      char byte;
      ssize_t got = read(fd, &byte, 1);
      if (got == 1) {
        probe.step = Probe::Step::Open;
        epoll_event e{EPOLLRDHUP, {.fd = fd}};  // an open probe only wants to hear of its end
        epoll_ctl(epoll, EPOLL_CTL_MOD, fd, &e);
        return true;
      }
      if (got < 0 && errno == EAGAIN) return false;
      return fail(probe);
    }
    if (ready & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) fail(probe);  // an idle one was closed
    return false;
  }

  bool fail(Probe& probe) {
    ++errors;
    probes.erase(probe.fd.get());
    return false;
  }
};

double percentile(std::vector<double>& values, double p) {
  if (values.empty()) return 0;
  size_t index = std::min(values.size() - 1, static_cast<size_t>(p * static_cast<double>(values.size())));
  std::nth_element(values.begin(), values.begin() + static_cast<long>(index), values.end());
  return values[index];
}

int rate(const sockaddr_in& to, double seconds, unsigned concurrency) {
  Driver driver;
  driver.to = to;
  UniqueFd epoll(epoll_create1(EPOLL_CLOEXEC));
  driver.epoll = epoll.get();
  std::vector<epoll_event> events(1024);
  std::vector<double> latencies_ms;
  uint64_t completed = 0;
  auto start = Clock::now();
  auto end = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  while (!g_stop && Clock::now() < end) {
    while (driver.probes.size() < concurrency && driver.open()) {
    }
    int n = epoll_wait(epoll.get(), events.data(), static_cast<int>(events.size()), 100);
    for (int i = 0; i < n; ++i) {
      auto found = driver.probes.find(events[i].data.fd);
      if (found == driver.probes.end()) continue;
      if (driver.advance(found->second, events[i].events)) {
        ++completed;
        latencies_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - found->second.started).count());
        driver.probes.erase(found);  // close: the echo server and the proxies see a FIN
      }
    }
  }
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  std::vector<double> sorted = latencies_ms;
  std::printf("connections=%lu seconds=%.2f rate=%.0f errors=%lu p50_ms=%.2f p99_ms=%.2f\n", completed, elapsed,
              static_cast<double>(completed) / elapsed, driver.errors, percentile(sorted, 0.50),
              percentile(sorted, 0.99));
  return completed > 0 ? 0 : 1;
}

int hold(const sockaddr_in& to, unsigned count, unsigned concurrency, double seconds, double open_timeout) {
  Driver driver;
  driver.to = to;
  UniqueFd epoll(epoll_create1(EPOLL_CLOEXEC));
  driver.epoll = epoll.get();
  std::vector<epoll_event> events(1024);
  unsigned opened = 0, pending = 0, held = 0;
  auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(open_timeout));
  while (!g_stop && held < count && Clock::now() < deadline) {
    while (pending < concurrency && held + pending < count && opened < 2 * count) {
      if (driver.open()) ++pending;
      ++opened;
    }
    int n = epoll_wait(epoll.get(), events.data(), static_cast<int>(events.size()), 100);
    for (int i = 0; i < n; ++i) {
      auto found = driver.probes.find(events[i].data.fd);
      if (found == driver.probes.end()) continue;
      bool was_pending = found->second.step != Probe::Step::Open;
      size_t before = driver.probes.size();
      if (driver.advance(found->second, events[i].events)) {
        ++held;
        --pending;
      } else if (driver.probes.size() < before) {
        if (was_pending) --pending;
        else --held;
      }
    }
    if (opened >= 2 * count && pending == 0) break;  // too many failures: report what we have
  }
  std::printf("held=%u errors=%lu\n", held, driver.errors);
  std::fflush(stdout);
  auto end = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  while (!g_stop && Clock::now() < end) {
    int n = epoll_wait(epoll.get(), events.data(), static_cast<int>(events.size()), 200);
    for (int i = 0; i < n; ++i) {
      auto found = driver.probes.find(events[i].data.fd);
      if (found != driver.probes.end()) driver.advance(found->second, events[i].events);
    }
  }
  return held == count ? 0 : 1;
}

// The first 11 bytes of a ClientHello: a handshake record announcing 512
// bytes, a ClientHello announcing 508, TLS 1.2 legacy version; the rest never comes.
constexpr char kPartialClientHello[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";

int flood(const sockaddr_in& to, unsigned count, unsigned concurrency, double seconds, unsigned reopen_ms,
          double max_rate) {
  UniqueFd epoll(epoll_create1(EPOLL_CLOEXEC));
  enum class Step { Connecting, Holding };
  std::unordered_map<int, Step> open;  // fd → step; fds are closed by hand below
  std::deque<Clock::time_point> reopen_at;  // slots waiting to be reopened, in time order
  uint64_t opened = 0, peer_closed = 0, connect_errors = 0;
  size_t max_open = 0, connecting = 0;
  int last_error = 0;
  std::vector<epoll_event> events(1024);
  auto start = Clock::now();
  auto end = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  auto next_report = start + std::chrono::seconds(5);
  auto drop = [&](int fd, bool by_peer) {
    if (open[fd] == Step::Connecting) --connecting;
    open.erase(fd);
    close(fd);
    (by_peer ? peer_closed : connect_errors) += 1;
    reopen_at.push_back(Clock::now() + std::chrono::milliseconds(reopen_ms));
  };
  unsigned never_opened = count;
  while (!g_stop && Clock::now() < end) {
    auto now = Clock::now();
    // New slots first, then slots whose delay is over; at most C connecting at once.
    const double allowed = max_rate > 0 ? std::chrono::duration<double>(now - start).count() * max_rate : 1e18;
    while (connecting < concurrency && static_cast<double>(opened) < allowed) {
      bool slot = false;
      if (never_opened > 0) {
        --never_opened;
        slot = true;
      } else if (!reopen_at.empty() && reopen_at.front() <= now) {
        reopen_at.pop_front();
        slot = true;
      }
      if (!slot) break;
      int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0) {
        ++connect_errors;
        reopen_at.push_back(now + std::chrono::milliseconds(reopen_ms));
        break;
      }
      if (connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to) != 0 && errno != EINPROGRESS) {
        close(fd);
        ++connect_errors;
        reopen_at.push_back(now + std::chrono::milliseconds(reopen_ms));
        continue;
      }
      epoll_event e{EPOLLOUT | EPOLLRDHUP, {.fd = fd}};
      epoll_ctl(epoll.get(), EPOLL_CTL_ADD, fd, &e);
      open.emplace(fd, Step::Connecting);
      ++connecting;
      ++opened;
    }
    max_open = std::max(max_open, open.size());
    int n = epoll_wait(epoll.get(), events.data(), static_cast<int>(events.size()), 20);
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      auto found = open.find(fd);
      if (found == open.end()) continue;
      uint32_t ready = events[i].events;
      if (found->second == Step::Connecting) {
        int error = 0;
        socklen_t length = sizeof error;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length);
        if (error != 0) {
          // A reset before the connect was seen to complete: the peer accepted and refused it.
          drop(fd, error == ECONNRESET);
          if (error != ECONNRESET) last_error = error;
          continue;
        }
        if (write(fd, kPartialClientHello, sizeof kPartialClientHello - 1) < 0) {
          drop(fd, true);
          continue;
        }
        found->second = Step::Holding;
        --connecting;
        epoll_event e{EPOLLRDHUP, {.fd = fd}};  // only its end is of interest now
        epoll_ctl(epoll.get(), EPOLL_CTL_MOD, fd, &e);
        continue;
      }
      if (ready & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) drop(fd, true);
    }
    if (Clock::now() >= next_report) {
      next_report += std::chrono::seconds(5);
      std::fprintf(stderr, "flood: %.0f s: open=%zu opened=%lu peer_closed=%lu connect_errors=%lu\n",
                   std::chrono::duration<double>(Clock::now() - start).count(), open.size(), opened, peer_closed,
                   connect_errors);
    }
  }
  std::printf("flood opened=%lu peer_closed=%lu connect_errors=%lu max_open=%zu open_at_end=%zu last_error=\"%s\"\n",
              opened, peer_closed, connect_errors, max_open, open.size(), last_error ? std::strerror(last_error) : "");
  for (auto& [fd, step] : open) close(fd);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"meshlock-connbench: new-connection rate and idle connections, for the benchmarks"};
  app.require_subcommand(1);
  std::string bind_ip = "0.0.0.0", to_text;
  int port = 0;
  double seconds = 5;
  unsigned concurrency = 32, count = 10'000;
  auto* serve_cmd = app.add_subcommand("serve", "echo server");
  serve_cmd->add_option("--port", port)->required();
  serve_cmd->add_option("--bind", bind_ip);
  auto* rate_cmd = app.add_subcommand("rate", "new connections per second (1-byte echo each)");
  rate_cmd->add_option("--to", to_text)->required();
  rate_cmd->add_option("--seconds", seconds);
  rate_cmd->add_option("--concurrency", concurrency);
  auto* hold_cmd = app.add_subcommand("hold", "open N connections and keep them idle");
  hold_cmd->add_option("--to", to_text)->required();
  hold_cmd->add_option("--count", count);
  hold_cmd->add_option("--concurrency", concurrency);
  hold_cmd->add_option("--seconds", seconds, "how long to hold them (default: until a signal)")
      ->default_val(1e9);
  double open_timeout = 300;
  hold_cmd->add_option("--open-timeout", open_timeout, "give up opening after this many seconds (default 300)");
  auto* flood_cmd = app.add_subcommand("flood", "hold N connections that never finish a TLS handshake");
  unsigned reopen_ms = 100;
  flood_cmd->add_option("--to", to_text)->required();
  flood_cmd->add_option("--count", count)->check(CLI::Range(1u, 200'000u));
  flood_cmd->add_option("--concurrency", concurrency, "connecting at once (default 32)");
  flood_cmd->add_option("--seconds", seconds)->check(CLI::Range(0.1, 3600.0));
  flood_cmd->add_option("--reopen-ms", reopen_ms, "reopen a connection the peer closed after this long (default 100)");
  double max_rate = 0;
  flood_cmd->add_option("--max-rate", max_rate, "new connections per second at most (default 0: no limit)");
  CLI11_PARSE(app, argc, argv);

  raiseFileLimit();
  signal(SIGPIPE, SIG_IGN);
  struct sigaction action{};
  action.sa_handler = onSignal;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);

  if (*serve_cmd) return serve(bind_ip, port);
  auto to = parseAddress(to_text);
  if (!to) {
    std::fprintf(stderr, "connbench: --to wants IPv4:PORT, got %s\n", to_text.c_str());
    return 2;
  }
  if (*rate_cmd) return rate(*to, seconds, std::max(1u, concurrency));
  if (*flood_cmd) return flood(*to, count, std::max(1u, concurrency), seconds, reopen_ms, max_rate);
  return hold(*to, count, std::max(1u, concurrency), seconds, open_timeout);
}
