// The relay state machine: detect (inbound), connect, handshake, relay with
// bounded buffers and half-close, and close the way the peers need to see it.
#include "engine/connection.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>

#include <cerrno>

namespace meshlock::engine {
namespace {

constexpr std::byte kTlsHandshakeRecord{0x16};

}  // namespace

Connection::Connection(Worker& worker, UniqueFd accepted, const SocketAddress& peer,
                       std::shared_ptr<const ListenerLabels> labels)
    : worker_(worker), labels_(std::move(labels)), peer_(peer), accepted_at_(worker.now()) {
  for (int i = 0; i < 2; ++i) {
    Side& s = sides_[i];
    s.recv_request = IoRequest{this, IoOp::Recv, static_cast<uint8_t>(i), -1};
    s.send_request = IoRequest{this, IoOp::Send, static_cast<uint8_t>(i), -1};
    s.connect_request = IoRequest{this, IoOp::Connect, static_cast<uint8_t>(i), -1};
  }
  sides_[kDown].fd = std::move(accepted);
  sides_[kDown].connected = true;
  setNoDelay(sides_[kDown].fd.get());
  last_activity_ = worker_.now();
}

Connection::~Connection() {
  if (labels_) labels_->budget->active.fetch_sub(1, std::memory_order_relaxed);
}

void Connection::startOutbound(OutboundPlan plan) {
  outbound_ = true;
  destination_ = plan.destination;
  setup_ = std::make_unique<Setup>();
  setup_->make_socket = std::move(plan.make_socket);
  setup_->client_tls = std::move(plan.tls);
  observer_ = std::move(plan.observer);
  if (plan.tunnel) {
    startTunnelStream(std::move(*plan.tunnel));
    return;
  }
  plain_outbound_ = !setup_->client_tls;
  if (plain_outbound_) bump(worker_.counters.plaintext_relayed);
  connectUpstream();
}

void Connection::startInbound(InboundPlan plan) {
  outbound_ = false;
  destination_ = plan.app;
  setup_ = std::make_unique<Setup>();
  setup_->make_socket = std::move(plan.make_socket);
  setup_->server_tls = std::move(plan.tls);
  setup_->authorize = std::move(plan.authorize);
  setup_->tunnel = std::move(plan.tunnel);
  // A tunnel is mTLS whatever the mode: plaintext to it is refused.
  mode_ = setup_->tunnel ? InboundMode::Strict : plan.mode;
  observer_ = std::move(plan.observer);
  if (mode_ == InboundMode::Disable) {
    if (!authorized({}, {})) return;
    bump(worker_.counters.plaintext_relayed);
    connectUpstream();
    return;
  }
  // The first bytes decide between TLS and plaintext.
  phase_ = Phase::Detecting;
  deadline_ = worker_.now() + worker_.config().handshake_timeout;
  submitRecv(kDown);
}

void Connection::refuse() { close(CloseHow::Graceful, ConnectionEnd::Completed); }

std::optional<Refusal> Connection::reauthorize(const Reauthorizer& decide) const {
  if (outbound_ || phase_ != Phase::Relaying || closing_ || tunnel_) return std::nullopt;
  TlsInfo info;
  if (sides_[kDown].tls) info = sides_[kDown].tls->info();
  return decide(EstablishedPeer{.pod_key = labels_->pod_key,
                                .peer = peer_,
                                .app = destination_,
                                .peer_identity = info.peer_identity,
                                .server_name = info.server_name});
}

size_t Connection::reauthorizeStreams(const Reauthorizer& decide) {
  if (!tunnel_ || closing_) return 0;
  return tunnel_->reauthorize(decide);
}

void Connection::deny(Refusal refusal) {
  bump(worker_.counters.refused_authz);
  if (worker_.logAllowedFor(peer_))
    spdlog::info("engine: {}: denied {}: {}", labels_->name, peer_.toString(), refusal.reason);
  denied_by_ = std::move(refusal.policy);
  // A TLS peer learns nothing more than a closed connection, as from ztunnel.
  close(CloseHow::Reset, ConnectionEnd::Denied, std::move(refusal.reason));
}

void Connection::terminate() { close(CloseHow::Graceful, ConnectionEnd::Shutdown); }

void Connection::shed() { close(CloseHow::Reset, ConnectionEnd::Shed, "pending handshake cap reached: oldest shed"); }

void Connection::submitRecv(int side) {
  Side& s = sides_[side];
  s.recv_armed = true;
  ++pending_;
  worker_.io().recv(s.fd.get(), s.recv_request);
}

void Connection::submitSend(int side) {
  Side& s = sides_[side];
  if (!s.sending) s.sending = std::make_unique<SendVector>();
  SendVector& v = *s.sending;
  int count = s.wire().frontIovecs(v.iov, 8);
  MESHLOCK_CHECK(count > 0);
  v.message = msghdr{};
  v.message.msg_iov = v.iov;
  v.message.msg_iovlen = static_cast<size_t>(count);
  s.send_armed = true;
  ++pending_;
  worker_.io().send(s.fd.get(), v.message, s.send_request);
}

void Connection::connectUpstream() {
  MESHLOCK_CHECK(setup_ != nullptr);
  Result<UniqueFd> fd = openUpstreamSocket(setup_->make_socket, destination_);
  if (!fd) {
    spdlog::warn("engine: upstream socket for {}: {}", destination_.toString(), fd.error().describe());
    bump(worker_.counters.connect_failures);
    close(CloseHow::Reset, ConnectionEnd::ConnectFailed, fd.error().describe());
    return;
  }
  sides_[kUp].fd = std::move(*fd);
  phase_ = Phase::Connecting;
  deadline_ = worker_.now() + worker_.config().connect_timeout;
  ++pending_;
  worker_.io().connect(sides_[kUp].fd.get(), destination_.get(), destination_.length(),
                       sides_[kUp].connect_request);
}

void Connection::onIoComplete(IoRequest& request, const IoCompletion& completion) {
  bump(worker_.loop.completions);
  --pending_;
  int side = request.tag;
  switch (request.op) {
    case IoOp::Recv: sides_[side].recv_armed = false; break;
    case IoOp::Send: sides_[side].send_armed = false; break;
    default: break;
  }
  if (closing_) {
    if (pending_ == 0 && tunnelIdle()) finalize();
    return;
  }
  if (handover_) {
    onHandoverCompletion(request, completion);
    if (!closing_) updateBuffered();
    return;
  }
  if (completion.result == -ECANCELED && (request.op == IoOp::Recv || request.op == IoOp::Send)) {
    // Cancelled for a handover that left this connection here: carry on.
    if (request.op == IoOp::Recv) armRecv(side);
    else flush(side);
    return;
  }
  last_activity_ = worker_.now();
  switch (request.op) {
    case IoOp::Recv: onReceived(side, completion); break;
    case IoOp::Send: onSent(side, completion.result); break;
    case IoOp::Connect: onConnected(completion.result); break;
    case IoOp::Accept: MESHLOCK_CHECK(false);
  }
  if (!closing_) updateBuffered();
}

void Connection::onConnected(int result) {
  if (result < 0) {
    bump(worker_.counters.connect_failures);
    spdlog::debug("engine: connect {}: {}", destination_.toString(), std::strerror(-result));
    close(CloseHow::Reset, ConnectionEnd::ConnectFailed, std::strerror(-result));
    return;
  }
  sides_[kUp].connected = true;
  if (outbound_ && setup_->client_tls) {
    TlsClientSetup& tls = *setup_->client_tls;  // used once: the session takes the hooks
    auto session = TlsSession::create(TlsSession::Role::Client, tls.context, tls.server_name,
                                      TlsHooks{std::move(tls.prepare), std::move(tls.verify_peer),
                                               std::move(tls.release), std::move(tls.explain_failure)});
    if (!session) {
      spdlog::warn("engine: {}", session.error().describe());
      bump(worker_.counters.handshake_failures);
      close(CloseHow::Reset, ConnectionEnd::HandshakeFailed, session.error().describe());
      return;
    }
    sides_[kUp].tls = std::move(*session);
    phase_ = Phase::Handshaking;
    deadline_ = worker_.now() + worker_.config().handshake_timeout;
    handshakeStep(kUp);
    return;
  }
  startRelay();
}

void Connection::onReceived(int side, const IoCompletion& completion) {
  Side& s = sides_[side];
  int result = completion.result;
  if (result < 0) {
    if (result == -ECANCELED) return;
    spdlog::debug("engine: recv on the {} side: {}", side == kDown ? "accepted" : "upstream", std::strerror(-result));
    bump(worker_.counters.resets);
    close(CloseHow::Reset, ConnectionEnd::Reset, std::strerror(-result));
    return;
  }
  switch (phase_) {
    case Phase::Detecting:
      if (result == 0) {
        close(CloseHow::Graceful, ConnectionEnd::Completed);
        return;
      }
      detect(completion.data);
      return;
    case Phase::Handshaking:
      if (result == 0) {
        bump(worker_.counters.handshake_failures);
        spdlog::debug("engine: peer closed during the TLS handshake");
        close(CloseHow::Reset, ConnectionEnd::HandshakeFailed, "peer closed during the handshake");
        return;
      }
      s.tls->feed(completion.data);
      handshakeStep(side);
      return;
    case Phase::Relaying:
      break;
    default:
      MESHLOCK_CHECK(false);
  }
  int other = 1 - side;
  if (result == 0) {
    s.read_eof = true;
    if (s.tls && !s.tls_peer_closed) bump(worker_.counters.tls_truncations);
    propagateEof(other);
    if (tunnel_) {
      close(CloseHow::Graceful, tunnel_->finished() ? ConnectionEnd::Completed : ConnectionEnd::Reset,
            tunnel_->finished() ? std::string() : "the peer closed the tunnel with streams open");
      return;
    }
  } else if (s.tls) {
    s.tls->feed(completion.data);
    pumpTls(side);
  } else {
    deliver(other, completion.data);
  }
  if (closing_) return;
  flush(other);
  flush(side);
  armRecv(side);
}

void Connection::detect(std::span<const std::byte> first) {
  if (first[0] == kTlsHandshakeRecord) {
    TlsServerSetup& tls = setup_->server_tls;  // used once: the session takes the hooks
    auto session = TlsSession::create(TlsSession::Role::Server, tls.context, {},
                                      TlsHooks{std::move(tls.prepare), std::move(tls.verify_peer),
                                               std::move(tls.release), std::move(tls.explain_failure)});
    if (!session) {
      spdlog::warn("engine: {}", session.error().describe());
      bump(worker_.counters.handshake_failures);
      close(CloseHow::Reset, ConnectionEnd::HandshakeFailed, session.error().describe());
      return;
    }
    sides_[kDown].tls = std::move(*session);
    sides_[kDown].tls->feed(first);
    phase_ = Phase::Handshaking;
    handshakeStep(kDown);
    return;
  }
  if (mode_ == InboundMode::Strict) {
    bump(worker_.counters.refused_plaintext);
    if (worker_.logAllowedFor(peer_)) {
      spdlog::warn("engine: {}: STRICT mTLS: refused a plaintext connection from {}", labels_->name,
                   peer_.toString());
    }
    close(CloseHow::Reset, ConnectionEnd::RefusedPlaintext, "plaintext under STRICT mTLS");
    return;
  }
  if (!authorized({}, {})) return;
  bump(worker_.counters.plaintext_relayed);
  sides_[kUp].plain_out.append(first);
  countBytes(kUp, first.size());
  connectUpstream();
}

bool Connection::authorized(std::string_view peer_identity, std::string_view server_name) {
  if (!setup_ || !setup_->authorize) return true;
  std::optional<Refusal> refusal = setup_->authorize(peer_identity, server_name);
  if (!refusal) return true;
  refusal->reason = std::string(peer_identity.empty() ? "plaintext" : peer_identity) + ": " + refusal->reason;
  deny(std::move(*refusal));
  return false;
}

void Connection::handshakeStep(int side) {
  Side& s = sides_[side];
  TlsStatus status = s.tls->handshake();
  if (status == TlsStatus::Error) {
    bump(worker_.counters.handshake_failures);
    const SocketAddress& peer = outbound_ ? destination_ : peer_;
    if (worker_.logAllowedFor(peer)) {
      spdlog::info("engine: {}: TLS handshake with {} failed: {}", labels_->name, peer.toString(), s.tls->reason());
    }
    close(CloseHow::TlsFailure, ConnectionEnd::HandshakeFailed, s.tls->reason());
    return;
  }
  flush(side);
  if (status != TlsStatus::Done) {
    if (!s.recv_armed) submitRecv(side);
    return;
  }
  bump(worker_.counters.handshakes);
  if (s.tls->info().resumed) bump(worker_.counters.handshakes_resumed);
  if (outbound_) {
    startRelay();
  } else if (setup_->tunnel) {
    startTunnel();
  } else {
    if (setup_->authorize) {
      const TlsInfo info = s.tls->info();
      if (!authorized(info.peer_identity, info.server_name)) return;
    }
    connectUpstream();  // the app is reached only once the peer is verified and allowed
  }
}

void Connection::startRelay() {
  phase_ = Phase::Relaying;
  worker_.leavePending(this);
  setup_.reset();  // contexts, hooks and the socket factory: an idle connection keeps none
  if (observer_) observer_->established(snapshot(worker_.now()));
  for (int side : {kDown, kUp}) {
    if (sides_[side].tls) pumpTls(side);  // records that came with the last handshake flight
    if (closing_) return;
  }
  for (int side : {kDown, kUp}) flush(side);
  for (int side : {kDown, kUp}) armRecv(side);
}

void Connection::armRecv(int side) {
  Side& s = sides_[side];
  if (closing_ || phase_ != Phase::Relaying || !s.connected || s.recv_armed || s.read_eof) return;
  // Back-pressure: nothing more is read while the other side's queue is full.
  if (queuedToward(1 - side) >= worker_.config().buffer_bound) {
    bump(worker_.loop.buffer_full);
    return;
  }
  submitRecv(side);
}

void Connection::flush(int side) {
  Side& s = sides_[side];
  if (closing_ || !s.connected || s.send_armed || s.write_shut || s.wire().empty()) return;
  submitSend(side);
}

void Connection::deliver(int to, std::span<const std::byte> plaintext) {
  countBytes(to, plaintext.size());
  if (to == kUp && up_tunnel_ != nullptr) {
    up_tunnel_->send(*this, plaintext);
    return;
  }
  Side& s = sides_[to];
  if (!s.tls) {
    s.plain_out.append(plaintext);
    return;
  }
  if (s.tls->write(plaintext) == TlsStatus::Error) {
    bump(worker_.counters.tls_errors);
    if (worker_.logAllowedFor(to == kDown ? peer_ : destination_))
      spdlog::info("engine: {}: TLS write: {}", labels_->name, s.tls->reason());
    close(CloseHow::TlsFailure, ConnectionEnd::TlsError, s.tls->reason());
  }
}

void Connection::pumpTls(int side) {
  Side& s = sides_[side];
  int other = 1 - side;
  size_t before = sides_[other].plain_out.size();
  TlsStatus status = s.tls->read(sides_[other].plain_out, SIZE_MAX);
  if (tunnel_) {
    feedTunnel(sides_[other].plain_out);  // the streams count their own bytes
    if (closing_) return;
  } else {
    countBytes(other, sides_[other].plain_out.size() - before);
  }
  if (status == TlsStatus::Closed) {
    s.tls_peer_closed = true;
    s.read_eof = true;
    propagateEof(other);
  } else if (status == TlsStatus::Error) {
    bump(worker_.counters.tls_errors);
    const SocketAddress& peer = side == kDown ? peer_ : destination_;
    if (worker_.logAllowedFor(peer)) spdlog::info("engine: {}: TLS read: {}", labels_->name, s.tls->reason());
    // In TLS 1.3 a client's handshake ends before the server has checked the
    // client certificate; a refusal arrives as a certificate alert in place of
    // the server's first record. Anything else is a record-layer error.
    bool refused_by_server = false;
    if (outbound_ && side == kUp && bytes_to_downstream_ == 0 && s.tls->peerRefusedOurCertificate()) {
      const TlsInfo info = s.tls->info();
      refused_by_server = info.version == "TLSv1.3" && !info.resumed;
    }
    close(CloseHow::TlsFailure, refused_by_server ? ConnectionEnd::HandshakeFailed : ConnectionEnd::TlsError,
          s.tls->reason());
  }
}

void Connection::propagateEof(int to) {
  sides_[to].eof_pending = true;
  if (to == kUp && up_hbone_) {
    // END_STREAM after what is queued. The stream's write side counts as shut
    // only once HTTP/2 closed the stream (onTunnelClosed): closing earlier
    // would reset a stream whose last bytes are still queued.
    if (up_tunnel_ != nullptr) up_tunnel_->endOutput(*this);
    return;
  }
  maybeShutdownWrite(to);
}

void Connection::maybeShutdownWrite(int side) {
  Side& s = sides_[side];
  if (closing_ || !s.eof_pending || s.write_shut || !s.connected) return;
  if (s.tls && !s.close_notify_sent) {
    s.close_notify_sent = true;
    s.tls->shutdown();
    flush(side);
  }
  if (!s.wire().empty() || s.send_armed) return;  // the FIN goes after the data
  ::shutdown(s.fd.get(), SHUT_WR);
  s.write_shut = true;
  maybeFinish();
}

void Connection::maybeFinish() {
  if (sides_[kDown].read_eof && sides_[kUp].read_eof && sides_[kDown].write_shut && sides_[kUp].write_shut) {
    close(CloseHow::Graceful, ConnectionEnd::Completed);
  }
}

void Connection::onSent(int side, int result) {
  Side& s = sides_[side];
  if (result < 0) {
    spdlog::debug("engine: send on the {} side: {}", side == kDown ? "accepted" : "upstream", std::strerror(-result));
    bump(worker_.counters.resets);
    close(CloseHow::Reset, ConnectionEnd::Reset, std::strerror(-result));
    return;
  }
  s.wire().consume(static_cast<size_t>(result));
  if (tunnel_ && side == kDown) tunnelOutput();  // room in the TLS queue: more frames
  // The app took the tunnel stream's bytes: its window opens by as much.
  if (up_tunnel_ != nullptr && side == kDown) up_tunnel_->consumed(*this, static_cast<size_t>(result));
  if (closing_) return;
  flush(side);
  if (!s.send_armed) s.sending.reset();
  armRecv(1 - side);  // room again for the side that feeds this one
  maybeShutdownWrite(side);
}

void Connection::onTick(std::chrono::steady_clock::time_point now) {
  if (closing_) return;
  switch (phase_) {
    case Phase::Detecting:
    case Phase::Handshaking:
      if (now >= deadline_) {
        bump(worker_.counters.handshake_timeouts);
        close(CloseHow::Reset, ConnectionEnd::HandshakeTimeout,
              phase_ == Phase::Detecting ? "no bytes from the peer" : "handshake not finished");
      }
      return;
    case Phase::Connecting:
      if (now >= deadline_) {
        bump(worker_.counters.connect_timeouts);
        close(CloseHow::Reset, ConnectionEnd::ConnectTimeout);
      }
      return;
    case Phase::Relaying: {
      if (tunnel_) tunnel_->onTick(now);
      auto idle = worker_.config().idle_timeout;
      if (idle.count() > 0 && now - last_activity_ >= idle) {
        bump(worker_.counters.idle_timeouts);
        close(CloseHow::Graceful, ConnectionEnd::IdleTimeout);
      }
      return;
    }
    case Phase::Closing:
      return;
  }
}

void Connection::close(CloseHow how, ConnectionEnd end, std::string reason) {
  if (closing_) return;
  end_ = end;
  end_reason_ = std::move(reason);
  closing_ = true;
  phase_ = Phase::Closing;
  worker_.leavePending(this);
  if (tunnel_) tunnel_->abort(end == ConnectionEnd::Completed ? ConnectionEnd::Reset : end);
  if (up_tunnel_ != nullptr) {
    ClientTunnel* tunnel = up_tunnel_;
    up_tunnel_ = nullptr;
    tunnel->detach(*this);  // resets the stream unless it ended
  }
  for (int side : {kDown, kUp}) {
    Side& s = sides_[side];
    if (!s.fd) continue;
    bool reset = how == CloseHow::Reset || (how == CloseHow::TlsFailure && !s.tls);
    if (how == CloseHow::TlsFailure && s.tls && s.connected && !s.send_armed && !s.wire().empty()) {
      // Best effort: let the peer see the alert that says why.
      iovec iov[8];
      int count = s.wire().frontIovecs(iov, 8);
      msghdr message{};
      message.msg_iov = iov;
      message.msg_iovlen = static_cast<size_t>(count);
      [[maybe_unused]] ssize_t n = ::sendmsg(s.fd.get(), &message, MSG_DONTWAIT | MSG_NOSIGNAL);
    }
    if (reset) setResetOnClose(s.fd.get());
    worker_.io().cancel(s.fd.get());
  }
  if (pending_ == 0 && tunnelIdle()) finalize();
}

void Connection::finalize() {
  // Before the sessions go: the observer reads the TLS details.
  if (observer_) observer_->closed(snapshot(worker_.now()), end_, end_reason_);
  for (Side& s : sides_) {
    if (!s.fd) continue;
    worker_.io().forget(s.fd.get());
    s.fd.reset();
  }
  for (Side& s : sides_) {
    s.plain_out.clear();
    s.tls.reset();
  }
  updateBuffered();
  bump(worker_.counters.closed);
  worker_.release(this);
}

void Connection::countBytes(int to, size_t n) {
  if (to == kUp) {
    bump(worker_.counters.bytes_to_upstream, n);
    bytes_to_upstream_ += n;
    if (observer_) observer_->transferred(n, 0);
  } else {
    bump(worker_.counters.bytes_to_downstream, n);
    bytes_to_downstream_ += n;
    if (observer_) observer_->transferred(0, n);
  }
}

void Connection::snapshots(std::chrono::steady_clock::time_point now, std::vector<ConnectionSnapshot>& out) const {
  // A tunnel's streams are the connections its peer made; the carrier is not one.
  if (tunnel_) {
    tunnel_->snapshots(now, out);
    return;
  }
  out.push_back(snapshot(now));
}

ConnectionSnapshot Connection::snapshot(std::chrono::steady_clock::time_point now) const {
  ConnectionSnapshot out;
  out.listener = labels_->name;
  out.pod_key = labels_->pod_key;
  out.outbound = outbound_;
  switch (phase_) {
    case Phase::Detecting: out.state = "detecting"; break;
    case Phase::Connecting: out.state = "connecting"; break;
    case Phase::Handshaking: out.state = "handshaking"; break;
    case Phase::Relaying: out.state = "relaying"; break;
    case Phase::Closing: out.state = "closing"; break;
  }
  out.peer = peer_;
  out.upstream = destination_;
  for (const Side& s : sides_) {
    if (s.tls && s.tls->handshakeDone()) out.tls = s.tls->info();
  }
  if (up_hbone_) {
    out.tunnel = "hbone";
    if (!up_tunnel_tls_.version.empty()) out.tls = up_tunnel_tls_;
  }
  if (!outbound_ && mode_ != InboundMode::Strict && !sides_[kDown].tls) out.plaintext = true;
  if (outbound_ && plain_outbound_) out.plaintext = true;
  out.denied_by = denied_by_;
  out.bytes_to_upstream = bytes_to_upstream_;
  out.bytes_to_downstream = bytes_to_downstream_;
  out.age = std::chrono::duration_cast<std::chrono::milliseconds>(now - accepted_at_);
  return out;
}

void Connection::updateBuffered() {
  size_t now = 0;
  for (Side& s : sides_) {
    now += s.plain_out.size();
    if (s.tls) now += s.tls->output().size() + s.tls->bufferedInput();
  }
  if (tunnel_) now += tunnel_->buffered();
  if (now > accounted_buffered_) {
    bump(worker_.counters.buffered_bytes, now - accounted_buffered_);
  } else {
    drop(worker_.counters.buffered_bytes, accounted_buffered_ - now);
  }
  accounted_buffered_ = now;
}

}  // namespace meshlock::engine
