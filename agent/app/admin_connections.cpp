// /connections (live relays, what policy says of each) and /refused (the
// last refusals, newest first).
#include <nlohmann/json.hpp>

#include <chrono>
#include <string>

#include "app/admin_json.h"
#include "app/agent_parts.h"
#include "app/config_dump.h"

namespace meshlock::app {

using nlohmann::json;


admin::Handler Agent::Parts::connectionsHandler() {
  return [this](const admin::Request& request) {
    const PolicyRef policy = currentPolicy();
    const std::string ns_filter = request.param("namespace").value_or("");
    json list = json::array();
    std::uint64_t n = 0;
    for (const engine::ConnectionSnapshot& c : engine->connections()) {
      const config::Pod* local = policy->podByUid(config::PodUid(c.pod_key));
      json local_ns = local ? json(local->ns()) : json(nullptr);
      json local_pod = local ? json(local->name()) : json(nullptr);
      if (!ns_filter.empty() && (!local || local->ns() != ns_filter)) continue;
      const std::string mode = c.tls ? "mutual_tls" : "plaintext";
      // What the current policy says of this connection (as it would decide a new one).
      ConnectionDecision decision;
      if (local != nullptr) {
        decision = decideConnection(*policy, *local, c.outbound, c.upstream.ip(), c.upstream.port());
      }
      auto optional = [](const std::optional<std::string>& v) { return v ? json(*v) : json(nullptr); };
      json entry = {
          {"id", "c-" + std::to_string(++n)},
          {"direction", c.outbound ? "outbound" : "inbound"},
          {"source_namespace", c.outbound ? local_ns : json(nullptr)},
          {"source_pod", c.outbound ? local_pod : json(nullptr)},
          {"source_address", c.peer.toString()},
          {"source_identity", !c.outbound && c.tls ? json(c.tls->peer_identity) : json(nullptr)},
          {"destination_namespace", c.outbound ? json(nullptr) : local_ns},
          {"destination_pod", c.outbound ? json(nullptr) : local_pod},
          {"destination_address", c.upstream.toString()},
          {"destination_service", optional(decision.destination_service)},
          {"destination_identity", c.outbound && c.tls ? json(c.tls->peer_identity) : json(nullptr)},
          {"mode", mode},
          {"tunnel", tunnelOf(c, c.tls && c.tls->peer_identity.starts_with("spiffe://"))},
          {"decided_by", optional(decision.decided_by)},
          {"tls_version", c.tls ? json(c.tls->version) : json(nullptr)},
          {"cipher", c.tls ? json(c.tls->cipher) : json(nullptr)},
          {"resumed", c.tls ? c.tls->resumed : false},
          {"bytes_sent", c.outbound ? c.bytes_to_upstream : c.bytes_to_downstream},
          {"bytes_received", c.outbound ? c.bytes_to_downstream : c.bytes_to_upstream},
          {"age_seconds", std::chrono::duration<double>(c.age).count()},
          {"state", c.state == "relaying" ? std::string("established") : c.state},
      };
      list.push_back(std::move(entry));
    }
    return jsonResponse(200, json{{"connections", list}});
  };
}

// The last refusals, newest first: what was refused, the policy and the reason.
admin::Handler Agent::Parts::refusedHandler() {
  return [this](const admin::Request& request) {
    const std::string ns_filter = request.param("namespace").value_or("");
    const std::string pod_filter = request.param("pod").value_or("");
    json list = json::array();
    for (const RefusalLog::Entry& entry : reports->refusals->recent()) {
      const AccessRecord& r = entry.record;
      if (!pod_filter.empty() && r.pod != pod_filter) continue;
      if (!ns_filter.empty() && !r.pod.starts_with(ns_filter + "/")) continue;
      list.push_back(AccessLog::toJson(r, rfc3339(entry.at)));
    }
    json body = {{"total", reports->refusals->total()},
                 {"kept", reports->refusals->capacity()},
                 {"refused", std::move(list)}};
    return jsonResponse(200, body);
  };
}

}  // namespace meshlock::app
