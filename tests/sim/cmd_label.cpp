// meshsim label [--name RUN] namespace NS KEY=VALUE|KEY- ...
// meshsim label [--name RUN] pod NS/POD KEY=VALUE|KEY- ...
// Changes labels live: the manifest files are rewritten atomically (agents
// watching them see the change) and service backends are recomputed.
#include "cli.h"
#include "cluster.h"
#include "common/command.h"

namespace meshsim {
namespace {

meshlock::Status applyChanges(Labels& labels, const std::vector<std::string>& changes) {
  for (const auto& change : changes) {
    if (change.size() > 1 && change.back() == '-' && change.find('=') == std::string::npos) {
      std::string key = change.substr(0, change.size() - 1);
      if (!isLabelKey(key)) return meshlock::fail(fmt::format("\"{}\" is not a valid label key", key));
      labels.erase(key);
      continue;
    }
    size_t eq = change.find('=');
    if (eq == std::string::npos) return meshlock::fail(fmt::format("\"{}\": expected KEY=VALUE or KEY-", change));
    std::string key = change.substr(0, eq), value = change.substr(eq + 1);
    if (!isLabelKey(key)) return meshlock::fail(fmt::format("\"{}\" is not a valid label key", key));
    if (!isLabelValue(value)) return meshlock::fail(fmt::format("\"{}\" is not a valid label value", value));
    labels[key] = value;
  }
  return {};
}

int label(const std::string& name, const std::string& kind, const std::string& target,
          const std::vector<std::string>& changes) {
  if (!requireRoot()) return kExitFailed;
  auto run = resolveRun(name);
  if (!run) return report(run.error(), kExitUsage);
  auto lock = lockRun(*run);
  if (!lock) return report(lock.error(), kExitFailed);
  auto state = loadState(*run);
  if (!state) return report(state.error(), kExitFailed);
  Spec& spec = state->layout.spec;
  Labels* labels = nullptr;
  std::string what;
  if (kind == "namespace" || kind == "ns") {
    for (auto& ns : spec.namespaces)
      if (ns.name == target) labels = &ns.labels;
    what = "namespace/" + target;
  } else if (kind == "pod") {
    auto pod = findPodRef(state->layout, target);
    if (!pod) return report(pod.error(), kExitUsage);
    for (auto& p : spec.pods)
      if (p.ns == (*pod)->ns && p.name == (*pod)->name) labels = &p.labels;
    what = "pod/" + (*pod)->key();
  } else {
    return report({fmt::format("label: \"{}\" is not namespace or pod", kind)}, kExitUsage);
  }
  if (!labels) return report({fmt::format("run {}: no {}", *run, what)}, kExitUsage);
  if (auto st = applyChanges(*labels, changes); !st) return report(st.error().context(what), kExitUsage);
  if (auto st = saveState(state->layout, state->phase); !st) return report(st.error(), kExitFailed);
  if (auto st = publishManifests(state->layout); !st) return report(st.error(), kExitFailed);
  if (auto st = publishServices(state->layout); !st) return report(st.error(), kExitFailed);
  std::printf("%s labeled\n", what.c_str());
  return kExitOk;
}

const meshlock::CommandRegistrar kRegister{{
    "label",
    "change a namespace's or pod's labels live",
    [](CLI::App& sub) -> meshlock::CommandAction {
      auto name = std::make_shared<std::string>();
      auto kind = std::make_shared<std::string>();
      auto target = std::make_shared<std::string>();
      auto changes = std::make_shared<std::vector<std::string>>();
      addNameOption(sub, *name);
      sub.add_option("kind", *kind, "namespace or pod")->required();
      sub.add_option("target", *target, "NS, or NS/POD")->required();
      sub.add_option("changes", *changes, "KEY=VALUE to set, KEY- to remove")->required();
      return [=] { return label(*name, *kind, *target, *changes); };
    },
}};

}  // namespace
}  // namespace meshsim
