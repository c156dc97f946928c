// meshlockctl workloads: the pods on this node, whether each is enrolled and
// why, its identity, and the inbound mode of each of its ports.
#include <memory>

#include "cli/output.h"
#include "common/command.h"

namespace meshlock::cli {
namespace {

std::string inboundSummary(const nlohmann::json& workload) {
  std::string out;
  if (workload.contains("inbound") && workload["inbound"].is_array()) {
    for (const auto& port : workload["inbound"]) {
      if (!out.empty()) out += " ";
      out += field(port, "port") + ":" + field(port, "mode");
    }
  }
  const std::string fallback = field(workload, "default_inbound_mode");
  if (fallback != "-") out += std::string(out.empty() ? "" : " ") + "*:" + fallback;
  return out.empty() ? "-" : out;
}

int runWorkloads(const LiveOptions& options, const std::string& namespace_filter) {
  auto client = makeClient(options);
  if (!client) return reportError(client.error());
  auto answer = client->getJson("/workloads");
  if (!answer) return reportError(answer.error());
  nlohmann::json workloads = nlohmann::json::array();
  for (const auto& workload : answer->value("workloads", nlohmann::json::array())) {
    if (namespace_filter.empty() || field(workload, "namespace") == namespace_filter) workloads.push_back(workload);
  }
  if (printStructured(nlohmann::json{{"workloads", workloads}}, parseFormat(options.output))) return kExitOk;
  Table table({"NAMESPACE", "POD", "ENROLLED", "WHY", "IDENTITY", "INBOUND (PORT:MODE)"});
  for (const auto& workload : workloads) {
    table.addRow({field(workload, "namespace"), field(workload, "pod"), field(workload, "enrolled"),
                  field(workload, "enrollment_reason"), field(workload, "identity"), inboundSummary(workload)});
  }
  std::fputs(table.render().c_str(), stdout);
  return kExitOk;
}

const CommandRegistrar kWorkloads{{
    "workloads",
    "Pods on this node: enrolled or not and why, identity, inbound mode per port",
    [](CLI::App& sub) -> CommandAction {
      auto options = std::make_shared<LiveOptions>();
      auto namespace_filter = std::make_shared<std::string>();
      addLiveOptions(sub, *options);
      sub.add_option("-n,--namespace", *namespace_filter, "only pods in this namespace");
      return [options, namespace_filter] { return runWorkloads(*options, *namespace_filter); };
    },
}};

}  // namespace
}  // namespace meshlock::cli
