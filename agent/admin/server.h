// The admin HTTP/1.1 server: one accept thread per server, a small bounded pool
// of workers, one request per connection (Connection: close). Every read and
// write has a deadline and every request a size bound, so a slow or hostile
// client costs one worker for at most `request_timeout`.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <vector>

#include "admin/endpoint.h"
#include "admin/http_message.h"
#include "admin/router.h"
#include "common/error.h"

namespace meshlock::admin {

struct ServerOptions {
  std::vector<Endpoint> listen;          // TCP and/or Unix; at least one
  RequestLimits limits;
  std::chrono::milliseconds request_timeout{5000};  // the whole request must arrive within it
  std::chrono::milliseconds write_timeout{5000};
  unsigned workers = 2;
  std::size_t max_pending = 64;          // accepted, waiting for a worker; beyond it: 503
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

class HttpServer {
 public:
  // Binds every endpoint (a Unix socket appears atomically with its final
  // mode; a stale socket file is replaced, a live one is an error) and starts
  // serving `router`.
  [[nodiscard]] static Result<std::unique_ptr<HttpServer>> start(ServerOptions options, Router router);

  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;
  ~HttpServer();  // stop()

  // Stops accepting, lets requests in progress finish (bounded by the
  // timeouts), joins the threads and removes the Unix socket files. Idempotent.
  void stop();

  // The endpoints as bound: a TCP port 0 is replaced by the kernel's choice.
  [[nodiscard]] const std::vector<Endpoint>& endpoints() const;

  struct Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace meshlock::admin
