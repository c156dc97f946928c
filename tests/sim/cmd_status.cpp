// meshsim status [--name RUN | --all] [-o text|json]: what a run built, with
// the netns and cgroup paths the agent needs (schema in docs/meshsim.md).
#include "apiserver.h"
#include "cli.h"
#include "common/command.h"
#include "system.h"

namespace meshsim {
namespace {

void printText(const Layout& layout, const std::string& phase) {
  std::printf("run %s (%s)  cgroup2 %s  driver %s  manifests %s\n", layout.run.c_str(), phase.c_str(),
              layout.cgroup2Root.c_str(), std::string(name(layout.spec.cgroupDriver)).c_str(),
              layout.manifestDir().c_str());
  std::printf("\n%-12s %-16s %-18s %s\n", "NODE", "NODE-IP", "POD-CIDR", "NETNS");
  for (const auto& n : layout.nodes)
    std::printf("%-12s %-16s %-18s %s\n", n.name.c_str(), n.nodeIp.str().c_str(), n.podCidr.str().c_str(),
                n.netns.c_str());
  std::printf("\n%-28s %-15s %-12s %-8s %-6s %s\n", "POD", "IP", "NODE", "PAUSE", "ALIVE", "NETNS");
  for (const auto& p : layout.pods)
    std::printf("%-28s %-15s %-12s %-8d %-6s %s\n", p.key().c_str(), p.ip.str().c_str(), p.node.c_str(), p.pausePid,
                processAlive(p.pausePid) ? "yes" : "no", p.netns.c_str());
  if (!layout.spec.services.empty()) {
    std::printf("\n%-28s %-15s %s\n", "SERVICE", "CLUSTER-IP", "PORTS");
    for (const auto& s : layout.spec.services) {
      std::string ports;
      for (const auto& p : s.ports) ports += fmt::format("{}{}→{}/{}", ports.empty() ? "" : ",", p.port, p.targetPort, p.protocol);
      std::printf("%-28s %-15s %s\n", (s.ns + "/" + s.name).c_str(), s.clusterIp.str().c_str(), ports.c_str());
    }
  }
}

int status(const std::string& name, bool all, const std::string& output) {
  if (output != "text" && output != "json") return report({"-o: expected text or json"}, kExitUsage);
  std::vector<RunState> states;
  if (all) {
    for (const auto& run : listRuns()) {
      auto state = loadState(run);
      if (!state) return report(state.error(), kExitFailed);
      states.push_back(std::move(*state));
    }
  } else {
    auto state = openRun(name);
    if (!state) return report(state.error(), kExitUsage);
    states.push_back(std::move(*state));
  }
  if (output == "json") {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& s : states) {
      auto j = statusJson(s.layout, s.phase);
      j["apiServer"] = apiServerStatus(s.layout.run);
      out.push_back(std::move(j));
    }
    std::printf("%s\n", (all ? out : out[0]).dump(2).c_str());
    return kExitOk;
  }
  if (states.empty()) std::printf("no meshsim runs\n");
  for (size_t i = 0; i < states.size(); ++i) {
    if (i) std::printf("\n");
    printText(states[i].layout, states[i].phase);
  }
  return kExitOk;
}

const meshlock::CommandRegistrar kRegister{{
    "status",
    "show what a run built (-o json for tools)",
    [](CLI::App& sub) -> meshlock::CommandAction {
      auto name = std::make_shared<std::string>();
      auto all = std::make_shared<bool>(false);
      auto output = std::make_shared<std::string>("text");
      addNameOption(sub, *name);
      sub.add_flag("--all", *all, "every run (JSON: an array)");
      sub.add_option("-o,--output", *output, "text or json");
      return [name, all, output] { return status(*name, *all, *output); };
    },
}};

}  // namespace
}  // namespace meshsim
