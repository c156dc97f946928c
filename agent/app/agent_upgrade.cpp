// Wiring of an agent upgrade (agent/upgrade, docs/upgrade.md): this agent
// takes the connections of an older one on the node, and offers its own to
// a newer one when told to stop.
#include <spdlog/spdlog.h>

#include "app/agent_parts.h"

namespace meshlock::app {

Status Agent::Parts::startHandover() {
  const std::filesystem::path path = handoverSocketOf(settings);
  if (path.empty()) {
    spdlog::info("handover: off (an upgrade drains established connections)");
    return {};
  }
  auto readiness = [this]() -> std::optional<std::string> {
    if (!ready) return "not ready (starting, or draining itself)";
    if (!all_pods_served) return "not every enrolled pod is served yet";
    return std::nullopt;
  };
  auto receiver = upgrade::HandoverReceiver::start(path, *engine, readiness,
                                                   [this](const engine::HandedConnection& handed) { return handedReport(handed); });
  if (!receiver) return std::unexpected(receiver.error());
  handover = std::move(*receiver);
  spdlog::info("handover: takes established connections from an older agent on {}", path.string());
  return {};
}

std::unique_ptr<engine::ConnectionObserver> Agent::Parts::handedReport(const engine::HandedConnection& handed) const {
  if (!reports) return nullptr;
  const PolicyRef policy = currentPolicy();
  if (!policy) return nullptr;
  const config::Pod* pod = policy->podByUid(config::PodUid(handed.pod_key));
  if (pod == nullptr) return nullptr;
  // The previous process's report carries on (its decision, the destination's
  // labels); from an agent that sent none, what this one knows of the pod.
  // Only then is the served pods' lock taken: a reconcile holds it while it
  // serves pods, and every connection of a handover waited behind it (a
  // 0.5 s pause each, scenario 32).
  std::optional<PlannedConnection> planned = plannedFromHandover(handed.observer_state);
  if (!planned || planned->outbound != handed.outbound || planned->pod != pod->ns() + "/" + pod->name()) {
    std::optional<identity::SpiffeId> pod_id;
    {
      std::lock_guard lock(served_mutex);
      auto it = served.find(config::PodUid(handed.pod_key));
      if (it == served.end()) return nullptr;
      pod_id = it->second.id;
    }
    planned = planReport(*pod, *pod_id, handed.outbound);
    planned->adopted = true;
    planned->mesh_mtls = (handed.outbound ? handed.up.tls : handed.down.tls).has_value();
    planned->policy = "handed over";
    planned->decided_by = "the previous agent process";
  }
  return std::make_unique<ConnectionReport>(reports, std::move(*planned));
}

bool Agent::Parts::offerConnections(bool log_refusal) {
  const std::filesystem::path path = handoverSocketOf(settings);
  if (path.empty()) return true;
  upgrade::HandOverOptions options{.agent_version = MESHLOCK_VERSION, .instance = handover ? handover->instance() : 0};
  Result<upgrade::HandoverReport> report = upgrade::handOverTo(
      path, *engine, options, [this](const engine::HandedConnection& handed) { return handedReport(handed); });
  if (!report) {
    spdlog::warn("handover: {}", report.error().describe());
    return false;
  }
  if (!report->refused.empty()) {
    if (log_refusal) spdlog::info("handover: none: {}; the connections drain here", report->refused);
    return false;
  }
  if (report->handed == 0 && report->returned == 0 && !log_refusal) return true;  // nothing new to say
  spdlog::info("handover: {} established connections taken by the new agent in {} ms; {} stay to drain here{}{}",
               report->handed, report->took.count(), report->stayed + report->returned,
               report->returned ? " (" + std::to_string(report->returned) + " offered and not taken)" : "",
               report->held_ms.empty() ? std::string()
                                       : "; each held here " + upgrade::percentiles(report->held_ms) +
                                             " from its last read to its offer");
  return true;
}

}  // namespace meshlock::app
