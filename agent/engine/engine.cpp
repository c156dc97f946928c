// Engine: starts the workers, hands listeners to all of them, sums counters.
#include "engine/engine.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <latch>
#include <string_view>
#include <thread>

#include "engine/handover.h"
#include "engine/worker.h"

namespace meshlock::engine {

const char* toString(InboundMode mode) {
  switch (mode) {
    case InboundMode::Strict: return "STRICT";
    case InboundMode::Permissive: return "PERMISSIVE";
    case InboundMode::Disable: return "DISABLE";
  }
  return "?";
}

const char* toString(ConnectionEnd end) {
  switch (end) {
    case ConnectionEnd::Completed: return "completed";
    case ConnectionEnd::Reset: return "reset";
    case ConnectionEnd::RefusedPlaintext: return "plaintext_refused";
    case ConnectionEnd::HandshakeFailed: return "handshake_failed";
    case ConnectionEnd::HandshakeTimeout: return "handshake_timeout";
    case ConnectionEnd::ConnectFailed: return "connect_failed";
    case ConnectionEnd::ConnectTimeout: return "connect_timeout";
    case ConnectionEnd::IdleTimeout: return "idle_timeout";
    case ConnectionEnd::TlsError: return "tls_error";
    case ConnectionEnd::Shutdown: return "shutdown";
    case ConnectionEnd::Shed: return "shed";
    case ConnectionEnd::Denied: return "denied";
    case ConnectionEnd::HandedOver: return "handed_over";
  }
  return "?";
}

Result<std::unique_ptr<Engine>> Engine::start(EngineConfig config) {
  if (config.threads == 0) config.threads = std::max(1u, std::thread::hardware_concurrency());
  if (config.io == IoBackendKind::Auto) {
    const char* env = std::getenv("MESHLOCK_IO_URING");
    if (env != nullptr && std::string_view(env) == "0") config.io = IoBackendKind::Epoll;
  }
  std::unique_ptr<Engine> engine(new Engine());
  engine->shared_ = std::make_shared<EngineShared>();
  engine->shared_->config = config;
  IoBackendKind chosen = config.io;
  for (unsigned i = 0; i < config.threads; ++i) {
    auto worker = std::make_unique<Worker>(engine->shared_, i);
    // Once the first worker found io_uring missing, the others go straight to epoll.
    Result<IoBackendKind> kind = worker->start(chosen);
    if (!kind) return std::unexpected(kind.error().context("engine worker " + std::to_string(i)));
    chosen = *kind;
    engine->workers_.push_back(std::move(worker));
  }
  engine->backend_ = chosen;
  return engine;
}

Engine::~Engine() {
  for (auto& worker : workers_) worker->stop();
}

unsigned Engine::threads() const { return static_cast<unsigned>(workers_.size()); }

Result<ListenerId> Engine::addListener(UniqueFd listening_fd, ListenerSpec spec) {
  if (!listening_fd) return fail("listener " + spec.name + ": no socket");
  auto listener = std::make_shared<ListenerState>();
  listener->id = next_listener_.fetch_add(1);
  listener->fd = std::move(listening_fd);
  std::shared_ptr<PodBudget> budget = budgetFor(spec.pod_key);
  listener->labels = std::make_shared<const ListenerLabels>(ListenerLabels{spec.name, spec.pod_key, budget});
  listener->spec = std::move(spec);
  std::latch armed(static_cast<std::ptrdiff_t>(workers_.size()));
  for (auto& worker : workers_) {
    Worker* w = worker.get();
    w->post([w, listener, &armed] {
      w->addListener(listener);
      armed.count_down();
    });
  }
  armed.wait();
  return listener->id;
}

std::shared_ptr<PodBudget> Engine::budgetFor(const std::string& pod_key) {
  std::lock_guard lock(shared_->pods_mutex);
  std::weak_ptr<PodBudget>& slot = shared_->pods[pod_key];
  std::shared_ptr<PodBudget> budget = slot.lock();
  if (!budget) {
    budget = std::make_shared<PodBudget>();
    slot = budget;
  }
  std::erase_if(shared_->pods, [](auto& item) { return item.second.expired(); });
  return budget;
}

Status Engine::removeListener(ListenerId id) {
  std::latch removed(static_cast<std::ptrdiff_t>(workers_.size()));
  for (auto& worker : workers_) {
    Worker* w = worker.get();
    w->post([w, id, &removed] {
      w->removeListener(id);
      removed.count_down();
    });
  }
  removed.wait();
  return {};
}

std::vector<ConnectionSnapshot> Engine::connections() const {
  std::vector<std::vector<ConnectionSnapshot>> parts(workers_.size());
  std::latch done(static_cast<std::ptrdiff_t>(workers_.size()));
  for (size_t i = 0; i < workers_.size(); ++i) {
    Worker* w = workers_[i].get();
    w->post([w, &part = parts[i], &done] {
      w->snapshot(part);
      done.count_down();
    });
  }
  done.wait();
  std::vector<ConnectionSnapshot> all;
  for (auto& part : parts) std::move(part.begin(), part.end(), std::back_inserter(all));
  return all;
}

std::size_t Engine::reauthorize(const Reauthorizer& decide) {
  std::vector<std::size_t> closed(workers_.size(), 0);
  std::latch done(static_cast<std::ptrdiff_t>(workers_.size()));
  for (size_t i = 0; i < workers_.size(); ++i) {
    Worker* w = workers_[i].get();
    w->post([w, &decide, &count = closed[i], &done] {
      count = w->reauthorize(decide);
      done.count_down();
    });
  }
  done.wait();
  std::size_t total = 0;
  for (std::size_t n : closed) total += n;
  return total;
}

HandoverOutcome Engine::handOver(std::chrono::milliseconds timeout, const HandedSink& each) {
  auto collector = std::make_shared<HandoverCollector>();
  std::unique_lock lock(collector->mutex);
  auto nextWave = [&] {  // under the lock
    collector->marking = workers_.size();
    collector->began = 0;
    for (const auto& worker : workers_) {
      Worker* w = worker.get();
      w->post([w, collector] { w->handOver(collector, kHandoverWave); });
    }
  };
  nextWave();
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto all_out = [&] { return collector->marking == 0 && collector->outstanding == 0; };
    const bool woke = collector->changed.wait_until(
        lock, deadline, [&] { return !collector->outcome.connections.empty() || all_out(); });
    std::vector<HandedConnection> ready = std::move(collector->outcome.connections);
    collector->outcome.connections.clear();
    if (!ready.empty()) {
      lock.unlock();
      for (HandedConnection& c : ready) each(std::move(c));
      lock.lock();
      deadline = std::chrono::steady_clock::now() + timeout;  // still moving: wait on
    }
    if (!woke) break;
    if (all_out() && collector->outcome.connections.empty()) {
      if (collector->began == 0) break;  // a wave found nothing left to try
      nextWave();
      deadline = std::chrono::steady_clock::now() + timeout;
    }
  }
  // Those still quiescing (or not yet offered) stay and carry on here.
  collector->closed = true;
  collector->outcome.stayed += collector->outstanding;
  // Any that left between the last wait and `closed` are handed on too.
  std::vector<HandedConnection> late = std::move(collector->outcome.connections);
  collector->outcome.connections.clear();
  HandoverOutcome outcome = std::move(collector->outcome);
  lock.unlock();
  for (HandedConnection& c : late) each(std::move(c));
  return outcome;
}

HandoverOutcome Engine::handOver(std::chrono::milliseconds timeout) {
  std::vector<HandedConnection> all;
  HandoverOutcome outcome = handOver(timeout, [&](HandedConnection&& c) { all.push_back(std::move(c)); });
  outcome.connections = std::move(all);
  return outcome;
}

Status Engine::adopt(HandedConnection connection, std::unique_ptr<ConnectionObserver> observer,
                     std::function<void()> relaying) {
  if (!connection.down.fd || !connection.up.fd) return fail("adopt: a handed-over connection without its sockets");
  auto labels = std::make_shared<const ListenerLabels>(
      ListenerLabels{connection.listener, connection.pod_key, budgetFor(connection.pod_key)});
  Worker* w = workers_[next_adopter_.fetch_add(1, std::memory_order_relaxed) % workers_.size()].get();
  // The connection is moved into the task: std::function needs a copyable callable.
  auto handed = std::make_shared<HandedConnection>(std::move(connection));
  auto shared_observer = std::make_shared<std::unique_ptr<ConnectionObserver>>(std::move(observer));
  w->post([w, handed, shared_observer, labels, relaying = std::move(relaying)]() mutable {
    w->adopt(std::move(*handed), std::move(labels), std::move(*shared_observer));
    if (relaying) relaying();
  });
  return {};
}

void Engine::drainTunnels() {
  for (const auto& worker : workers_) {
    Worker* w = worker.get();
    w->post([w] { w->drainTunnels(); });
  }
}

EngineCounters Engine::counters() const {
  EngineCounters total;
  for (const auto& worker : workers_) {
#define MESHLOCK_COUNTER_SUM(name) total.name += worker->counters.name.load(std::memory_order_relaxed);
    MESHLOCK_ENGINE_COUNTERS(MESHLOCK_COUNTER_SUM)
#undef MESHLOCK_COUNTER_SUM
  }
  return total;
}

std::vector<WorkerFigures> Engine::workerFigures() const {
  std::vector<WorkerFigures> out;
  for (size_t i = 0; i < workers_.size(); ++i) {
    const Worker& w = *workers_[i];
    out.push_back({.worker = static_cast<unsigned>(i),
                   .loop_iterations = w.loop.iterations.load(std::memory_order_relaxed),
                   .completions = w.loop.completions.load(std::memory_order_relaxed),
                   .buffer_full = w.loop.buffer_full.load(std::memory_order_relaxed),
                   .buffered_bytes = w.counters.buffered_bytes.load(std::memory_order_relaxed),
                   .connections = w.counters.active.load(std::memory_order_relaxed)});
  }
  return out;
}

Result<UniqueFd> listenTcp(const SocketAddress& address, int backlog) {
  UniqueFd fd(::socket(address.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return failErrno("socket");
  int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd.get(), address.get(), address.length()) != 0) return failErrno("bind " + address.toString());
  if (::listen(fd.get(), backlog) != 0) return failErrno("listen " + address.toString());
  return fd;
}

}  // namespace meshlock::engine
