// One accepted connection of a UnaryServer (server.h): the TLS handshake,
// the HTTP/2 session, each stream checked as a gRPC unary call, handlers run
// and answers sent. Internal to agent/grpc.
#pragma once

#include <openssl/ssl.h>

#include <atomic>
#include <cstdint>
#include <string>

#include "common/unique_fd.h"
#include "grpc/server.h"

namespace meshlock::grpc {

struct ServerCounters {
  std::atomic<uint64_t> accepted{0};
  std::atomic<uint64_t> refusedOverCap{0};
  std::atomic<uint64_t> handshakeFailures{0};
  std::atomic<uint64_t> calls{0};
  std::atomic<uint64_t> activeConnections{0};
};

// What a connection needs from its server, which outlives every connection.
struct ConnectionContext {
  const ServerConfig& config;
  const HandlerMap& handlers;
  ServerCounters& counters;
  int wakeFd;  // an eventfd, readable once the server stops
};

// Serves one connection (`ssl` in accept state, not yet bound to `fd`) until
// it ends; the socket is closed on return.
void serveConnection(const ConnectionContext& context, UniqueFd fd, bssl::UniquePtr<SSL> ssl, std::string peer);

}  // namespace meshlock::grpc
