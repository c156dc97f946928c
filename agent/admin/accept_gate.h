// Admission of admin connections at accept(), before civetweb queues them for
// a worker: a total cap and a per-source-IP cap on each listener, and
// SO_PEERCRED on the Unix socket. A connection beyond a cap is answered with a
// short canned 403/503 and closed at once, so it never holds a worker or a
// queue slot and never blocks civetweb's accept thread.
//
// Why at accept() and why this way: Debian's civetweb 1.15 has no accept hook,
// no way to hand it an accepted socket, no Unix-domain listeners (built without
// USE_X_DOM_SOCKET) and its accept thread blocks once the worker queue is full
// (produce_socket), which is exactly what let ~66 slow clients silence 15020.
// So the server owns its listening socket, dup2()s it over the placeholder
// listener civetweb opened, and this file provides the `accept` symbol that
// civetweb's PLT resolves to (the executable's definition comes first in
// symbol lookup). Our accept passes every other descriptor straight to the
// kernel; it gates only listeners registered here, found by socket inode.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

namespace meshlock::admin {

struct GateLimits {
  std::size_t max_connections = 64;  // open connections on this listener, queued or served
  std::size_t per_source = 16;       // open connections from one source IP (TCP only)
  bool unix_socket = false;
  bool unix_require_owner = true;    // SO_PEERCRED: only root and the server's own uid
};

// Why the gate closed a connection without serving it (the `reason` label of
// meshlock_admin_connections_refused_total).
struct GateRefusals {
  std::uint64_t total_cap = 0;
  std::uint64_t source_cap = 0;
  std::uint64_t peer_uid = 0;
  std::uint64_t stopping = 0;
};

class AcceptGate {
 public:
  // Gates accept() on the listening socket `listen_fd` (and every descriptor
  // that refers to the same socket) from now until destruction.
  AcceptGate(GateLimits limits, int listen_fd);
  ~AcceptGate();
  AcceptGate(const AcceptGate&) = delete;
  AcceptGate& operator=(const AcceptGate&) = delete;

  // From the interposed accept(): true to hand `fd` to civetweb (for a Unix
  // peer `address` is rewritten to 0.0.0.0:<ticket>, the key civetweb reports
  // back; `capacity` is the size of the caller's buffer), false after
  // answering and closing it.
  bool admit(int fd, sockaddr* address, socklen_t capacity, socklen_t* length);

  // The connection civetweb reports as remote `address`:`port` was admitted
  // here; for a Unix peer, its uid.
  struct Admitted {
    std::optional<uid_t> unix_uid;
    int fd = -1;  // civetweb's descriptor of it (for FIONREAD; civetweb owns and closes it)
  };
  [[nodiscard]] std::optional<Admitted> admitted(std::string_view address, int port) const;
  // civetweb closed it: its slot is free again. Unknown keys are ignored.
  void release(std::string_view address, int port);

  // Refuse every new connection from now (stop() drains what is in).
  void close();

  [[nodiscard]] GateRefusals refusals() const;
  [[nodiscard]] std::size_t open() const;
  [[nodiscard]] ino_t inode() const { return inode_; }

 private:
  void refuse(int fd, int status, std::string_view reason, std::atomic<std::uint64_t>& counter);

  GateLimits limits_;
  ino_t inode_ = 0;
  mutable std::mutex mutex_;
  bool closed_ = false;
  std::uint16_t next_ticket_ = 1;
  // (IPv4 address in host order, port) -> admitted; for Unix peers (0, ticket).
  std::map<std::pair<std::uint32_t, int>, Admitted> open_;
  std::map<std::uint32_t, std::size_t> per_source_;
  std::atomic<std::uint64_t> total_cap_{0}, source_cap_{0}, peer_uid_{0}, stopping_{0};
};

// The canned answer the gate writes before closing: a complete HTTP/1.1
// response with a {"error": reason} body. Plain function for tests and fuzzing.
[[nodiscard]] std::string cannedResponse(int status, std::string_view reason);

}  // namespace meshlock::admin
