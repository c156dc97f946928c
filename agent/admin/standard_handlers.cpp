// /metrics and /logging handlers.
#include "admin/standard_handlers.h"

#include <spdlog/spdlog.h>

#include <array>
#include <string>

namespace meshlock::admin {

Handler metricsHandler(const MetricsRegistry& registry) {
  return [&registry](const Request&) {
    Response response = Response::text(200, registry.render());
    response.content_type = std::string(kPrometheusContentType);
    return response;
  };
}

Handler loggingHandler() {
  return [](const Request& request) {
    const auto current = spdlog::get_level();
    const std::string current_name(spdlog::level::to_string_view(current).data(),
                                   spdlog::level::to_string_view(current).size());
    if (request.method == Method::kGet) {
      return Response::json(200, "{\"level\":\"" + current_name + "\"}");
    }
    const auto wanted = request.param("level");
    if (!wanted || wanted->empty()) return Response::error(400, "missing ?level=");
    static constexpr std::array<std::string_view, 7> kLevels = {"trace", "debug", "info", "warn",
                                                                 "error", "critical", "off"};
    std::string name = *wanted;
    if (name == "warning") name = "warn";
    bool known = false;
    for (std::string_view level : kLevels) known = known || level == name;
    if (!known) {
      return Response::error(400, "unknown level \"" + *wanted +
                                      "\" (trace, debug, info, warn, error, critical, off)");
    }
    spdlog::set_level(spdlog::level::from_str(name));  // applies to every registered logger
    return Response::json(200, "{\"level\":\"" + name + "\",\"previous\":\"" + current_name + "\"}");
  };
}

}  // namespace meshlock::admin
