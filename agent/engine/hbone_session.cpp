// HBONE's HTTP/2, both ends, on nghttp2's callback API, fed from memory.
#include "engine/hbone_session.h"

#include "engine/tls_session.h"

#include <nghttp2/nghttp2.h>

#include <array>
#include <string>
#include <vector>

namespace meshlock::engine {
namespace {

std::string_view view(const uint8_t* data, size_t length) {
  return {reinterpret_cast<const char*>(data), length};
}

bool isRequestHeaders(const nghttp2_frame* frame) {
  return frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST;
}
bool isResponseHeaders(const nghttp2_frame* frame) {
  return frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_RESPONSE;
}

nghttp2_nv header(std::string_view name, std::string_view value) {
  return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
                    reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(), value.size(),
                    NGHTTP2_NV_FLAG_NONE};
}

}  // namespace

// nghttp2's C callbacks, with access to the server's streams.
struct HboneCallbacks {
  static HboneSession& self(void* user_data) { return *static_cast<HboneSession*>(user_data); }

  static int beginHeaders(nghttp2_session*, const nghttp2_frame* frame, void* user_data) {
    if (!isRequestHeaders(frame)) return 0;
    self(user_data).streams_.emplace(frame->hd.stream_id, std::make_unique<HboneSession::Stream>());
    return 0;
  }

  static int onHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name, size_t name_length,
                      const uint8_t* value, size_t value_length, uint8_t, void* user_data) {
    HboneSession& server = self(user_data);
    if (isResponseHeaders(frame)) {
      HboneSession::Stream* s = server.find(frame->hd.stream_id);
      if (s != nullptr && view(name, name_length) == ":status") {
        int status = 0;
        for (char c : view(value, value_length)) status = c >= '0' && c <= '9' && status < 1000 ? status * 10 + (c - '0') : 1000;
        s->status = status;
      }
      return 0;
    }
    if (!isRequestHeaders(frame)) return 0;
    HboneSession::Stream* s = server.find(frame->hd.stream_id);
    if (s == nullptr) return 0;
    s->header_bytes += name_length + value_length;
    // Over the limit: this stream is reset, the connection goes on.
    if (s->header_bytes > server.settings_.max_header_bytes) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    const std::string_view n = view(name, name_length);
    const std::string_view v = view(value, value_length);
    HboneRequest& r = s->request;
    // Several baggage or forwarded fields join as one list (RFC 9110 5.3).
    auto join = [](std::string& into, std::string_view more) {
      if (!into.empty()) into += ",";
      into += more;
    };
    if (n == ":method") r.method = v;
    else if (n == ":authority") r.authority = v;
    else if (n == ":protocol") r.extended_connect = true;
    else if (n == "baggage") join(r.baggage, v);
    else if (n == "forwarded") join(r.forwarded, v);
    else if (n == "traceparent") r.traceparent = v;
    return 0;
  }

  static int onFrame(nghttp2_session*, const nghttp2_frame* frame, void* user_data) {
    HboneSession& server = self(user_data);
    const bool end_stream = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    if (isRequestHeaders(frame)) {
      HboneSession::Stream* s = server.find(frame->hd.stream_id);
      if (s == nullptr) return 0;
      server.handler_.onRequest(frame->hd.stream_id, s->request);
      s = server.find(frame->hd.stream_id);
      if (end_stream && s != nullptr && !s->refused) server.handler_.onEndOfInput(frame->hd.stream_id);
      return 0;
    }
    if (isResponseHeaders(frame)) {
      HboneSession::Stream* s = server.find(frame->hd.stream_id);
      if (s == nullptr) return 0;
      server.handler_.onResponse(frame->hd.stream_id, s->status);
      s = server.find(frame->hd.stream_id);
      if (end_stream && s != nullptr) server.handler_.onEndOfInput(frame->hd.stream_id);
      return 0;
    }
    if (frame->hd.type == NGHTTP2_DATA && end_stream) {
      HboneSession::Stream* s = server.find(frame->hd.stream_id);
      if (s != nullptr && !s->refused) server.handler_.onEndOfInput(frame->hd.stream_id);
    }
    return 0;
  }

  static int onData(nghttp2_session* session, uint8_t, int32_t stream, const uint8_t* data, size_t length,
                    void* user_data) {
    HboneSession& server = self(user_data);
    HboneSession::Stream* s = server.find(stream);
    if (s == nullptr || s->refused) {
      // Nobody takes these bytes: give their room back to the connection now.
      nghttp2_session_consume_connection(session, length);
      return 0;
    }
    server.handler_.onData(stream, std::as_bytes(std::span(data, length)));
    return 0;
  }

  static int onClose(nghttp2_session*, int32_t stream, uint32_t error_code, void* user_data) {
    HboneSession& server = self(user_data);
    auto it = server.streams_.find(stream);
    if (it == server.streams_.end()) return 0;
    const bool refused = it->second->refused;
    server.streams_.erase(it);
    if (!refused) server.handler_.onStreamClosed(stream, error_code);
    return 0;
  }

  static ssize_t readOutput(nghttp2_session*, int32_t stream, uint8_t* buffer, size_t length, uint32_t* flags,
                            nghttp2_data_source*, void* user_data) {
    HboneSession& server = self(user_data);
    HboneSession::Stream* s = server.find(stream);
    if (s == nullptr) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    const size_t before = s->out.size();
    const size_t n = s->out.read(std::as_writable_bytes(std::span(buffer, length)));
    if (s->out.empty() && s->output_ended) {
      *flags |= NGHTTP2_DATA_FLAG_EOF;
    } else if (n == 0) {
      s->deferred = true;
      return NGHTTP2_ERR_DEFERRED;
    }
    const size_t bound = server.settings_.stream_output_bound;
    if (before >= bound && s->out.size() < bound) server.handler_.onOutputDrained(stream);
    return static_cast<ssize_t>(n);
  }
};

Result<std::unique_ptr<HboneSession>> HboneSession::create(Role role, Handler& handler, HboneSettings settings) {
  std::unique_ptr<HboneSession> server(new HboneSession(role, handler, settings));
  nghttp2_session_callbacks* callbacks = nullptr;
  if (nghttp2_session_callbacks_new(&callbacks) != 0) return fail("HTTP/2: out of memory");
  nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, HboneCallbacks::beginHeaders);
  nghttp2_session_callbacks_set_on_header_callback(callbacks, HboneCallbacks::onHeader);
  nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, HboneCallbacks::onFrame);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, HboneCallbacks::onData);
  nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, HboneCallbacks::onClose);
  nghttp2_option* option = nullptr;
  if (nghttp2_option_new(&option) != 0) {
    nghttp2_session_callbacks_del(callbacks);
    return fail("HTTP/2: out of memory");
  }
  // Windows open when the app has taken the bytes (consumed), not on receipt.
  nghttp2_option_set_no_auto_window_update(option, 1);
  int rv = role == Role::kServer ? nghttp2_session_server_new2(&server->session_, callbacks, server.get(), option)
                                 : nghttp2_session_client_new2(&server->session_, callbacks, server.get(), option);
  nghttp2_option_del(option);
  nghttp2_session_callbacks_del(callbacks);
  if (rv != 0) return fail(std::string("HTTP/2 session: ") + nghttp2_strerror(rv));

  const std::array<nghttp2_settings_entry, 3> entries{{
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, settings.max_concurrent_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, settings.stream_window},
      {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, settings.max_frame_size},
  }};
  rv = nghttp2_submit_settings(server->session_, NGHTTP2_FLAG_NONE, entries.data(), entries.size());
  if (rv == 0) rv = nghttp2_session_set_local_window_size(server->session_, NGHTTP2_FLAG_NONE, 0,
                                                          static_cast<int32_t>(settings.connection_window));
  if (rv != 0) return fail(std::string("HTTP/2 settings: ") + nghttp2_strerror(rv));
  return server;
}

HboneSession::~HboneSession() { nghttp2_session_del(session_); }

HboneSession::Stream* HboneSession::find(int32_t stream) {
  auto it = streams_.find(stream);
  return it == streams_.end() ? nullptr : it->second.get();
}

const HboneSession::Stream* HboneSession::find(int32_t stream) const {
  auto it = streams_.find(stream);
  return it == streams_.end() ? nullptr : it->second.get();
}

Status HboneSession::receive(std::span<const std::byte> data) {
  const ssize_t rv =
      nghttp2_session_mem_recv(session_, reinterpret_cast<const uint8_t*>(data.data()), data.size());
  if (rv < 0) return fail(std::string("HTTP/2: ") + nghttp2_strerror(static_cast<int>(rv)));
  return {};
}

Status HboneSession::receive(ByteQueue& plaintext) {
  iovec iov[8];
  Status fed;
  while (fed && !plaintext.empty()) {
    const int count = plaintext.frontIovecs(iov, 8);
    size_t taken = 0;
    for (int i = 0; i < count && fed; ++i) {
      fed = receive(std::span(static_cast<const std::byte*>(iov[i].iov_base), iov[i].iov_len));
      taken += iov[i].iov_len;
    }
    plaintext.consume(taken);
  }
  plaintext.clear();
  return fed;
}

Status HboneSession::produce(const FrameSink& sink, size_t limit) {
  size_t sent = 0;
  while (sent < limit) {
    const uint8_t* frames = nullptr;
    const ssize_t n = nghttp2_session_mem_send(session_, &frames);
    if (n < 0) return fail(std::string("HTTP/2: ") + nghttp2_strerror(static_cast<int>(n)));
    if (n == 0) break;
    if (Status taken = sink(std::as_bytes(std::span(frames, static_cast<size_t>(n)))); !taken) return taken;
    sent += static_cast<size_t>(n);
  }
  return {};
}

Status HboneSession::produce(ByteQueue& out, size_t limit) {
  if (out.size() >= limit) return {};
  return produce(
      [&out](std::span<const std::byte> frames) -> Status {
        out.append(frames);
        return {};
      },
      limit - out.size());
}

Status encryptFrames(HboneSession& session, TlsSession& tls, size_t bound) {
  const size_t queued = tls.output().size();
  if (queued >= bound) return {};
  return session.produce(
      [&tls](std::span<const std::byte> frames) -> Status {
        if (tls.write(frames) == TlsStatus::Error) return fail("TLS write: " + tls.reason());
        return {};
      },
      bound - queued);
}

void HboneSession::accept(int32_t stream) {
  Stream* s = find(stream);
  if (s == nullptr || s->accepted || s->refused) return;
  s->accepted = true;
  const std::array<nghttp2_nv, 1> headers{header(":status", "200")};
  nghttp2_data_provider provider{};
  provider.read_callback = HboneCallbacks::readOutput;
  if (nghttp2_submit_response(session_, stream, headers.data(), headers.size(), &provider) != 0) reset(stream);
}

void HboneSession::refuse(int32_t stream, HboneStatus status) {
  Stream* s = find(stream);
  if (s == nullptr || s->accepted || s->refused) return;
  s->refused = true;
  const std::string code = std::to_string(static_cast<int>(status));
  const std::array<nghttp2_nv, 1> headers{header(":status", code)};
  // Headers only, with END_STREAM; what the client still sends is dropped.
  if (nghttp2_submit_response(session_, stream, headers.data(), headers.size(), nullptr) != 0)
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream, NGHTTP2_REFUSED_STREAM);
}

Result<int32_t> HboneSession::open(const HboneRequest& request) {
  std::vector<nghttp2_nv> headers{header(":method", "CONNECT"), header(":authority", request.authority)};
  if (!request.baggage.empty()) headers.push_back(header("baggage", request.baggage));
  if (!request.forwarded.empty()) headers.push_back(header("forwarded", request.forwarded));
  if (!request.traceparent.empty()) headers.push_back(header("traceparent", request.traceparent));
  nghttp2_data_provider provider{};
  provider.read_callback = HboneCallbacks::readOutput;
  // nghttp2 copies the header block: nothing here must outlive the call.
  const int32_t id = nghttp2_submit_request(session_, nullptr, headers.data(), headers.size(), &provider, nullptr);
  if (id < 0) return fail(std::string("HTTP/2 CONNECT: ") + nghttp2_strerror(id));
  auto s = std::make_unique<Stream>();
  s->request = request;
  s->accepted = true;
  streams_.emplace(id, std::move(s));
  return id;
}

bool HboneSession::canOpen() const {
  if (nghttp2_session_check_request_allowed(session_) == 0) return false;
  const uint32_t limit = nghttp2_session_get_remote_settings(session_, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
  return streams_.size() < limit;
}

void HboneSession::drain() {
  nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(session_),
                        NGHTTP2_NO_ERROR, nullptr, 0);
}

void HboneSession::send(int32_t stream, std::span<const std::byte> data) {
  Stream* s = find(stream);
  if (s == nullptr || s->output_ended) return;
  s->out.append(data);
  resume(stream, *s);
}

void HboneSession::endOutput(int32_t stream) {
  Stream* s = find(stream);
  if (s == nullptr || s->output_ended) return;
  s->output_ended = true;
  resume(stream, *s);
}

void HboneSession::resume(int32_t stream, Stream& s) {
  if (!s.deferred) return;
  s.deferred = false;
  nghttp2_session_resume_data(session_, stream);
}

void HboneSession::reset(int32_t stream) {
  if (find(stream) == nullptr) return;
  nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream, NGHTTP2_CONNECT_ERROR);
}

void HboneSession::consumed(int32_t stream, size_t bytes) {
  if (bytes == 0) return;
  // A stream nghttp2 closed meanwhile still owes the connection its room.
  if (find(stream) == nullptr || nghttp2_session_consume(session_, stream, bytes) != 0)
    nghttp2_session_consume_connection(session_, bytes);
}

size_t HboneSession::queued(int32_t stream) const {
  const Stream* s = find(stream);
  return s == nullptr ? 0 : s->out.size();
}

bool HboneSession::done() const {
  return nghttp2_session_want_read(session_) == 0 && nghttp2_session_want_write(session_) == 0;
}

}  // namespace meshlock::engine
