#include "app/refusal_log.h"

namespace meshlock::app {

bool RefusalLog::isRefusal(engine::ConnectionEnd end) {
  using engine::ConnectionEnd;
  switch (end) {
    case ConnectionEnd::RefusedPlaintext:
    case ConnectionEnd::HandshakeFailed:
    case ConnectionEnd::HandshakeTimeout:
    case ConnectionEnd::ConnectFailed:
    case ConnectionEnd::ConnectTimeout:
    case ConnectionEnd::Shed:
    case ConnectionEnd::Denied:
      return true;
    case ConnectionEnd::Completed:
    case ConnectionEnd::Reset:
    case ConnectionEnd::IdleTimeout:
    case ConnectionEnd::TlsError:
    case ConnectionEnd::Shutdown:
    case ConnectionEnd::HandedOver:
      return false;
  }
  return false;
}

void RefusalLog::record(AccessRecord record) {
  const auto now = std::chrono::system_clock::now();
  std::lock_guard lock(mutex_);
  ++total_;
  if (capacity_ == 0) return;
  if (entries_.size() == capacity_) entries_.pop_front();
  entries_.push_back({now, std::move(record)});
}

std::vector<RefusalLog::Entry> RefusalLog::recent() const {
  std::lock_guard lock(mutex_);
  return {entries_.rbegin(), entries_.rend()};
}

uint64_t RefusalLog::total() const {
  std::lock_guard lock(mutex_);
  return total_;
}

}  // namespace meshlock::app
