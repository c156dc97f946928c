// Shared admin JSON helpers (admin_json.h).
#include "app/admin_json.h"

#include <cctype>
#include <ctime>

namespace meshlock::app {

using nlohmann::json;

std::string rfc3339(std::chrono::system_clock::time_point t) {
  const std::time_t seconds = std::chrono::system_clock::to_time_t(t);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

admin::Response jsonResponse(int status, const json& body) {
  return admin::Response::json(status, body.dump(-1, ' ', false, json::error_handler_t::replace));
}

std::string lowerHex(std::string hex) {
  for (char& ch : hex) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return hex;
}

}  // namespace meshlock::app
