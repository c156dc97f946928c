// Health: /healthz/ready (and /ready on the admin socket) for the kubelet's
// readiness probe, /healthz/live for its liveness probe.
#include <nlohmann/json.hpp>

#include <chrono>
#include <string>

#include "app/admin_json.h"
#include "app/agent_parts.h"

namespace meshlock::app {

using nlohmann::json;

// 200 once the config is synced, capture pinned, every pod served and the
// engine accepting; 503 with the failing checks otherwise.
admin::Handler Agent::Parts::readyHandler() {
  return [this](const admin::Request&) {
    const bool is_ready = ready.load() && all_pods_served.load();
    const config::SourceStatus source_status = source->status();
    json body = {{"ready", is_ready},
                 {"checks", json::array({{{"name", "config"}, {"ready", source_status.synced},
                                          {"detail", source_status.summary()}},
                                         {{"name", "capture"}, {"ready", datapath.has_value()},
                                          {"detail", "pinned in " + settings.bpf_pin_dir.string()}},
                                         {{"name", "pods"}, {"ready", all_pods_served.load()},
                                          {"detail", all_pods_served.load() ? "every enrolled pod of the node served"
                                                                            : "a pod could not be served yet (retried)"}},
                                         {{"name", "serving"}, {"ready", ready.load()},
                                          {"detail", ready.load() ? "accepting connections" : "starting or draining"}}})}};
    return jsonResponse(is_ready ? 200 : 503, body);
  };
}

// Liveness, unlike readiness, stays 200 while starting or draining: only a
// main loop that stopped turning (10 s) makes the kubelet restart us.
admin::Handler Agent::Parts::liveHandler() {
  return [this](const admin::Request&) {
      const std::int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch()).count();
      const std::int64_t age = now - loop_beat_ms.load();
      return jsonResponse(age < 10'000 ? 200 : 503, json{{"live", age < 10'000}, {"loop_ms_ago", age}});
    };
}

}  // namespace meshlock::app
