// The access log: one line per connection when it ends, for the operator who
// asks "what happened to my connection?". Text is key=value; JSON is one
// object per line. Its own logger, so `logs --level warn` does not hide it.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "app/settings.h"

namespace spdlog {
class logger;
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
  // Lines go to stderr, beside the agent's log.
  explicit AccessLog(LogFormat format);
  // For tests: lines go to `logger` instead.
  AccessLog(LogFormat format, std::shared_ptr<spdlog::logger> logger);

  void write(const AccessRecord& record) const;
  [[nodiscard]] static std::string formatText(const AccessRecord& record);
  [[nodiscard]] static std::string formatJson(const AccessRecord& record);
  // The JSON line's object; `time` is given (the admin API's records keep theirs).
  [[nodiscard]] static nlohmann::json toJson(const AccessRecord& record, std::string time);

 private:
  LogFormat format_;
  std::shared_ptr<spdlog::logger> logger_;
};

}  // namespace meshlock::app
