// What the agent knows of the cluster and decides from it: /workloads,
// /config_dump, /policy?pod=, /check?from=&to=.
#include <nlohmann/json.hpp>

#include <chrono>
#include <string>

#include "app/admin_json.h"
#include "app/agent_parts.h"
#include "app/config_dump.h"
#include "policy/report_json.h"

namespace meshlock::app {

using nlohmann::json;

namespace {

std::string modeName(policy::ServerMode mode) { return std::string(policy::toString(mode)); }

}  // namespace


admin::Handler Agent::Parts::workloadsHandler() {
  return [this](const admin::Request&) {
    const PolicyRef policy = currentPolicy();
    json list = json::array();
    for (const config::Pod* pod : policy->podsOnNode(settings.node_name)) {
      const bool enrolled = policy->served(*pod);
      json inbound = json::array();
      for (const config::ContainerPort& port : pod->ports) {
        const policy::InboundDecision d = policy->inbound(*pod, port.port);
        inbound.push_back({{"port", port.port}, {"mode", modeName(d.mode)}, {"decided_by", d.decided_by.text()}});
      }
      list.push_back({
          {"namespace", pod->ns()}, {"pod", pod->name()}, {"uid", pod->uid.str()},
          {"ip", pod->ip ? json(pod->ip->toString()) : json(nullptr)},
          {"service_account", pod->service_account}, {"workload", pod->name()},
          {"enrolled", enrolled}, {"enrollment_reason", policy->servedReason(*pod).describe()},
          {"identity", enrolled ? json(policy->identityOf(*pod).str()) : json(nullptr)},
          {"default_inbound_mode", modeName(policy->inbound(*pod, 0).mode)},
          {"inbound", inbound},
      });
    }
    return jsonResponse(200, json{{"workloads", list}});
  };
}


admin::Handler Agent::Parts::configDumpHandler() {
  return [this](const admin::Request&) {
    const PolicyRef policy = currentPolicy();
    const auto now = std::chrono::system_clock::now();
    std::map<std::string, json> by_identity;
    {
      std::lock_guard lock(served_mutex);
      for (const auto& [uid, pod] : served) {
        json& entry = by_identity[pod.id.uri()];
        if (entry.is_null()) {
          entry = {{"identity", pod.id.uri()}, {"pods", json::array()}, {"serial", nullptr},
                   {"not_after", nullptr}, {"expires_in_seconds", nullptr}};
        }
        entry["pods"].push_back(pod.name);
      }
    }
    for (const identity::CertificateStatus& cert : identities->certificates()) {
      auto it = by_identity.find(cert.id.uri());
      if (it == by_identity.end()) continue;
      it->second["serial"] = lowerHex(cert.serial);
      it->second["not_after"] = rfc3339(cert.notAfter);
      it->second["expires_in_seconds"] = std::chrono::duration<double>(cert.notAfter - now).count();
    }
    json list = json::array();
    for (auto& [id, entry] : by_identity) list.push_back(std::move(entry));
    json body = configDumpJson(*policy, settings.node_name, std::move(list));
    body["trust_domain"] = identities->trustDomain().name();
    return jsonResponse(200, body);
  };
}


admin::Handler Agent::Parts::policyHandler() {
  return [this](const admin::Request& request) {
    const std::string text = request.param("pod").value_or("");
    auto ref = policy::parsePodRef(text);
    if (!ref) return admin::Response::error(400, "pod=NAMESPACE/POD: " + ref.error().message);
    const PolicyRef policy = currentPolicy();
    const config::Pod* pod = policy->podByName(ref->ns, ref->name);
    if (pod == nullptr) return admin::Response::error(404, "unknown pod " + text + " (not in the agent's cluster state)");
    // One pod asked for: include who may connect to it, source by source.
    return jsonResponse(200, policy::explainPod(*policy, *pod, {.per_source_limit = 200}));
  };
}


admin::Handler Agent::Parts::checkHandler() {
  return [this](const admin::Request& request) {
    auto from = policy::parsePodRef(request.param("from").value_or(""));
    if (!from) return admin::Response::error(400, "from=NAMESPACE/POD: " + from.error().message);
    auto to = policy::parseTarget(request.param("to").value_or(""));
    if (!to) return admin::Response::error(400, "to=HOST:PORT: " + to.error().message);
    const PolicyRef policy = currentPolicy();
    auto report = policy::checkConnection(*policy, *from, *to);
    if (!report) return admin::Response::error(404, report.error().message);
    return jsonResponse(200, policy::toJson(*report));
  };
}

}  // namespace meshlock::app
