// The network plumbing the gRPC client and server share: BoringSSL bound to a
// non-blocking socket and driven with poll() deadlines, pumping an nghttp2
// session; host:port parsing; PEM certificates. A blocking control-plane path
// on threads of its own, so TLS reads the socket directly (SSL_set_fd)
// instead of the engine's memory BIOs.
#pragma once

#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>
#include <poll.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "common/ssl_errors.h"
#include "common/unique_fd.h"

namespace meshlock::grpc {

using Clock = std::chrono::steady_clock;


enum class Wait { kReady, kTimedOut, kWoken };
// poll() until `fd` is ready for `events`, the deadline passes, or `wakeFd`
// (an eventfd, -1 for none) becomes readable.
[[nodiscard]] Wait waitFor(int fd, short events, Clock::time_point deadline, int wakeFd = -1);

struct HostPort {
  std::string host;  // without brackets
  uint16_t port = 0;
};
// "host:port", "[v6]:port"; port 0 is allowed here (a listener picks one).
[[nodiscard]] Result<HostPort> splitHostPort(std::string_view address);

// Every certificate in PEM text, in order; an error when there is none.
[[nodiscard]] Result<std::vector<bssl::UniquePtr<X509>>> readCertificates(std::string_view pem);

struct Http2SessionDeleter {
  void operator()(nghttp2_session* s) const { nghttp2_session_del(s); }
};
using Http2Session = std::unique_ptr<nghttp2_session, Http2SessionDeleter>;

// A header for nghttp2_submit_*, which copies names and values.
[[nodiscard]] nghttp2_nv http2Header(std::string_view name, std::string_view value);

// One TLS connection over a socket, every wait bounded by a deadline.
class TlsConnection {
 public:
  enum class Io {
    kOk,        // done (handshake finished, everything sent, some bytes read)
    kTimedOut,  // the deadline passed first
    kWoken,     // the wake fd fired (the owner is stopping)
    kClosed,    // the peer closed the connection
    kFailed,    // TLS, HTTP/2 or socket error: see error()
  };

  TlsConnection() = default;
  // `wakeFd` (an eventfd the owner keeps open, or -1) interrupts every wait.
  // Binds `ssl` to the socket through a BIO that writes with MSG_NOSIGNAL: a
  // peer gone away is an error on this connection, never a SIGPIPE.
  TlsConnection(UniqueFd fd, bssl::UniquePtr<SSL> ssl, int wakeFd = -1);

  [[nodiscard]] Io handshake(Clock::time_point deadline);
  // Writes everything the session has queued.
  [[nodiscard]] Io send(nghttp2_session* session, Clock::time_point deadline);
  // Waits for bytes, then feeds what is there into the session.
  [[nodiscard]] Io receive(nghttp2_session* session, Clock::time_point deadline);
  // Waits no more for the wake fd (a last flush while stopping).
  void ignoreWake() { wakeFd_ = -1; }

  [[nodiscard]] SSL* ssl() const { return ssl_.get(); }
  [[nodiscard]] int fd() const { return fd_.get(); }
  // Why the last call failed or saw the peer close.
  [[nodiscard]] const std::string& error() const { return error_; }
  // The protocol ALPN selected ("" when none).
  [[nodiscard]] std::string_view alpn() const;

 private:
  // After SSL_get_error: the wait it asks for, or the final status.
  [[nodiscard]] Io waitForTls(int sslError, Clock::time_point deadline, std::string_view what);

  UniqueFd fd_;
  bssl::UniquePtr<SSL> ssl_;
  int wakeFd_ = -1;
  std::string error_;
};

}  // namespace meshlock::grpc
