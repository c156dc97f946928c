// One relayed connection: the accepted ("down") side and the upstream ("up")
// side, at most one of them speaking TLS. The state machine is the same for
// both event-loop back ends; it only sees IoBackend completions.
#pragma once

#include <sys/socket.h>
#include <sys/uio.h>

#include <chrono>
#include <memory>

#include "engine/byte_queue.h"
#include "engine/engine.h"
#include "engine/handover.h"
#include "engine/hbone_pool.h"
#include "engine/hbone_tunnel.h"
#include "engine/tls_session.h"
#include "engine/worker.h"

namespace meshlock::engine {

class Connection final : public IoHandler, HboneTunnel::Host, TunnelUser {
 public:
  Connection(Worker& worker, UniqueFd accepted, const SocketAddress& peer,
             std::shared_ptr<const ListenerLabels> labels);
  ~Connection();

  void startOutbound(OutboundPlan plan);
  void startInbound(InboundPlan plan);
  // The decider refused it, or a limit did.
  void refuse();
  // Carries on a connection another engine handed over (in place of start*).
  void adopt(HandedConnection handed, std::unique_ptr<ConnectionObserver> observer);
  // An upgrade: stops reading; once what is in flight has landed, the
  // connection is exported into `collector` and leaves this engine. False:
  // not one that can be handed over (it carries on here).
  bool beginHandover(std::shared_ptr<HandoverCollector> collector);

  void onIoComplete(IoRequest& request, const IoCompletion& completion) override;
  void onTick(std::chrono::steady_clock::time_point now);
  // Worker shutdown.
  void terminate();
  // The connection, or an HBONE tunnel's streams.
  void snapshots(std::chrono::steady_clock::time_point now, std::vector<ConnectionSnapshot>& out) const;
  // An established inbound connection: what `decide` says of it now
  // (nullopt: still allowed, or not one to ask about).
  [[nodiscard]] std::optional<Refusal> reauthorize(const Reauthorizer& decide) const;
  // An HBONE tunnel: its streams asked again, those refused reset; how many.
  size_t reauthorizeStreams(const Reauthorizer& decide);
  // An HBONE tunnel: GOAWAY, then closed once its streams ended.
  void drainTunnel();
  // A policy does not allow it: closed with ConnectionEnd::Denied.
  void deny(Refusal refusal);

  size_t worker_slot = 0;  // index in the worker's connection list
  // Among the worker's pre-handshake connections (see Worker::admitPending).
  bool pending = false;
  bool counted_per_source = false;  // inbound: against its source's cap as well
  SourceBudgets::Key source;
  Connection* pending_prev = nullptr;
  Connection* pending_next = nullptr;
  // The engine-wide pending cap needs room: end it, the oldest still in its handshake.
  void shed();

 private:
  enum class Phase { Detecting, Connecting, Handshaking, Relaying, Closing };
  enum class CloseHow {
    Graceful,    // FIN on both sides
    Reset,       // RST on both sides: a reset propagates as a reset
    TlsFailure,  // send the pending alert and FIN on the TLS side, RST on the other
  };
  static constexpr int kDown = 0;
  static constexpr int kUp = 1;

  // What an armed send points to; allocated only while this side has bytes to send.
  struct SendVector {
    msghdr message{};
    iovec iov[8]{};
  };
  // What only setting the connection up needs; freed once it relays.
  struct Setup {
    SocketFactory make_socket;
    std::optional<TlsClientSetup> client_tls;
    TlsServerSetup server_tls;
    Authorizer authorize;
    TunnelDecider tunnel;
  };

  struct Side {
    UniqueFd fd;
    IoRequest recv_request;
    IoRequest send_request;
    IoRequest connect_request;
    std::unique_ptr<SendVector> sending;
    ByteQueue plain_out;              // to send, when this side is plain
    std::unique_ptr<TlsSession> tls;  // when this side speaks TLS
    bool connected = false;
    bool recv_armed = false;
    bool send_armed = false;
    bool read_eof = false;            // FIN or close_notify seen
    bool tls_peer_closed = false;     // close_notify seen
    bool eof_pending = false;         // the other side ended: end ours once flushed
    bool close_notify_sent = false;
    bool write_shut = false;

    ByteQueue& wire() { return tls ? tls->output() : plain_out; }
  };

  void submitRecv(int side);
  void submitSend(int side);
  void connectUpstream();
  void onConnected(int result);
  void onReceived(int side, const IoCompletion& completion);
  void onSent(int side, int result);
  void detect(std::span<const std::byte> first);
  // Asks the plan's authorizer; false: refused and closed.
  bool authorized(std::string_view peer_identity, std::string_view server_name);
  void handshakeStep(int side);
  void startRelay();
  void armRecv(int side);
  void flush(int side);
  void deliver(int to, std::span<const std::byte> plaintext);
  void pumpTls(int side);
  void propagateEof(int to);
  void maybeShutdownWrite(int side);
  void maybeFinish();
  // The first call decides how the connection ends and what observers hear.
  void close(CloseHow how, ConnectionEnd end, std::string reason = {});
  void finalize();
  void updateBuffered();
  void countBytes(int to, size_t n);
  [[nodiscard]] ConnectionSnapshot snapshot(std::chrono::steady_clock::time_point now) const;
  // Upgrade (connection_handover.cpp).
  void onHandoverCompletion(IoRequest& request, const IoCompletion& completion);
  void finishHandover();
  // It stays: bookkeeping, then relaying resumes (unless it was closed meanwhile).
  void stayAfterHandover(std::string_view why);
  void leaveHandover(std::string_view why);  // the bookkeeping only
  // HBONE: after the handshake, the plaintext is HTTP/2 for the tunnel.
  void startTunnel();
  void feedTunnel(ByteQueue& plaintext);
  void tunnelOutput() override;
  void tunnelIoDone() override;
  [[nodiscard]] bool tunnelIdle() const { return !tunnel_ || tunnel_->idle(); }
  // Outbound HBONE: this connection is a stream of a pooled client tunnel.
  void startTunnelStream(TunnelOrigin origin);
  void onTunnelResponse(int status) override;
  void onTunnelData(std::span<const std::byte> data) override;
  void onTunnelEnd() override;
  void onTunnelClosed(bool failed, ConnectionEnd end, std::string reason) override;
  void onTunnelDrained() override;
  // Bytes waiting to leave towards `side`: its queue, or its tunnel stream's.
  [[nodiscard]] size_t queuedToward(int side) const;
  bool outbound() const { return outbound_; }

  Worker& worker_;
  Side sides_[2];
  std::shared_ptr<const ListenerLabels> labels_;
  std::unique_ptr<ConnectionObserver> observer_;
  SocketAddress peer_;  // of the accepted socket
  ConnectionEnd end_ = ConnectionEnd::Completed;
  std::string end_reason_;
  std::string denied_by_;  // the policy that denied it, for the snapshot
  std::chrono::steady_clock::time_point accepted_at_;
  uint64_t bytes_to_upstream_ = 0;
  uint64_t bytes_to_downstream_ = 0;
  Phase phase_ = Phase::Connecting;
  bool outbound_ = true;
  bool closing_ = false;
  int pending_ = 0;  // submitted operations not yet completed
  SocketAddress destination_;
  std::unique_ptr<Setup> setup_;
  bool plain_outbound_ = false;  // outbound without TLS (DISABLE)
  InboundMode mode_ = InboundMode::Strict;
  std::chrono::steady_clock::time_point deadline_;
  std::chrono::steady_clock::time_point last_activity_;
  size_t accounted_buffered_ = 0;
  std::unique_ptr<HboneTunnel> tunnel_;
  bool producing_ = false;     // inside tunnelOutput: nghttp2 must not be re-entered
  ClientTunnel* up_tunnel_ = nullptr;  // outbound HBONE, while the stream lives
  bool up_hbone_ = false;              // outbound HBONE (for snapshots after the stream is gone)
  TlsInfo up_tunnel_tls_;              // the tunnel's handshake, kept for the report
  std::shared_ptr<HandoverCollector> handover_;  // set while quiescing for a handover
  std::chrono::system_clock::time_point quiesced_at_{};  // when it stopped reading for one
};

}  // namespace meshlock::engine
