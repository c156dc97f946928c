// The agent's recent refusals (plaintext under STRICT, failed handshakes,
// unreachable upstreams, connections it could not set up), kept for
// `meshlockctl refused`: an operator asks "why was my connection refused?"
// of the agent, not of its log. Bounded: the oldest go first.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <mutex>
#include <vector>

#include "app/access_log.h"
#include "engine/engine.h"

namespace meshlock::app {

class RefusalLog {
 public:
  struct Entry {
    std::chrono::system_clock::time_point at;
    AccessRecord record;
  };

  explicit RefusalLog(size_t capacity = 512) : capacity_(capacity) {}

  // Whether a connection that ended so was refused (rather than finished or reset).
  [[nodiscard]] static bool isRefusal(engine::ConnectionEnd end);

  void record(AccessRecord record);  // thread-safe
  [[nodiscard]] std::vector<Entry> recent() const;  // newest first
  [[nodiscard]] uint64_t total() const;             // since start, including those no longer kept
  [[nodiscard]] size_t capacity() const { return capacity_; }

 private:
  const size_t capacity_;
  mutable std::mutex mutex_;
  std::deque<Entry> entries_;
  uint64_t total_ = 0;
};

}  // namespace meshlock::app
