#include "app/access_log_limiter.h"

namespace meshlock::app {
namespace {
constexpr auto kWindow = std::chrono::seconds(1);
constexpr auto kForgetAfter = std::chrono::seconds(10);
}  // namespace

void AccessLogLimiter::takeSummary(const Window& w, Clock::time_point now, std::vector<Suppressed>& out) const {
  if (w.suppressed == 0) return;
  out.push_back({w.pod, w.end, w.suppressed,
                 std::chrono::duration_cast<std::chrono::milliseconds>(std::min(now - w.start, Clock::duration(kWindow)))});
}

bool AccessLogLimiter::admit(std::string_view pod, std::string_view end, Clock::time_point now,
                             std::vector<Suppressed>& flushed) {
  std::lock_guard lock(mutex_);
  std::string key;
  key.reserve(pod.size() + end.size() + 1);
  key.append(pod).append("\n").append(end);
  auto it = windows_.find(key);
  if (it == windows_.end()) {
    it = windows_.emplace(std::move(key), Window{std::string(pod), std::string(end), now, 0, 0}).first;
  } else if (now - it->second.start >= kWindow) {
    takeSummary(it->second, now, flushed);
    it->second.start = now;
    it->second.written = 0;
    it->second.suppressed = 0;
  }
  Window& w = it->second;
  if (w.written < per_second_) {
    ++w.written;
    return true;
  }
  ++w.suppressed;
  ++suppressed_total_;
  return false;
}

std::vector<AccessLogLimiter::Suppressed> AccessLogLimiter::flush(Clock::time_point now) {
  std::vector<Suppressed> out;
  std::lock_guard lock(mutex_);
  for (auto it = windows_.begin(); it != windows_.end();) {
    Window& w = it->second;
    if (now - w.start < kWindow) {
      ++it;
      continue;
    }
    takeSummary(w, now, out);
    w.suppressed = 0;
    if (now - w.start >= kForgetAfter) {
      it = windows_.erase(it);
    } else {
      ++it;
    }
  }
  return out;
}

uint64_t AccessLogLimiter::suppressedTotal() const {
  std::lock_guard lock(mutex_);
  return suppressed_total_;
}

}  // namespace meshlock::app
