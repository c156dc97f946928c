// A worker: its thread runs one event loop, accepts on every listener, owns
// the connections it accepted and checks their deadlines on a coarse tick.
#include "engine/worker.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>

#include "engine/connection.h"
#include "engine/hbone_pool.h"

namespace meshlock::engine {
void setNoDelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

void setResetOnClose(int fd) {
  linger lg{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
}

Result<UniqueFd> openUpstreamSocket(const SocketFactory& make_socket, const SocketAddress& destination) {
  Result<UniqueFd> fd = make_socket ? make_socket(destination) : [&]() -> Result<UniqueFd> {
    UniqueFd s(::socket(destination.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!s) return failErrno("socket");
    return s;
  }();
  if (fd) setNoDelay(fd->get());
  return fd;
}

SourceBudgets::Key SourceBudgets::keyOf(const SocketAddress& peer) {
  // FNV-1a over the address (IPv4-mapped IPv6 as IPv4, the port left out),
  // two 12-bit indexes from the one 64-bit hash.
  const IpAddress ip = peer.ip();
  uint64_t h = 0xcbf29ce484222325ull ^ static_cast<uint64_t>(ip.family());
  for (uint8_t b : ip.bytes()) {
    h ^= b;
    h *= 0x100000001b3ull;
  }
  h ^= h >> 29;
  return Key{static_cast<uint16_t>(h % kCounters), static_cast<uint16_t>((h >> 32) % kCounters)};
}

bool SourceBudgets::tryAcquire(Key key, uint32_t cap) {
  uint32_t a = rows_[0][key.first].fetch_add(1, std::memory_order_relaxed);
  uint32_t b = rows_[1][key.second].fetch_add(1, std::memory_order_relaxed);
  if (std::min(a, b) < cap) return true;
  release(key);
  return false;
}

void SourceBudgets::release(Key key) {
  rows_[0][key.first].fetch_sub(1, std::memory_order_relaxed);
  rows_[1][key.second].fetch_sub(1, std::memory_order_relaxed);
}

Worker::Worker(std::shared_ptr<EngineShared> shared, unsigned index) : shared_(std::move(shared)), index_(index) {
  const EngineConfig& c = shared_->config;
  auto shortest = std::min(c.handshake_timeout, c.connect_timeout);
  if (c.idle_timeout.count() > 0) shortest = std::min(shortest, c.idle_timeout);
  tick_interval_ = std::clamp(shortest / 8, std::chrono::milliseconds(5), std::chrono::milliseconds(250));
}

Worker::~Worker() { stop(); }

Result<IoBackendKind> Worker::start(IoBackendKind kind) {
  std::promise<Result<IoBackendKind>> started;
  auto future = started.get_future();
  thread_ = std::thread([this, kind, &started] { run(kind, &started); });
  Result<IoBackendKind> result = future.get();
  if (!result) {
    thread_.join();
  }
  return result;
}

void Worker::stop() {
  if (!thread_.joinable()) return;
  stopping_.store(true);
  io_->wake();
  thread_.join();
}

void Worker::post(std::function<void()> task) {
  {
    std::lock_guard lock(posts_mutex_);
    posts_.push_back(std::move(task));
  }
  io_->wake();
}

void Worker::drainPosts() {
  std::vector<std::function<void()>> tasks;
  {
    std::lock_guard lock(posts_mutex_);
    tasks.swap(posts_);
  }
  for (auto& task : tasks) task();
}

void Worker::run(IoBackendKind kind, std::promise<Result<IoBackendKind>>* started) {
  // The ring is created on the thread that uses it (IORING_SETUP_SINGLE_ISSUER).
  Result<std::unique_ptr<IoBackend>> backend = std::unexpected(Error{"no back end tried"});
  if (kind == IoBackendKind::Uring || kind == IoBackendKind::Auto) {
    backend = makeUringBackend(shared_->config.io_options);
    if (!backend && kind == IoBackendKind::Auto) {
      if (index_ == 0) spdlog::warn("engine: io_uring unavailable ({}); using epoll", backend.error().describe());
      backend = makeEpollBackend(shared_->config.io_options);
    }
  } else {
    backend = makeEpollBackend(shared_->config.io_options);
  }
  if (!backend) {
    started->set_value(std::unexpected(backend.error()));
    return;
  }
  io_ = std::move(*backend);
  hbone_pool_ = std::make_unique<HbonePool>(*this);
  started->set_value(io_->kind());

  now_ = std::chrono::steady_clock::now();
  next_tick_ = now_ + tick_interval_;
  bool draining = false;
  auto drain_deadline = now_;
  for (;;) {
    auto wake_at = std::min(next_tick_, next_resume_);
    // Rounded up: rounded down, the last fraction of a millisecond before a
    // deadline would be spent in zero-timeout waits.
    auto wait = std::chrono::ceil<std::chrono::milliseconds>(wake_at - now_);
    if (Status s = io_->runOnce(std::max(wait, std::chrono::milliseconds(0))); !s) {
      spdlog::error("engine: worker {}: {}", index_, s.error().describe());
    }
    now_ = std::chrono::steady_clock::now();
    bump(loop.iterations);
    drainPosts();
    if (now_ >= next_resume_) resumeAccepting();
    if (now_ >= next_tick_) {
      tick();
      next_tick_ = now_ + tick_interval_;
    }
    for (Connection* c : graveyard_) delete c;
    graveyard_.clear();

    if (stopping_.load() && !draining) {
      draining = true;
      drain_deadline = now_ + std::chrono::seconds(2);
      for (auto& [id, entry] : listeners_) {
        entry->removed = true;
        if (entry->armed) io_->cancel(entry->state->fd.get());
      }
      std::vector<Connection*> open = connections_;
      for (Connection* c : open) c->terminate();
      hbone_pool_->shutdown();
    }
    if (draining) {
      std::erase_if(listeners_, [](auto& item) { return !item.second->armed; });
      hbone_pool_->reap();
      if ((connections_.empty() && listeners_.empty() && hbone_pool_->quiet()) || now_ >= drain_deadline) break;
    }
  }
  for (Connection* c : graveyard_) delete c;
  graveyard_.clear();
  if (!connections_.empty() || !listeners_.empty()) {
    spdlog::error("engine: worker {}: {} connections still had I/O in flight at shutdown", index_,
                  connections_.size());
  }
  if (!hbone_pool_->quiet()) {
    spdlog::error("engine: worker {}: HBONE tunnels still had I/O in flight at shutdown", index_);
    (void)hbone_pool_.release();  // left, not freed: the ring may still name them
  }
  hbone_pool_.reset();
  io_.reset();
}

void Worker::addListener(std::shared_ptr<ListenerState> listener) {
  auto entry = std::make_unique<ListenerEntry>();
  entry->worker = this;
  entry->state = std::move(listener);
  entry->request = IoRequest{entry.get(), IoOp::Accept, 0, -1};
  ListenerEntry& ref = *entry;
  listeners_[ref.state->id] = std::move(entry);
  arm(ref);
}

void Worker::removeListener(ListenerId id) {
  auto it = listeners_.find(id);
  if (it == listeners_.end()) return;
  ListenerEntry& entry = *it->second;
  entry.removed = true;
  if (entry.armed) {
    io_->cancel(entry.state->fd.get());  // the entry goes when the accept completes for the last time
  } else {
    listeners_.erase(it);
  }
}

void Worker::arm(ListenerEntry& entry) {
  entry.armed = true;
  entry.rearm_on_tick = false;
  io_->accept(entry.state->fd.get(), entry.request);
}

void Worker::onAccept(ListenerEntry& entry, const IoCompletion& completion) {
  if (completion.result >= 0) {
    UniqueFd fd(completion.result);
    // A second without errors since the last pause: the next pause starts short again.
    if (entry.backoff.count() > 0 && now_ - entry.resume_at >= std::chrono::seconds(1)) entry.backoff = {};
    // Accepted by the kernel before the listener went (a drain, a withdrawn
    // pod): the client already connected, so serve it rather than reset it.
    if (!stopping_.load()) acceptConnection(entry.state, std::move(fd));
  } else if (completion.result != -ECANCELED) {
    // EMFILE, ENFILE, ENOMEM...: io_uring's multishot accept has ended; the
    // epoll back end would find the listener readable again at once.
    backOffAccepting(entry, -completion.result);
    if (completion.more) io_->cancel(entry.state->fd.get());
  }
  if (completion.more) return;
  entry.armed = false;
  if (entry.removed) {
    io_->forget(entry.state->fd.get());
    listeners_.erase(entry.state->id);  // `entry` is gone after this
    return;
  }
  if (entry.backing_off) return;  // resumeAccepting re-arms it
  if (completion.result < 0) {
    entry.rearm_on_tick = true;
    return;
  }
  arm(entry);  // the multishot accept ended by itself (the kernel may end it): re-arm
}

void Worker::backOffAccepting(ListenerEntry& entry, int error) {
  using std::chrono::milliseconds;
  bump(counters.accept_errors);
  entry.backoff = entry.backoff.count() == 0 ? milliseconds(10) : std::min(entry.backoff * 2, milliseconds(1000));
  entry.backing_off = true;
  entry.resume_at = now_ + entry.backoff;
  next_resume_ = std::min(next_resume_, entry.resume_at);
  // One line a second per worker, whatever the number of listeners; the counter has every error.
  ++accept_errors_unlogged_;
  if (now_ - accept_error_logged_at_ >= std::chrono::seconds(1)) {
    spdlog::warn("engine: worker {}: accept on {}: {}; not accepting on it for {} ms ({} accept errors since the last such line)",
                 index_, entry.state->spec.name, std::strerror(error), entry.backoff.count(), accept_errors_unlogged_);
    accept_error_logged_at_ = now_;
    accept_errors_unlogged_ = 0;
  }
}

void Worker::resumeAccepting() {
  next_resume_ = std::chrono::steady_clock::time_point::max();
  for (auto& [id, entry] : listeners_) {
    if (!entry->backing_off) continue;
    if (now_ < entry->resume_at) {
      next_resume_ = std::min(next_resume_, entry->resume_at);
      continue;
    }
    entry->backing_off = false;
    if (!entry->armed && !entry->removed) arm(*entry);
  }
}

void Worker::acceptConnection(const std::shared_ptr<ListenerState>& listener, UniqueFd fd) {
  bump(counters.accepted);
  const EngineConfig& config = shared_->config;
  if (shared_->active.fetch_add(1, std::memory_order_relaxed) >= config.max_connections) {
    shared_->active.fetch_sub(1, std::memory_order_relaxed);
    bump(counters.refused_limit);
    return;  // closing the fd refuses it; established connections are untouched
  }
  PodBudget& budget = *listener->labels->budget;
  if (budget.active.fetch_add(1, std::memory_order_relaxed) >= config.max_connections_per_pod) {
    budget.active.fetch_sub(1, std::memory_order_relaxed);
    shared_->active.fetch_sub(1, std::memory_order_relaxed);
    bump(counters.refused_limit);
    return;
  }
  AcceptedSocket accepted;
  accepted.fd = fd.get();
  if (auto peer = SocketAddress::peerOf(fd.get())) accepted.peer = *peer;
  const SourceBudgets::Key source = SourceBudgets::keyOf(accepted.peer);
  // Outbound, the source is the served pod's own app: a connection pool
  // warming up may open hundreds at once, and the pod cap bounds it.
  const bool per_source = std::holds_alternative<InboundDecider>(listener->spec.decider);
  if (!admitPending(source, per_source)) {
    budget.active.fetch_sub(1, std::memory_order_relaxed);
    shared_->active.fetch_sub(1, std::memory_order_relaxed);
    setResetOnClose(fd.get());  // no TIME_WAIT left behind for a refusal
    return;
  }
  bump(counters.active);
  if (auto local = SocketAddress::localOf(fd.get())) accepted.local = *local;
  accepted.pod_key = &listener->spec.pod_key;

  auto* connection = new Connection(*this, std::move(fd), accepted.peer, listener->labels);
  connection->worker_slot = connections_.size();
  connections_.push_back(connection);
  connection->pending = true;
  connection->counted_per_source = per_source;
  connection->source = source;
  connection->pending_prev = pending_tail_;
  if (pending_tail_ != nullptr) pending_tail_->pending_next = connection;
  else pending_head_ = connection;
  pending_tail_ = connection;
  bump(counters.pending);

  if (auto* outbound = std::get_if<OutboundDecider>(&listener->spec.decider)) {
    Result<OutboundPlan> plan = (*outbound)(accepted);
    if (!plan) {
      bump(counters.refused_decider);
      if (logAllowedFor(accepted.peer)) spdlog::info("engine: {}: refused: {}", listener->spec.name, plan.error().describe());
      connection->refuse();
      return;
    }
    connection->startOutbound(std::move(*plan));
  } else {
    Result<InboundPlan> plan = std::get<InboundDecider>(listener->spec.decider)(accepted);
    if (!plan) {
      bump(counters.refused_decider);
      if (logAllowedFor(accepted.peer)) spdlog::info("engine: {}: refused: {}", listener->spec.name, plan.error().describe());
      connection->refuse();
      return;
    }
    connection->startInbound(std::move(*plan));
  }
}

bool Worker::admitPending(const SourceBudgets::Key& source, bool per_source) {
  const EngineConfig& config = shared_->config;
  if (per_source && !shared_->sources.tryAcquire(source, config.max_pending_handshakes_per_source)) {
    bump(counters.refused_pending_source);
    return false;
  }
  if (shared_->pending.fetch_add(1, std::memory_order_relaxed) < config.max_pending_handshakes) return true;
  // Full: the oldest pending connection of this worker makes room (workers
  // shed their own; the engine-wide count is one atomic).
  if (pending_head_ != nullptr) {
    bump(counters.shed_pending);
    pending_head_->shed();  // leaves the list and gives back its count now
    return true;
  }
  shared_->pending.fetch_sub(1, std::memory_order_relaxed);
  if (per_source) shared_->sources.release(source);
  bump(counters.refused_pending_node);
  return false;
}

void Worker::leavePending(Connection* connection) {
  if (!connection->pending) return;
  connection->pending = false;
  if (connection->pending_prev != nullptr) connection->pending_prev->pending_next = connection->pending_next;
  else pending_head_ = connection->pending_next;
  if (connection->pending_next != nullptr) connection->pending_next->pending_prev = connection->pending_prev;
  else pending_tail_ = connection->pending_prev;
  connection->pending_prev = connection->pending_next = nullptr;
  shared_->pending.fetch_sub(1, std::memory_order_relaxed);
  if (connection->counted_per_source) shared_->sources.release(connection->source);
  drop(counters.pending);
}

void Worker::release(Connection* connection) {
  leavePending(connection);
  size_t slot = connection->worker_slot;
  MESHLOCK_CHECK(slot < connections_.size() && connections_[slot] == connection);
  connections_[slot] = connections_.back();
  connections_[slot]->worker_slot = slot;
  connections_.pop_back();
  graveyard_.push_back(connection);
  drop(counters.active);
  shared_->active.fetch_sub(1, std::memory_order_relaxed);
  // The budget is released by the connection's destructor (it holds a reference).
}

bool Worker::logAllowedFor(const SocketAddress& peer) {
  // Per peer address: one line per interval. Per worker: a few lines a
  // second at most, whatever the number of peers (a scan, a storm of
  // refusals). The counters still count every event.
  constexpr auto kPeerInterval = std::chrono::seconds(10);
  constexpr size_t kMaxPeers = 4096;      // bounds the memory a scan from many addresses takes
  constexpr uint32_t kLinesPerSecond = 20;
  if (now_ - log_window_start_ >= std::chrono::seconds(1)) {
    log_window_start_ = now_;
    log_lines_in_window_ = 0;
  }
  if (log_lines_in_window_ >= kLinesPerSecond) return false;
  std::string key = peer.hostString();
  auto it = peer_logged_at_.find(key);
  if (it != peer_logged_at_.end()) {
    if (now_ - it->second < kPeerInterval) return false;
    it->second = now_;
  } else {
    if (peer_logged_at_.size() >= kMaxPeers) return false;  // swept on the tick
    peer_logged_at_.emplace(std::move(key), now_);
  }
  ++log_lines_in_window_;
  return true;
}

void Worker::snapshot(std::vector<ConnectionSnapshot>& out) const {
  out.reserve(connections_.size());
  for (const Connection* c : connections_) c->snapshots(now_, out);
}

std::size_t Worker::reauthorize(const Reauthorizer& decide) {
  // Decided first, closed after: closing may release a connection (swap-removal).
  std::vector<std::pair<Connection*, Refusal>> refused;
  for (Connection* c : connections_) {
    if (auto refusal = c->reauthorize(decide)) {
      refusal->reason = "no longer allowed after a policy change: " + refusal->reason;
      refused.emplace_back(c, std::move(*refusal));
    }
  }
  // HBONE streams: reset one by one, their tunnel goes on.
  std::size_t streams = 0;
  for (Connection* c : connections_) streams += c->reauthorizeStreams(decide);
  for (auto& [c, refusal] : refused) c->deny(std::move(refusal));
  return refused.size() + streams;
}

void Worker::handOver(const std::shared_ptr<HandoverCollector>& collector, size_t limit) {
  if (handover_for_ != collector.get()) {
    handover_for_ = collector.get();
    handover_tried_.clear();
  }
  std::vector<Connection*> open = connections_;  // one may leave at once (swap-removal)
  size_t began = 0;
  for (Connection* c : open) {
    if (began == limit) break;
    if (!handover_tried_.insert(c).second) continue;
    {
      std::lock_guard lock(collector->mutex);
      ++collector->outstanding;
    }
    if (c->beginHandover(collector)) {
      ++began;
    } else {
      std::lock_guard lock(collector->mutex);
      --collector->outstanding;
      ++collector->outcome.stayed;
    }
  }
  if (began == 0) handover_tried_.clear();  // the last wave: nothing is left to try
  {
    std::lock_guard lock(collector->mutex);
    collector->began += began;
    --collector->marking;
  }
  collector->changed.notify_all();
}

void Worker::adopt(HandedConnection handed, std::shared_ptr<const ListenerLabels> labels,
                   std::unique_ptr<ConnectionObserver> observer) {
  // No limit refuses it: the connection exists already, refusing would reset it.
  shared_->active.fetch_add(1, std::memory_order_relaxed);
  labels->budget->active.fetch_add(1, std::memory_order_relaxed);
  bump(counters.active);
  UniqueFd down = std::move(handed.down.fd);
  const SocketAddress peer = handed.peer;
  auto* connection = new Connection(*this, std::move(down), peer, std::move(labels));
  connection->worker_slot = connections_.size();
  connections_.push_back(connection);
  connection->adopt(std::move(handed), std::move(observer));
}

void Worker::drainTunnels() {
  std::vector<Connection*> open = connections_;  // draining may close one (swap-removal)
  for (Connection* c : open) c->drainTunnel();
}

void Worker::tick() {
  if (now_ - peer_log_swept_at_ >= std::chrono::seconds(10)) {
    peer_log_swept_at_ = now_;
    std::erase_if(peer_logged_at_, [&](const auto& entry) { return now_ - entry.second >= std::chrono::seconds(10); });
  }
  for (size_t i = 0; i < connections_.size();) {
    Connection* c = connections_[i];
    c->onTick(now_);
    // onTick may release c (swap-removal): re-examine slot i only if it changed.
    if (i < connections_.size() && connections_[i] == c) ++i;
  }
  for (auto& [id, entry] : listeners_) {
    if (entry->rearm_on_tick && !entry->armed && !entry->removed) arm(*entry);
  }
  hbone_pool_->onTick(now_);
}

}  // namespace meshlock::engine
