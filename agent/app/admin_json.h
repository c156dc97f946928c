// Small pieces every admin handler family shares (admin_*.cpp).
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <string>

#include "admin/http_message.h"

namespace meshlock::app {

// "2026-12-04T20:46:49Z"
[[nodiscard]] std::string rfc3339(std::chrono::system_clock::time_point t);

// Invalid UTF-8 (a label in a manifest, a peer's certificate) is replaced,
// never thrown: an admin request must not take the agent down.
[[nodiscard]] admin::Response jsonResponse(int status, const nlohmann::json& body);

[[nodiscard]] std::string lowerHex(std::string hex);

}  // namespace meshlock::app
