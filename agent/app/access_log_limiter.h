// A rate limit on the access-log lines of connections refused before their
// handshake: a flood of junk connections would otherwise write a ~400-byte
// line each. Per served pod and reason ("plaintext_refused", "shed", ...), N
// lines a second; what is left out is counted and summed up in one
// "suppressed" line per pod and reason once its second is over. Counters and
// `meshlockctl refused` still see every refusal.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace meshlock::app {

class AccessLogLimiter {
 public:
  using Clock = std::chrono::steady_clock;
  struct Suppressed {
    std::string pod;
    std::string end;
    uint64_t lines = 0;
    std::chrono::milliseconds over{0};  // the window they were left out in
  };

  explicit AccessLogLimiter(uint32_t lines_per_second) : per_second_(lines_per_second) {}

  // Whether this refusal's line may be written now (thread-safe). When its
  // key's previous second had lines left out, `flushed` gets their summary
  // first, to be written before this line.
  [[nodiscard]] bool admit(std::string_view pod, std::string_view end, Clock::time_point now,
                           std::vector<Suppressed>& flushed);
  // The summaries of every key whose second is over (call it about once a
  // second); keys quiet for a while are forgotten, so memory follows the pods.
  [[nodiscard]] std::vector<Suppressed> flush(Clock::time_point now);
  [[nodiscard]] uint64_t suppressedTotal() const;

 private:
  struct Window {
    std::string pod;
    std::string end;
    Clock::time_point start;
    uint32_t written = 0;
    uint64_t suppressed = 0;
  };
  void takeSummary(const Window& w, Clock::time_point now, std::vector<Suppressed>& out) const;

  const uint32_t per_second_;
  mutable std::mutex mutex_;
  std::map<std::string, Window, std::less<>> windows_;  // by "pod\nend"
  uint64_t suppressed_total_ = 0;
};

}  // namespace meshlock::app
