// A gRPC server for unary calls over HTTP/2 (nghttp2) and TLS (BoringSSL,
// ALPN h2), for control-plane services such as a CA for node agents. One
// acceptor thread and one thread per connection with deadline-bounded
// blocking I/O; connections capped in total and per source IP; every wait
// has a timeout and every buffer a bound.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <expected>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/error.h"
#include "grpc/framing.h"

namespace meshlock::grpc {

// One unary call as a handler sees it.
struct ServerCall {
  std::string path;  // "/istio.v1.auth.IstioCertificateService/CreateCertificate"
  // The request's non-pseudo headers (lowercase names, as HTTP/2 requires),
  // in the order received, the protocol's own (content-type, te,
  // grpc-timeout, user-agent) included.
  std::vector<std::pair<std::string, std::string>> metadata;
  std::string request;  // the one request message, deframed
  std::optional<std::chrono::steady_clock::time_point> deadline;  // from grpc-timeout
  std::string peer;  // "10.0.0.1:5555", "[::1]:5555"
  // The first value of a header, "" when absent.
  [[nodiscard]] std::string_view header(std::string_view name) const;
};

// The response message, or the status to answer with. Runs on the
// connection's thread; calls on different connections run in parallel.
using UnaryHandler = std::function<std::expected<std::string, GrpcStatus>(const ServerCall&)>;
using HandlerMap = std::map<std::string, UnaryHandler, std::less<>>;  // by :path

struct ServerConfig {
  std::string listenAddress;  // "0.0.0.0:15012", "[::]:15012", "127.0.0.1:0" (0: any free port)
  std::string certChainPem;   // the serving chain, leaf first
  std::string keyPem;         // the leaf's private key
  std::size_t maxConnections = 1024;
  std::size_t maxConnectionsPerSource = 64;            // per peer IP
  std::chrono::milliseconds handshakeTimeout{10000};  // TLS and the HTTP/2 preface complete within this
  std::chrono::milliseconds requestTimeout{30000};    // a stream delivers its whole request within this
  std::chrono::milliseconds idleTimeout{300000};      // no open stream this long: GOAWAY and close
  std::size_t maxMessageBytes = 64 * 1024;            // a request message; larger is RESOURCE_EXHAUSTED
  uint32_t maxConcurrentStreams = 16;                 // per connection (SETTINGS_MAX_CONCURRENT_STREAMS)
};

class UnaryServer {
 public:
  // Listens and serves until destroyed. Fails on a bad address or credentials.
  [[nodiscard]] static Result<std::unique_ptr<UnaryServer>> start(ServerConfig config, HandlerMap handlers);
  // Stops: the listener closed, GOAWAY sent on every connection, every thread
  // joined. Idle connections are left within ~1 s; a handler running is
  // waited for (it should honour ServerCall::deadline).
  ~UnaryServer();
  UnaryServer(const UnaryServer&) = delete;
  UnaryServer& operator=(const UnaryServer&) = delete;

  // The port listened on (the one picked when the address said 0).
  [[nodiscard]] uint16_t port() const;
  // Rotates the serving certificate: handshakes from now on use it,
  // connections already open keep theirs. On error the old one stays.
  [[nodiscard]] Status setCredentials(std::string certChainPem, std::string keyPem);

  struct Stats {
    uint64_t accepted = 0;            // connections taken on
    uint64_t refused_over_cap = 0;    // closed at once: total or per-source cap reached
    uint64_t handshake_failures = 0;  // TLS, ALPN or HTTP/2 preface failed or timed out
    uint64_t calls = 0;               // calls handed to a handler
    uint64_t active_connections = 0;
  };
  [[nodiscard]] Stats stats() const;

 private:
  struct State;  // defined in server.cpp
  explicit UnaryServer(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace meshlock::grpc
