// Outbound HBONE tunnels, pooled per worker.
#include "engine/hbone_pool.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "engine/worker.h"

namespace meshlock::engine {
namespace {

// An unused tunnel stays this long for the next connection, then closes.
constexpr std::chrono::seconds kIdleTunnel{60};

}  // namespace

// ---- HbonePool ------------------------------------------------------------

HbonePool::~HbonePool() { shutdown(); }

ClientTunnel& HbonePool::tunnelFor(TunnelOrigin& origin, const SocketFactory& make_socket) {
  auto [first, last] = live_.equal_range(origin.pool_key);
  for (auto it = first; it != last; ++it)
    if (it->second->acceptsMore()) return *it->second;
  auto tunnel = std::make_unique<ClientTunnel>(worker_, origin.pool_key, origin.address,
                                               "HBONE to " + origin.address.toString());
  ClientTunnel& t = *tunnel;
  live_.emplace(origin.pool_key, std::move(tunnel));
  t.start(make_socket, std::move(origin.tls));
  return t;
}

void HbonePool::onTick(std::chrono::steady_clock::time_point now) {
  for (auto it = live_.begin(); it != live_.end();) {
    it->second->onTick(now);
    if (it->second->dead() || it->second->idleSince(now - kIdleTunnel)) {
      if (!it->second->dead()) it->second->fail(ConnectionEnd::IdleTimeout, "idle");
      dying_.push_back(std::move(it->second));
      it = live_.erase(it);
    } else {
      ++it;
    }
  }
  reap();
}

void HbonePool::reap() {
  std::erase_if(dying_, [](const std::unique_ptr<ClientTunnel>& t) { return t->dead(); });
}

void HbonePool::shutdown() {
  for (auto& [key, tunnel] : live_) {
    tunnel->fail(ConnectionEnd::Shutdown, "the engine stopped");
    dying_.push_back(std::move(tunnel));
  }
  live_.clear();
}

// ---- ClientTunnel ---------------------------------------------------------

ClientTunnel::ClientTunnel(Worker& worker, std::string key, SocketAddress address, std::string name)
    : worker_(worker), key_(std::move(key)), address_(std::move(address)), name_(std::move(name)),
      last_used_(worker.now()) {
  recv_request_ = IoRequest{this, IoOp::Recv, 0, -1};
  send_request_ = IoRequest{this, IoOp::Send, 0, -1};
  connect_request_ = IoRequest{this, IoOp::Connect, 0, -1};
}

ClientTunnel::~ClientTunnel() {
  MESHLOCK_CHECK(pending_ == 0);
  if (fd_) {
    worker_.io().forget(fd_.get());
    fd_.reset();
  }
}

void ClientTunnel::start(const SocketFactory& make_socket, TlsClientSetup tls) {
  setup_ = std::move(tls);
  Result<UniqueFd> fd = openUpstreamSocket(make_socket, address_);
  if (!fd) {
    bump(worker_.counters.connect_failures);
    fail(ConnectionEnd::ConnectFailed, fd.error().describe());
    return;
  }
  fd_ = std::move(*fd);
  deadline_ = worker_.now() + worker_.config().connect_timeout;
  ++pending_;
  worker_.io().connect(fd_.get(), address_.get(), address_.length(), connect_request_);
}

bool ClientTunnel::acceptsMore() const {
  if (closing_) return false;
  if (phase_ != Phase::Ready) return riders_.size() < 100;  // ztunnel's server takes 100 streams at first
  return session_->canOpen();
}

bool ClientTunnel::idleSince(std::chrono::steady_clock::time_point before) const {
  return riders_.empty() && last_used_ < before;
}

TlsInfo ClientTunnel::tlsInfo() const { return tls_ && tls_->handshakeDone() ? tls_->info() : TlsInfo{}; }

void ClientTunnel::attach(TunnelUser& user, HboneRequest request) {
  if (closing_) {  // failed in start(): the user hears it at once
    user.onTunnelClosed(true, failed_with_, name_ + ": " + failure_);
    return;
  }
  last_used_ = worker_.now();
  riders_.emplace(&user, Rider{.request = std::move(request), .stream = 0});
  waiting_.push_back(&user);
  if (phase_ == Phase::Ready) {
    openWaiting();
    pump();
  }
}

int32_t ClientTunnel::streamOf(const TunnelUser& user) const {
  if (!session_) return 0;
  auto it = riders_.find(&user);
  return it == riders_.end() ? 0 : it->second.stream;
}

TunnelUser* ClientTunnel::userOf(int32_t stream) const {
  auto it = by_stream_.find(stream);
  return it == by_stream_.end() ? nullptr : it->second;
}

void ClientTunnel::detach(TunnelUser& user) {
  auto it = riders_.find(&user);
  if (it == riders_.end()) return;
  const int32_t stream = it->second.stream;
  riders_.erase(it);
  last_used_ = worker_.now();
  if (stream == 0) {
    std::erase(waiting_, &user);
    return;
  }
  by_stream_.erase(stream);
  if (session_) {
    session_->reset(stream);
    pump();
  }
}

void ClientTunnel::send(TunnelUser& user, std::span<const std::byte> data) {
  if (const int32_t stream = streamOf(user)) {
    session_->send(stream, data);
    pump();
  }
}

void ClientTunnel::endOutput(TunnelUser& user) {
  if (const int32_t stream = streamOf(user)) {
    session_->endOutput(stream);
    pump();
  }
}

void ClientTunnel::consumed(TunnelUser& user, size_t bytes) {
  if (const int32_t stream = streamOf(user)) {
    session_->consumed(stream, bytes);
    pump();
  }
}

size_t ClientTunnel::queued(const TunnelUser& user) const {
  const int32_t stream = streamOf(user);
  return stream == 0 ? 0 : session_->queued(stream);
}

void ClientTunnel::onTick(std::chrono::steady_clock::time_point now) {
  if (closing_ || phase_ == Phase::Ready || now < deadline_) return;
  bump(phase_ == Phase::Connecting ? worker_.counters.connect_timeouts : worker_.counters.handshake_timeouts);
  fail(phase_ == Phase::Connecting ? ConnectionEnd::ConnectTimeout : ConnectionEnd::HandshakeTimeout,
       phase_ == Phase::Connecting ? "connecting the HBONE tunnel timed out" : "the tunnel's TLS handshake timed out");
}

void ClientTunnel::fail(ConnectionEnd end, std::string reason) {
  if (closing_) return;
  closing_ = true;
  failed_with_ = end;
  failure_ = reason;
  const bool quiet = end == ConnectionEnd::IdleTimeout || end == ConnectionEnd::Shutdown || end == ConnectionEnd::Completed;
  if (!quiet && worker_.logAllowedFor(address_))
    spdlog::info("engine: {} ended ({}): {}; {} stream(s) reset", name_, toString(end), reason, riders_.size());
  if (fd_) {
    if (end != ConnectionEnd::Completed) setResetOnClose(fd_.get());  // a clean end leaves a FIN
    if (pending_ > 0) worker_.io().cancel(fd_.get());
  }
  // Told after the lists are emptied: a user closing itself calls detach().
  std::vector<TunnelUser*> users;
  users.reserve(riders_.size());
  for (const auto& [user, rider] : riders_) users.push_back(const_cast<TunnelUser*>(user));
  riders_.clear();
  by_stream_.clear();
  waiting_.clear();
  for (TunnelUser* user : users) user->onTunnelClosed(true, end, name_ + ": " + reason);
}

void ClientTunnel::onIoComplete(IoRequest& request, const IoCompletion& completion) {
  bump(worker_.loop.completions);
  --pending_;
  switch (request.op) {
    case IoOp::Recv: recv_armed_ = false; break;
    case IoOp::Send: send_armed_ = false; break;
    default: break;
  }
  if (closing_) return;
  switch (request.op) {
    case IoOp::Connect: onConnected(completion.result); break;
    case IoOp::Recv: onReceived(completion); break;
    case IoOp::Send: onSent(completion.result); break;
    case IoOp::Accept: MESHLOCK_CHECK(false);
  }
}

void ClientTunnel::onConnected(int result) {
  if (result < 0) {
    bump(worker_.counters.connect_failures);
    fail(ConnectionEnd::ConnectFailed, std::strerror(-result));
    return;
  }
  TlsClientSetup& tls = *setup_;
  auto session = TlsSession::create(TlsSession::Role::Client, tls.context, tls.server_name,
                                    TlsHooks{std::move(tls.prepare), std::move(tls.verify_peer),
                                             std::move(tls.release), std::move(tls.explain_failure)});
  if (!session) {
    bump(worker_.counters.handshake_failures);
    fail(ConnectionEnd::HandshakeFailed, session.error().describe());
    return;
  }
  tls_ = std::move(*session);
  phase_ = Phase::Handshaking;
  deadline_ = worker_.now() + worker_.config().handshake_timeout;
  handshakeStep();
}

void ClientTunnel::handshakeStep() {
  const TlsStatus status = tls_->handshake();
  if (status == TlsStatus::Error) {
    bump(worker_.counters.handshake_failures);
    flush();
    fail(ConnectionEnd::HandshakeFailed, tls_->reason());
    return;
  }
  flush();
  if (status != TlsStatus::Done) {
    armRecv();
    return;
  }
  bump(worker_.counters.handshakes);
  const uint8_t* alpn = nullptr;
  unsigned alpn_length = 0;
  SSL_get0_alpn_selected(tls_->ssl(), &alpn, &alpn_length);
  if (std::string_view(reinterpret_cast<const char*>(alpn), alpn_length) != "h2") {
    fail(ConnectionEnd::HandshakeFailed, "the server did not select ALPN h2: it does not speak HBONE");
    return;
  }
  HboneSettings settings;
  settings.stream_output_bound = worker_.config().buffer_bound;
  auto session = HboneSession::create(HboneSession::Role::kClient, *this, settings);
  if (!session) {
    fail(ConnectionEnd::HandshakeFailed, session.error().describe());
    return;
  }
  session_ = std::move(*session);
  phase_ = Phase::Ready;
  setup_.reset();
  openWaiting();
  // Records that came with the last handshake flight.
  onReceived(IoCompletion{.result = 1, .more = false, .data = {}});
}

void ClientTunnel::openWaiting() {
  while (!waiting_.empty() && session_->canOpen()) {  // the rest open as streams end
    TunnelUser* user = waiting_.front();
    waiting_.pop_front();
    auto it = riders_.find(user);
    if (it == riders_.end()) continue;
    auto id = session_->open(it->second.request);
    if (!id) {
      riders_.erase(it);
      user->onTunnelClosed(true, ConnectionEnd::ConnectFailed, id.error().describe());
      continue;
    }
    it->second.stream = *id;
    by_stream_.emplace(*id, user);
  }
}

void ClientTunnel::onReceived(const IoCompletion& completion) {
  if (completion.result < 0) {
    if (completion.result == -ECANCELED) return;
    bump(worker_.counters.resets);
    fail(ConnectionEnd::Reset, std::strerror(-completion.result));
    return;
  }
  if (completion.result == 0) {
    // Without streams, a server closing the tunnel (after its GOAWAY) ends it cleanly.
    fail(riders_.empty() ? ConnectionEnd::Completed : ConnectionEnd::Reset, "the server closed the tunnel");
    return;
  }
  tls_->feed(completion.data);
  if (phase_ == Phase::Handshaking) {
    handshakeStep();
    return;
  }
  last_used_ = worker_.now();
  const TlsStatus status = tls_->read(plaintext_, SIZE_MAX);
  in_session_ = true;
  const Status fed = session_->receive(plaintext_);
  in_session_ = false;
  if (closing_) return;
  if (!fed) {
    pump();  // the GOAWAY that says why
    fail(ConnectionEnd::TlsError, fed.error().describe());
    return;
  }
  if (status == TlsStatus::Error) {
    bump(worker_.counters.tls_errors);
    fail(ConnectionEnd::TlsError, tls_->reason());
    return;
  }
  if (status == TlsStatus::Closed) {
    fail(ConnectionEnd::Reset, "the server closed the tunnel");
    return;
  }
  openWaiting();
  pump();
  // The server said GOAWAY (it drains) and no stream is left: this tunnel is done.
  if (session_->done() && riders_.empty()) {
    fail(ConnectionEnd::Completed, "the server ended the tunnel");
    return;
  }
  armRecv();
}

void ClientTunnel::pump() {
  if (closing_ || in_session_ || !session_) return;
  if (Status produced = encryptFrames(*session_, *tls_, worker_.config().buffer_bound); !produced) {
    bump(worker_.counters.tls_errors);
    fail(ConnectionEnd::TlsError, produced.error().describe());
    return;
  }
  flush();
}

void ClientTunnel::flush() {
  if (send_armed_ || !fd_ || tls_->output().empty()) return;
  if (!sending_) sending_ = std::make_unique<Sending>();
  const int count = tls_->output().frontIovecs(sending_->iov, 8);
  sending_->message = msghdr{};
  sending_->message.msg_iov = sending_->iov;
  sending_->message.msg_iovlen = static_cast<size_t>(count);
  send_armed_ = true;
  ++pending_;
  worker_.io().send(fd_.get(), sending_->message, send_request_);
}

void ClientTunnel::onSent(int result) {
  if (result < 0) {
    bump(worker_.counters.resets);
    fail(ConnectionEnd::Reset, std::strerror(-result));
    return;
  }
  tls_->output().consume(static_cast<size_t>(result));
  if (phase_ == Phase::Ready) pump();
  flush();
}

void ClientTunnel::armRecv() {
  if (recv_armed_ || closing_) return;
  recv_armed_ = true;
  ++pending_;
  worker_.io().recv(fd_.get(), recv_request_);
}

void ClientTunnel::onResponse(int32_t stream, int status) {
  if (TunnelUser* user = userOf(stream)) user->onTunnelResponse(status);
}

void ClientTunnel::onData(int32_t stream, std::span<const std::byte> data) {
  if (TunnelUser* user = userOf(stream)) {
    user->onTunnelData(data);
  } else {
    session_->consumed(stream, data.size());
  }
}

void ClientTunnel::onEndOfInput(int32_t stream) {
  if (TunnelUser* user = userOf(stream)) user->onTunnelEnd();
}

void ClientTunnel::onStreamClosed(int32_t stream, uint32_t error_code) {
  TunnelUser* user = userOf(stream);
  if (user == nullptr) return;
  by_stream_.erase(stream);
  riders_.erase(user);
  last_used_ = worker_.now();
  user->onTunnelClosed(error_code != 0, ConnectionEnd::Reset,
                       error_code != 0 ? "the server reset the stream (HTTP/2 error " + std::to_string(error_code) + ")"
                                       : std::string());
}

void ClientTunnel::onOutputDrained(int32_t stream) {
  if (TunnelUser* user = userOf(stream)) user->onTunnelDrained();
}

}  // namespace meshlock::engine
