// A gRPC client for unary calls over HTTP/2 (nghttp2) and TLS (BoringSSL,
// ALPN h2), blocking, for control-plane calls made from a worker thread
// (never from an engine loop). One connection, reused by consecutive calls,
// reopened when it fails; one call at a time per channel.
#pragma once

#include <openssl/ssl.h>

#include <chrono>
#include <cstdint>
#include <expected>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/error.h"
#include "grpc/framing.h"

namespace meshlock::grpc {

struct Endpoint {
  std::string host;  // a DNS name or an IP address (without brackets)
  uint16_t port = 0;
  [[nodiscard]] std::string authority() const;  // host:port, IPv6 in brackets
};
// "host:port", "https://host:port", "[::1]:15012". A port is required.
[[nodiscard]] Result<Endpoint> parseEndpoint(std::string_view address);

struct ChannelConfig {
  Endpoint endpoint;
  // The name the server's certificate must carry (DNS or IP SAN) and the SNI;
  // empty: endpoint.host (ztunnel's alt_hostname for the CA).
  std::string serverName;
  std::string rootsPem;     // the CAs the server's chain must lead to
  std::string rootsOrigin;  // names rootsPem in errors (a file path)
  std::chrono::milliseconds connectTimeout{5000};
  std::size_t maxResponseBytes = kDefaultMaxMessageBytes;
  std::string userAgent = "meshlock-grpc";
};

struct CallOptions {
  // Custom metadata (lowercase names, e.g. "authorization"); the protocol's
  // own headers (:path, content-type, te, grpc-timeout) are added by call().
  std::vector<std::pair<std::string, std::string>> metadata;
  std::chrono::milliseconds timeout{10000};  // sent as grpc-timeout and enforced here
};

// The response message, or the call's status. Failures of the transport are
// UNAVAILABLE (connect, TLS, reset) and a passed deadline is
// DEADLINE_EXCEEDED, as gRPC libraries report them.
using CallResult = std::expected<std::string, GrpcStatus>;

class UnaryChannel {
 public:
  // Checks the configuration and builds the TLS context; connects on the first call.
  [[nodiscard]] static Result<std::unique_ptr<UnaryChannel>> create(ChannelConfig config);
  ~UnaryChannel();
  UnaryChannel(const UnaryChannel&) = delete;
  UnaryChannel& operator=(const UnaryChannel&) = delete;

  // POST `path` ("/package.Service/Method") with one request message.
  [[nodiscard]] CallResult call(std::string_view path, std::string_view request, const CallOptions& options);

  [[nodiscard]] const ChannelConfig& config() const { return config_; }
  [[nodiscard]] uint64_t connectionsOpened() const { return connectionsOpened_; }

 public:
  struct Connection;  // defined in client.cpp

 private:
  explicit UnaryChannel(ChannelConfig config);
  CallResult callOnce(std::string_view path, std::string_view request, const CallOptions& options,
                      std::chrono::steady_clock::time_point deadline, bool& reused);

  ChannelConfig config_;
  bssl::UniquePtr<SSL_CTX> ctx_;
  std::unique_ptr<Connection> connection_;
  uint64_t connectionsOpened_ = 0;
};

}  // namespace meshlock::grpc
