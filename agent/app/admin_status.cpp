// /status: the agent at a glance (meshlockctl status).
#include <nlohmann/json.hpp>

#include <chrono>
#include <string>

#include "app/admin_json.h"
#include "app/agent_parts.h"
#include "app/source_status.h"
#include "kmod-free/probe.h"

namespace meshlock::app {

using nlohmann::json;


admin::Handler Agent::Parts::statusHandler() {
  return [this](const admin::Request&) {
    const engine::EngineCounters c = engine->counters();
    const auto now = std::chrono::system_clock::now();
    std::size_t pods = 0;
    {
      std::lock_guard lock(served_mutex);
      pods = served.size();
    }
    std::size_t active_mtls = 0;
    const auto connections = engine->connections();
    for (const engine::ConnectionSnapshot& snapshot : connections) active_mtls += snapshot.tls ? 1 : 0;
    json certs_json = {{"identities", 0}, {"soonest_expiry_seconds", nullptr}};
    const auto certs = identities->certificates();
    certs_json["identities"] = certs.size();
    certs_json["pending"] = identities->pending().size();
    for (const identity::CertificateStatus& cert : certs) {
      const double left = std::chrono::duration<double>(cert.notAfter - now).count();
      if (certs_json["soonest_expiry_seconds"].is_null() || left < certs_json["soonest_expiry_seconds"].get<double>())
        certs_json["soonest_expiry_seconds"] = left;
    }
    const kmodfree::ProbeReport& probe = kernel;  // the start-up probe: what the agent decided on
    json features = json::array();
    for (const kmodfree::Feature& f : probe.features)
      features.push_back({{"name", f.name}, {"available", f.state == kmodfree::FeatureState::Present}, {"detail", f.detail},
                          {"state", std::string(kmodfree::stateName(f.state))}, {"required", f.required}});
    json body = {
        {"version", MESHLOCK_VERSION},
        {"node", settings.node_name},
        {"uptime_seconds", std::chrono::duration<double>(now - started_at).count()},
        {"started_at", rfc3339(started_at)},
        {"ready", ready.load()},
        {"pods_served", pods},
        {"io_backend", engine::toString(engine->backend())},
        {"connections", {{"active", c.active}, {"active_mtls", active_mtls},
                         {"active_plaintext", connections.size() - active_mtls}, {"total", c.accepted}}},
        {"handshakes", {{"success", c.handshakes}, {"failure", c.handshake_failures + c.handshake_timeouts}}},
        {"plaintext_refused", c.refused_plaintext},
        {"certificates", certs_json},
        {"source", sourceStatusJson(source->status())},
        {"kernel", {{"release", probe.kernel_release}, {"hard_requirements_met", probe.hardRequirementsMet()},
                    {"summary", kmodfree::summaryLine(probe)}, {"features", features}}},
    };
    return jsonResponse(200, body);
  };
}

}  // namespace meshlock::app
