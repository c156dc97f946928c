// Outbound HBONE: a worker's pool of client tunnels. Connections from one
// source pod to one destination (its identity and its 15008 address) ride
// as streams of one mTLS HTTP/2 connection, as ztunnel pools them
// (src/proxy/pool.rs: one pool entry per source, destination identity and
// address), so a new TCP connection costs a stream, not a handshake. A
// tunnel that breaks resets every stream it carries: no connection is left
// believing its bytes arrived.
#pragma once

#include <chrono>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/engine.h"
#include "engine/hbone_session.h"
#include "engine/tls_session.h"

namespace meshlock::engine {

class Worker;

// One outbound connection carried as a stream (the Connection).
class TunnelUser {
 public:
  // The server's answer: 200 opens the relay, anything else refuses it.
  virtual void onTunnelResponse(int status) = 0;
  virtual void onTunnelData(std::span<const std::byte> data) = 0;
  // The server ended its side (END_STREAM).
  virtual void onTunnelEnd() = 0;
  // The stream is over: finished, or reset / never opened (`failed`, with why).
  virtual void onTunnelClosed(bool failed, ConnectionEnd end, std::string reason) = 0;
  // Room again in the stream's queue.
  virtual void onTunnelDrained() = 0;

 protected:
  ~TunnelUser() = default;
};

class ClientTunnel;

class HbonePool {
 public:
  explicit HbonePool(Worker& worker) : worker_(worker) {}
  ~HbonePool();
  // A tunnel for `origin.pool_key` that takes another stream: an existing
  // one, or a new one connecting with `make_socket` and `origin.tls`.
  ClientTunnel& tunnelFor(TunnelOrigin& origin, const SocketFactory& make_socket);
  // Idle tunnels close; dead ones are freed.
  void onTick(std::chrono::steady_clock::time_point now);
  // Worker shutdown: every tunnel ends.
  void shutdown();
  // Frees the tunnels that ended and have no I/O left.
  void reap();
  // No tunnel left, none with I/O in flight.
  [[nodiscard]] bool quiet() const { return live_.empty() && dying_.empty(); }
  [[nodiscard]] size_t tunnels() const { return live_.size(); }

 private:
  Worker& worker_;
  std::unordered_multimap<std::string, std::unique_ptr<ClientTunnel>> live_;
  std::vector<std::unique_ptr<ClientTunnel>> dying_;
};

// One client tunnel: its socket, TLS session and HTTP/2 session, and the
// connections riding it. Owned by the pool.
class ClientTunnel final : public IoHandler, HboneSession::Handler {
 public:
  ClientTunnel(Worker& worker, std::string key, SocketAddress address, std::string name);
  ~ClientTunnel();

  // Connects and handshakes (once); errors end the tunnel at once.
  void start(const SocketFactory& make_socket, TlsClientSetup tls);
  // A stream for `user`, opened as soon as the tunnel is ready.
  void attach(TunnelUser& user, HboneRequest request);
  // The user is gone: its stream is reset if still open.
  void detach(TunnelUser& user);
  void send(TunnelUser& user, std::span<const std::byte> data);
  void endOutput(TunnelUser& user);
  // The user delivered `bytes` of what onTunnelData gave.
  void consumed(TunnelUser& user, size_t bytes);
  [[nodiscard]] size_t queued(const TunnelUser& user) const;
  [[nodiscard]] TlsInfo tlsInfo() const;

  [[nodiscard]] bool acceptsMore() const;
  [[nodiscard]] bool dead() const { return closing_ && pending_ == 0; }
  [[nodiscard]] bool idleSince(std::chrono::steady_clock::time_point before) const;
  [[nodiscard]] const std::string& key() const { return key_; }
  void onTick(std::chrono::steady_clock::time_point now);
  // Ends the tunnel: every user told, I/O cancelled.
  void fail(ConnectionEnd end, std::string reason);

  void onIoComplete(IoRequest& request, const IoCompletion& completion) override;

 private:
  enum class Phase { Connecting, Handshaking, Ready };
  struct Rider {
    HboneRequest request;
    int32_t stream = 0;  // 0 until opened
  };

  void onConnected(int result);
  void onReceived(const IoCompletion& completion);
  void onSent(int result);
  void handshakeStep();
  void openWaiting();
  void pump();  // frames out, through TLS, to the socket
  void flush();
  void armRecv();
  // The user's open stream, or 0 (not opened yet, or not riding here).
  [[nodiscard]] int32_t streamOf(const TunnelUser& user) const;
  [[nodiscard]] TunnelUser* userOf(int32_t stream) const;

  // HboneSession::Handler
  void onResponse(int32_t stream, int status) override;
  void onData(int32_t stream, std::span<const std::byte> data) override;
  void onEndOfInput(int32_t stream) override;
  void onStreamClosed(int32_t stream, uint32_t error_code) override;
  void onOutputDrained(int32_t stream) override;

  Worker& worker_;
  std::string key_;
  SocketAddress address_;
  std::string name_;
  UniqueFd fd_;
  IoRequest recv_request_;
  IoRequest send_request_;
  IoRequest connect_request_;
  struct Sending {
    msghdr message{};
    iovec iov[8]{};
  };
  std::unique_ptr<Sending> sending_;
  std::unique_ptr<TlsSession> tls_;
  std::optional<TlsClientSetup> setup_;
  std::unique_ptr<HboneSession> session_;
  ByteQueue plaintext_;
  // Looked up per read and write of every stream: by user and by stream id.
  std::unordered_map<const TunnelUser*, Rider> riders_;
  std::unordered_map<int32_t, TunnelUser*> by_stream_;
  std::deque<TunnelUser*> waiting_;  // attached, not yet opened, in order
  Phase phase_ = Phase::Connecting;
  std::chrono::steady_clock::time_point deadline_;
  std::chrono::steady_clock::time_point last_used_;
  int pending_ = 0;
  bool recv_armed_ = false;
  bool send_armed_ = false;
  bool closing_ = false;
  bool in_session_ = false;  // inside the HTTP/2 session's callbacks: no produce()
  ConnectionEnd failed_with_ = ConnectionEnd::Reset;  // once closing: why, for late riders
  std::string failure_;
};

}  // namespace meshlock::engine
