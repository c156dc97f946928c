// Engine internals: a worker thread with its event loop, the listeners it
// accepts on and the connections it owns. Nothing here is shared between
// workers except the read-only listener state and the limit counters.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_set>
#include <unordered_map>
#include <vector>

#include "engine/engine.h"
#include "engine/handover.h"

namespace meshlock::engine {

class Connection;
class HbonePool;

// Socket helpers shared by the engine's connections and tunnels.
void setNoDelay(int fd);
// SO_LINGER 0: close() sends a reset (the peer sees one) and leaves no TIME_WAIT.
void setResetOnClose(int fd);
// An upstream socket for `destination`, from `make_socket` (e.g. inside a
// pod's netns) or a plain non-blocking one; Nagle off either way.
[[nodiscard]] Result<UniqueFd> openUpstreamSocket(const SocketFactory& make_socket, const SocketAddress& destination);

struct PodBudget {
  std::atomic<int64_t> active{0};
};

// What a connection keeps of its listener: names for snapshots and the
// pod budget it counts against (not the socket: removing a listener closes it).
struct ListenerLabels {
  std::string name;
  std::string pod_key;
  std::shared_ptr<PodBudget> budget;
};

// One listening socket, shared read-only by every worker accepting on it.
struct ListenerState {
  ListenerId id = 0;
  UniqueFd fd;
  ListenerSpec spec;
  std::shared_ptr<const ListenerLabels> labels;
};

// Pre-handshake connections per source address, lock-free and of fixed
// size whatever the number of sources: a count-min sketch (two rows of
// counters, each address hashed into one counter per row). The smaller of
// its two counters bounds an address's count from above, so a source is
// never allowed more than the cap; an innocent address is limited too only
// if both its counters collide with busy sources (about 1 in 16 million per
// busy source).
class SourceBudgets {
 public:
  static constexpr size_t kCounters = 4096;
  // The source's two counter indexes.
  struct Key {
    uint16_t first = 0;
    uint16_t second = 0;
  };
  [[nodiscard]] static Key keyOf(const SocketAddress& peer);
  // Counts one more for `key` unless it already has `cap`.
  [[nodiscard]] bool tryAcquire(Key key, uint32_t cap);
  void release(Key key);

 private:
  std::array<std::atomic<uint32_t>, kCounters> rows_[2]{};
};

// One Engine::handOver: what the workers exported, filled under `mutex`.
struct HandoverCollector {
  std::mutex mutex;
  std::condition_variable changed;
  size_t marking = 0;      // workers still choosing this wave's connections
  size_t outstanding = 0;  // chosen, not yet exported or given up
  size_t began = 0;        // quiescing started in this wave (0: no connection was left to try)
  bool closed = false;     // the engine stopped waiting: the rest stay
  HandoverOutcome outcome;
};

struct EngineShared {
  EngineConfig config;
  std::atomic<int64_t> active{0};
  std::atomic<int64_t> pending{0};  // connections admitted and not yet relaying
  SourceBudgets sources;
  std::mutex pods_mutex;
  std::map<std::string, std::weak_ptr<PodBudget>> pods;
};

struct WorkerCounters {
#define MESHLOCK_COUNTER_ATOMIC(name) std::atomic<uint64_t> name{0};
  MESHLOCK_ENGINE_COUNTERS(MESHLOCK_COUNTER_ATOMIC)
#undef MESHLOCK_COUNTER_ATOMIC
};

// Only the owning worker writes its counters; relaxed increments suffice.
inline void bump(std::atomic<uint64_t>& counter, uint64_t by = 1) {
  counter.store(counter.load(std::memory_order_relaxed) + by, std::memory_order_relaxed);
}
inline void drop(std::atomic<uint64_t>& counter, uint64_t by = 1) {
  counter.store(counter.load(std::memory_order_relaxed) - by, std::memory_order_relaxed);
}

class Worker {
 public:
  Worker(std::shared_ptr<EngineShared> shared, unsigned index);
  ~Worker();

  // Starts the thread and its event loop; returns once the loop exists.
  [[nodiscard]] Result<IoBackendKind> start(IoBackendKind kind);
  // Closes every connection and listener and joins the thread.
  void stop();
  // Runs `task` on the worker thread (thread-safe).
  void post(std::function<void()> task);

  // Worker thread only, from here on.
  void addListener(std::shared_ptr<ListenerState> listener);
  void removeListener(ListenerId id);
  void snapshot(std::vector<ConnectionSnapshot>& out) const;
  // Engine::reauthorize, on this worker's thread: how many it closed.
  std::size_t reauthorize(const Reauthorizer& decide);
  void drainTunnels();
  // Engine::handOver's next wave: quiesces for `collector` up to `limit` of
  // its connections not yet tried for it (one that cannot go is counted as
  // staying, once).
  void handOver(const std::shared_ptr<HandoverCollector>& collector, size_t limit);
  // Engine::adopt, on this worker's thread.
  void adopt(HandedConnection handed, std::shared_ptr<const ListenerLabels> labels,
             std::unique_ptr<ConnectionObserver> observer);

  [[nodiscard]] IoBackend& io() { return *io_; }
  // Outbound HBONE tunnels of this worker (hbone_pool.h).
  [[nodiscard]] HbonePool& hbonePool() { return *hbone_pool_; }
  [[nodiscard]] const EngineConfig& config() const { return shared_->config; }
  [[nodiscard]] std::chrono::steady_clock::time_point now() const { return now_; }
  WorkerCounters counters;
  // The loop's own figures (engine::WorkerFigures); only this worker writes them.
  struct LoopFigures {
    std::atomic<uint64_t> iterations{0};
    std::atomic<uint64_t> completions{0};
    std::atomic<uint64_t> buffer_full{0};
  } loop;

  // A connection is done: unlink it now, free it after this loop iteration.
  void release(Connection* connection);
  // It relays or ends: its place among the pre-handshake connections is free.
  void leavePending(Connection* connection);
  // Whether a refusal of `peer` may be logged now: once per peer address per
  // interval, so a client that retries cannot flood the log (counters still
  // count every refusal).
  bool logAllowedFor(const SocketAddress& peer);

 private:
  struct ListenerEntry final : IoHandler {
    Worker* worker = nullptr;
    std::shared_ptr<ListenerState> state;
    IoRequest request;
    bool armed = false;
    bool removed = false;
    bool rearm_on_tick = false;
    // After an accept error (EMFILE, ENFILE, ENOMEM): not re-armed before
    // resume_at; the pause doubles while errors repeat, up to a second.
    bool backing_off = false;
    std::chrono::steady_clock::time_point resume_at;
    std::chrono::milliseconds backoff{0};
    void onIoComplete(IoRequest&, const IoCompletion& completion) override {
      bump(worker->loop.completions);
      worker->onAccept(*this, completion);
    }
  };

  void run(IoBackendKind kind, std::promise<Result<IoBackendKind>>* started);
  void onAccept(ListenerEntry& entry, const IoCompletion& completion);
  void acceptConnection(const std::shared_ptr<ListenerState>& listener, UniqueFd fd);
  // Whether a new connection from `source` may start its handshake; may shed
  // this worker's oldest pre-handshake connection to make room.
  // Inbound connections count against their source's cap too (per_source).
  bool admitPending(const SourceBudgets::Key& source, bool per_source);
  void backOffAccepting(ListenerEntry& entry, int error);
  void resumeAccepting();
  void arm(ListenerEntry& entry);
  void tick();
  void drainPosts();

  std::shared_ptr<EngineShared> shared_;
  unsigned index_;
  std::unique_ptr<IoBackend> io_;
  std::unique_ptr<HbonePool> hbone_pool_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::mutex posts_mutex_;
  std::vector<std::function<void()>> posts_;
  std::map<ListenerId, std::unique_ptr<ListenerEntry>> listeners_;
  std::vector<Connection*> connections_;
  // The handover in progress and the connections tried for it (compared,
  // never dereferenced: a handed one is gone).
  const HandoverCollector* handover_for_ = nullptr;
  std::unordered_set<const Connection*> handover_tried_;
  std::vector<Connection*> graveyard_;
  // Pre-handshake connections, oldest first (intrusive: Connection::pending_prev/next).
  Connection* pending_head_ = nullptr;
  Connection* pending_tail_ = nullptr;
  std::chrono::steady_clock::time_point next_resume_ = std::chrono::steady_clock::time_point::max();
  std::chrono::steady_clock::time_point accept_error_logged_at_;
  uint64_t accept_errors_unlogged_ = 0;
  std::chrono::steady_clock::time_point now_;
  std::chrono::milliseconds tick_interval_{100};
  std::chrono::steady_clock::time_point next_tick_;
  std::unordered_map<std::string, std::chrono::steady_clock::time_point> peer_logged_at_;
  std::chrono::steady_clock::time_point peer_log_swept_at_;
  std::chrono::steady_clock::time_point log_window_start_;
  uint32_t log_lines_in_window_ = 0;
};

}  // namespace meshlock::engine
