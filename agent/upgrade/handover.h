// An agent upgrade without a dropped connection (docs/upgrade.md): the old
// process, told to stop, offers its established connections to the newest
// agent on the node, which owns the handover socket; each is the new one's
// once it said so (Taken), and the old one's again if it never did.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "common/error.h"
#include "common/unique_fd.h"
#include "engine/engine.h"
#include "engine/handover.h"

namespace meshlock::upgrade {

// The old side's account of one handover.
struct HandoverReport {
  std::string refused;   // non-empty: nothing was offered, and why (no newer agent, not ready, another format)
  size_t handed = 0;     // taken by the new agent
  size_t stayed = 0;     // never offered: drained here (handshake, half-closed, HBONE, TLS 1.2)
  size_t returned = 0;   // offered, never taken: carried on here again
  std::chrono::milliseconds took{0};
  // Per connection offered: from when it stopped being read to its offer,
  // in this process (the rest of its pause is the crossing and adoption,
  // which the new agent logs).
  std::vector<double> held_ms;
};

// "p50 1.2 ms, p99 8.0 ms, max 9.1 ms" of `ms`; empty for none.
[[nodiscard]] std::string percentiles(std::vector<double> ms);

struct HandOverOptions {
  std::string agent_version;
  // Engine::handOver's patience: it stops once no connection has quiesced for
  // this long. Each one goes as soon as it has (no stream waits for the
  // others), so thousands take as long as they take (~0.3 ms each here).
  std::chrono::milliseconds quiesce{2000};
  std::chrono::milliseconds reply{5000};    // for the new agent's Welcome and Taken
  // Offered and not yet Taken, at most: the engine's waves (Engine::handOver)
  // then wait for the new agent rather than queue behind it.
  size_t in_flight = 2 * engine::Engine::kHandoverWave;
  uint64_t instance = 0;                    // this agent's HandoverReceiver::instance(), if it has one
};

// Observers for connections that come back to (or arrive in) an engine.
using ObserverFor = std::function<std::unique_ptr<engine::ConnectionObserver>(const engine::HandedConnection&)>;

// The old agent, its listeners closed: offers `engine`'s connections to the
// agent at `path`. An error is only for what went wrong midway; whatever was
// not taken is back in `engine` by then.
[[nodiscard]] Result<HandoverReport> handOverTo(const std::filesystem::path& path, engine::Engine& engine,
                                                const HandOverOptions& options, const ObserverFor& observer_for);

// The new agent's side: serves the handover socket, one old agent at a time.
class HandoverReceiver {
 public:
  // nullopt: ready to take connections; else why not (said to the old agent, which drains).
  using Readiness = std::function<std::optional<std::string>()>;

  [[nodiscard]] static Result<std::unique_ptr<HandoverReceiver>> start(const std::filesystem::path& path,
                                                                        engine::Engine& engine, Readiness ready,
                                                                        ObserverFor observer_for);
  ~HandoverReceiver();
  HandoverReceiver(const HandoverReceiver&) = delete;
  HandoverReceiver& operator=(const HandoverReceiver&) = delete;

  // Random, per process: an agent's Hello names it so its own receiver refuses it.
  [[nodiscard]] uint64_t instance() const { return instance_; }
  [[nodiscard]] uint64_t adopted() const { return adopted_.load(); }
  [[nodiscard]] uint64_t sessions() const { return sessions_.load(); }

 private:
  HandoverReceiver(engine::Engine& engine, Readiness ready, ObserverFor observer_for)
      : engine_(engine), ready_(std::move(ready)), observer_for_(std::move(observer_for)) {}
  void run();
  void serve(UniqueFd connection);

  engine::Engine& engine_;
  Readiness ready_;
  ObserverFor observer_for_;
  UniqueFd listen_fd_;
  UniqueFd stop_fd_;  // eventfd: the destructor wakes the thread
  std::thread thread_;
  uint64_t instance_ = 0;
  std::atomic<uint64_t> adopted_{0};
  std::atomic<uint64_t> sessions_{0};
};

}  // namespace meshlock::upgrade
