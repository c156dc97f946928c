// The I/O half of an inbound HBONE tunnel: an HboneSession (server) on the plaintext of
// one verified mTLS connection, and for each CONNECT stream its own TCP
// connection to the app, relayed with back-pressure both ways. Owned by the
// Connection that did the handshake (it keeps the TLS side and the worker's
// bookkeeping); this class owns the streams and their sockets.
#pragma once

#include <chrono>
#include <memory>
#include <unordered_map>
#include <vector>

#include "engine/engine.h"
#include "engine/hbone_session.h"
#include "engine/worker.h"

namespace meshlock::engine {

class TunnelStream;

class HboneTunnel final : HboneSession::Handler {
 public:
  // What the tunnel needs from the connection that carries it.
  class Host {
   public:
    // Frames are waiting: produce() them into the TLS session and send.
    virtual void tunnelOutput() = 0;
    // A stream's operation completed (the connection may be waiting for the last one).
    virtual void tunnelIoDone() = 0;

   protected:
    ~Host() = default;
  };

  struct Setup {
    TunnelDecider decide;
    SocketFactory make_socket;
    SocketAddress peer;   // the tunnel's TCP peer
    SocketAddress local;  // the pod address and port the tunnel reached (15008)
    TlsInfo tls;          // the tunnel's handshake: every stream's peer
    std::shared_ptr<const ListenerLabels> labels;
  };

  [[nodiscard]] static Result<std::unique_ptr<HboneTunnel>> create(Worker& worker, Host& host, Setup setup);
  ~HboneTunnel();

  // Plaintext the TLS session decrypted; an error ends the tunnel (produce()
  // still holds the GOAWAY that says why).
  [[nodiscard]] Status receive(ByteQueue& plaintext);
  // Frames encrypted into `tls` until its output holds `bound` bytes.
  [[nodiscard]] Status produce(TlsSession& tls, size_t bound) { return encryptFrames(*server_, tls, bound); }
  // GOAWAY: no new streams, the open ones finish.
  void drain() { server_->drain(); }
  // HTTP/2 has nothing left to read or write and no stream is open.
  [[nodiscard]] bool finished() const;
  // The tunnel connection is ending: every stream still open is reset
  // (its app sees a reset, as from a peer that vanished) and its I/O cancelled.
  void abort(ConnectionEnd why);
  // No stream has an operation pending: the tunnel may be freed.
  [[nodiscard]] bool idle() const;
  void onTick(std::chrono::steady_clock::time_point now);
  void snapshots(std::chrono::steady_clock::time_point now, std::vector<ConnectionSnapshot>& out) const;
  // Every open stream asked again; those refused now are reset. Returns how many.
  size_t reauthorize(const Reauthorizer& decide);
  [[nodiscard]] size_t buffered() const;

  // For the streams.
  Worker& worker() { return worker_; }
  HboneSession& server() { return *server_; }
  Host& host() { return host_; }
  const Setup& setup() const { return setup_; }
  void streamIoDone(TunnelStream& stream);

 private:
  HboneTunnel(Worker& worker, Host& host, Setup setup);
  void onRequest(int32_t stream, const HboneRequest& request) override;
  void onData(int32_t stream, std::span<const std::byte> data) override;
  void onEndOfInput(int32_t stream) override;
  void onStreamClosed(int32_t stream, uint32_t error_code) override;
  void onOutputDrained(int32_t stream) override;
  void refuse(int32_t stream, HboneStatus status, std::string_view reason);
  TunnelStream* find(int32_t stream);
  void reap();

  Worker& worker_;
  Host& host_;
  Setup setup_;
  std::unique_ptr<HboneSession> server_;
  std::unordered_map<int32_t, std::unique_ptr<TunnelStream>> streams_;
  // Streams done with HTTP/2 whose socket still has an operation pending.
  std::vector<std::unique_ptr<TunnelStream>> ending_;
};

}  // namespace meshlock::engine
