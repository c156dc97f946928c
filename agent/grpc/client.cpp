// gRPC unary calls over nghttp2 and BoringSSL (client.h). The TLS session is
// bound to the socket (transport.h): this is a blocking control-plane client
// on a worker thread, so the engine's memory-BIO rule has no reason to apply;
// every wait is a poll() bounded by the call's deadline.
#include "grpc/client.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <charconv>
#include <cstring>
#include <fmt/format.h>
#include <map>
#include <optional>

#include "common/unique_fd.h"
#include "grpc/transport.h"

namespace meshlock::grpc {
namespace {

constexpr std::size_t kMaxHeaderBytes = 64 * 1024;

GrpcStatus unavailable(std::string message) { return {StatusCode::kUnavailable, std::move(message)}; }

bool isIpAddress(const std::string& host) {
  in6_addr v6{};
  in_addr v4{};
  return ::inet_pton(AF_INET, host.c_str(), &v4) == 1 || ::inet_pton(AF_INET6, host.c_str(), &v6) == 1;
}

StatusCode statusForReset(uint32_t code) {
  switch (code) {
    case NGHTTP2_REFUSED_STREAM: return StatusCode::kUnavailable;
    case NGHTTP2_CANCEL: return StatusCode::kCancelled;
    case NGHTTP2_ENHANCE_YOUR_CALM: return StatusCode::kResourceExhausted;
    case NGHTTP2_INADEQUATE_SECURITY: return StatusCode::kPermissionDenied;
    default: return StatusCode::kInternal;
  }
}

}  // namespace

std::string Endpoint::authority() const {
  return host.find(':') != std::string::npos ? fmt::format("[{}]:{}", host, port) : fmt::format("{}:{}", host, port);
}

Result<Endpoint> parseEndpoint(std::string_view address) {
  const std::string original(address);
  if (address.starts_with("https://")) address.remove_prefix(8);
  if (address.ends_with('/')) address.remove_suffix(1);
  auto split = splitHostPort(address);
  if (!split) return std::unexpected(split.error());
  if (split->port == 0) return fail(fmt::format("address \"{}\": bad port \"0\"", original));
  return Endpoint{.host = std::move(split->host), .port = split->port};
}

// One HTTP/2 connection and the one stream in flight on it.
struct UnaryChannel::Connection {
  TlsConnection tls;
  Http2Session session;
  bool broken = false;      // an I/O or protocol error: not reusable
  bool goaway = false;      // the server asked us to go
  std::string ioError;

  struct Stream {
    int32_t id = -1;
    std::string body;  // the framed request
    std::size_t sent = 0;
    std::map<std::string, std::string> headers;
    std::map<std::string, std::string> trailers;
    std::size_t headerBytes = 0;
    bool headersDone = false;
    bool closed = false;
    uint32_t resetCode = 0;
    MessageReader reader;
    std::vector<std::string> messages;
    std::optional<GrpcStatus> localError;  // set by a callback
    explicit Stream(std::size_t max) : reader(max) {}
  };
  std::unique_ptr<Stream> stream;

  // False on an I/O error (then broken) or when the deadline passed.
  bool settle(TlsConnection::Io io) {
    if (io == TlsConnection::Io::kOk) return true;
    if (io != TlsConnection::Io::kTimedOut) {
      ioError = io == TlsConnection::Io::kClosed ? "connection closed by the server" : tls.error();
      broken = true;
    }
    return false;
  }
  // Writes everything nghttp2 has to send.
  bool flush(Clock::time_point deadline) { return settle(tls.send(session.get(), deadline)); }
  // Reads what is there (waiting up to the deadline) into nghttp2.
  bool receive(Clock::time_point deadline) { return settle(tls.receive(session.get(), deadline)); }
};

namespace {

using Connection = UnaryChannel::Connection;

int onHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name, size_t namelen, const uint8_t* value,
             size_t valuelen, uint8_t, void* user) {
  auto* c = static_cast<Connection*>(user);
  if (!c->stream || frame->hd.type != NGHTTP2_HEADERS || frame->hd.stream_id != c->stream->id) return 0;
  auto& s = *c->stream;
  s.headerBytes += namelen + valuelen;
  if (s.headerBytes > kMaxHeaderBytes) {
    s.localError = GrpcStatus{StatusCode::kInternal, "response headers exceed 64 KiB"};
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;  // resets the stream
  }
  std::string key(reinterpret_cast<const char*>(name), namelen);
  std::string text(reinterpret_cast<const char*>(value), valuelen);
  (s.headersDone ? s.trailers : s.headers)[std::move(key)] = std::move(text);
  return 0;
}

int onFrameReceived(nghttp2_session*, const nghttp2_frame* frame, void* user) {
  auto* c = static_cast<Connection*>(user);
  if (frame->hd.type == NGHTTP2_GOAWAY) c->goaway = true;
  if (c->stream && frame->hd.type == NGHTTP2_HEADERS && frame->hd.stream_id == c->stream->id &&
      (frame->hd.flags & NGHTTP2_FLAG_END_HEADERS))
    c->stream->headersDone = true;
  return 0;
}

int onData(nghttp2_session*, uint8_t, int32_t stream_id, const uint8_t* data, size_t len, void* user) {
  auto* c = static_cast<Connection*>(user);
  if (!c->stream || stream_id != c->stream->id) return 0;
  auto& s = *c->stream;
  if (auto fed = s.reader.feed({reinterpret_cast<const char*>(data), len}); !fed) {
    s.localError = GrpcStatus{StatusCode::kResourceExhausted, fed.error().describe()};
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  }
  while (auto message = s.reader.next()) s.messages.push_back(std::move(*message));
  return 0;
}

int onStreamClose(nghttp2_session*, int32_t stream_id, uint32_t error_code, void* user) {
  auto* c = static_cast<Connection*>(user);
  if (c->stream && stream_id == c->stream->id) {
    c->stream->closed = true;
    c->stream->resetCode = error_code;
  }
  return 0;
}

ssize_t readBody(nghttp2_session*, int32_t, uint8_t* buf, size_t length, uint32_t* flags, nghttp2_data_source* source,
                 void*) {
  auto* s = static_cast<Connection::Stream*>(source->ptr);
  const std::size_t n = std::min(length, s->body.size() - s->sent);
  std::memcpy(buf, s->body.data() + s->sent, n);
  s->sent += n;
  if (s->sent == s->body.size()) *flags |= NGHTTP2_DATA_FLAG_EOF;
  return static_cast<ssize_t>(n);
}

// TCP connect to the first address that answers, within the deadline.
Result<UniqueFd> connectTcp(const Endpoint& endpoint, Clock::time_point deadline) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(endpoint.port);
  if (int rc = ::getaddrinfo(endpoint.host.c_str(), port.c_str(), &hints, &found); rc != 0)
    return fail(fmt::format("resolving {}: {}", endpoint.host, ::gai_strerror(rc)));
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> list(found, ::freeaddrinfo);
  std::string lastError = "no address";
  for (addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
    UniqueFd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
    if (!fd) return failErrno("socket");
    int one = 1;
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (::connect(fd.get(), ai->ai_addr, ai->ai_addrlen) == 0) return fd;
    if (errno != EINPROGRESS) {
      lastError = std::strerror(errno);
      continue;
    }
    if (waitFor(fd.get(), POLLOUT, deadline) != Wait::kReady) return fail(fmt::format("connecting to {}: timed out", endpoint.authority()));
    int error = 0;
    socklen_t len = sizeof(error);
    ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &error, &len);
    if (error == 0) return fd;
    lastError = std::strerror(error);
  }
  return fail(fmt::format("connecting to {}: {}", endpoint.authority(), lastError));
}

}  // namespace

UnaryChannel::UnaryChannel(ChannelConfig config) : config_(std::move(config)) {}
UnaryChannel::~UnaryChannel() = default;

Result<std::unique_ptr<UnaryChannel>> UnaryChannel::create(ChannelConfig config) {
  if (config.endpoint.host.empty() || config.endpoint.port == 0) return fail("grpc channel: no address");
  if (config.serverName.empty()) config.serverName = config.endpoint.host;
  std::unique_ptr<UnaryChannel> channel(new UnaryChannel(std::move(config)));
  const ChannelConfig& c = channel->config_;
  channel->ctx_.reset(SSL_CTX_new(TLS_method()));
  SSL_CTX* ctx = channel->ctx_.get();
  if (ctx == nullptr) return fail(takeSslErrors("SSL_CTX_new"));
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  static const uint8_t kAlpn[] = {2, 'h', '2'};
  if (SSL_CTX_set_alpn_protos(ctx, kAlpn, sizeof(kAlpn)) != 0) return fail(takeSslErrors("ALPN"));
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  // The roots: every certificate in the PEM text.
  auto roots = readCertificates(c.rootsPem);
  if (!roots)
    return fail(fmt::format("grpc channel: no certificate in the roots{}",
                            c.rootsOrigin.empty() ? "" : " from " + c.rootsOrigin));
  X509_STORE* store = SSL_CTX_get_cert_store(ctx);
  for (const auto& cert : *roots)
    if (!X509_STORE_add_cert(store, cert.get())) return fail(takeSslErrors("grpc channel: adding a root"));
  X509_VERIFY_PARAM* param = SSL_CTX_get0_param(ctx);
  int set = isIpAddress(c.serverName) ? X509_VERIFY_PARAM_set1_ip_asc(param, c.serverName.c_str())
                                      : X509_VERIFY_PARAM_set1_host(param, c.serverName.data(), c.serverName.size());
  if (set != 1) return fail(takeSslErrors("grpc channel: server name " + c.serverName));
  return channel;
}

CallResult UnaryChannel::call(std::string_view path, std::string_view request, const CallOptions& options) {
  const auto deadline = Clock::now() + options.timeout;
  bool reused = false;
  CallResult result = callOnce(path, request, options, deadline, reused);
  // A reused connection the server closed while idle: once more on a new one.
  if (!result && reused && result.error().code == StatusCode::kUnavailable && Clock::now() < deadline)
    result = callOnce(path, request, options, deadline, reused);
  return result;
}

CallResult UnaryChannel::callOnce(std::string_view path, std::string_view request, const CallOptions& options,
                                  Clock::time_point deadline, bool& reused) {
  const std::string authority = config_.endpoint.authority();
  auto deadlineExceeded = [&] {
    connection_.reset();  // a stream left mid-way: start afresh next time
    return std::unexpected(GrpcStatus{StatusCode::kDeadlineExceeded,
                                      fmt::format("no answer from {} within {} ms", authority, options.timeout.count())});
  };
  reused = connection_ != nullptr;
  if (!connection_) {
    const auto connectDeadline = std::min(deadline, Clock::now() + config_.connectTimeout);
    auto fd = connectTcp(config_.endpoint, connectDeadline);
    if (!fd) {
      if (Clock::now() >= deadline) return deadlineExceeded();
      return std::unexpected(unavailable(fd.error().describe()));
    }
    bssl::UniquePtr<SSL> ssl(SSL_new(ctx_.get()));
    if (!ssl) return std::unexpected(GrpcStatus{StatusCode::kInternal, takeSslErrors("SSL_new")});
    if (!isIpAddress(config_.serverName)) SSL_set_tlsext_host_name(ssl.get(), config_.serverName.c_str());
    SSL_set_connect_state(ssl.get());
    auto c = std::make_unique<Connection>();
    c->tls = TlsConnection(std::move(*fd), std::move(ssl));
    switch (c->tls.handshake(connectDeadline)) {
      case TlsConnection::Io::kOk: break;
      case TlsConnection::Io::kTimedOut:
      case TlsConnection::Io::kWoken:
        if (Clock::now() >= deadline) return deadlineExceeded();
        return std::unexpected(unavailable(fmt::format("TLS handshake with {}: timed out", authority)));
      case TlsConnection::Io::kClosed:
      case TlsConnection::Io::kFailed: {
        long verify = SSL_get_verify_result(c->tls.ssl());
        return std::unexpected(unavailable(
            verify != X509_V_OK ? fmt::format("certificate of {} not trusted (expected name {}): {}", authority,
                                              config_.serverName, X509_verify_cert_error_string(verify))
                                : fmt::format("{}: {}", authority, c->tls.error())));
      }
    }
    if (c->tls.alpn() != "h2")
      return std::unexpected(unavailable(fmt::format("{} did not select HTTP/2 (ALPN h2)", authority)));

    nghttp2_session_callbacks* callbacks = nullptr;
    nghttp2_session_callbacks_new(&callbacks);
    nghttp2_session_callbacks_set_on_header_callback(callbacks, onHeader);
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, onFrameReceived);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, onData);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, onStreamClose);
    nghttp2_session* session = nullptr;
    int rc = nghttp2_session_client_new(&session, callbacks, c.get());
    nghttp2_session_callbacks_del(callbacks);
    if (rc != 0) return std::unexpected(GrpcStatus{StatusCode::kInternal, nghttp2_strerror(rc)});
    c->session.reset(session);
    nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                         {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, kMaxHeaderBytes}};
    nghttp2_submit_settings(session, NGHTTP2_FLAG_NONE, settings, std::size(settings));
    connection_ = std::move(c);
    ++connectionsOpened_;
  }

  Connection& c = *connection_;
  c.stream = std::make_unique<Connection::Stream>(config_.maxResponseBytes);
  Connection::Stream& s = *c.stream;
  s.body = frameMessage(request);
  const std::string timeout = encodeTimeout(std::chrono::duration_cast<std::chrono::nanoseconds>(
      std::max(deadline - Clock::now(), Clock::duration(std::chrono::milliseconds(1)))));
  const std::string pathText(path);
  const std::vector<std::pair<std::string, std::string>> fixed = {
      {":method", "POST"},           {":scheme", "https"},      {":path", pathText},
      {":authority", authority},     {"content-type", "application/grpc+proto"},
      {"te", "trailers"},            {"grpc-timeout", timeout}, {"user-agent", config_.userAgent}};
  std::vector<nghttp2_nv> headers;
  for (const auto& [name, value] : fixed) headers.push_back(http2Header(name, value));
  for (const auto& [name, value] : options.metadata) headers.push_back(http2Header(name, value));
  nghttp2_data_provider body{};
  body.source.ptr = &s;
  body.read_callback = readBody;
  s.id = nghttp2_submit_request(c.session.get(), nullptr, headers.data(), headers.size(), &body, nullptr);
  if (s.id < 0) {
    connection_.reset();
    return std::unexpected(unavailable(fmt::format("http2: {}", nghttp2_strerror(s.id))));
  }

  while (!s.closed) {
    if (!c.flush(deadline) || (!s.closed && !c.receive(deadline))) {
      if (c.broken) {
        std::string why = fmt::format("{}: {}", authority, c.ioError);
        connection_.reset();
        return std::unexpected(unavailable(std::move(why)));
      }
      return deadlineExceeded();
    }
    if (!s.closed && !nghttp2_session_want_read(c.session.get()) && !nghttp2_session_want_write(c.session.get())) {
      connection_.reset();
      return std::unexpected(unavailable(fmt::format("{}: connection ended mid-call", authority)));
    }
  }
  (void)c.flush(deadline);  // WINDOW_UPDATE and the like; not needed for the answer

  auto finish = [&]() -> CallResult {
    if (s.localError) return std::unexpected(*s.localError);
    auto value = [](const std::map<std::string, std::string>& m, const std::string& key) -> const std::string* {
      auto it = m.find(key);
      return it == m.end() ? nullptr : &it->second;
    };
    const std::string* httpStatus = value(s.headers, ":status");
    if (httpStatus == nullptr) {
      return std::unexpected(GrpcStatus{statusForReset(s.resetCode),
                                        fmt::format("stream reset by {} (HTTP/2 error {})", authority,
                                                    nghttp2_http2_strerror(s.resetCode))});
    }
    if (*httpStatus != "200") {
      int code = 0;
      std::from_chars(httpStatus->data(), httpStatus->data() + httpStatus->size(), code);
      return std::unexpected(GrpcStatus{statusForHttp(code), fmt::format("HTTP status {} from {}", *httpStatus, authority)});
    }
    const std::string* contentType = value(s.headers, "content-type");
    if (contentType == nullptr || !contentType->starts_with("application/grpc"))
      return std::unexpected(GrpcStatus{StatusCode::kUnknown, fmt::format("{} answered content-type \"{}\", not gRPC",
                                                                          authority, contentType ? *contentType : "")});
    // Trailers, or the headers of a trailers-only answer.
    const std::string* code = value(s.trailers, "grpc-status");
    const std::string* message = value(s.trailers, "grpc-message");
    if (code == nullptr) {
      code = value(s.headers, "grpc-status");
      message = value(s.headers, "grpc-message");
    }
    if (code == nullptr) {
      return std::unexpected(GrpcStatus{s.resetCode != 0 ? statusForReset(s.resetCode) : StatusCode::kInternal,
                                        fmt::format("{} ended the call without grpc-status", authority)});
    }
    GrpcStatus status{parseStatusCode(*code), message ? percentDecode(*message) : std::string()};
    if (!status.ok()) return std::unexpected(std::move(status));
    if (s.reader.midMessage()) return std::unexpected(GrpcStatus{StatusCode::kInternal, "response ends mid-message"});
    if (s.messages.size() != 1)
      return std::unexpected(GrpcStatus{StatusCode::kInternal,
                                        fmt::format("unary call answered with {} messages", s.messages.size())});
    return std::move(s.messages.front());
  };
  CallResult result = finish();
  c.stream.reset();
  if (c.goaway || c.broken) connection_.reset();
  return result;
}

}  // namespace meshlock::grpc
