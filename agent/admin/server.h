// The admin HTTP server: civetweb (Debian libcivetweb 1.15, plain HTTP, never
// loads a TLS library) serving a Router on each endpoint. Every endpoint has
// its own budget, so flooding one never starves another: its own civetweb
// context (worker threads, queue), its own AcceptGate (total and per-source
// connection caps, SO_PEERCRED on the Unix socket) and one request per
// connection (keep-alive off). The request head must arrive within
// `request_timeout` of the connection being picked up, however it is
// trickled; a body within another `request_timeout`.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "admin/accept_gate.h"
#include "admin/endpoint.h"
#include "admin/http_message.h"
#include "admin/router.h"
#include "common/error.h"

namespace meshlock::admin {

struct ServerOptions {
  std::vector<Endpoint> listen;          // TCP (IPv4) and/or Unix; at least one; each its own budget
  RequestLimits limits;
  // civetweb checks it after every read of the head, and a read waits at most
  // this long: a head is cut within 2 x request_timeout, body likewise.
  std::chrono::milliseconds request_timeout{5000};
  unsigned workers = 2;                  // per endpoint
  std::size_t max_connections = 64;      // per endpoint, open (queued or served); beyond it: 503 and close
  std::size_t per_source_connections = 16;  // per endpoint and source IP (TCP); beyond it: 503 and close
  mode_t unix_socket_mode = 0600;
  // Unix peers whose uid is neither 0 nor the server's are refused even if the
  // file mode let them in (SO_PEERCRED).
  bool unix_require_owner = true;
  // A live server on the Unix socket path is replaced too (atomically, by
  // rename): a rolling update's new agent takes the path over while the old
  // one still serves the connections it has; the old one's stop() then
  // leaves the new file alone (it unlinks only its own inode).
  bool unix_replace_live = false;
};

// What one endpoint's gate refused, for meshlock_admin_connections_refused_total.
struct EndpointStats {
  Endpoint endpoint;
  GateRefusals refused;
  std::size_t open = 0;
};

class HttpServer {
 public:
  // Binds every endpoint (a Unix socket appears atomically with its final
  // mode; a stale socket file is replaced, a live one is an error) and starts
  // serving `router`.
  [[nodiscard]] static Result<std::unique_ptr<HttpServer>> start(ServerOptions options, Router router);

  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;
  ~HttpServer();  // stop()

  // Stops admitting (new connections get 503), lets requests in progress
  // finish (bounded by 2 x request_timeout), stops civetweb and removes the
  // Unix socket files. Idempotent.
  void stop();

  // The endpoints as bound: a TCP port 0 is replaced by the kernel's choice.
  [[nodiscard]] const std::vector<Endpoint>& endpoints() const;
  [[nodiscard]] std::vector<EndpointStats> stats() const;

  struct Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace meshlock::admin
