// One gRPC server connection (server_connection.h). Which answer each
// malformed request gets follows grpc/grpc doc/PROTOCOL-HTTP2.md and
// doc/compression.md; where they leave it open, grpc-go's or grpc-java's
// server, as named at each place.
#include "grpc/server_connection.h"

#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <fmt/format.h>
#include <map>

#include "grpc/transport.h"

namespace meshlock::grpc {
namespace {

// Request headers, counted as SETTINGS_MAX_HEADER_LIST_SIZE counts them
// (name + value + 32 each). PROTOCOL-HTTP2.md suggests 8 KiB; Istio's
// bearer tokens alone can take a few, hence twice that.
constexpr std::size_t kMaxRequestHeaderBytes = 16 * 1024;
// The last flush (GOAWAY) when stopping or idle.
constexpr auto kGoodbyeTimeout = std::chrono::milliseconds(500);

constexpr std::string_view kGrpcContentType = "application/grpc";

// "application/grpc", "application/grpc+proto", "application/grpc;..." but
// not "application/grpc-web" (grpc-go's server draws the same line).
bool isGrpcContentType(std::string_view type) {
  if (!type.starts_with(kGrpcContentType)) return false;
  return type.size() == kGrpcContentType.size() || type[kGrpcContentType.size()] == '+' ||
         type[kGrpcContentType.size()] == ';';
}

struct Stream {
  Stream(int32_t streamId, std::size_t maxMessageBytes, Clock::time_point requestDeadline)
      : id(streamId), reader(maxMessageBytes), deadline(requestDeadline) {}
  int32_t id;
  MessageReader reader;
  // Before the answer: the whole request by then. After: the answer taken by then.
  Clock::time_point deadline;
  ServerCall call;
  std::string method;
  std::size_t headerBytes = 0;
  bool headersTooLarge = false;
  std::size_t messages = 0;
  bool remoteEnded = false;  // END_STREAM received
  bool answered = false;     // a response or a status submitted
  bool reset = false;        // RST_STREAM submitted; waiting for nghttp2 to close it
  std::string response;      // the framed response message
  std::size_t sent = 0;
};

class Connection {
 public:
  Connection(const ConnectionContext& context, TlsConnection tls, std::string peer)
      : context_(context), config_(context.config), tls_(std::move(tls)), peer_(std::move(peer)) {}
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  void run();

 private:
  // Handshake and preface; false when the connection is to be dropped.
  bool open();
  bool createSession();
  void handshakeFailed(std::string_view why);

  void checkRequest(Stream& s);
  void endOfRequest(Stream& s);
  void onMessageBytes(Stream& s, std::string_view bytes);
  void runReadyCalls();
  // Handles what expired; false when the connection is to close.
  bool expire(Clock::time_point now);
  [[nodiscard]] Clock::time_point nextDeadline() const;

  void answerStatus(Stream& s, const GrpcStatus& status,
                    std::initializer_list<std::pair<std::string_view, std::string_view>> extra = {});
  void answerHttp(Stream& s, int httpStatus, const GrpcStatus& status);
  void answerMessage(Stream& s, std::string_view message);
  void submitted(Stream& s);
  void resetStream(Stream& s, uint32_t code);
  void goodbye();

  static int onBeginHeaders(nghttp2_session*, const nghttp2_frame* frame, void* user);
  static int onHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name, size_t namelen,
                      const uint8_t* value, size_t valuelen, uint8_t flags, void* user);
  static int onFrameReceived(nghttp2_session*, const nghttp2_frame* frame, void* user);
  static int onDataChunk(nghttp2_session*, uint8_t flags, int32_t stream_id, const uint8_t* data, size_t len,
                         void* user);
  static int onFrameSent(nghttp2_session*, const nghttp2_frame* frame, void* user);
  static int onStreamClose(nghttp2_session*, int32_t stream_id, uint32_t error_code, void* user);
  static ssize_t readResponse(nghttp2_session* session, int32_t stream_id, uint8_t* buf, size_t length,
                              uint32_t* flags, nghttp2_data_source* source, void* user);

  Stream* find(int32_t id) {
    auto it = streams_.find(id);
    return it == streams_.end() ? nullptr : &it->second;
  }

  const ConnectionContext& context_;
  const ServerConfig& config_;
  TlsConnection tls_;
  std::string peer_;
  Http2Session session_;
  std::map<int32_t, Stream> streams_;  // at most maxConcurrentStreams: nghttp2 refuses more
  std::deque<int32_t> ready_;          // streams whose request is complete, in arrival order
  Clock::time_point handshakeDeadline_;
  Clock::time_point idleSince_;
  bool prefaceSeen_ = false;
};

void Connection::handshakeFailed(std::string_view why) {
  ++context_.counters.handshakeFailures;
  spdlog::debug("grpc server: connection from {} dropped: {}", peer_, why);
}

bool Connection::open() {
  handshakeDeadline_ = Clock::now() + config_.handshakeTimeout;
  switch (tls_.handshake(handshakeDeadline_)) {
    case TlsConnection::Io::kOk: break;
    case TlsConnection::Io::kWoken: return false;
    case TlsConnection::Io::kTimedOut:
      handshakeFailed(fmt::format("no TLS handshake within {} ms", config_.handshakeTimeout.count()));
      return false;
    case TlsConnection::Io::kClosed:
    case TlsConnection::Io::kFailed: handshakeFailed(tls_.error()); return false;
  }
  // The ALPN callback refused clients that offered protocols without h2;
  // one that offered none at all gets here.
  if (tls_.alpn() != "h2") {
    handshakeFailed("the client did not negotiate HTTP/2 (ALPN h2)");
    return false;
  }
  return createSession();
}

bool Connection::createSession() {
  nghttp2_session_callbacks* callbacks = nullptr;
  if (nghttp2_session_callbacks_new(&callbacks) != 0) return false;
  nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, onBeginHeaders);
  nghttp2_session_callbacks_set_on_header_callback(callbacks, onHeader);
  nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, onFrameReceived);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, onDataChunk);
  nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, onFrameSent);
  nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, onStreamClose);
  nghttp2_session* session = nullptr;
  int rc = nghttp2_session_server_new(&session, callbacks, this);
  nghttp2_session_callbacks_del(callbacks);
  if (rc != 0) {
    spdlog::error("grpc server: nghttp2 session: {}", nghttp2_strerror(rc));
    return false;
  }
  session_.reset(session);
  const nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, config_.maxConcurrentStreams},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, static_cast<uint32_t>(kMaxRequestHeaderBytes)}};
  // Applies at once: nghttp2 refuses streams over the limit before the client's ACK.
  return nghttp2_submit_settings(session, NGHTTP2_FLAG_NONE, settings, std::size(settings)) == 0;
}

void Connection::run() {
  if (!open()) return;
  idleSince_ = Clock::now();
  nghttp2_session* session = session_.get();
  for (;;) {
    runReadyCalls();
    // Checked on every turn, not only when a read times out: a peer that
    // trickles bytes (PINGs, one byte of DATA at a time) must not hold a
    // stream or an idle connection open past its bound.
    if (Clock::now() >= nextDeadline() && !expire(Clock::now())) return;
    // A peer that does not read its answers gets requestTimeout to start.
    switch (tls_.send(session, Clock::now() + config_.requestTimeout)) {
      case TlsConnection::Io::kOk: break;
      case TlsConnection::Io::kWoken: goodbye(); return;
      case TlsConnection::Io::kTimedOut:
        spdlog::debug("grpc server: {} does not read its answers; closing", peer_);
        return;
      case TlsConnection::Io::kClosed:
      case TlsConnection::Io::kFailed: return;
    }
    if (!nghttp2_session_want_read(session) && !nghttp2_session_want_write(session)) return;  // GOAWAY both ways
    switch (tls_.receive(session, nextDeadline())) {
      case TlsConnection::Io::kOk:
      case TlsConnection::Io::kTimedOut: break;  // expired at the top of the loop
      case TlsConnection::Io::kWoken: goodbye(); return;
      case TlsConnection::Io::kClosed:
        if (!prefaceSeen_) handshakeFailed("closed before the HTTP/2 preface");
        return;
      case TlsConnection::Io::kFailed:
        if (!prefaceSeen_) handshakeFailed(tls_.error());
        spdlog::debug("grpc server: connection from {}: {}", peer_, tls_.error());
        goodbye();  // nghttp2 queues a GOAWAY naming a protocol error
        return;
    }
  }
}

Clock::time_point Connection::nextDeadline() const {
  if (!prefaceSeen_) return handshakeDeadline_;
  if (streams_.empty()) return idleSince_ + config_.idleTimeout;
  Clock::time_point next = Clock::time_point::max();
  for (const auto& [id, s] : streams_) next = std::min(next, s.deadline);
  return next;
}

bool Connection::expire(Clock::time_point now) {
  if (!prefaceSeen_) {
    handshakeFailed(fmt::format("no HTTP/2 preface within {} ms", config_.handshakeTimeout.count()));
    return false;
  }
  if (streams_.empty()) {
    if (now < idleSince_ + config_.idleTimeout) return true;
    spdlog::debug("grpc server: connection from {} idle for {} ms; closing", peer_, config_.idleTimeout.count());
    goodbye();
    return false;
  }
  for (auto it = streams_.begin(); it != streams_.end();) {
    Stream& s = it->second;
    if (nghttp2_session_find_stream(session_.get(), s.id) == nullptr) {  // never opened (refused)
      it = streams_.erase(it);
      continue;
    }
    if (now >= s.deadline) {
      if (!s.answered && !(s.call.deadline && now >= *s.call.deadline)) {
        answerStatus(s, {StatusCode::kDeadlineExceeded,
                         fmt::format("the request did not arrive within {} ms", config_.requestTimeout.count())});
      } else {
        // The caller's deadline passed (PROTOCOL-HTTP2.md "Client Cancellation": the
        // server cancels with RST_STREAM CANCEL), or the answer was never taken.
        resetStream(s, NGHTTP2_CANCEL);
      }
    }
    ++it;
  }
  if (streams_.empty()) idleSince_ = now;
  return true;
}

// Request-Headers are complete: is this a gRPC call we serve?
void Connection::checkRequest(Stream& s) {
  if (s.headersTooLarge) {
    answerStatus(s, {StatusCode::kResourceExhausted,
                     fmt::format("request headers exceed {} bytes", kMaxRequestHeaderBytes)});
    return;
  }
  // PROTOCOL-HTTP2.md: Method → ":method POST"; grpc-go answers others with 405.
  if (s.method != "POST") {
    answerHttp(s, 405, {StatusCode::kInternal, fmt::format("method {} is not POST", s.method)});
    return;
  }
  // PROTOCOL-HTTP2.md: "If Content-Type does not begin with "application/grpc",
  // gRPC servers SHOULD respond with HTTP status of 415".
  if (std::string_view type = s.call.header("content-type"); !isGrpcContentType(type)) {
    answerHttp(s, 415, {StatusCode::kInternal, fmt::format("content-type \"{}\" is not gRPC", type)});
    return;
  }
  // A malformed grpc-timeout is INTERNAL, as grpc-go's server answers it
  // (gRPC C-core ignores it instead; a typo must not mean "no deadline").
  auto timeoutHeader = std::find_if(s.call.metadata.begin(), s.call.metadata.end(),
                                    [](const auto& header) { return header.first == "grpc-timeout"; });
  if (timeoutHeader != s.call.metadata.end()) {
    auto timeout = parseTimeout(timeoutHeader->second);
    if (!timeout) {
      answerStatus(s, {StatusCode::kInternal, "malformed " + timeout.error().describe()});
      return;
    }
    s.call.deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(*timeout);
    s.deadline = std::min(s.deadline, *s.call.deadline);
  }
  if (context_.handlers.find(s.call.path) == context_.handlers.end()) {
    answerStatus(s, {StatusCode::kUnimplemented, fmt::format("unknown method {}", s.call.path)});
    return;
  }
}

void Connection::onMessageBytes(Stream& s, std::string_view bytes) {
  if (auto fed = s.reader.feed(bytes); !fed) {
    switch (s.reader.failure()) {
      case MessageReader::Failure::kTooLarge:
        answerStatus(s, {StatusCode::kResourceExhausted,
                         fmt::format("request message larger than {} bytes", config_.maxMessageBytes)});
        return;
      case MessageReader::Failure::kCompressed: {
        // compression.md: flag 1 without a grpc-encoding other than identity is
        // INTERNAL; an encoding we do not support is UNIMPLEMENTED with
        // grpc-accept-encoding naming what we take.
        std::string_view encoding = s.call.header("grpc-encoding");
        if (encoding.empty() || encoding == "identity") {
          answerStatus(s, {StatusCode::kInternal, "compressed flag set without a grpc-encoding"});
        } else {
          answerStatus(s, {StatusCode::kUnimplemented, fmt::format("grpc-encoding {} is not supported", encoding)},
                       {{"grpc-accept-encoding", "identity"}});
        }
        return;
      }
      case MessageReader::Failure::kBadFlag:
      case MessageReader::Failure::kNone:
        answerStatus(s, {StatusCode::kInternal, fed.error().describe()});
        return;
    }
  }
  while (auto message = s.reader.next()) {
    // grpc-java's unary server call answers a second message INTERNAL "Too many requests".
    if (++s.messages > 1) {
      answerStatus(s, {StatusCode::kInternal, "more than one request message on a unary call"});
      return;
    }
    s.call.request = std::move(*message);
  }
}

void Connection::endOfRequest(Stream& s) {
  if (s.reader.midMessage()) {
    answerStatus(s, {StatusCode::kInternal, "the request ends mid-message"});
  } else if (s.messages == 0) {
    // grpc-java: INTERNAL "Half-closed without a request".
    answerStatus(s, {StatusCode::kInternal, "no request message on a unary call"});
  } else {
    ready_.push_back(s.id);
  }
}

void Connection::runReadyCalls() {
  while (!ready_.empty()) {
    Stream* s = find(ready_.front());
    ready_.pop_front();
    if (s == nullptr || s->answered) continue;  // reset by the client meanwhile
    auto handler = context_.handlers.find(s->call.path);
    MESHLOCK_CHECK(handler != context_.handlers.end());  // checkRequest answered unknown paths
    if (s->call.deadline && Clock::now() >= *s->call.deadline) {
      answerStatus(*s, {StatusCode::kDeadlineExceeded, "the deadline passed before the call was handled"});
      continue;
    }
    s->call.peer = peer_;
    ++context_.counters.calls;
    auto result = handler->second(s->call);
    if (s->call.deadline && Clock::now() >= *s->call.deadline) {
      answerStatus(*s, {StatusCode::kDeadlineExceeded, "the deadline passed while the call was handled"});
    } else if (result) {
      answerMessage(*s, *result);
    } else if (result.error().ok()) {
      answerStatus(*s, {StatusCode::kUnknown, "the handler failed without a status"});
    } else {
      answerStatus(*s, result.error());
    }
  }
}

void Connection::submitted(Stream& s) {
  s.answered = true;
  s.deadline = Clock::now() + config_.requestTimeout;
  s.reader = MessageReader(0);  // frees what was buffered; later DATA is ignored
}

// Trailers-Only (PROTOCOL-HTTP2.md "Responses"): one HEADERS frame with END_STREAM.
void Connection::answerStatus(Stream& s, const GrpcStatus& status,
                              std::initializer_list<std::pair<std::string_view, std::string_view>> extra) {
  if (s.answered) return;
  const std::string code = std::to_string(static_cast<int>(status.code));
  const std::string message = percentEncode(status.message);
  std::vector<nghttp2_nv> headers = {http2Header(":status", "200"), http2Header("content-type", kGrpcContentType),
                                     http2Header("grpc-status", code)};
  if (!message.empty()) headers.push_back(http2Header("grpc-message", message));
  for (const auto& [name, value] : extra) headers.push_back(http2Header(name, value));
  if (int rc = nghttp2_submit_response(session_.get(), s.id, headers.data(), headers.size(), nullptr); rc != 0) {
    resetStream(s, NGHTTP2_INTERNAL_ERROR);
    return;
  }
  submitted(s);
}

// Not a gRPC call: an HTTP status a plain HTTP/2 client reads as an error,
// with grpc-status for a gRPC client that sent the wrong method or type.
void Connection::answerHttp(Stream& s, int httpStatus, const GrpcStatus& status) {
  const std::string code = std::to_string(httpStatus);
  const std::string grpcCode = std::to_string(static_cast<int>(status.code));
  const std::string message = percentEncode(status.message);
  const nghttp2_nv headers[] = {http2Header(":status", code), http2Header("grpc-status", grpcCode),
                                http2Header("grpc-message", message)};
  if (nghttp2_submit_response(session_.get(), s.id, headers, std::size(headers), nullptr) != 0) {
    resetStream(s, NGHTTP2_INTERNAL_ERROR);
    return;
  }
  submitted(s);
}

// Response-Headers, the message, then Trailers with grpc-status 0.
void Connection::answerMessage(Stream& s, std::string_view message) {
  s.response = frameMessage(message);
  s.sent = 0;
  const nghttp2_nv headers[] = {http2Header(":status", "200"), http2Header("content-type", kGrpcContentType)};
  nghttp2_data_provider body{};
  body.source.ptr = &s;  // std::map nodes stay put; nghttp2 reads no closed stream
  body.read_callback = readResponse;
  if (nghttp2_submit_response(session_.get(), s.id, headers, std::size(headers), &body) != 0) {
    resetStream(s, NGHTTP2_INTERNAL_ERROR);
    return;
  }
  submitted(s);
}

void Connection::resetStream(Stream& s, uint32_t code) {
  if (!s.reset) nghttp2_submit_rst_stream(session_.get(), NGHTTP2_FLAG_NONE, s.id, code);
  s.reset = true;
  s.answered = true;
  s.deadline = Clock::time_point::max();  // nghttp2 closes it once the RST_STREAM is sent
}

// GOAWAY (PROTOCOL-HTTP2.md "GOAWAY Frame": sent before terminating a
// connection), then close_notify, each given a short while.
void Connection::goodbye() {
  tls_.ignoreWake();
  if (session_) {
    nghttp2_session_terminate_session(session_.get(), NGHTTP2_NO_ERROR);
    (void)tls_.send(session_.get(), Clock::now() + kGoodbyeTimeout);
  }
  SSL_shutdown(tls_.ssl());
  ERR_clear_error();
}

int Connection::onBeginHeaders(nghttp2_session*, const nghttp2_frame* frame, void* user) {
  auto* c = static_cast<Connection*>(user);
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  c->streams_.try_emplace(frame->hd.stream_id, frame->hd.stream_id, c->config_.maxMessageBytes,
                          Clock::now() + c->config_.requestTimeout);
  return 0;
}

int Connection::onHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name, size_t namelen,
                         const uint8_t* value, size_t valuelen, uint8_t, void* user) {
  auto* c = static_cast<Connection*>(user);
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;  // trailers
  Stream* s = c->find(frame->hd.stream_id);
  if (s == nullptr || s->headersTooLarge) return 0;
  s->headerBytes += namelen + valuelen + 32;
  if (s->headerBytes > kMaxRequestHeaderBytes) {
    s->headersTooLarge = true;  // answered once the block ends; nothing more kept
    return 0;
  }
  std::string_view key(reinterpret_cast<const char*>(name), namelen);
  std::string_view text(reinterpret_cast<const char*>(value), valuelen);
  if (key == ":path") {
    s->call.path = text;
  } else if (key == ":method") {
    s->method = text;
  } else if (!key.starts_with(':')) {
    s->call.metadata.emplace_back(key, text);  // nghttp2 refused uppercase names already
  }
  return 0;
}

int Connection::onFrameReceived(nghttp2_session*, const nghttp2_frame* frame, void* user) {
  auto* c = static_cast<Connection*>(user);
  switch (frame->hd.type) {
    case NGHTTP2_SETTINGS:
      // nghttp2 checked the client magic; its first SETTINGS ends the preface.
      if ((frame->hd.flags & NGHTTP2_FLAG_ACK) == 0) c->prefaceSeen_ = true;
      return 0;
    case NGHTTP2_HEADERS:
    case NGHTTP2_DATA: break;
    default: return 0;
  }
  Stream* s = c->find(frame->hd.stream_id);
  if (s == nullptr) return 0;
  if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) c->checkRequest(*s);
  if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
    s->remoteEnded = true;
    if (!s->answered) c->endOfRequest(*s);
  }
  return 0;
}

int Connection::onDataChunk(nghttp2_session*, uint8_t, int32_t stream_id, const uint8_t* data, size_t len,
                            void* user) {
  auto* c = static_cast<Connection*>(user);
  Stream* s = c->find(stream_id);
  if (s == nullptr || s->answered) return 0;  // discarded, never buffered
  c->onMessageBytes(*s, {reinterpret_cast<const char*>(data), len});
  return 0;
}

// PROTOCOL-HTTP2.md "Early Server Closure": an answer sent before the
// client's END_STREAM is followed by RST_STREAM NO_ERROR, so the stream is
// freed. Submitted once the answer is out: queued together, the reset went
// out alone and the client never saw the status.
int Connection::onFrameSent(nghttp2_session*, const nghttp2_frame* frame, void* user) {
  auto* c = static_cast<Connection*>(user);
  if (frame->hd.type != NGHTTP2_HEADERS || (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) == 0) return 0;
  Stream* s = c->find(frame->hd.stream_id);
  if (s != nullptr && !s->remoteEnded) c->resetStream(*s, NGHTTP2_NO_ERROR);
  return 0;
}

int Connection::onStreamClose(nghttp2_session*, int32_t stream_id, uint32_t, void* user) {
  auto* c = static_cast<Connection*>(user);
  c->streams_.erase(stream_id);
  if (c->streams_.empty()) c->idleSince_ = Clock::now();
  return 0;
}

ssize_t Connection::readResponse(nghttp2_session* session, int32_t stream_id, uint8_t* buf, size_t length,
                                 uint32_t* flags, nghttp2_data_source* source, void*) {
  auto* s = static_cast<Stream*>(source->ptr);
  const std::size_t n = std::min(length, s->response.size() - s->sent);
  std::memcpy(buf, s->response.data() + s->sent, n);
  s->sent += n;
  if (s->sent == s->response.size()) {
    // The stream ends with the trailers, not with this DATA.
    *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
    const nghttp2_nv trailers[] = {http2Header("grpc-status", "0")};
    if (nghttp2_submit_trailer(session, stream_id, trailers, std::size(trailers)) != 0)
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  }
  return static_cast<ssize_t>(n);
}

}  // namespace

void serveConnection(const ConnectionContext& context, UniqueFd fd, bssl::UniquePtr<SSL> ssl, std::string peer) {
  Connection connection(context, TlsConnection(std::move(fd), std::move(ssl), context.wakeFd), std::move(peer));
  connection.run();
}

}  // namespace meshlock::grpc
