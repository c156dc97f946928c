// Inbound HBONE: streams decided one by one, each relayed to its app port.
#include "engine/hbone_tunnel.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>

namespace meshlock::engine {

// One CONNECT stream and its TCP connection to the app.
class TunnelStream final : public IoHandler {
 public:
  TunnelStream(HboneTunnel& tunnel, int32_t id, SocketAddress target, std::unique_ptr<ConnectionObserver> observer)
      : tunnel_(tunnel), id_(id), target_(std::move(target)), observer_(std::move(observer)),
        started_at_(tunnel.worker().now()) {
    recv_request_ = IoRequest{this, IoOp::Recv, 0, -1};
    send_request_ = IoRequest{this, IoOp::Send, 0, -1};
    connect_request_ = IoRequest{this, IoOp::Connect, 0, -1};
  }
  ~TunnelStream() { MESHLOCK_CHECK(pending_ == 0); }

  [[nodiscard]] int32_t id() const { return id_; }
  [[nodiscard]] const SocketAddress& target() const { return target_; }
  [[nodiscard]] bool ended() const { return ended_; }
  [[nodiscard]] bool ioPending() const { return pending_ > 0; }
  [[nodiscard]] bool relaying() const { return connected_ && !ended_; }
  [[nodiscard]] size_t buffered() const { return to_app_.size(); }

  void start(UniqueFd fd) {
    fd_ = std::move(fd);
    deadline_ = tunnel_.worker().now() + tunnel_.worker().config().connect_timeout;
    ++pending_;
    tunnel_.worker().io().connect(fd_.get(), target_.get(), target_.length(), connect_request_);
  }

  void fromClient(std::span<const std::byte> data) {
    if (ended_) {
      tunnel_.server().consumed(id_, data.size());
      return;
    }
    to_app_.append(data);
    flushApp();
  }

  void clientEnded() {
    client_ended_ = true;
    flushApp();
  }

  void h2Closed(uint32_t error_code) {
    h2_closed_ = true;
    if (error_code != 0) {
      finish(true, ConnectionEnd::Reset, "the peer reset the stream (HTTP/2 error " + std::to_string(error_code) + ")");
      return;
    }
    maybeDone();
  }

  void outputDrained() { armRecv(); }

  // A reset both ways: the client's stream (unless HTTP/2 closed it already) and the app's socket.
  void abort(ConnectionEnd end, std::string reason) {
    if (!h2_closed_) tunnel_.server().reset(id_);
    finish(true, end, std::move(reason));
  }

  void deny(Refusal refusal) {
    denied_by_ = std::move(refusal.policy);
    abort(ConnectionEnd::Denied, std::move(refusal.reason));
  }

  void onTick(std::chrono::steady_clock::time_point now) {
    if (!connected_ && !ended_ && !connect_timed_out_ && now >= deadline_) {
      connect_timed_out_ = true;
      tunnel_.worker().io().cancel(fd_.get());
    }
  }

  void onIoComplete(IoRequest& request, const IoCompletion& completion) override {
    bump(tunnel_.worker().loop.completions);
    --pending_;
    switch (request.op) {
      case IoOp::Recv: recv_armed_ = false; break;
      case IoOp::Send: send_armed_ = false; break;
      default: break;
    }
    if (ended_) {
      if (pending_ == 0) releaseSocket();
    } else {
      switch (request.op) {
        case IoOp::Connect: onConnected(completion.result); break;
        case IoOp::Recv: onReceived(completion); break;
        case IoOp::Send: onSent(completion.result); break;
        case IoOp::Accept: MESHLOCK_CHECK(false);
      }
    }
    tunnel_.streamIoDone(*this);
  }

  [[nodiscard]] ConnectionSnapshot snapshot(std::chrono::steady_clock::time_point now) const {
    ConnectionSnapshot out = tunnelSnapshot(tunnel_.setup(), target_);
    out.state = ended_ ? "closing" : connected_ ? "relaying" : "connecting";
    out.denied_by = denied_by_;
    out.bytes_to_upstream = bytes_to_app_;
    out.bytes_to_downstream = bytes_to_client_;
    out.age = std::chrono::duration_cast<std::chrono::milliseconds>(now - started_at_);
    return out;
  }

  static ConnectionSnapshot tunnelSnapshot(const HboneTunnel::Setup& setup, const SocketAddress& target) {
    ConnectionSnapshot out;
    out.listener = setup.labels->name;
    out.pod_key = setup.labels->pod_key;
    out.outbound = false;
    out.peer = setup.peer;
    out.upstream = target;
    out.tls = setup.tls;
    out.tunnel = "hbone";
    return out;
  }

 private:
  Worker& worker() { return tunnel_.worker(); }

  void onConnected(int result) {
    if (result < 0) {
      const std::string reason = connect_timed_out_ ? "connect timed out" : std::strerror(-result);
      bump(connect_timed_out_ ? worker().counters.connect_timeouts : worker().counters.connect_failures);
      bump(worker().counters.tunnel_refused);
      tunnel_.server().refuse(id_, HboneStatus::kServiceUnavailable);
      tunnel_.host().tunnelOutput();
      h2_closed_ = true;  // answered: nothing more goes to this stream
      finish(true, connect_timed_out_ ? ConnectionEnd::ConnectTimeout : ConnectionEnd::ConnectFailed, reason);
      return;
    }
    connected_ = true;
    bump(worker().counters.tunnel_streams);
    tunnel_.server().accept(id_);
    if (observer_) observer_->established(snapshot(worker().now()));
    tunnel_.host().tunnelOutput();
    flushApp();
    armRecv();
  }

  void onReceived(const IoCompletion& completion) {
    const int result = completion.result;
    if (result < 0) {
      if (result == -ECANCELED) return;
      bump(worker().counters.resets);
      abort(ConnectionEnd::Reset, std::string("the app: ") + std::strerror(-result));
      tunnel_.host().tunnelOutput();
      return;
    }
    if (result == 0) {
      app_eof_ = true;
      tunnel_.server().endOutput(id_);
      tunnel_.host().tunnelOutput();
      maybeDone();
      return;
    }
    bytes_to_client_ += completion.data.size();
    bump(worker().counters.bytes_to_downstream, completion.data.size());
    if (observer_) observer_->transferred(0, completion.data.size());
    tunnel_.server().send(id_, completion.data);
    tunnel_.host().tunnelOutput();
    armRecv();
  }

  void onSent(int result) {
    if (result < 0) {
      bump(worker().counters.resets);
      abort(ConnectionEnd::Reset, std::string("the app: ") + std::strerror(-result));
      tunnel_.host().tunnelOutput();
      return;
    }
    const auto n = static_cast<size_t>(result);
    to_app_.consume(n);
    bytes_to_app_ += n;
    bump(worker().counters.bytes_to_upstream, n);
    if (observer_) observer_->transferred(n, 0);
    tunnel_.server().consumed(id_, n);  // the client may send as much again
    tunnel_.host().tunnelOutput();
    if (!send_armed_) sending_.reset();
    flushApp();
  }

  void armRecv() {
    if (!connected_ || ended_ || recv_armed_ || app_eof_) return;
    // Back-pressure: the app is not read while the client has not taken what it sent.
    if (tunnel_.server().queued(id_) >= worker().config().buffer_bound) {
      bump(worker().loop.buffer_full);
      return;
    }
    recv_armed_ = true;
    ++pending_;
    worker().io().recv(fd_.get(), recv_request_);
  }

  void flushApp() {
    if (!connected_ || ended_ || send_armed_ || write_shut_) return;
    if (!to_app_.empty()) {
      if (!sending_) sending_ = std::make_unique<Sending>();
      const int count = to_app_.frontIovecs(sending_->iov, 8);
      sending_->message = msghdr{};
      sending_->message.msg_iov = sending_->iov;
      sending_->message.msg_iovlen = static_cast<size_t>(count);
      send_armed_ = true;
      ++pending_;
      worker().io().send(fd_.get(), sending_->message, send_request_);
      return;
    }
    if (client_ended_) {
      ::shutdown(fd_.get(), SHUT_WR);  // the client's END_STREAM, as the app's FIN
      write_shut_ = true;
      maybeDone();
    }
  }

  void maybeDone() {
    if (h2_closed_ && write_shut_ && app_eof_) finish(false, ConnectionEnd::Completed, {});
  }

  void finish(bool reset, ConnectionEnd end, std::string reason) {
    if (ended_) return;
    ended_ = true;
    if (reset) setResetOnClose(fd_.get());
    // What the client sent and the app never took still holds connection window.
    if (!to_app_.empty() && !h2_closed_) tunnel_.server().consumed(id_, to_app_.size());
    to_app_.clear();
    if (observer_) observer_->closed(snapshot(worker().now()), end, reason);
    bump(worker().counters.closed);
    if (pending_ > 0) {
      worker().io().cancel(fd_.get());
    } else {
      releaseSocket();
    }
  }

  void releaseSocket() {
    if (!fd_) return;
    worker().io().forget(fd_.get());
    fd_.reset();
    sending_.reset();
  }

  struct Sending {
    msghdr message{};
    iovec iov[8]{};
  };

  HboneTunnel& tunnel_;
  int32_t id_;
  SocketAddress target_;
  std::unique_ptr<ConnectionObserver> observer_;
  UniqueFd fd_;
  IoRequest recv_request_;
  IoRequest send_request_;
  IoRequest connect_request_;
  std::unique_ptr<Sending> sending_;
  ByteQueue to_app_;
  std::string denied_by_;
  std::chrono::steady_clock::time_point started_at_;
  std::chrono::steady_clock::time_point deadline_;
  uint64_t bytes_to_app_ = 0;
  uint64_t bytes_to_client_ = 0;
  int pending_ = 0;
  bool connected_ = false;
  bool connect_timed_out_ = false;
  bool recv_armed_ = false;
  bool send_armed_ = false;
  bool client_ended_ = false;  // END_STREAM from the client
  bool write_shut_ = false;    // and passed on to the app as FIN
  bool app_eof_ = false;       // the app's FIN, passed on as END_STREAM
  bool h2_closed_ = false;     // HTTP/2 is done with the stream
  bool ended_ = false;
};

HboneTunnel::HboneTunnel(Worker& worker, Host& host, Setup setup)
    : worker_(worker), host_(host), setup_(std::move(setup)) {}

HboneTunnel::~HboneTunnel() {
  for (auto& [id, stream] : streams_) MESHLOCK_CHECK(!stream->ioPending());
  for (auto& stream : ending_) MESHLOCK_CHECK(!stream->ioPending());
}

Result<std::unique_ptr<HboneTunnel>> HboneTunnel::create(Worker& worker, Host& host, Setup setup) {
  std::unique_ptr<HboneTunnel> tunnel(new HboneTunnel(worker, host, std::move(setup)));
  HboneSettings settings;
  settings.stream_output_bound = worker.config().buffer_bound;
  auto server = HboneSession::create(HboneSession::Role::kServer, *tunnel, settings);
  if (!server) return std::unexpected(server.error());
  tunnel->server_ = std::move(*server);
  return tunnel;
}

TunnelStream* HboneTunnel::find(int32_t stream) {
  auto it = streams_.find(stream);
  return it == streams_.end() ? nullptr : it->second.get();
}

Status HboneTunnel::receive(ByteQueue& plaintext) {
  reap();
  return server_->receive(plaintext);
}


bool HboneTunnel::finished() const { return streams_.empty() && server_->done(); }

bool HboneTunnel::idle() const {
  for (const auto& [id, stream] : streams_)
    if (stream->ioPending()) return false;
  for (const auto& stream : ending_)
    if (stream->ioPending()) return false;
  return true;
}

size_t HboneTunnel::buffered() const {
  size_t n = 0;
  for (const auto& [id, stream] : streams_) n += stream->buffered() + server_->queued(id);
  return n;
}

void HboneTunnel::abort(ConnectionEnd why) {
  for (auto& [id, stream] : streams_) stream->abort(why, "the tunnel closed");
  for (auto& [id, stream] : streams_) ending_.push_back(std::move(stream));
  streams_.clear();
}

void HboneTunnel::streamIoDone(TunnelStream& stream) {
  // Moved aside, not freed: the stream is still inside its own callback.
  if (stream.ended()) {
    auto it = streams_.find(stream.id());
    if (it != streams_.end() && it->second.get() == &stream) {
      ending_.push_back(std::move(it->second));
      streams_.erase(it);
    }
  }
  host_.tunnelIoDone();
}

void HboneTunnel::reap() {
  std::erase_if(ending_, [](const std::unique_ptr<TunnelStream>& s) { return !s->ioPending(); });
}

void HboneTunnel::onTick(std::chrono::steady_clock::time_point now) {
  reap();
  for (auto& [id, stream] : streams_) stream->onTick(now);
}

void HboneTunnel::refuse(int32_t stream, HboneStatus status, std::string_view reason) {
  bump(worker_.counters.tunnel_refused);
  if (worker_.logAllowedFor(setup_.peer))
    spdlog::info("engine: {}: HBONE stream from {} ({}) answered {}: {}", setup_.labels->name, setup_.peer.toString(),
                 setup_.tls.peer_identity, static_cast<int>(status), reason);
  server_->refuse(stream, status);
}

void HboneTunnel::onRequest(int32_t stream, const HboneRequest& request) {
  if (request.method != "CONNECT" || request.extended_connect) {
    refuse(stream, HboneStatus::kBadRequest, "not a CONNECT request: " + request.method);
    return;
  }
  auto target = SocketAddress::parse(request.authority);
  if (!target || target->port() == 0) {
    refuse(stream, HboneStatus::kBadRequest, "the authority is not an address and port: " + request.authority);
    return;
  }
  // As ztunnel's validate_destination: a tunnel to this pod reaches this pod.
  if (target->ip() != setup_.local.ip()) {
    refuse(stream, HboneStatus::kBadRequest,
           "the target " + target->toString() + " is not the address the tunnel reached (" +
               setup_.local.hostString() + ")");
    return;
  }
  auto plan = setup_.decide(TunnelRequest{.target = *target, .peer_identity = setup_.tls.peer_identity,
                                          .peer = setup_.peer, .headers = request});
  if (!plan) {
    refuse(stream, HboneStatus::kServiceUnavailable, plan.error().describe());
    return;
  }
  if (plan->refusal) {
    bump(worker_.counters.refused_authz);
    refuse(stream, HboneStatus::kUnauthorized, setup_.tls.peer_identity + ": " + plan->refusal->reason);
    if (plan->observer) {
      ConnectionSnapshot snapshot = TunnelStream::tunnelSnapshot(setup_, *target);
      snapshot.state = "closing";
      snapshot.denied_by = plan->refusal->policy;
      plan->observer->closed(snapshot, ConnectionEnd::Denied, setup_.tls.peer_identity + ": " + plan->refusal->reason);
    }
    return;
  }
  Result<UniqueFd> fd = openUpstreamSocket(setup_.make_socket, *target);
  if (!fd) {
    bump(worker_.counters.connect_failures);
    refuse(stream, HboneStatus::kServiceUnavailable, fd.error().describe());
    return;
  }
  auto owned = std::make_unique<TunnelStream>(*this, stream, *target, std::move(plan->observer));
  TunnelStream& s = *owned;
  streams_.emplace(stream, std::move(owned));
  s.start(std::move(*fd));
}

void HboneTunnel::onData(int32_t stream, std::span<const std::byte> data) {
  if (TunnelStream* s = find(stream)) {
    s->fromClient(data);
  } else {
    server_->consumed(stream, data.size());
  }
}

void HboneTunnel::onEndOfInput(int32_t stream) {
  if (TunnelStream* s = find(stream)) s->clientEnded();
}

void HboneTunnel::onStreamClosed(int32_t stream, uint32_t error_code) {
  auto it = streams_.find(stream);
  if (it == streams_.end()) return;
  it->second->h2Closed(error_code);
  if (it->second->ended()) {
    ending_.push_back(std::move(it->second));
    streams_.erase(it);
  }
}

void HboneTunnel::onOutputDrained(int32_t stream) {
  if (TunnelStream* s = find(stream)) s->outputDrained();
}

void HboneTunnel::snapshots(std::chrono::steady_clock::time_point now, std::vector<ConnectionSnapshot>& out) const {
  for (const auto& [id, stream] : streams_) out.push_back(stream->snapshot(now));
}

size_t HboneTunnel::reauthorize(const Reauthorizer& decide) {
  std::vector<std::pair<TunnelStream*, Refusal>> refused;
  for (auto& [id, stream] : streams_) {
    if (!stream->relaying()) continue;
    if (auto refusal = decide(EstablishedPeer{.pod_key = setup_.labels->pod_key,
                                              .peer = setup_.peer,
                                              .app = stream->target(),
                                              .peer_identity = setup_.tls.peer_identity,
                                              .server_name = setup_.tls.server_name})) {
      refusal->reason = "no longer allowed after a policy change: " + refusal->reason;
      refused.emplace_back(stream.get(), std::move(*refusal));
    }
  }
  for (auto& [stream, refusal] : refused) {
    bump(worker_.counters.refused_authz);
    stream->deny(std::move(refusal));
  }
  for (auto it = streams_.begin(); it != streams_.end();) {
    if (it->second->ended()) {
      ending_.push_back(std::move(it->second));
      it = streams_.erase(it);
    } else {
      ++it;
    }
  }
  if (!refused.empty()) host_.tunnelOutput();
  return refused.size();
}

}  // namespace meshlock::engine
