// An HBONE connection's Connection parts: inbound, the tunnel that carries
// the peer's streams (hbone_tunnel.h); outbound, this connection as one
// stream of a pooled client tunnel (hbone_pool.h).
#include <spdlog/spdlog.h>

#include "engine/connection.h"
#include "engine/hbone_pool.h"

namespace meshlock::engine {

void Connection::startTunnel() {
  Side& down = sides_[kDown];
  const uint8_t* alpn = nullptr;
  unsigned alpn_length = 0;
  SSL_get0_alpn_selected(down.tls->ssl(), &alpn, &alpn_length);
  const TlsInfo info = down.tls->info();
  // ztunnel's inbound speaks HTTP/2 over TLS 1.3 only (ALPN h2).
  std::string refused;
  if (std::string_view(reinterpret_cast<const char*>(alpn), alpn_length) != "h2")
    refused = "HBONE needs ALPN h2: the peer did not negotiate it";
  else if (info.version != "TLSv1.3")
    refused = "HBONE needs TLS 1.3, the peer negotiated " + info.version;
  if (refused.empty()) {
    auto tunnel = HboneTunnel::create(worker_, *this,
                                      HboneTunnel::Setup{.decide = std::move(setup_->tunnel),
                                                         .make_socket = std::move(setup_->make_socket),
                                                         .peer = peer_,
                                                         .local = destination_,
                                                         .tls = info,
                                                         .labels = labels_});
    if (tunnel) tunnel_ = std::move(*tunnel);
    else refused = tunnel.error().describe();
  }
  if (!refused.empty()) {
    bump(worker_.counters.handshake_failures);
    if (worker_.logAllowedFor(peer_)) spdlog::info("engine: {}: {}: {}", labels_->name, peer_.toString(), refused);
    close(CloseHow::Reset, ConnectionEnd::HandshakeFailed, std::move(refused));
    return;
  }
  phase_ = Phase::Relaying;
  worker_.leavePending(this);
  setup_.reset();
  pumpTls(kDown);  // HTTP/2 that came with the last handshake flight
  if (closing_) return;
  tunnelOutput();
  if (closing_) return;
  armRecv(kDown);
}

void Connection::feedTunnel(ByteQueue& plaintext) {
  const Status fed = tunnel_->receive(plaintext);
  tunnelOutput();  // SETTINGS acks, window updates, answers, or the GOAWAY that says why
  if (!fed && !closing_) {
    if (worker_.logAllowedFor(peer_))
      spdlog::info("engine: {}: HBONE from {}: {}", labels_->name, peer_.toString(), fed.error().describe());
    close(CloseHow::TlsFailure, ConnectionEnd::TlsError, fed.error().describe());
  }
}

void Connection::tunnelOutput() {
  if (!tunnel_ || closing_ || producing_) return;
  Side& down = sides_[kDown];
  producing_ = true;
  const Status produced = tunnel_->produce(*down.tls, worker_.config().buffer_bound);
  producing_ = false;
  if (!produced) {
    bump(worker_.counters.tls_errors);
    close(CloseHow::TlsFailure, ConnectionEnd::TlsError, produced.error().describe());
    return;
  }
  flush(kDown);
  armRecv(kDown);
  if (tunnel_->finished() && down.wire().empty() && !down.send_armed) close(CloseHow::Graceful, ConnectionEnd::Completed);
}

void Connection::drainTunnel() {
  if (!tunnel_ || closing_) return;
  tunnel_->drain();
  tunnelOutput();  // sends the GOAWAY; closes at once if no stream is open
}

void Connection::tunnelIoDone() {
  if (closing_) {
    if (pending_ == 0 && tunnelIdle()) finalize();
    return;
  }
  last_activity_ = worker_.now();
  updateBuffered();
}

// ---- Outbound: one stream of a pooled client tunnel --------------------------

void Connection::startTunnelStream(TunnelOrigin origin) {
  up_hbone_ = true;
  phase_ = Phase::Connecting;
  // The tunnel may have to connect and handshake first.
  deadline_ = worker_.now() + worker_.config().connect_timeout + worker_.config().handshake_timeout;
  HboneRequest request = std::move(origin.request);
  ClientTunnel& tunnel = worker_.hbonePool().tunnelFor(origin, setup_->make_socket);
  up_tunnel_ = &tunnel;
  tunnel.attach(*this, std::move(request));  // may answer at once: a tunnel that already failed
}

size_t Connection::queuedToward(int side) const {
  if (side == kUp && up_tunnel_ != nullptr) return up_tunnel_->queued(*this);
  const Side& s = sides_[side];
  return s.tls ? s.tls->output().size() : s.plain_out.size();
}

void Connection::onTunnelResponse(int status) {
  if (closing_) return;
  up_tunnel_tls_ = up_tunnel_->tlsInfo();
  if (status == 200) {
    startRelay();
    return;
  }
  // ztunnel's answers (docs/hbone.md): 401 is the destination's authorization policy.
  const std::string reason = "HBONE: the destination answered " + std::to_string(status) +
                             (status == 401 ? " (its authorization policy refused this source)"
                              : status == 503 ? " (its app could not be reached)"
                              : status == 400 ? " (it refused the request)" : "");
  if (status == 401) {
    denied_by_.clear();
    close(CloseHow::Reset, ConnectionEnd::Denied, reason);
  } else {
    bump(worker_.counters.connect_failures);
    close(CloseHow::Reset, ConnectionEnd::ConnectFailed, reason);
  }
}

void Connection::onTunnelData(std::span<const std::byte> data) {
  if (closing_) return;
  last_activity_ = worker_.now();
  countBytes(kDown, data.size());
  sides_[kDown].plain_out.append(data);
  flush(kDown);
  updateBuffered();
}

void Connection::onTunnelEnd() {
  if (closing_) return;
  sides_[kUp].read_eof = true;
  propagateEof(kDown);
}

void Connection::onTunnelClosed(bool failed, ConnectionEnd end, std::string reason) {
  up_tunnel_ = nullptr;  // the tunnel let go of this stream
  if (closing_) return;
  if (failed) {
    if (phase_ != Phase::Relaying && end == ConnectionEnd::Reset) end = ConnectionEnd::ConnectFailed;
    if (end == ConnectionEnd::HandshakeFailed) bump(worker_.counters.handshake_failures);
    if (end == ConnectionEnd::Reset) bump(worker_.counters.resets);
    close(CloseHow::Reset, end, std::move(reason));
    return;
  }
  // Both ends sent END_STREAM: once the app has the rest, the connection is complete.
  sides_[kUp].read_eof = true;
  sides_[kUp].write_shut = true;
  propagateEof(kDown);
  maybeFinish();
}

void Connection::onTunnelDrained() {
  if (!closing_) armRecv(kDown);
}

}  // namespace meshlock::engine
