// meshlock-sendzc: does io_uring's zero-copy send (IORING_OP_SEND_ZC, with
// and without a registered buffer) save CPU over a plain send on the path
// the agent's node leg takes here? Issue 17 asks to keep it only where it
// measurably wins. One TCP connection; the sender thread writes CHUNK-byte
// sends through io_uring, QUEUE of them in flight; a receiver thread reads
// and drops. Prints throughput and the process's CPU seconds per GB, and for
// zero copy how many notifications said the kernel copied after all
// (IORING_NOTIF_USAGE_ZC_COPIED: it does for a local peer, loopback or veth,
// net/core/skbuff.c skb_orphan_frags_rx).
//   meshlock-sendzc --mode copy|zc|zc-fixed [--bytes N] [--chunk C] [--queue Q]
//                   [--to IP:PORT (a sink already listening; else loopback)]
#include <arpa/inet.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#ifndef IORING_SEND_ZC_REPORT_USAGE
#define IORING_SEND_ZC_REPORT_USAGE (1U << 3)
#endif
#ifndef IORING_NOTIF_USAGE_ZC_COPIED
#define IORING_NOTIF_USAGE_ZC_COPIED (1U << 31)
#endif

namespace {

double cpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

int die(const char* what) {
  std::perror(what);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"io_uring send vs send_zc on one TCP connection"};
  std::string mode = "copy";
  std::string to;
  uint64_t total = 4ull << 30;
  size_t chunk = 64 * 1024;
  unsigned queue = 8;
  app.add_option("--mode", mode, "copy | zc | zc-fixed")->check(CLI::IsMember({"copy", "zc", "zc-fixed"}));
  app.add_option("--bytes", total, "bytes to send");
  app.add_option("--chunk", chunk, "bytes per send");
  app.add_option("--queue", queue, "sends in flight");
  app.add_option("--to", to, "IP:PORT of a sink that reads and drops (default: one on loopback, in this process)");
  CLI11_PARSE(app, argc, argv);
  if (queue == 0 || chunk == 0) return die("--queue and --chunk must be positive");

  sockaddr_in address{};
  address.sin_family = AF_INET;
  std::thread sink;
  int listener = -1;
  if (to.empty()) {
    listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    if (::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 || ::listen(listener, 1) != 0 ||
        ::getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length) != 0)
      return die("listen");
    sink = std::thread([listener] {
      int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
      std::vector<char> buffer(1 << 20);
      while (fd >= 0 && ::recv(fd, buffer.data(), buffer.size(), 0) > 0) {
      }
      if (fd >= 0) ::close(fd);
    });
  } else {
    const size_t colon = to.rfind(':');
    if (colon == std::string::npos || ::inet_pton(AF_INET, to.substr(0, colon).c_str(), &address.sin_addr) != 1)
      return die("--to IP:PORT");
    address.sin_port = htons(static_cast<uint16_t>(std::stoi(to.substr(colon + 1))));
  }
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) return die("connect");

  io_uring ring;
  if (int err = io_uring_queue_init(queue * 4 + 8, &ring, 0); err < 0) {
    errno = -err;
    return die("io_uring_queue_init");
  }
  // One buffer per slot in flight: a zero-copy send's buffer is the kernel's
  // until its notification arrives.
  std::vector<std::vector<char>> buffers(queue, std::vector<char>(chunk, 'm'));
  std::vector<iovec> registered(queue);
  for (unsigned i = 0; i < queue; ++i) registered[i] = iovec{buffers[i].data(), chunk};
  if (mode == "zc-fixed") {
    if (int err = io_uring_register_buffers(&ring, registered.data(), queue); err < 0) {
      errno = -err;
      return die("io_uring_register_buffers");
    }
  }
  std::vector<bool> busy(queue, false);       // the send or its notification is outstanding
  std::vector<bool> notif_due(queue, false);  // zero copy: the send completed, its notification not yet
  uint64_t submitted = 0, sent = 0, notifications = 0, copied = 0, errors = 0, short_sends = 0;
  auto submit = [&](unsigned slot) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    if (mode == "copy") {
      io_uring_prep_send(sqe, fd, buffers[slot].data(), chunk, MSG_NOSIGNAL | MSG_WAITALL);
    } else if (mode == "zc") {
      io_uring_prep_send_zc(sqe, fd, buffers[slot].data(), chunk, MSG_NOSIGNAL | MSG_WAITALL, IORING_SEND_ZC_REPORT_USAGE);
    } else {
      io_uring_prep_send_zc_fixed(sqe, fd, buffers[slot].data(), chunk, MSG_NOSIGNAL | MSG_WAITALL,
                                  IORING_SEND_ZC_REPORT_USAGE, slot);
    }
    io_uring_sqe_set_data64(sqe, slot);
    busy[slot] = true;
    submitted += chunk;
  };

  const double cpu_before = cpuSeconds();
  const auto started = std::chrono::steady_clock::now();
  for (unsigned slot = 0; slot < queue && submitted < total; ++slot) submit(slot);
  io_uring_submit(&ring);
  // Until every send and notification is back (a send may complete short:
  // then fewer bytes than submitted were sent, and the figures say so).
  auto in_flight = [&] { return std::find(busy.begin(), busy.end(), true) != busy.end(); };
  while ((submitted < total || in_flight()) && errors == 0) {
    io_uring_cqe* cqe = nullptr;
    if (int err = io_uring_wait_cqe(&ring, &cqe); err < 0) {
      errno = -err;
      return die("io_uring_wait_cqe");
    }
    unsigned seen = 0;
    unsigned head;
    io_uring_for_each_cqe(&ring, head, cqe) {
      ++seen;
      const auto slot = static_cast<unsigned>(io_uring_cqe_get_data64(cqe));
      if (cqe->flags & IORING_CQE_F_NOTIF) {
        ++notifications;
        if (static_cast<uint32_t>(cqe->res) & IORING_NOTIF_USAGE_ZC_COPIED) ++copied;
        notif_due[slot] = false;
        busy[slot] = false;
      } else {
        if (cqe->res < 0) {
          ++errors;
          std::fprintf(stderr, "send: %s\n", std::strerror(-cqe->res));
        } else {
          sent += static_cast<uint64_t>(cqe->res);
          if (static_cast<size_t>(cqe->res) < chunk) ++short_sends;
        }
        if (cqe->flags & IORING_CQE_F_MORE) {
          notif_due[slot] = true;  // the buffer stays the kernel's until the notification
        } else {
          busy[slot] = false;
        }
      }
    }
    io_uring_cq_advance(&ring, seen);
    for (unsigned slot = 0; slot < queue && submitted < total; ++slot)
      if (!busy[slot]) submit(slot);
    io_uring_submit(&ring);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  ::shutdown(fd, SHUT_WR);
  if (sink.joinable()) sink.join();
  const double cpu = cpuSeconds() - cpu_before;  // with a local sink, its reading too
  const double gb = static_cast<double>(sent) / 1e9;
  std::printf("mode=%s chunk=%zu queue=%u bytes=%llu seconds=%.2f gbit_s=%.2f cpu_s_per_gb=%.3f notifications=%llu "
              "copied=%llu short_sends=%llu errors=%llu\n",
              mode.c_str(), chunk, queue, static_cast<unsigned long long>(sent), seconds, gb * 8 / seconds, cpu / gb,
              static_cast<unsigned long long>(notifications), static_cast<unsigned long long>(copied),
              static_cast<unsigned long long>(short_sends), static_cast<unsigned long long>(errors));
  io_uring_queue_exit(&ring);
  ::close(fd);
  if (listener >= 0) ::close(listener);
  return errors == 0 ? 0 : 1;
}
