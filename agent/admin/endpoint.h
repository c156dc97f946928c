// Where an admin server listens or a client connects: a TCP address or a Unix
// socket path, written "127.0.0.1:15000", "http://127.0.0.1:15000" or "unix:/path".
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/error.h"
#include "common/unique_fd.h"

namespace meshlock::admin {

struct Endpoint {
  enum class Kind { kTcp, kUnix };
  Kind kind = Kind::kTcp;
  std::string host;          // kTcp: an IPv4 or IPv6 literal, or "localhost"
  std::uint16_t port = 0;    // kTcp; 0 asks the kernel for a free port when listening
  std::string path;          // kUnix

  static Endpoint tcp(std::string host, std::uint16_t port);
  static Endpoint unixSocket(std::string path);

  // "unix:/run/meshlock/admin.sock", "http://127.0.0.1:15000", "[::1]:15000"
  [[nodiscard]] static Result<Endpoint> parse(std::string_view spec);
  [[nodiscard]] std::string describe() const;
};

// Opens a blocking, close-on-exec stream socket connected to `endpoint`,
// giving up after `timeout`.
[[nodiscard]] Result<UniqueFd> connectTo(const Endpoint& endpoint, std::chrono::milliseconds timeout);

}  // namespace meshlock::admin
