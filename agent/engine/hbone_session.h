// HBONE, Istio's tunnel: HTTP/2 CONNECT over mTLS to port 15008, one stream
// per TCP connection (the protocol ztunnel and Istio's sidecars speak;
// ztunnel src/proxy/inbound.rs, outbound.rs). This is the HTTP/2 part only,
// on nghttp2, for both ends, and does no I/O: it is fed the plaintext the TLS
// session decrypted and produces the frames to encrypt, so the event loops,
// the unit tests and the fuzzer drive the same code.
//
// Flow control is real back-pressure: received DATA opens the windows again
// only once the owner says the app took the bytes (consumed), so a slow app
// slows its own stream, not the others (windows as ztunnel sizes them).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "engine/byte_queue.h"

struct nghttp2_session;

namespace meshlock::engine {

struct HboneSettings {
  uint32_t stream_window = 4 * 1024 * 1024;       // ztunnel's HTTP2_STREAM_WINDOW_SIZE default
  uint32_t connection_window = 16 * 1024 * 1024;  // ztunnel's HTTP2_CONNECTION_WINDOW_SIZE default
  uint32_t max_frame_size = 1024 * 1024;          // ztunnel's HTTP2_FRAME_SIZE default
  uint32_t max_concurrent_streams = 200;          // as ztunnel's server
  size_t max_header_bytes = 16 * 1024;            // one request's header block, names and values
  size_t stream_output_bound = 256 * 1024;        // send() queue per stream before onOutputDrained matters
};

// One CONNECT request, as the client sent it.
struct HboneRequest {
  std::string method;
  std::string authority;    // "10.0.0.5:8080" or "[fd00::5]:8080"
  std::string baggage;      // W3C baggage: the source's cluster, namespace, workload (ztunnel reads it)
  std::string forwarded;    // RFC 7239 Forwarded, e.g. "for=10.0.0.9"
  std::string traceparent;  // W3C trace context, for logs
  bool extended_connect = false;  // a :protocol pseudo-header (RFC 8441): not HBONE
};

// HTTP status of a refused stream, as ztunnel answers.
enum class HboneStatus : uint16_t {
  kOk = 200,
  kBadRequest = 400,          // not CONNECT, an authority that is not an address, another pod's address
  kUnauthorized = 401,        // an authorization policy refused the peer
  kServiceUnavailable = 503,  // the app could not be reached
};

// One HTTP/2 connection of HBONE, either end. The server takes CONNECT
// requests (accept or refuse each); the client opens them (open) and learns
// the answer. Both move each stream's bytes with the same calls.
class HboneSession {
 public:
  enum class Role { kServer, kClient };

  // What the owner does with the streams; called from inside receive() and
  // produce() only, never re-entrantly from the owner's own calls.
  class Handler {
   public:
    // Server: a complete request; answer with accept() or refuse(), now or later.
    virtual void onRequest(int32_t stream, const HboneRequest& request) { (void)stream, (void)request; }
    // Client: the server's answer to open().
    virtual void onResponse(int32_t stream, int status) { (void)stream, (void)status; }
    // Bytes the peer sent on the stream.
    virtual void onData(int32_t stream, std::span<const std::byte> data) = 0;
    // The peer sent END_STREAM: no more bytes (half-close).
    virtual void onEndOfInput(int32_t stream) = 0;
    // The stream is gone from HTTP/2: reset (error_code != 0) or finished.
    virtual void onStreamClosed(int32_t stream, uint32_t error_code) = 0;
    // The stream's queue (send()) has room again below the bound.
    virtual void onOutputDrained(int32_t stream) = 0;

   protected:
    ~Handler() = default;
  };

  [[nodiscard]] static Result<std::unique_ptr<HboneSession>> create(Role role, Handler& handler,
                                                                    HboneSettings settings = {});
  ~HboneSession();
  HboneSession(const HboneSession&) = delete;
  HboneSession& operator=(const HboneSession&) = delete;

  // Plaintext from the peer. An error is a connection error (bad preface,
  // a protocol violation): produce() then holds the GOAWAY that says so.
  [[nodiscard]] Status receive(std::span<const std::byte> data);
  // All of `plaintext`, which is left empty (what follows an error is dropped).
  [[nodiscard]] Status receive(ByteQueue& plaintext);
  // Frames to send, appended to `out` until it holds `limit` bytes or nothing is left.
  [[nodiscard]] Status produce(ByteQueue& out, size_t limit);
  // Frames to send, handed to `sink` as nghttp2 makes them (valid during the
  // call only), until `limit` bytes went or nothing is left.
  using FrameSink = std::function<Status(std::span<const std::byte>)>;
  [[nodiscard]] Status produce(const FrameSink& sink, size_t limit);

  // Server: 200, the tunnel is open; bytes given to send() flow back as DATA.
  void accept(int32_t stream);
  // Server: the refusal's status, with END_STREAM.
  void refuse(int32_t stream, HboneStatus status);
  // Client: a CONNECT stream to request.authority, with its baggage,
  // forwarded and traceparent headers when set. Bytes may be sent at once;
  // onResponse says whether they go anywhere.
  [[nodiscard]] Result<int32_t> open(const HboneRequest& request);
  // Client: the server takes another stream now (no GOAWAY, under its concurrency limit).
  [[nodiscard]] bool canOpen() const;

  // Bytes for the peer, queued; they leave as the window allows.
  void send(int32_t stream, std::span<const std::byte> data);
  // Our side ends: END_STREAM once the queue is sent.
  void endOutput(int32_t stream);
  // RST_STREAM (CONNECT_ERROR, RFC 9113 8.5: the TCP side failed or was reset).
  void reset(int32_t stream);
  // The owner took `bytes` of what onData gave: the windows open by as much.
  void consumed(int32_t stream, size_t bytes);
  // Bytes queued by send() and not yet framed.
  [[nodiscard]] size_t queued(int32_t stream) const;
  // Whether the session has anything left to read or write.
  [[nodiscard]] bool done() const;
  [[nodiscard]] size_t openStreams() const { return streams_.size(); }
  // Stop opening and taking streams (GOAWAY); open ones finish.
  void drain();

 private:
  struct Stream {
    HboneRequest request;
    size_t header_bytes = 0;
    int status = 0;  // client: the answer
    ByteQueue out;
    bool accepted = false;
    bool output_ended = false;
    bool refused = false;
    bool deferred = false;   // nghttp2 waits for resume_data
  };
  HboneSession(Role role, Handler& handler, HboneSettings settings)
      : role_(role), handler_(handler), settings_(settings) {}
  Stream* find(int32_t stream);
  const Stream* find(int32_t stream) const;
  void resume(int32_t stream, Stream& s);

  Role role_;
  Handler& handler_;
  HboneSettings settings_;
  nghttp2_session* session_ = nullptr;
  std::map<int32_t, std::unique_ptr<Stream>> streams_;
  friend struct HboneCallbacks;
};

class TlsSession;
// The session's frames encrypted straight into `tls` (no copy in between),
// until its output holds `bound` bytes or nothing is left.
[[nodiscard]] Status encryptFrames(HboneSession& session, TlsSession& tls, size_t bound);

}  // namespace meshlock::engine
