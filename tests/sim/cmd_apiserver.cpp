// meshsim apiserver start|stop|status|compact|set|synthetic|rotate-agent-token [--name RUN],
// meshsim kubeconfig [--agent] [--name RUN], and the hidden `meshsim sync-api`
// through which the API server makes the run's service rules follow the store.
#include <iostream>
#include <sstream>

#include "apiserver.h"
#include "cli.h"
#include "cluster.h"
#include "common/command.h"
#include "system.h"

namespace meshsim {
namespace {

int apiserverCommand(const std::string& name, const std::string& action, const std::vector<std::string>& args,
                     bool verbose) {
  if (!requireRoot()) return kExitFailed;
  auto run = resolveRun(name);
  if (!run) return report(run.error(), kExitUsage);
  std::string dir = kubeDir(*run);
  if (!pathExists(dir + "/config.json")) return report({fmt::format("run {} has no API server", *run)}, kExitUsage);
  if (action == "start") return runApiServerTool({"start", dir});
  if (action == "stop") return runApiServerTool({"stop", dir});
  if (action == "rotate-agent-token") return runApiServerTool({"rotate-agent-token", dir});
  if (action == "status") {
    if (verbose) return runApiServerTool({"status", "-v", dir});
    std::printf("%s\n", apiServerStatus(*run).dump(2).c_str());
    return kExitOk;
  }
  if (action == "compact") return runApiServerTool({"ctl", dir, "POST", "/meshsim/compact"});
  if (action == "flush") return runApiServerTool({"ctl", dir, "POST", "/meshsim/flush"});
  if (action == "set" || action == "synthetic") {
    nlohmann::json body = nlohmann::json::object();
    for (const auto& kv : args) {
      size_t eq = kv.find('=');
      if (eq == std::string::npos) return report({fmt::format("{}: expected KEY=VALUE, got \"{}\"", action, kv)}, kExitUsage);
      std::string key = kv.substr(0, eq), value = kv.substr(eq + 1);
      try {
        body[key] = std::stod(value);
      } catch (const std::exception&) {
        return report({fmt::format("{}: {} must be a number", action, key)}, kExitUsage);
      }
    }
    return runApiServerTool({"ctl", dir, "POST", action == "set" ? "/meshsim/settings" : "/meshsim/synthetic", body.dump()});
  }
  return report({fmt::format("apiserver: unknown action \"{}\" (start, stop, status, compact, flush, set, synthetic, "
                             "rotate-agent-token)", action)},
                kExitUsage);
}

const meshlock::CommandRegistrar kApiserver{{
    "apiserver",
    "control the run's Kubernetes API server (start, stop, status, compact, flush, set K=V, synthetic K=V)",
    [](CLI::App& sub) -> meshlock::CommandAction {
      auto name = std::make_shared<std::string>();
      auto action = std::make_shared<std::string>();
      auto args = std::make_shared<std::vector<std::string>>();
      auto verbose = std::make_shared<bool>(false);
      addNameOption(sub, *name);
      sub.add_option("action", *action, "start | stop | status | compact | flush | set | synthetic | rotate-agent-token")
          ->required();
      sub.add_option("args", *args, "set: watchCloseAfterSeconds=N bookmarkIntervalSeconds=N; "
                                    "synthetic: pods=N services=N policies=N namespaces=N");
      sub.add_flag("-v,--verbose", *verbose, "status: also the store's counters");
      return [=] { return apiserverCommand(*name, *action, *args, *verbose); };
    },
}};

const meshlock::CommandRegistrar kKubeconfig{{
    "kubeconfig",
    "print the path of the run's admin kubeconfig (--agent: the node agents' one)",
    [](CLI::App& sub) -> meshlock::CommandAction {
      auto name = std::make_shared<std::string>();
      auto agent = std::make_shared<bool>(false);
      addNameOption(sub, *name);
      sub.add_flag("--agent", *agent, "the kubeconfig for an agent in a node netns (https://172.18.0.1:6443)");
      return [=] {
        auto run = resolveRun(*name);
        if (!run) return report(run.error(), kExitUsage);
        std::string path = *agent ? agentKubeconfig(*run) : adminKubeconfig(*run);
        if (!pathExists(path)) return report({fmt::format("run {} has no kubeconfig ({})", *run, path)}, kExitUsage);
        std::printf("%s\n", path.c_str());
        return kExitOk;
      };
    },
}};

// The store's view (JSON on stdin, from the API server's KubeProxy follower) into the spec.
int syncApi(const std::string& name) {
  std::stringstream ss;
  ss << std::cin.rdbuf();
  auto view = nlohmann::json::parse(ss.str(), nullptr, false);
  if (!view.is_object()) return report({"sync-api: stdin is not a JSON object"}, kExitUsage);
  auto run = resolveRun(name);
  if (!run) return report(run.error(), kExitUsage);
  auto lock = lockRun(*run);
  if (!lock) return report(lock.error(), kExitFailed);
  auto state = loadState(*run);
  if (!state) return report(state.error(), kExitFailed);
  Spec& spec = state->layout.spec;
  auto labelsOf = [](const nlohmann::json& j) {
    Labels out;
    if (j.is_object())
      for (auto& [k, v] : j.items())
        if (v.is_string()) out[k] = v.get<std::string>();
    return out;
  };
  for (auto& [ns, labels] : view["namespaces"].items()) {
    auto it = std::find_if(spec.namespaces.begin(), spec.namespaces.end(), [&](auto& n) { return n.name == ns; });
    if (it == spec.namespaces.end()) spec.namespaces.push_back({ns, labelsOf(labels)});
    else it->labels = labelsOf(labels);
  }
  // A namespace deleted through the API leaves the spec unless a spec pod still uses it.
  std::erase_if(spec.namespaces, [&](const NamespaceSpec& n) {
    return !view["namespaces"].contains(n.name) &&
           std::none_of(spec.pods.begin(), spec.pods.end(), [&](const PodSpec& p) { return p.ns == n.name; });
  });
  for (auto& pod : spec.pods) {
    std::string key = pod.ns + "/" + pod.name;
    if (view["pods"].contains(key)) pod.labels = labelsOf(view["pods"][key]);
  }
  std::vector<ServiceSpec> services;
  for (const auto& s : view["services"]) {
    ServiceSpec svc;
    svc.name = s.value("name", "");
    svc.ns = s.value("namespace", "");
    auto ip = parseIpv4(s.value("clusterIP", ""));
    if (!ip) {
      std::fprintf(stderr, "meshsim: sync-api: service %s/%s: clusterIP is not IPv4; skipped\n", svc.ns.c_str(),
                   svc.name.c_str());
      continue;
    }
    svc.clusterIp = *ip;
    for (const auto& p : s["ports"]) {
      ServicePort port;
      port.name = p.value("name", "");
      port.port = p.value("port", 0);
      port.targetPort = p["targetPort"].is_number() ? p["targetPort"].get<int>() : port.port;
      port.protocol = p.value("protocol", "TCP");
      if (port.port > 0) svc.ports.push_back(port);
    }
    if (s.contains("selector") && s["selector"].is_object()) svc.selector = labelsOf(s["selector"]);
    if (s.contains("endpoints"))
      for (const auto& e : s["endpoints"])
        if (auto eip = parseIpv4(e.get<std::string>())) svc.endpoints.push_back(*eip);
    services.push_back(std::move(svc));
  }
  spec.services = std::move(services);
  spec.manifests.clear();
  for (const auto& m : view["manifests"]) spec.manifests.push_back(YAML::Load(m.dump()));
  if (auto st = saveState(state->layout, state->phase); !st) return report(st.error(), kExitFailed);
  if (auto st = publishServices(state->layout); !st) return report(st.error(), kExitFailed);
  return kExitOk;
}

const meshlock::CommandRegistrar kSyncApi{{
    "sync-api",
    "(internal) the API server's view of services and labels into the run's rules",
    [](CLI::App& sub) -> meshlock::CommandAction {
      auto name = std::make_shared<std::string>();
      addNameOption(sub, *name);
      sub.group("");  // hidden
      return [=] { return syncApi(*name); };
    },
}};

}  // namespace
}  // namespace meshsim
