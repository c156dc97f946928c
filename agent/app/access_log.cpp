#include "app/access_log.h"

#include <spdlog/async.h>
#include <spdlog/fmt/chrono.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include <algorithm>

namespace meshlock::app {
namespace {

// key=value, the value quoted when it holds spaces, quotes or is empty.
void field(std::string& out, std::string_view key, std::string_view value) {
  out += ' ';
  out += key;
  out += '=';
  const bool quote = value.empty() || std::any_of(value.begin(), value.end(), [](char c) {
    return c == ' ' || c == '"' || c == '=' || c == '\\' || static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
  });
  if (!quote) {
    out += value;
    return;
  }
  // One line per connection, whatever a peer put in its certificate.
  out += '"';
  for (char c : value) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      out += fmt::format("\\x{:02x}", static_cast<unsigned>(static_cast<unsigned char>(c)));
    } else {
      out += c;
    }
  }
  out += '"';
}

std::shared_ptr<spdlog::logger> stderrAccessLogger(LogFormat format,
                                                   const std::shared_ptr<spdlog::details::thread_pool>& writer) {
  // Not registered: the global level (`logs --level`) applies to the agent's
  // diagnostics, not to the access log.
  auto logger = std::make_shared<spdlog::async_logger>("access", std::make_shared<spdlog::sinks::stderr_sink_mt>(),
                                                       writer, spdlog::async_overflow_policy::overrun_oldest);
  if (format == LogFormat::Json) {
    logger->set_pattern("%v");
  } else {
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e access%v");
  }
  logger->set_level(spdlog::level::info);
  return logger;
}

// RFC 3339 in UTC with microseconds, as the agent's JSON log lines have it.
std::string utcNow() {
  const auto now = std::chrono::system_clock::now();
  const auto seconds = std::chrono::floor<std::chrono::seconds>(now);
  const auto micros = std::chrono::duration_cast<std::chrono::microseconds>(now - seconds).count();
  return fmt::format("{:%Y-%m-%dT%H:%M:%S}.{:06}Z", seconds, micros);
}

}  // namespace

AccessLog::AccessLog(LogFormat format)
    : format_(format), writer_(std::make_shared<spdlog::details::thread_pool>(8192, 1)),
      logger_(stderrAccessLogger(format, writer_)) {}

AccessLog::AccessLog(LogFormat format, std::shared_ptr<spdlog::logger> logger)
    : format_(format), logger_(std::move(logger)) {}

AccessLog::~AccessLog() {
  logger_->flush();
  logger_.reset();
  writer_.reset();  // its thread writes what is queued, then ends
}

uint64_t AccessLog::droppedLines() const { return writer_ ? writer_->overrun_counter() : 0; }

void AccessLog::write(const AccessRecord& record) const {
  logger_->info(format_ == LogFormat::Json ? formatJson(record) : formatText(record));
}

void AccessLog::writeSuppressed(std::string_view pod, std::string_view end, uint64_t lines,
                                std::chrono::milliseconds window) const {
  if (format_ == LogFormat::Json) {
    nlohmann::json j = {{"time", utcNow()}, {"type", "access_suppressed"}, {"pod", pod},
                        {"end", end},       {"lines", lines},               {"window_ms", window.count()}};
    logger_->info(j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    return;
  }
  std::string out;
  field(out, "type", "suppressed");
  field(out, "pod", pod);
  field(out, "end", end);
  field(out, "lines", std::to_string(lines));
  field(out, "window_ms", std::to_string(window.count()));
  logger_->info(out);
}

std::string AccessLog::formatText(const AccessRecord& r) {
  std::string out;
  out.reserve(512);
  field(out, "direction", r.direction);
  field(out, "pod", r.pod);
  field(out, "src", r.source);
  if (!r.source_workload.empty()) field(out, "src_workload", r.source_workload);
  if (!r.source_principal.empty()) field(out, "src_principal", r.source_principal);
  field(out, "dst", r.destination);
  if (!r.destination_service.empty()) field(out, "dst_service", r.destination_service);
  if (!r.destination_workload.empty()) field(out, "dst_workload", r.destination_workload);
  if (!r.destination_principal.empty()) field(out, "dst_principal", r.destination_principal);
  field(out, "policy", r.policy);
  if (!r.decided_by.empty()) field(out, "decided_by", r.decided_by);
  field(out, "security", r.security);
  if (!r.tls_version.empty()) {
    field(out, "tls", r.tls_version);
    field(out, "cipher", r.tls_cipher);
    field(out, "resumed", r.tls_resumed ? "true" : "false");
  }
  field(out, "bytes_up", std::to_string(r.bytes_to_upstream));
  field(out, "bytes_down", std::to_string(r.bytes_to_downstream));
  field(out, "duration_ms", std::to_string(r.duration.count()));
  field(out, "end", r.end);
  if (!r.reason.empty()) field(out, "reason", r.reason);
  field(out, "tunnel", r.tunnel);
  return out;
}

std::string AccessLog::formatJson(const AccessRecord& r) {
  // Invalid UTF-8 from a peer's certificate must not make the line unparseable.
  return toJson(r, utcNow()).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

nlohmann::json AccessLog::toJson(const AccessRecord& r, std::string time) {
  auto orNull = [](const std::string& s) { return s.empty() ? nlohmann::json(nullptr) : nlohmann::json(s); };
  nlohmann::json j = {
      {"time", std::move(time)},
      {"type", "access"},
      {"direction", r.direction},
      {"pod", r.pod},
      {"source", r.source},
      {"source_workload", orNull(r.source_workload)},
      {"source_principal", orNull(r.source_principal)},
      {"destination", r.destination},
      {"destination_service", orNull(r.destination_service)},
      {"destination_workload", orNull(r.destination_workload)},
      {"destination_principal", orNull(r.destination_principal)},
      {"policy", r.policy},
      {"decided_by", orNull(r.decided_by)},
      {"security", r.security},
      {"tunnel", r.tunnel},
      {"tls_version", orNull(r.tls_version)},
      {"tls_cipher", orNull(r.tls_cipher)},
      {"tls_resumed", r.tls_resumed},
      {"bytes_to_upstream", r.bytes_to_upstream},
      {"bytes_to_downstream", r.bytes_to_downstream},
      {"duration_ms", r.duration.count()},
      {"end", r.end},
      {"reason", orNull(r.reason)},
  };
  return j;
}

}  // namespace meshlock::app
