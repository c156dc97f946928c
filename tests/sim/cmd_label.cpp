// meshsim label [--name RUN] namespace NS KEY=VALUE|KEY- ...
// meshsim label [--name RUN] pod NS/POD KEY=VALUE|KEY- ...
// Changes labels live through the run's API server (kubectl label); the server's
// mirror rewrites the manifest files and its service-rule follower the nft rules.
#include "apiserver.h"
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
  auto state = loadState(*run);
  if (!state) return report(state.error(), kExitFailed);
  std::vector<std::string> args{"label", "--overwrite"};
  std::string what;
  Labels scratch;  // the changes are checked here first, with meshsim's messages
  if (kind == "namespace" || kind == "ns") {
    what = "namespace/" + target;
    args.insert(args.end(), {"namespace", target});
  } else if (kind == "pod") {
    auto pod = findPodRef(state->layout, target);
    if (!pod) return report(pod.error(), kExitUsage);
    what = "pod/" + (*pod)->key();
    args.insert(args.end(), {"pod", "-n", (*pod)->ns, (*pod)->name});
  } else {
    return report({fmt::format("label: \"{}\" is not namespace or pod", kind)}, kExitUsage);
  }
  if (auto st = applyChanges(scratch, changes); !st) return report(st.error().context(what), kExitUsage);
  args.insert(args.end(), changes.begin(), changes.end());
  auto out = kubectl(*run, args);
  if (!out) {
    std::string why = out.error().describe();
    if (why.find("NotFound") != std::string::npos) return report({fmt::format("run {}: no {}", *run, what)}, kExitUsage);
    return report(out.error(), kExitFailed);
  }
  // Back to the old contract: when label returns, the manifests and nft rules show it.
  if (auto st = flushApiServer(*run); !st) return report(st.error(), kExitFailed);
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
