// The access log: one line per connection when it ends, for the operator who
// asks "what happened to my connection?". Text is key=value; JSON is one
// object per line. Its own logger, so `logs --level warn` does not hide it.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

#include "app/settings.h"

namespace spdlog {
class logger;
namespace details {
class thread_pool;
}
}

namespace meshlock::app {

struct AccessRecord {
  std::string direction;             // outbound | inbound
  std::string pod;                   // the served pod: ns/name
  std::string source;                // ip:port
  std::string source_workload;       // ns/workload, or empty when unknown
  std::string source_principal;      // SPIFFE ID proved by mTLS, or empty
  std::string destination;           // ip:port connected to
  std::string destination_service;   // FQDN, or empty
  std::string destination_workload;  // ns/workload, or empty
  std::string destination_principal;
  std::string policy;                // ISTIO_MUTUAL, SIMPLE, MUTUAL, DISABLE (outbound); STRICT, PERMISSIVE, DISABLE (inbound)
  std::string decided_by;            // the resources (or built-in rules) behind `policy`
  std::string security;              // mutual_tls | tls | none
  std::string tunnel = "none";       // hbone (a stream of an HBONE tunnel) | istio_mtls | none
  std::string tls_version;           // empty when no TLS was completed
  std::string tls_cipher;
  bool tls_resumed = false;
  uint64_t bytes_to_upstream = 0;    // from the side that opened the connection
  uint64_t bytes_to_downstream = 0;
  std::chrono::milliseconds duration{0};
  std::string end;                   // engine::toString(ConnectionEnd)
  std::string reason;                // why it failed, empty when it did not
};

class AccessLog {
 public:
  // Lines go to stderr, beside the agent's log, written by a thread of the
  // access log's own: a slow reader of stderr must not stall the workers.
  // When 8,192 lines wait, the oldest is dropped and counted.
  explicit AccessLog(LogFormat format);
  ~AccessLog();
  // For tests: lines go to `logger` instead.
  AccessLog(LogFormat format, std::shared_ptr<spdlog::logger> logger);

  void write(const AccessRecord& record) const;
  // Lines the refusal rate limit left out (AccessLogLimiter): one line,
  // "type=suppressed pod=… end=… lines=N window_ms=…" (JSON: "type":"access_suppressed").
  void writeSuppressed(std::string_view pod, std::string_view end, uint64_t lines,
                       std::chrono::milliseconds window) const;
  [[nodiscard]] static std::string formatText(const AccessRecord& record);
  [[nodiscard]] static std::string formatJson(const AccessRecord& record);
  // The JSON line's object; `time` is given (the admin API's records keep theirs).
  [[nodiscard]] static nlohmann::json toJson(const AccessRecord& record, std::string time);
  // Lines dropped because the writer fell 8,192 behind (meshlock_access_log_dropped_total).
  [[nodiscard]] uint64_t droppedLines() const;

 private:
  LogFormat format_;
  std::shared_ptr<spdlog::details::thread_pool> writer_;  // empty for a test's synchronous logger
  std::shared_ptr<spdlog::logger> logger_;
};

}  // namespace meshlock::app
