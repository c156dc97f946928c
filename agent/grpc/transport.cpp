// TLS on a socket with poll() deadlines, pumping nghttp2 (transport.h).
#include "grpc/transport.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <sys/socket.h>

#include <array>
#include <charconv>
#include <fmt/format.h>

namespace meshlock::grpc {
namespace {

int remainingMs(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  // Rounded up, so a wait never returns just before its deadline and spins.
  return left <= 0 ? 0 : static_cast<int>(std::min<int64_t>(left + 1, 60'000));
}

// The socket BIO's I/O: BoringSSL's own writes with write(), which raises
// SIGPIPE when the peer has gone; send(MSG_NOSIGNAL) returns EPIPE instead.
int socketFd(BIO* bio) { return static_cast<int>(reinterpret_cast<intptr_t>(BIO_get_data(bio))); }

int socketWrite(BIO* bio, const char* data, int length) {
  BIO_clear_retry_flags(bio);
  ssize_t n = ::send(socketFd(bio), data, static_cast<std::size_t>(length), MSG_NOSIGNAL);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) BIO_set_retry_write(bio);
  return static_cast<int>(n);
}

int socketRead(BIO* bio, char* data, int length) {
  BIO_clear_retry_flags(bio);
  ssize_t n = ::recv(socketFd(bio), data, static_cast<std::size_t>(length), 0);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) BIO_set_retry_read(bio);
  return static_cast<int>(n);
}

long socketCtrl(BIO*, int command, long, void*) { return command == BIO_CTRL_FLUSH ? 1 : 0; }

const BIO_METHOD* socketMethod() {
  // Made once, kept for the life of the process.
  static const BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_TYPE_SOCKET, "meshlock socket");
    MESHLOCK_CHECK(m != nullptr && BIO_meth_set_write(m, socketWrite) && BIO_meth_set_read(m, socketRead) &&
                   BIO_meth_set_ctrl(m, socketCtrl));
    return m;
  }();
  return method;
}

}  // namespace

TlsConnection::TlsConnection(UniqueFd fd, bssl::UniquePtr<SSL> ssl, int wakeFd)
    : fd_(std::move(fd)), ssl_(std::move(ssl)), wakeFd_(wakeFd) {
  bssl::UniquePtr<BIO> bio(BIO_new(socketMethod()));
  MESHLOCK_CHECK(bio != nullptr);  // an allocation failure of a few bytes
  BIO_set_data(bio.get(), reinterpret_cast<void*>(static_cast<intptr_t>(fd_.get())));
  BIO_set_init(bio.get(), 1);
  SSL_set_bio(ssl_.get(), bio.get(), bio.get());  // takes the one reference
  (void)bio.release();
}

Wait waitFor(int fd, short events, Clock::time_point deadline, int wakeFd) {
  for (;;) {
    if (Clock::now() >= deadline) return Wait::kTimedOut;
    std::array<pollfd, 2> p = {pollfd{.fd = fd, .events = events, .revents = 0},
                               pollfd{.fd = wakeFd, .events = POLLIN, .revents = 0}};
    int rc = ::poll(p.data(), wakeFd >= 0 ? 2 : 1, remainingMs(deadline));
    if (rc > 0 && wakeFd >= 0 && p[1].revents != 0) return Wait::kWoken;
    if (rc > 0) return Wait::kReady;
    if (rc < 0 && errno != EINTR) return Wait::kReady;  // let the next I/O call report it
  }
}

Result<HostPort> splitHostPort(std::string_view address) {
  HostPort out;
  std::string_view port;
  if (address.starts_with('[')) {
    auto close = address.find(']');
    if (close == std::string_view::npos || close + 1 >= address.size() || address[close + 1] != ':')
      return fail(fmt::format("address \"{}\": expected [ipv6]:port", address));
    out.host = std::string(address.substr(1, close - 1));
    port = address.substr(close + 2);
  } else {
    auto colon = address.rfind(':');
    if (colon == std::string_view::npos || colon == 0)
      return fail(fmt::format("address \"{}\": expected host:port", address));
    out.host = std::string(address.substr(0, colon));
    port = address.substr(colon + 1);
  }
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value > 65535)
    return fail(fmt::format("address \"{}\": bad port \"{}\"", address, port));
  out.port = static_cast<uint16_t>(value);
  return out;
}

Result<std::vector<bssl::UniquePtr<X509>>> readCertificates(std::string_view pem) {
  bssl::UniquePtr<BIO> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return fail(takeSslErrors("BIO_new_mem_buf"));
  std::vector<bssl::UniquePtr<X509>> out;
  while (bssl::UniquePtr<X509> cert{PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)})
    out.push_back(std::move(cert));
  ERR_clear_error();  // the end of the PEM text
  if (out.empty()) return fail("no certificate in the PEM text");
  return out;
}

nghttp2_nv http2Header(std::string_view name, std::string_view value) {
  return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
                    reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(), value.size(),
                    NGHTTP2_NV_FLAG_NONE};
}

std::string_view TlsConnection::alpn() const {
  const uint8_t* alpn = nullptr;
  unsigned length = 0;
  SSL_get0_alpn_selected(ssl_.get(), &alpn, &length);
  return {reinterpret_cast<const char*>(alpn), length};
}

TlsConnection::Io TlsConnection::waitForTls(int sslError, Clock::time_point deadline, std::string_view what) {
  short events = sslError == SSL_ERROR_WANT_READ ? POLLIN : sslError == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
  if (events == 0) {
    // A clean close_notify, or EOF without an error queued: the peer went away.
    if (sslError == SSL_ERROR_ZERO_RETURN || (sslError == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)) {
      ERR_clear_error();
      error_ = "connection closed by the peer";
      return Io::kClosed;
    }
    error_ = takeSslErrors(what);
    return Io::kFailed;
  }
  switch (waitFor(fd_.get(), events, deadline, wakeFd_)) {
    case Wait::kReady: return Io::kOk;
    case Wait::kTimedOut: return Io::kTimedOut;
    case Wait::kWoken: return Io::kWoken;
  }
  MESHLOCK_CHECK(false);
}

TlsConnection::Io TlsConnection::handshake(Clock::time_point deadline) {
  for (;;) {
    int rc = SSL_do_handshake(ssl_.get());
    if (rc == 1) return Io::kOk;
    if (Io io = waitForTls(SSL_get_error(ssl_.get(), rc), deadline, "TLS handshake"); io != Io::kOk) return io;
  }
}

TlsConnection::Io TlsConnection::send(nghttp2_session* session, Clock::time_point deadline) {
  while (nghttp2_session_want_write(session)) {
    const uint8_t* data = nullptr;
    ssize_t n = nghttp2_session_mem_send(session, &data);
    if (n < 0) {
      error_ = fmt::format("http2: {}", nghttp2_strerror(static_cast<int>(n)));
      return Io::kFailed;
    }
    if (n == 0) break;
    std::size_t done = 0;
    while (done < static_cast<std::size_t>(n)) {
      int w = SSL_write(ssl_.get(), data + done, static_cast<int>(static_cast<std::size_t>(n) - done));
      if (w > 0) {
        done += static_cast<std::size_t>(w);
        continue;
      }
      if (Io io = waitForTls(SSL_get_error(ssl_.get(), w), deadline, "TLS write"); io != Io::kOk) return io;
    }
  }
  return Io::kOk;
}

TlsConnection::Io TlsConnection::receive(nghttp2_session* session, Clock::time_point deadline) {
  std::array<uint8_t, 16384> buffer;
  for (;;) {
    int n = SSL_read(ssl_.get(), buffer.data(), static_cast<int>(buffer.size()));
    if (n > 0) {
      ssize_t used = nghttp2_session_mem_recv(session, buffer.data(), static_cast<std::size_t>(n));
      if (used < 0) {
        error_ = fmt::format("http2: {}", nghttp2_strerror(static_cast<int>(used)));
        return Io::kFailed;
      }
      if (SSL_pending(ssl_.get()) > 0) continue;
      return Io::kOk;
    }
    if (Io io = waitForTls(SSL_get_error(ssl_.get(), n), deadline, "TLS read"); io != Io::kOk) return io;
  }
}

}  // namespace meshlock::grpc
